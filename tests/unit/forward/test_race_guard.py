"""The response-race guard: the reactor's non-blocking poll never takes a response."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from io import BytesIO
from types import SimpleNamespace
from typing import Any

import pytest
from pynetdicom.dimse_primitives import C_STORE

from dicom_nodes.forward._association import _on_conn_open, _ResponseSafeQueue


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


def test_requestor_association_is_event_driven_and_guarded() -> None:
    """A real association against an in-process SCP: the fast requestor classes are used, the
    guard queue is in place, the reactor reports paused while idle, and C-ECHOs work."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    from dicom_nodes.forward._association import FastRequestorAssociation, open_association
    from dicom_nodes.forward.settings import DimseSettings
    from dicom_nodes.scp._fastpath import FastDUL

    scp = AE(ae_title="PEER")
    scp.add_supported_context(Verification)
    server = scp.start_server(("127.0.0.1", 0), block=False)
    try:
        port = server.server_address[1]
        settings = DimseSettings(name="peer", ae_title="PEER", host="127.0.0.1", port=port)
        assoc = open_association(settings, [])
        try:
            assert isinstance(assoc, FastRequestorAssociation)
            assert isinstance(assoc.dul, FastDUL)
            assert not assoc._handlers.get(evt.EVT_PDU_SENT)  # logging handlers unbound
            assert isinstance(assoc.dimse.msg_queue, _ResponseSafeQueue)
            deadline = time.monotonic() + 2
            while not assoc._is_paused and time.monotonic() < deadline:
                time.sleep(0.001)
            assert assoc._is_paused  # idle: a send_*() need not wait for the reactor
            for _ in range(50):
                assert assoc.send_c_echo().Status == 0
        finally:
            assoc.release()
        assert assoc.is_released
        assoc.join(2)
        assert not assoc.is_alive()
    finally:
        server.shutdown()


def test_p_data_tf_encoded_as_pynetdicom_does() -> None:
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.pdu_primitives import P_DATA

    from dicom_nodes.forward._association import encode_p_data_tf

    for values in (
        [(1, b"\x03" + b"c" * 41)],
        [(3, b"\x00" + bytes(range(256)) * 64), (5, b"\x02")],
    ):
        primitive = P_DATA()
        primitive.presentation_data_value_list = [[cx, value] for cx, value in values]
        assert encode_p_data_tf(primitive) == P_DATA_TF(primitive).encode()


def test_requestor_dul_writes_queued_p_data_and_rewakes_for_the_rest() -> None:
    """P-DATA requests beyond one write stay queued and the reactor is woken for them (a
    missing wake-up left them until the next timer tick: 50 ms stalls)."""
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.pdu_primitives import P_DATA

    from dicom_nodes.forward._association import _WRITE_CHUNK, _FastRequestorDUL

    sent: list[bytes] = []
    wakes: list[int] = []
    dul: Any = object.__new__(_FastRequestorDUL)
    dul.to_provider_queue = queue.Queue()
    dul.event_queue = queue.Queue()
    dul.state_machine = SimpleNamespace(current_state="Sta6")
    dul.socket = SimpleNamespace(send=sent.append)
    dul._assoc = SimpleNamespace(_handlers={})
    dul._waker = SimpleNamespace(wake=lambda: wakes.append(1))
    fragment = b"\x00" + b"x" * 16_000
    count = 2 * _WRITE_CHUNK // len(fragment) + 3
    expected = b""
    for _ in range(count):
        primitive = P_DATA()
        primitive.presentation_data_value_list = [[1, fragment]]
        dul.to_provider_queue.put(primitive)
        expected += P_DATA_TF(primitive).encode()
    rounds = 0
    while dul.to_provider_queue.qsize():
        assert dul._process_recv_primitive()
        rounds += 1
        assert len(wakes) == (rounds if dul.to_provider_queue.qsize() else rounds - 1)
    assert rounds == 3
    assert b"".join(sent) == expected
