from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_nodes.services.orthanc import ManagedOrthanc, OrthancPeer
from tests.support import free_port


@pytest.fixture
def orthanc() -> Iterator[ManagedOrthanc]:
    """A private Orthanc (SQLite index) on free loopback ports."""
    base = Path(tempfile.mkdtemp(prefix="radiogate-orthanc-"))
    # The closed archive accepts only the node's own AE from loopback (the destination's
    # calling_ae); the port is where Orthanc would send N-EVENT-REPORTs.
    server = ManagedOrthanc(
        storage_dir=base,
        http_port=free_port(),
        dicom_port=free_port(),
        peers=[OrthancPeer("radiogate", "RADIOGATE", "127.0.0.1", free_port())],
    )
    server.start()
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)
