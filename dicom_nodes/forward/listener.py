"""A small SCP that receives storage commitment reports (N-EVENT-REPORT, PS3.4 J.3.3).

Destinations such as Orthanc send the report on a new association to the AE title, host and
port they have configured for us (Orthanc: the ``DicomModalities`` entry whose AET is our
``calling_ae``). This listener is for processes that have no Radiogate SCP running (tests,
tools); ``radiogate scp`` hosts the same handler with a PostgreSQL sink
(:mod:`dicom_nodes.db.commitment`), which is what the worker uses.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from pynetdicom import AE, evt

from dicom_nodes.forward._association import VERIFICATION
from dicom_nodes.forward.commitment import (
    STORAGE_COMMITMENT_PUSH_MODEL,
    CommitmentSink,
    InMemoryCommitmentSink,
    commitment_scp_context,
    handle_commitment_report,
)

__all__ = ["CommitmentListener"]

LOGGER = logging.getLogger(__name__)


def _nodelay(event: Any) -> None:
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class CommitmentListener:
    """Accepts associations for the Storage Commitment Push Model (and C-ECHO), puts every
    report into *sink*. Start with :meth:`start`, stop with :meth:`stop` (or as a context
    manager)."""

    def __init__(
        self,
        ae_title: str,
        port: int,
        host: str = "127.0.0.1",
        sink: CommitmentSink | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.ae_title = ae_title
        self.host = host
        self.port = port
        self.sink: CommitmentSink = sink if sink is not None else InMemoryCommitmentSink()
        self._ae = AE(ae_title=ae_title)
        self._ae.acse_timeout = timeout
        self._ae.dimse_timeout = timeout
        self._ae.network_timeout = timeout
        cx = commitment_scp_context()
        self._ae.add_supported_context(
            STORAGE_COMMITMENT_PUSH_MODEL,
            cx.transfer_syntax,
            scu_role=cx.scu_role,
            scp_role=cx.scp_role,
        )
        self._ae.add_supported_context(VERIFICATION)
        self._server: Any = None

    def start(self) -> CommitmentListener:
        handlers: list[Any] = [
            (evt.EVT_N_EVENT_REPORT, handle_commitment_report, [self.sink]),
            (evt.EVT_CONN_OPEN, _nodelay),
        ]
        self._server = self._ae.start_server(
            (self.host, self.port), block=False, evt_handlers=handlers
        )
        LOGGER.info("storage commitment listener %s on %s:%d", self.ae_title, self.host, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> CommitmentListener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
