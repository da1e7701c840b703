"""Throughput to Orthanc: DimseDestination (1 and 4 associations) vs DCMTK storescu, same run.

Prints a table (``pytest -s``); asserts only that everything arrived and that we are not
pathologically slower than storescu. Numbers are for this 2-core machine with Orthanc,
sender and test on the same cores.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_nodes.forward import CommitmentListener, DimseDestination, OutgoingFile
from dicom_nodes.services.orthanc import ManagedOrthanc
from tests.integration.forward.conftest import CALLING_AE, dimse_settings
from tests.integration.forward.instances import make_small_instances
from tests.integration.forward.orthanc_rest import OrthancRest
from tests.support import dcmtk
from tests.support.data import extract_ct

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _ct_copies(dest: Path, copies: int) -> list[Path]:
    """*copies* of the 48-slice CT, each with new Series and SOP Instance UIDs."""
    source = extract_ct(dest / "src")
    out = []
    for n in range(copies):
        series = generate_uid()
        for path in source:
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID = series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            target = dest / f"c{n}" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(target, enforce_file_format=True)
            out.append(target)
    return out


def _storescu(orthanc: ManagedOrthanc, paths: list[Path]) -> float:
    started = time.monotonic()
    subprocess.run(
        [
            dcmtk("storescu"),
            "-aet",
            CALLING_AE,
            "-aec",
            orthanc.ae_title,
            "127.0.0.1",
            str(orthanc.dicom_port),
            *map(str, paths),
        ],
        check=True,
        capture_output=True,
        env={"TCP_NODELAY": "1"},
    )
    return time.monotonic() - started


@pytest.mark.timeout(900)
def test_throughput_against_storescu(
    orthanc: ManagedOrthanc,
    orthanc_rest: OrthancRest,
    commitment_listener: CommitmentListener,
    tmp_path: Path,
) -> None:
    sets = {
        "CT 0.5 MB": _ct_copies(tmp_path / "ct", 3),
        "small 1 KB": make_small_instances(tmp_path / "small", 1000),
    }
    rows = []
    for label, paths in sets.items():
        size = sum(p.stat().st_size for p in paths) / len(paths)
        rates = {}
        for sender in ("storescu", "radiogate x1", "radiogate x4"):
            orthanc_rest.clear()
            if sender == "storescu":
                elapsed = _storescu(orthanc, paths)
            else:
                parallel = int(sender[-1])
                dest = DimseDestination(
                    dimse_settings(orthanc, parallel=parallel), commitment_listener.sink
                )
                files = [OutgoingFile.from_path(p) for p in paths]
                started = time.monotonic()
                results = dest.send(files)
                elapsed = time.monotonic() - started
                assert all(r.ok for r in results)
            assert orthanc_rest.count_instances() == len(paths)
            rates[sender] = len(paths) / elapsed
            rows.append(
                f"{label:11s} {sender:13s} {len(paths):5d} inst {elapsed:7.2f} s "
                f"{rates[sender]:7.1f} img/s {rates[sender] * size / 1e6:6.1f} MB/s"
            )
        assert rates["radiogate x4"] > 0.25 * rates["storescu"], rates
    print("\n" + "\n".join(rows))
