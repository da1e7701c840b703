"""The accelerator on the requesting side (the forwarder): event-driven reactor, P-DATA-TF
written directly, logging handlers unbound; C-STOREs give what stock pynetdicom gives."""

from __future__ import annotations

import queue
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from dicom_nodes.accelerator import PARTS, Part, requestor_ae
from dicom_nodes.dimse import codec
from dicom_nodes.forward.pool import STUDY_ROOT_FIND as FIND
from tests.unit.accelerator.support import CT, Scp, skip_unless_verified

skip_unless_verified()

from dicom_nodes.accelerator._association import FastRequestorAssociation  # noqa: E402
from dicom_nodes.accelerator._dimse import FastDIMSE  # noqa: E402
from dicom_nodes.accelerator._dul import WRITE_CHUNK, RequestorDUL  # noqa: E402


def _associate(ae: Any, port: int) -> Any:
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", port, ae_title="FASTSCP")
    assert assoc.is_established
    return assoc


def test_requestor_is_event_driven(chunked: Path) -> None:
    scp = Scp(chunked, parts=())
    try:
        assoc = _associate(requestor_ae("SCU", True), scp.port)
        try:
            assert isinstance(assoc, FastRequestorAssociation)
            assert isinstance(assoc.dul, RequestorDUL)
            assert not assoc._handlers.get(evt.EVT_PDU_SENT)  # logging handlers unbound
            deadline = time.monotonic() + 2
            while not assoc._is_paused and time.monotonic() < deadline:
                time.sleep(0.001)
            assert assoc._is_paused  # idle: a send_*() need not wait for the reactor
            for _ in range(20):
                assert assoc.send_c_echo().Status == 0
        finally:
            assoc.release()
        assoc.join(2)
        assert not assoc.is_alive()
    finally:
        scp.stop()


@pytest.mark.parametrize("max_pdu", [16382, 4096])
def test_accelerated_requestor_sends_the_same_bytes(chunked: Path, max_pdu: int) -> None:
    stored: dict[bool, list[bytes]] = {}
    for accelerate in (False, True):
        scp = Scp(chunked, parts=())
        scp.server.ae.maximum_pdu_size = max_pdu
        try:
            assoc = _associate(requestor_ae("SCU", accelerate), scp.port)
            assert (type(assoc) is Association) is not accelerate
            for _ in range(3):
                assert assoc.send_c_store(pydicom.dcmread(CT)).Status == 0
            assoc.release()
        finally:
            scp.stop()
        stored[accelerate] = scp.stored
    assert stored[True] == stored[False] and len(stored[True]) == 3


def test_stock_requestor_ae_is_pynetdicoms() -> None:
    from pynetdicom import AE

    assert type(requestor_ae("SCU", False)) is AE


def test_requestor_dul_writes_queued_p_data_and_rewakes_for_the_rest() -> None:
    """P-DATA requests beyond one write stay queued and the reactor is woken for them (a
    missing wake-up left them until the next timer tick: 50 ms stalls)."""
    sent: list[bytes] = []
    wakes: list[int] = []
    dul: Any = object.__new__(RequestorDUL)
    dul.to_provider_queue = queue.Queue()
    dul.event_queue = queue.Queue()
    dul.state_machine = SimpleNamespace(current_state="Sta6")
    dul.socket = SimpleNamespace(send=sent.append)
    dul._assoc = SimpleNamespace(_handlers={})
    dul._waker = SimpleNamespace(wake=lambda: wakes.append(1))
    dul._parts = PARTS
    fragment = b"\x00" + b"x" * 16_000
    count = 2 * WRITE_CHUNK // len(fragment) + 3
    expected = b""
    for _ in range(count):
        primitive = P_DATA()
        # The setter accepts [context id, bytes] lists only, whatever its annotation says.
        primitive.presentation_data_value_list = [[1, fragment]]  # type: ignore[list-item]
        dul.to_provider_queue.put(primitive)
        expected += P_DATA_TF(primitive).encode()
    rounds = 0
    while dul.to_provider_queue.qsize():
        assert dul._process_recv_primitive()
        rounds += 1
        assert len(wakes) == (rounds if dul.to_provider_queue.qsize() else rounds - 1)
    assert rounds == 3
    assert b"".join(sent) == expected


def test_requestor_without_p_data_part_uses_the_state_machine() -> None:
    dul: Any = object.__new__(RequestorDUL)
    dul._parts = PARTS - {Part.P_DATA}
    dul.state_machine = SimpleNamespace(current_state="Sta6")
    dul.event_queue = queue.Queue()
    dul.socket = object()
    dul._assoc = SimpleNamespace(_handlers={})
    assert not dul._fast_send_allowed()


def _responder() -> Any:
    """A stock pynetdicom SCP answering C-STORE (a warning with an Error Comment for the second
    instance: an optional field, pynetdicom's path) and Study Root C-FIND (three matches)."""
    stored: list[int] = []

    def store(event: Any) -> Any:
        stored.append(1)
        if len(stored) % 2:
            return 0x0000
        status = Dataset()
        status.Status = 0xB000
        status.ErrorComment = "coerced"
        return status

    def find(event: Any) -> Any:
        for n in range(3):
            match = Dataset()
            match.QueryRetrieveLevel = "IMAGE"
            match.SOPInstanceUID = f"1.2.3.{n}"
            match.SOPClassUID = CTImageStorage
            yield 0xFF00, match
        yield 0x0000, None

    ae = AE(ae_title="FASTSCP")
    ae.add_supported_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    ae.add_supported_context(FIND)
    handlers: list[Any] = [(evt.EVT_C_STORE, store), (evt.EVT_C_FIND, find)]
    return ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)


def test_accelerated_requestor_reads_the_same_responses(monkeypatch: pytest.MonkeyPatch) -> None:
    """C-STORE-RSPs and C-FIND-RSPs parsed directly (``responses``) give what pynetdicom's
    decoding gives: statuses, optional fields, identifiers."""
    direct: list[int] = []
    decode_response = codec.decode_response

    def counted(command: bytes) -> Any:
        values = decode_response(command)
        if values is not None:
            direct.append(int(values[0x0100]))
        return values

    monkeypatch.setattr(codec, "decode_response", counted)
    server = _responder()
    seen: dict[bool, list[Any]] = {}
    try:
        for accelerate in (False, True):
            ae = requestor_ae("SCU", accelerate)
            ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1"])
            ae.add_requested_context(FIND)
            assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="FASTSCP")
            assert assoc.is_established
            assert isinstance(assoc.dimse, FastDIMSE) is accelerate
            out: list[Any] = []
            for _ in range(2):
                rsp = assoc.send_c_store(pydicom.dcmread(CT))
                out.append((int(rsp.Status), rsp.get("ErrorComment")))
            query = Dataset()
            query.QueryRetrieveLevel = "IMAGE"
            query.SOPInstanceUID = ""
            query.SOPClassUID = ""
            for status, identifier in assoc.send_c_find(query, FIND):
                out.append(
                    (
                        int(status.Status),
                        identifier and (identifier.SOPInstanceUID, identifier.SOPClassUID),
                    )
                )
            assoc.release()
            seen[accelerate] = out
    finally:
        server.shutdown()
    assert seen[True] == seen[False]
    # the plain responses took the direct path; the one with an Error Comment did not
    assert direct == [0x8001] + [0x8020] * 4
    assert seen[True][:2] == [(0x0000, None), (0xB000, "coerced")]
    assert [s for s, _ in seen[True][2:]] == [0xFF00] * 3 + [0x0000]
