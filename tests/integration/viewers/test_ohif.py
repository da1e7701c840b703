"""OHIF v3 in headless Chromium (Debian's), reading a real Orthanc through the viewer's origin.

The lung1 CT, the chest CT pipeline's SEG and TID 1500 SR for it (the tumour given as another
tool's SEG, as in tests/integration/analysis/test_chest_ct.py) and a critical triage SR are
stored into a private Orthanc with its DICOMweb plugin; :class:`ViewerServer` serves OHIF and
passes DICOMweb through with the browser's own Orthanc credentials. Each test opens the study,
asserts what OHIF shows, and saves a screenshot under tests/artifacts/viewers/.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from analysis.pipelines.chest_ct import analyse_chest_ct
from analysis.radiomics.params import load_parameters
from analysis.radiomics.volume import build_volume, slice_input
from analysis.results import TriageFinding, build_triage_sr, to_bytes
from analysis.results.model import ActionableCategory, Lane
from dicom_nodes.services.orthanc import ManagedOrthanc
from dicom_nodes.services.viewer import ViewerServer, default_dist
from tests.integration.analysis.test_chest_ct import PROVENANCE, WHEN, _tumour_seg
from tests.support import free_port
from tests.support.data import DATA, extract_ct
from tests.support.sr import measurement_report
from tests.unit.radiomics.conftest import read_image
from tests.unit.results.synthetic import TRIAGE_MODEL

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "viewers"
# Headless Chromium has no GPU here: WebGL (Cornerstone3D) runs on SwiftShader.
CHROMIUM_ARGS = ["--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
                 "--ignore-gpu-blocklist"]  # fmt: skip
MAJOR_AXIS = "Major Axis in 3D Length"
LOAD = 90_000  # ms: a busy two-core machine renders with a software rasteriser


@dataclass(frozen=True)
class Study:
    uid: str
    files: list[bytes]
    lesion_uid: str
    lung_uids: tuple[str, str]
    segment_labels: tuple[str, ...]
    lesion_label: str
    """How OHIF labels the lesion's Major Axis in 3D Length (its value as the report has it)."""


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    files = extract_ct(tmp_path_factory.mktemp("lung1"))
    datasets: list[Dataset] = [pydicom.dcmread(f) for f in files]
    volume = build_volume([slice_input(ds) for ds in datasets])
    assert volume.volume is not None
    ordered = [datasets[i] for i in volume.order]
    label, _geometry = read_image(DATA / "lung1_label.nrrd")
    mask = label == 1
    result = analyse_chest_ct(
        ordered, params=load_parameters("ct_ibsi"), lesions=[_tumour_seg(ordered, mask)],
        provenance=PROVENANCE, created=WHEN,
    )  # fmt: skip
    key = int(np.argmax(mask.sum(axis=(1, 2))))
    finding = TriageFinding(
        lane=Lane.CRITICAL, category=ActionableCategory.CATEGORY_1, certainty=91.0,
        reason=codes.SCT.Nodule, flagged=(str(ordered[key].SOPInstanceUID),),
        series_instance_uid=str(ordered[0].SeriesInstanceUID),
    )  # fmt: skip
    triage = build_triage_sr(ordered, finding, TRIAGE_MODEL, PROVENANCE, created=WHEN)
    results = [to_bytes(d) for d in (result.seg, result.sr, triage)]
    segments = {str(s.TrackingID): s for s in result.seg.SegmentSequence}
    return Study(
        uid=str(ordered[0].StudyInstanceUID),
        files=[f.read_bytes() for f in files] + results,
        lesion_uid=str(segments["lesion-1"].TrackingUID),
        lung_uids=(str(segments["lung-1"].TrackingUID), str(segments["lung-2"].TrackingUID)),
        segment_labels=tuple(str(s.SegmentLabel) for s in result.seg.SegmentSequence),
        lesion_label=_label(result.sr, str(segments["lesion-1"].TrackingUID), MAJOR_AXIS),
    )


def _label(sr: Dataset, tracking_uid: str, concept: str) -> str:
    """``"<concept>: <value, 2 decimals> <unit>"`` of the NUM *concept* in the volumetric group
    of *tracking_uid*, as OHIF's SR extension writes it next to the drawing."""
    report = hd.sr.Comprehensive3DSR.from_dataset(sr)
    (group,) = [g for g in measurement_report(report.content).get_volumetric_roi_measurement_groups()
                if str(g.tracking_uid) == tracking_uid]  # fmt: skip
    (num,) = [m for m in group.get_measurements() if m.name.meaning == concept]
    return f"{concept}: {num.value:.2f} {num.unit.value}"


