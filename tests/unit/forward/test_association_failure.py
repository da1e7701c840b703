"""Why an association request failed is named for what it was (PS3.8 7.1, 9.1.4): our own
connect or ACSE timeout is not an abort by the destination."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from pynetdicom.presentation import build_context

from dicom_nodes.forward import _association
from dicom_nodes.forward._association import (
    AssociationFailed,
    FailureKind,
    classify_failure,
    open_association,
)
from dicom_nodes.forward.settings import DimseSettings

VERIFICATION = "1.2.840.10008.1.1"


@pytest.mark.parametrize(
    ("connected", "rejected", "by_peer", "elapsed", "kind"),
    [
        (False, False, False, 2.0, FailureKind.CONNECT_TIMEOUT),
        (False, False, False, 0.01, FailureKind.CONNECT_FAILED),
        (True, True, False, 0.01, FailureKind.REJECTED),
        (True, False, True, 0.01, FailureKind.ABORTED_BY_PEER),
        (True, False, False, 5.0, FailureKind.NO_ANSWER),
    ],
)
def test_classification(
    connected: bool, rejected: bool, by_peer: bool, elapsed: float, kind: FailureKind
) -> None:
    got = classify_failure(connected=connected, rejected=rejected, aborted_by_peer=by_peer,
                           elapsed=elapsed, connect_timeout=2.0)  # fmt: skip
    assert got is kind


@pytest.fixture(params=[False, True], ids=["stock", "accelerated"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(_association, "accelerated", lambda: request.param)
    return bool(request.param)


def _listener(backlog: int = 5) -> socket.socket:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(backlog)
    return srv


def _settings(port: int) -> DimseSettings:
    return DimseSettings(name="archive", ae_title="ARCHIVE", host="127.0.0.1", port=port,
                         timeout=0.5, connect_timeout=0.5)  # fmt: skip


def _fail(port: int) -> str:
    with pytest.raises(AssociationFailed) as info:
        open_association(_settings(port), [build_context(VERIFICATION)])
    return str(info.value)


@pytest.fixture
def silent() -> Iterator[int]:
    """Accepts the connection and never answers the A-ASSOCIATE-RQ."""
    srv = _listener()
    yield srv.getsockname()[1]
    srv.close()


def test_our_acse_timeout_is_no_answer_not_an_abort(mode: bool, silent: int) -> None:
    text = _fail(silent)
    assert "no answer from destination archive" in text and "ACSE timeout" in text
    assert "aborted" not in text


def test_a_connect_timeout_is_named(mode: bool) -> None:
    srv = _listener(0)  # a full accept queue: further SYNs are dropped, connect() times out
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    try:
        text = _fail(port)
        assert text.startswith("connect timeout to destination archive")
    finally:
        for c in fillers:
            c.close()
        srv.close()


def test_a_refused_connection_is_named(mode: bool) -> None:
    srv = _listener()
    port = srv.getsockname()[1]
    srv.close()
    assert _fail(port).startswith("cannot connect to destination archive")


def test_an_abort_by_the_destination_stays_one(mode: bool) -> None:
    srv = _listener()

    def abort_on_request() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        # A-ABORT PDU (PS3.8 9.3.8): type 07, length 4, source 2 (service provider), reason 0
        conn.sendall(bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 2, 0]))
        conn.close()

    thread = threading.Thread(target=abort_on_request, daemon=True)
    thread.start()
    try:
        assert "aborted by archive" in _fail(srv.getsockname()[1])
    finally:
        thread.join(5)
        srv.close()
