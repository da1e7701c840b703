"""A series is complete as soon as the sender says so — MPPS COMPLETED, or the release of the
association that sent it — not after the quiet period (set to an hour here); the MPPS SCP
answers the statuses PS3.4 F.7.2 names."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    ModalityPerformedProcedureStep,
)

from dicom_nodes.services.orthanc import ManagedOrthanc
from tests.support import dcmtk
from tests.support.data import extract_ct
from tests.support.pipeline import Node

pytestmark = pytest.mark.integration

HOUR = {"RADIOGATE_PIPELINE__QUIET_PERIOD": "3600"}


def _completed_by(node: Node, series: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = node.query(
            "SELECT state, completed_by FROM series WHERE series_instance_uid = %s", series
        )
        if rows and rows[0][0] == "complete":
            return str(rows[0][1])
        time.sleep(0.2)
    raise TimeoutError(f"series not complete: {rows}")


def _mpps(status: str, series: str | None = None) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    if series is not None:
        item = Dataset()
        item.SeriesInstanceUID = series
        item.ReferencedImageSequence = []
        ds.PerformedSeriesSequence = [item]
    return ds


def test_mpps_completed_completes_the_series(
    fresh_dsn: str, tmp_path: Path, orthanc: ManagedOrthanc
) -> None:
    files = extract_ct(tmp_path / "ct")[:5]
    series = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    node = Node(fresh_dsn, tmp_path / "node", orthanc, extra_env=HOUR).start()
    try:
        assert node.scp is not None
        ae = AE(ae_title="CT1")
        ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
        ae.add_requested_context(ModalityPerformedProcedureStep)
        store = ae.associate("127.0.0.1", node.scp.port, ae_title="RADIOGATE")
        assert store.is_established
        for path in files:
            assert store.send_c_store(pydicom.dcmread(path)).Status == 0x0000
        store.abort()  # aborted, not released: no completion signal
        node.wait_for(lambda: node.query("SELECT count(*) FROM series") == [(1,)])
        time.sleep(2)
        assert node.query("SELECT state FROM series") == [("receiving",)]
        step = generate_uid()
        mpps = ae.associate("127.0.0.1", node.scp.port, ae_title="RADIOGATE")
        assert mpps.is_established
        create = ModalityPerformedProcedureStep
        status, _ = mpps.send_n_create(_mpps("COMPLETED"), create, generate_uid())
        assert status.Status == 0x0106  # must begin IN PROGRESS
        status, _ = mpps.send_n_create(_mpps("IN PROGRESS"), create, step)
        assert status.Status == 0x0000
        status, _ = mpps.send_n_create(_mpps("IN PROGRESS"), create, step)
        assert status.Status == 0x0111  # duplicate
        status, _ = mpps.send_n_set(_mpps("COMPLETED", series), create, generate_uid())
        assert status.Status == 0x0112  # no such step
        status, _ = mpps.send_n_set(_mpps("COMPLETED", series), create, step)
        assert status.Status == 0x0000
        status, _ = mpps.send_n_set(_mpps("DISCONTINUED"), create, step)
        assert status.Status == 0xC310  # no longer updatable
        mpps.release()
        assert _completed_by(node, series) == "mpps"
        assert node.query("SELECT status, series_uids FROM mpps") == [("COMPLETED", [series])]
    finally:
        node.stop()


def test_the_sending_associations_release_completes_the_series(
    fresh_dsn: str, tmp_path: Path, orthanc: ManagedOrthanc
) -> None:
    import subprocess

    files = extract_ct(tmp_path / "ct")[:6]
    series = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    node = Node(fresh_dsn, tmp_path / "node", orthanc, extra_env=HOUR).start()
    try:
        assert node.scp is not None
        sent = time.monotonic()
        result = subprocess.run(
            [dcmtk("storescu"), "-aet", "CT1", "-aec", "RADIOGATE", "127.0.0.1",
             str(node.scp.port), *map(str, files)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert _completed_by(node, series) == "association-released"
        assert time.monotonic() - sent < 30  # not the hour of the quiet period
        assert node.query("SELECT count(*) FROM association_end WHERE released") >= [(1,)]
    finally:
        node.stop()
