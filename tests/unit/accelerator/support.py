"""An in-process pynetdicom Storage SCP and SCU for the accelerator's tests."""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pydicom
import pynetdicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from dicom_nodes.accelerator import PARTS, VERIFIED_PYNETDICOM, Part
from tests.support.data import PYDICOM_FILES

__all__ = ["CT", "Scp", "exchange", "scu", "skip_unless_verified", "wait_until"]

CT = PYDICOM_FILES / "CT_small.dcm"


def skip_unless_verified() -> None:
    """Skip the calling test module (the reason is printed) unless the installed pynetdicom
    is one the accelerator was verified with."""
    if pynetdicom.__version__ not in VERIFIED_PYNETDICOM:
        pytest.skip(
            f"pynetdicom {pynetdicom.__version__} is not among the accelerator's verified "
            f"versions {VERIFIED_PYNETDICOM}: its class swaps are not exercised",
            allow_module_level=True,
        )


class Scp:
    """An in-process pynetdicom Storage SCP, accelerated with *parts* (none: stock)."""

    def __init__(
        self,
        incoming: Path,
        parts: Collection[Part] = PARTS,
        extra_handlers: list[Any] | None = None,
    ):
        self.incoming = incoming
        self.stored: list[bytes] = []
        self.associations: list[Any] = []
        self.status: Any = 0x0000
        ae = AE(ae_title="FASTSCP")
        ae.add_supported_context(Verification)
        for cx in StoragePresentationContexts:
            assert cx.abstract_syntax is not None
            ae.add_supported_context(
                cx.abstract_syntax, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
            )
        ae.network_timeout = 5
        ae.acse_timeout = 5
        ae.dimse_timeout = 5
        handlers = [
            (evt.EVT_C_STORE, self._store),
            (evt.EVT_C_ECHO, lambda event: 0x0000),
            (evt.EVT_ACCEPTED, lambda event: self.associations.append(event.assoc)),
            *(extra_handlers or []),
        ]
        server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        assert server is not None  # not blocking: the running server is returned
        self.server = server
        if parts:
            from dicom_nodes.accelerator import _association

            _association.install(self.server, parts)
        self.port = self.server.server_address[1]

    def _store(self, event: Any) -> Any:
        self.stored.append(Path(event.dataset_path).read_bytes())
        return self.status

    def stop(self) -> None:
        self.server.shutdown()


def scu(port: int, max_pdu: int = 16382) -> Any:
    ae = AE(ae_title="SCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    ae.maximum_pdu_size = max_pdu
    assoc = ae.associate("127.0.0.1", port, ae_title="FASTSCP", max_pdu=max_pdu)
    assert assoc.is_established
    return assoc


def wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return bool(predicate())


def exchange(scp: Scp, max_pdu: int = 16382) -> tuple[list[int], Any]:
    """C-ECHO then three C-STOREs of CT_small; the statuses and the last response."""
    ds = pydicom.dcmread(CT)
    assoc = scu(scp.port, max_pdu)
    statuses = [int(assoc.send_c_echo().Status)]
    for _ in range(3):
        rsp = assoc.send_c_store(ds)
        statuses.append(int(rsp.Status))
    last = rsp
    assoc.release()
    return statuses, last
