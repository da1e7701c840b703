"""The managed Orthanc: readiness is this start's, never another Orthanc's on the same port."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from dicom_nodes.services.orthanc import ManagedOrthanc, OrthancPeer, OrthancStartError
from tests.support import free_port


def test_another_orthanc_on_the_port_is_not_taken_for_ours() -> None:
    base = Path(tempfile.mkdtemp(prefix="radiogate-orthanc-"))
    http, dicom = free_port(), free_port()
    creds = base / "http-credentials"
    peers = [OrthancPeer("radiogate", "RADIOGATE", "127.0.0.1", free_port())]
    first = ManagedOrthanc(base / "a", http, dicom, peers=peers, credentials_file=creds)
    # Same ports, same credentials: only the per-start token tells them apart.
    second = ManagedOrthanc(base / "b", http, dicom, peers=peers, credentials_file=creds)
    first.start()
    try:
        with pytest.raises(OrthancStartError, match=str(second.log_path)):
            second.start(timeout=20)
        assert not second.running()
        assert first.answers() and not second.answers()
        assert first.get_json("/system")["Name"].startswith("Radiogate archive ")
    finally:
        second.stop()
        first.stop()
        shutil.rmtree(base, ignore_errors=True)