@pytest.fixture(scope="module")
def archive(study: Study) -> Iterator[ManagedOrthanc]:
    base = Path(tempfile.mkdtemp(prefix="radiogate-viewer-"))
    server = ManagedOrthanc(base, free_port(), free_port(), dicomweb=True)
    server.start()
    try:
        for data in study.files:
            server.request("/instances", method="POST", body=data)
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def viewer(archive: ManagedOrthanc) -> Iterator[ViewerServer]:
    dist = default_dist()
    assert (dist / "index.html").is_file(), f"no OHIF build in {dist}: make ohif"
    server = ViewerServer(("127.0.0.1", free_port()), dist, (archive.host, archive.http_port))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]'")
    assert CHROMIUM.is_file(), "Debian's chromium is not installed: make system-deps"
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_ARGS)  # fmt: skip
        yield chromium
        chromium.close()


class Viewer:
    """One signed-in page on the study, collecting uncaught errors."""

    def __init__(self, browser: Any, viewer: ViewerServer, archive: ManagedOrthanc) -> None:
        creds = archive.credentials
        self.context = browser.new_context(
            http_credentials={"username": creds.user, "password": creds.password},
            viewport={"width": 1600, "height": 1000},
        )
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.url = viewer.url

    def open(self, study: Study) -> Any:
        page = self.page
        page.goto(f"{self.url}/viewer?StudyInstanceUIDs={study.uid}")
        page.get_by_text("Skip all").click(timeout=LOAD)  # the first-visit tour
        page.get_by_text("Confirm and hide").click(timeout=LOAD)
        return page

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def ohif(browser: Any, viewer: ViewerServer, archive: ManagedOrthanc) -> Iterator[Viewer]:
    page = Viewer(browser, viewer, archive)
    yield page
    page.close()


def test_signing_in_is_required(viewer: ViewerServer) -> None:
    import urllib.error
    import urllib.request

    for path in ("/viewer", "/dicom-web/studies"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{viewer.url}{path}", timeout=10)
        assert refused.value.code == 401
        assert refused.value.headers["WWW-Authenticate"].startswith("Basic")


def test_the_report_draws_the_lesion_measurement(ohif: Viewer, study: Study) -> None:
    page = ohif.open(study)
    page.get_by_text("Radiogate measurements").dblclick(timeout=LOAD)
    drawn = page.locator(f'[data-annotation-uid="{study.lung_uids[0]}"]')
    drawn.first.wait_for(timeout=LOAD)  # the report opens on its first group, the right lung
    for uid in (study.lung_uids[1], study.lesion_uid):  # next: the left lung, then the tumour
        page.locator('[data-cy="viewport-action-arrows-right"] svg').first.click()
        page.locator(f'[data-annotation-uid="{uid}"]').first.wait_for(timeout=LOAD)
    page.get_by_text(study.lesion_label, exact=False).first.wait_for(timeout=LOAD)
    ohif.screenshot("report-lesion")
    assert not ohif.errors, ohif.errors


def test_the_segmentation_shows_its_segments(ohif: Viewer, study: Study) -> None:
    page = ohif.open(study)
    page.get_by_text("Radiogate segmentation").dblclick(timeout=LOAD)
    page.get_by_role("button", name="Yes").click(timeout=LOAD)
    # the segmentation panel (right side) lists the segments of the loaded SEG
    page.locator('[data-cy*="anelSegmentation"][data-cy$="-btn"]').first.click(timeout=LOAD)
    for label in study.segment_labels:
        page.get_by_text(label, exact=True).first.wait_for(timeout=LOAD)
    ohif.screenshot("segmentation")
    assert not ohif.errors, ohif.errors


def test_the_triage_report_opens_with_its_certainty(ohif: Viewer, study: Study) -> None:
    page = ohif.open(study)
    page.get_by_text("Radiogate triage").dblclick(timeout=LOAD)
    page.get_by_text("Certainty of Finding: 91.00 %").first.wait_for(timeout=LOAD)
    ohif.screenshot("triage")
    assert not ohif.errors, ohif.errors
