"""The response-race guard: the reactor's non-blocking poll never takes a response."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from io import BytesIO
from types import SimpleNamespace
from typing import Any

import pynetdicom
import pytest
from pynetdicom.dimse_primitives import C_STORE

from dicom_nodes import accelerator
from dicom_nodes.forward._association import _Accelerator, _on_conn_open, _ResponseSafeQueue


def _request() -> C_STORE:
    req = C_STORE()
    req.MessageID = 7
    req.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    req.AffectedSOPInstanceUID = "1.2.3.4"
    req.Priority = 2
    req.DataSet = BytesIO(b"\x08\x00\x18\x00\x00\x00\x00\x00")
    return req


def _response(msg_id: int = 1) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = msg_id
    rsp.Status = 0
    return rsp


def test_nonblocking_get_leaves_responses_for_the_waiting_sender() -> None:
    q = _ResponseSafeQueue()
    rsp = _response()
    q.put((1, rsp))
    with pytest.raises(queue.Empty):
        q.get(block=False)  # the reactor's poll
    assert q.get(block=True, timeout=1) == (1, rsp)  # send_c_store's wait


def test_nonblocking_get_still_serves_requests() -> None:
    q = _ResponseSafeQueue()
    req = _request()
    q.put((3, req))
    assert q.get(block=False) == (3, req)
    with pytest.raises(queue.Empty):
        q.get(block=False)


def _race(q: queue.Queue[Any], rounds: int) -> int:
    """A reactor thread polls like pynetdicom's; the sender puts a response and waits for it.
    Returns how many responses the reactor stole."""
    stolen = 0
    stop = threading.Event()

    def reactor() -> None:
        nonlocal stolen
        while not stop.is_set():
            try:
                q.get(block=False)
                stolen += 1
            except queue.Empty:
                time.sleep(0)

    thread = threading.Thread(target=reactor)
    thread.start()
    try:
        for n in range(rounds):
            q.put((1, _response(n)))
            time.sleep(0.001)  # the response is in the queue while both threads run
            with contextlib.suppress(queue.Empty):
                q.get(block=True, timeout=0.05)
    finally:
        stop.set()
        thread.join()
    return stolen


def test_plain_queue_loses_responses_the_guard_does_not() -> None:
    assert _race(queue.Queue(), 50) > 0  # the failure mode, made frequent
    assert _race(_ResponseSafeQueue(), 50) == 0


def test_conn_open_installs_the_guard_and_keeps_queued_items() -> None:
    old: queue.Queue[Any] = queue.Queue()
    item = (1, _request())
    old.put(item)
    assoc = SimpleNamespace(
        dul=SimpleNamespace(socket=SimpleNamespace(socket=None)),
        dimse=SimpleNamespace(msg_queue=old),
    )
    _on_conn_open(SimpleNamespace(assoc=assoc))
    assert isinstance(assoc.dimse.msg_queue, _ResponseSafeQueue)
    assert assoc.dimse.msg_queue.get(block=False) == item
    assert assoc.radiogate_connected is True


def test_guard_queue_notifies_on_put() -> None:
    calls: list[int] = []
    q = _ResponseSafeQueue(lambda: calls.append(1))
    q.put((1, _response()))
    assert calls == [1]


def _accelerated(on: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Force forward.accelerate for this test: on (if pynetdicom is verified) or off."""
    if on and pynetdicom.__version__ not in accelerator.VERIFIED_PYNETDICOM:
        pytest.skip(
            f"pynetdicom {pynetdicom.__version__} is not among the accelerator's verified "
            f"versions {accelerator.VERIFIED_PYNETDICOM}"
        )
    monkeypatch.setattr(_Accelerator, "enabled", on)


@pytest.mark.parametrize("accelerate", [True, False], ids=["accelerated", "stock"])
def test_requested_association_is_guarded(
    accelerate: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real association against an in-process SCP: the guard queue is in place (and wakes
    the accelerated reactor), and many back-to-back C-ECHOs all get their response."""
    from pynetdicom import AE
    from pynetdicom.association import Association
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    from dicom_nodes.forward._association import open_association
    from dicom_nodes.forward.settings import DimseSettings

    _accelerated(accelerate, monkeypatch)
    scp = AE(ae_title="PEER")
    scp.add_supported_context(Verification)
    server = scp.start_server(("127.0.0.1", 0), block=False)
    assert server is not None  # not blocking: the running server is returned
    try:
        port = server.server_address[1]
        settings = DimseSettings(name="peer", ae_title="PEER", host="127.0.0.1", port=port)
        assoc = open_association(settings, [])
        try:
            queue_ = assoc.dimse.msg_queue
            assert isinstance(queue_, _ResponseSafeQueue)
            assert (type(assoc) is Association) is not accelerate
            assert (queue_._notify is not None) is accelerate
            for _ in range(50):
                assert assoc.send_c_echo().Status == 0
        finally:
            assoc.release()
        assert assoc.is_released
        assoc.join(2)
        assert not assoc.is_alive()
    finally:
        server.shutdown()
