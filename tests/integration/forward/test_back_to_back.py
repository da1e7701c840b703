"""Thousands of small instances back to back over ONE association to Orthanc.

This is the test that catches pynetdicom 3.0.4's response race (see
``dicom_nodes/forward/_association.py``): without the guard, the association reactor steals
a C-STORE-RSP every few hundred to few thousand instances ("Received unexpected C-STORE
service message"), the sender waits the whole DIMSE timeout and aborts. With the guard, all
instances go through on a single association with no stall.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from dicom_nodes.forward import (
    CommitmentListener,
    ConfirmMethod,
    DimseDestination,
    OutgoingFile,
)
from dicom_nodes.services.orthanc import ManagedOrthanc
from tests.integration.forward.conftest import dimse_settings
from tests.integration.forward.instances import make_small_instances
from tests.integration.forward.orthanc_rest import OrthancRest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COUNT = 3000
DIMSE_TIMEOUT = 20.0


@pytest.mark.timeout(600)
def test_thousands_back_to_back_on_one_association(
    orthanc: ManagedOrthanc,
    orthanc_rest: OrthancRest,
    commitment_listener: CommitmentListener,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from dicom_nodes.forward import _association, pool

    files = [OutgoingFile.from_path(p) for p in make_small_instances(tmp_path / "sc", COUNT)]
    opened: list[str] = []
    original = _association.open_association  # the function pool.py calls

    def counting(*args: object, **kwargs: object) -> object:
        opened.append(threading.current_thread().name)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pool, "open_association", counting)
    dest = DimseDestination(
        dimse_settings(orthanc, parallel=1, timeout=DIMSE_TIMEOUT, confirm=ConfirmMethod.QUERY),
        commitment_listener.sink,
    )
    caplog.set_level(logging.WARNING, logger="pynetdicom")

    started = time.monotonic()
    results = dest.send(files)
    elapsed = time.monotonic() - started

    failed = [r for r in results if not r.ok]
    assert not failed, f"{len(failed)} failed, e.g. {failed[0]}"
    assert len(opened) == 1, "the association broke and was re-opened"
    assert "unexpected C-STORE" not in caplog.text
    # ~15-30 s here (100-200 images/s); one stall alone would cost DIMSE_TIMEOUT and an abort.
    assert elapsed < 240, f"{COUNT} instances took {elapsed:.0f} s"
    assert orthanc_rest.count_instances() == COUNT
    assert all(dest.confirm(files).values())
    assert len(opened) == 1, "the confirmation did not use the association kept open"
    dest.close()
