"""dicom_nodes.scp._fastpath: encoders equal pynetdicom's byte for byte, the reactors behave.

The association tests run a pynetdicom SCU against an in-process pynetdicom SCP on loopback,
with and without the fast path installed, and compare what the SCU sees.
"""

from __future__ import annotations

import copy
import io
import os
import select
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE, _config, evt
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta, decode, encode
from pynetdicom.presentation import (
    PresentationContext,
    StoragePresentationContexts,
    negotiate_as_acceptor,
)
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from dicom_nodes.scp import _fastpath
from dicom_nodes.scp._fastpath import (
    FastAssociation,
    FastDIMSE,
    FastDUL,
    IncompatiblePynetdicom,
    check_version,
    decode_store_rq,
    encode_file_meta,
    encode_store_rsp,
    parse_pdv_items,
    share_contexts,
    store_rq_primitive,
)
from tests.support.data import PYDICOM_FILES

CT = PYDICOM_FILES / "CT_small.dcm"
UIDS = [
    "1.2.840.10008.5.1.4.1.1.2",  # even length
    "1.2.840.10008.5.1.4.1.1.20",  # odd length
    "1.2.3",
    "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678",  # 64 characters
    "1.2.826.0.1.3680043.8.498.1234567890123456789012345678901234567",  # 63
]


# --------------------------------------------------------------------------- version pin


def test_version_check_accepts_the_pinned_version_only() -> None:
    check_version()
    check_version(_fastpath.PINNED_PYNETDICOM)
    for other in ("3.0.5", "3.1.0", "2.1.1", "4.0.0.dev0"):
        with pytest.raises(IncompatiblePynetdicom, match=other):
            check_version(other)


# --------------------------------------------------------------------------- PDV items


def _pdv(context_id: int, value: bytes) -> bytes:
    return struct.pack(">LB", len(value) + 1, context_id) + value


def test_parse_pdv_items_splits_without_copying() -> None:
    body = bytearray(_pdv(1, b"\x03command") + _pdv(3, b"\x02" + b"x" * 1000))
    items = parse_pdv_items(memoryview(body))
    assert [(cid, bytes(v)) for cid, v in items] == [
        (1, b"\x03command"),
        (3, b"\x02" + b"x" * 1000),
    ]
    body[5] = 0x01  # the views share the PDU's buffer
    assert items[0][1][0] == 0x01


def test_parse_pdv_items_empty_body() -> None:
    assert parse_pdv_items(memoryview(b"")) == []


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x00",  # truncated item length
        struct.pack(">LB", 1, 1),  # no message control header
        struct.pack(">L", 0),  # zero length
        struct.pack(">LB", 10, 1) + b"\x03abc",  # runs past the end
        _pdv(1, b"\x03ok") + b"\x00",  # trailing garbage
    ],
)
def test_parse_pdv_items_rejects_malformed(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_pdv_items(memoryview(body))


# --------------------------------------------------------------------------- encoders


def _pynetdicom_rsp_bytes(rsp: C_STORE) -> bytes:
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    out = encode(msg.command_set, True, True)
    assert out is not None
    return out


@pytest.mark.parametrize("sop_class", UIDS)
@pytest.mark.parametrize("sop_instance", [*UIDS, None])
@pytest.mark.parametrize(("msg_id", "status"), [(1, 0x0000), (65535, 0xA700), (7, 0xC211)])
def test_store_rsp_matches_pynetdicom(
    sop_class: str, sop_instance: str | None, msg_id: int, status: int
) -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = msg_id
    rsp.AffectedSOPClassUID = sop_class
    if sop_instance is not None:
        rsp.AffectedSOPInstanceUID = sop_instance
    rsp.Status = status
    assert encode_store_rsp(rsp) == _pynetdicom_rsp_bytes(rsp)


def test_store_rsp_leaves_optional_fields_to_pynetdicom() -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 1
    rsp.AffectedSOPClassUID = UIDS[0]
    rsp.AffectedSOPInstanceUID = UIDS[1]
    rsp.Status = 0xC000
    rsp.ErrorComment = "cannot understand"
    assert encode_store_rsp(rsp) is None
    rsp.ErrorComment = None
    rsp.OffendingElement = [0x00080018]
    assert encode_store_rsp(rsp) is None
    rsp.OffendingElement = None
    rsp.Status = None
    assert encode_store_rsp(rsp) is None


@pytest.mark.parametrize("sop_class", UIDS)
@pytest.mark.parametrize("sop_instance", UIDS)
@pytest.mark.parametrize(
    "ts", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.90"]
)
def test_file_meta_matches_pynetdicom(sop_class: str, sop_instance: str, ts: str) -> None:
    expected = io.BytesIO()
    expected.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(
        expected,  # type: ignore[arg-type]
        create_file_meta(
            sop_class_uid=pydicom.uid.UID(sop_class),
            sop_instance_uid=pydicom.uid.UID(sop_instance),
            transfer_syntax=pydicom.uid.UID(ts),
        ),
    )
    assert encode_file_meta(sop_class, sop_instance, ts) == expected.getvalue()


def test_file_meta_reads_back() -> None:
    raw = encode_file_meta(UIDS[0], UIDS[1], "1.2.840.10008.1.2.1")
    meta = pydicom.filereader.read_preamble(io.BytesIO(raw), False)
    assert meta == b"\x00" * 128
    ds = pydicom.dcmread(io.BytesIO(raw + _minimal_dataset()), force=True)
    assert ds.file_meta.MediaStorageSOPClassUID == UIDS[0]
    assert ds.file_meta.MediaStorageSOPInstanceUID == UIDS[1]
    assert ds.file_meta.FileMetaInformationGroupLength == len(raw) - 144


def _minimal_dataset() -> bytes:
    ds = Dataset()
    ds.PatientID = "X"
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=False, little_endian=True)
    return buf.getvalue()


# --------------------------------------------------------------------------- wake-ups


def test_waker_and_waking_queue() -> None:
    waker = _fastpath._Waker()
    try:
        assert select.select([waker.fd], [], [], 0)[0] == []
        queue = _fastpath._WakingQueue(waker.wake)
        queue.put("x")
        assert select.select([waker.fd], [], [], 0)[0] == [waker.fd]
        waker.drain()
        assert select.select([waker.fd], [], [], 0)[0] == []
        assert queue.get_nowait() == "x"
    finally:
        waker.close()
    waker.close()
    waker.wake()  # after close: ignored, never writes to a reused descriptor
    assert waker.closed


# --------------------------------------------------------------------------- contexts


def test_shared_contexts_survive_deepcopy_and_negotiate_the_same() -> None:
    supported = [PresentationContext() for _ in range(3)]
    for cx, uid in zip(supported, (Verification, CTImageStorage, UIDS[1]), strict=True):
        cx.abstract_syntax = uid
        cx.transfer_syntax = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
    originals = copy.deepcopy(supported)
    share_contexts(supported)
    copied = copy.deepcopy(supported)
    assert all(a is b for a, b in zip(copied, supported, strict=True))
    requested = PresentationContext()
    requested.context_id = 1
    requested.abstract_syntax = CTImageStorage
    requested.transfer_syntax = ["1.2.840.10008.1.2"]
    got, _ = negotiate_as_acceptor([requested], copied)
    want, _ = negotiate_as_acceptor([requested], originals)
    assert [(c.context_id, c.result, c.transfer_syntax) for c in got] == [
        (c.context_id, c.result, c.transfer_syntax) for c in want
    ]
    assert [cx.transfer_syntax for cx in supported] == [cx.transfer_syntax for cx in originals]


# --------------------------------------------------------------------------- associations


class _Scp:
    """An in-process pynetdicom Storage SCP, optionally with the fast path."""

    def __init__(self, incoming: Path, fast: bool, extra_handlers: list[Any] | None = None):
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
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        if fast:
            _fastpath.install(self.server)
        self.port = self.server.server_address[1]

    def _store(self, event: Any) -> Any:
        self.stored.append(Path(event.dataset_path).read_bytes())
        return self.status

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def chunked(tmp_path: Path) -> Iterator[Path]:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    saved = (_config.STORE_RECV_CHUNKED_DATASET, tempfile.tempdir, _config.LOG_HANDLER_LEVEL)
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.LOG_HANDLER_LEVEL = "none"
    tempfile.tempdir = str(incoming)
    yield incoming
    _config.STORE_RECV_CHUNKED_DATASET, tempfile.tempdir, _config.LOG_HANDLER_LEVEL = saved


def _scu(port: int, max_pdu: int = 16382) -> Any:
    ae = AE(ae_title="SCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    ae.maximum_pdu_size = max_pdu
    assoc = ae.associate("127.0.0.1", port, ae_title="FASTSCP", max_pdu=max_pdu)
    assert assoc.is_established
    return assoc


def _wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def _exchange(scp: _Scp, max_pdu: int = 16382) -> tuple[list[int], Any]:
    ds = pydicom.dcmread(CT)
    assoc = _scu(scp.port, max_pdu)
    statuses = [int(assoc.send_c_echo().Status)]
    for _ in range(3):
        rsp = assoc.send_c_store(ds)
        statuses.append(int(rsp.Status))
    last = rsp
    assoc.release()
    return statuses, last


@pytest.mark.parametrize("max_pdu", [16382, 0, 4096])
def test_fast_and_standard_paths_store_the_same_bytes(chunked: Path, max_pdu: int) -> None:
    results = {}
    for fast in (False, True):
        scp = _Scp(chunked, fast)
        try:
            statuses, _ = _exchange(scp, max_pdu)
            assert _wait_until(lambda s=scp: not any(a.is_alive() for a in s.associations))
        finally:
            scp.stop()
        assert statuses == [0, 0, 0, 0]
        results[fast] = scp.stored
        if fast:
            assoc = scp.associations[0]
            assert isinstance(assoc, FastAssociation)
            assert isinstance(assoc.dul, FastDUL) and isinstance(assoc.dimse, FastDIMSE)
    assert results[True] == results[False] and len(results[True]) == 3
    stored = pydicom.dcmread(io.BytesIO(results[True][0]))
    assert stored.SOPInstanceUID == pydicom.dcmread(CT).SOPInstanceUID
    # Nothing left behind: pynetdicom removes the handler's file, we remove the spare.
    assert list(chunked.iterdir()) == []


def test_failure_status_with_error_comment_goes_through_pynetdicom(chunked: Path) -> None:
    scp = _Scp(chunked, fast=True)
    status = Dataset()
    status.Status = 0xC000
    status.ErrorComment = "refused in test"
    scp.status = status
    try:
        ds = pydicom.dcmread(CT)
        assoc = _scu(scp.port)
        rsp = assoc.send_c_store(ds)
        assoc.release()
    finally:
        scp.stop()
    assert rsp.Status == 0xC000
    assert rsp.ErrorComment == "refused in test"


def test_pdu_event_handlers_disable_the_shortcut(chunked: Path) -> None:
    seen: list[str] = []
    handlers = [(evt.EVT_PDU_RECV, lambda event: seen.append(type(event.pdu).__name__))]
    scp = _Scp(chunked, fast=True, extra_handlers=handlers)
    try:
        statuses, _ = _exchange(scp)
    finally:
        scp.stop()
    assert statuses == [0, 0, 0, 0]
    assert seen.count("P_DATA_TF") >= 4  # every P-DATA-TF decoded by pynetdicom


def test_release_ends_the_association_thread_quickly(chunked: Path) -> None:
    scp = _Scp(chunked, fast=True)
    try:
        assoc = _scu(scp.port)
        assert int(assoc.send_c_echo().Status) == 0
        started = time.monotonic()
        assoc.release()
        assert _wait_until(lambda: not scp.associations[0].is_alive(), timeout=2)
        assert time.monotonic() - started < 0.5
        assert not scp.associations[0].dul.is_alive()
    finally:
        scp.stop()


def test_peer_abort_is_seen(chunked: Path) -> None:
    aborted = threading.Event()
    handlers = [(evt.EVT_ABORTED, lambda event: aborted.set())]
    scp = _Scp(chunked, fast=True, extra_handlers=handlers)
    try:
        assoc = _scu(scp.port)
        assoc.abort()
        assert aborted.wait(2)
        assert _wait_until(lambda: not scp.associations[0].is_alive(), timeout=2)
    finally:
        scp.stop()


def test_malformed_pdata_aborts_the_association(chunked: Path) -> None:
    scp = _Scp(chunked, fast=True)
    try:
        assoc = _scu(scp.port)
        bad_item = struct.pack(">LB", 50, 1) + b"\x03short"  # item longer than the PDU
        pdu = struct.pack(">BBL", 0x04, 0, len(bad_item)) + bad_item
        assoc.dul.socket.send(pdu)
        assert _wait_until(lambda: assoc.is_aborted, timeout=3)
        assert _wait_until(lambda: not scp.associations[0].is_alive(), timeout=3)
    finally:
        if assoc.is_established:
            assoc.abort()
        scp.stop()
    assert scp.stored == []


def test_idle_association_times_out(chunked: Path) -> None:
    scp = _Scp(chunked, fast=True)
    scp.server.ae.network_timeout = 0.3
    try:
        assoc = _scu(scp.port)
        assert _wait_until(lambda: assoc.is_aborted or not assoc.is_established, timeout=3)
        assert _wait_until(lambda: not scp.associations[0].is_alive(), timeout=3)
    finally:
        scp.stop()


def test_upgrade_refuses_a_started_association(chunked: Path) -> None:
    scp = _Scp(chunked, fast=True)
    try:
        assoc = _scu(scp.port)
        with pytest.raises(RuntimeError):
            _fastpath.upgrade_association(assoc)
        assoc.release()
    finally:
        scp.stop()


def test_spare_file_is_created_after_a_store_and_removed_at_the_end(chunked: Path) -> None:
    scp = _Scp(chunked, fast=True)
    try:
        assoc = _scu(scp.port)
        assert int(assoc.send_c_store(pydicom.dcmread(CT)).Status) == 0
        spare = scp.associations[0].dimse._spare
        assert spare is not None and Path(spare.name).parent == chunked
        assert os.path.exists(spare.name)
        assoc.release()
        assert _wait_until(lambda: not scp.associations[0].is_alive(), timeout=2)
    finally:
        scp.stop()
    assert _wait_until(lambda: list(chunked.iterdir()) == [], timeout=2)


# --------------------------------------------------------------------------- C-STORE-RQ


def _rq_command(**fields: Any) -> bytes:
    rq = C_STORE()
    rq.MessageID = fields.get("MessageID", 7)
    rq.AffectedSOPClassUID = fields.get("AffectedSOPClassUID", UIDS[0])
    rq.AffectedSOPInstanceUID = fields.get("AffectedSOPInstanceUID", UIDS[1])
    rq.Priority = fields.get("Priority", 2)
    if "MoveOriginatorApplicationEntityTitle" in fields:
        rq.MoveOriginatorApplicationEntityTitle = fields["MoveOriginatorApplicationEntityTitle"]
        rq.MoveOriginatorMessageID = fields.get("MoveOriginatorMessageID", 3)
    rq.DataSet = io.BytesIO(b"\x08\x00\x18\x00\x00\x00\x00\x00")
    msg = C_STORE_RQ()
    msg.primitive_to_message(rq)
    out = encode(msg.command_set, True, True)
    assert out is not None
    return out


def _pynetdicom_rq(command: bytes) -> C_STORE:
    msg = C_STORE_RQ()
    msg.command_set = decode(io.BytesIO(command), True, True)
    msg.context_id = 1
    primitive = msg.message_to_primitive()
    assert isinstance(primitive, C_STORE)
    return primitive


_RQ_FIELDS = (
    "MessageID",
    "AffectedSOPClassUID",
    "AffectedSOPInstanceUID",
    "Priority",
    "MoveOriginatorApplicationEntityTitle",
    "MoveOriginatorMessageID",
)


@pytest.mark.parametrize("sop_class", UIDS)
@pytest.mark.parametrize("sop_instance", UIDS[:3])
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"Priority": 0, "MessageID": 65535},
        {"Priority": 1, "MoveOriginatorApplicationEntityTitle": "MOVER"},
        {"MoveOriginatorApplicationEntityTitle": "A B C 16 CHARS!", "MoveOriginatorMessageID": 9},
    ],
)
def test_store_rq_decoding_matches_pynetdicom(
    sop_class: str, sop_instance: str, extra: dict[str, Any]
) -> None:
    command = _rq_command(
        AffectedSOPClassUID=sop_class, AffectedSOPInstanceUID=sop_instance, **extra
    )
    values = decode_store_rq(command)
    assert values is not None
    fast, reference = store_rq_primitive(values), _pynetdicom_rq(command)
    for name in _RQ_FIELDS:
        assert getattr(fast, name) == getattr(reference, name), name
        assert type(getattr(fast, name)) is type(getattr(reference, name)), name


def _element(elem: int, raw: bytes) -> bytes:
    return struct.pack("<HHI", 0, elem, len(raw)) + raw


def _replace(command: bytes, elem: int, raw: bytes | None) -> bytes:
    """*command* with element *elem* replaced by *raw* (or dropped); group length not updated."""
    out = b""
    pos = 0
    while pos < len(command):
        _, e, length = struct.unpack_from("<HHI", command, pos)
        chunk = command[pos : pos + 8 + length]
        if e == elem:
            chunk = b"" if raw is None else _element(elem, raw)
        out += chunk
        pos += 8 + length
    return out


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: _replace(c, 0x0002, b"1.2.840.10008.5.1.4.1.1.2 "),  # space padding
        lambda c: _replace(c, 0x0002, b"1.2.3\\1.2.4\x00"),  # two values
        lambda c: _replace(c, 0x1000, None),  # no SOP Instance UID
        lambda c: _replace(c, 0x0800, None),  # no Command Data Set Type
        lambda c: _replace(c, 0x0110, b"\x01\x00\x02\x00"),  # two message IDs
        lambda c: c + _element(0x0902, b"comment "),  # an element C-STORE-RQ does not have
        lambda c: c + _element(0x0110, b"\x01\x00"),  # repeated element
        lambda c: c[:-3],  # truncated
        lambda c: _replace(c, 0x0100, b"\x30\x00"),  # C-ECHO-RQ
        lambda c: c + _element(0x1030, b"BAD\\AE"),
    ],
)
def test_store_rq_decoding_leaves_odd_encodings_to_pynetdicom(mutate: Any) -> None:
    assert decode_store_rq(mutate(_rq_command())) is None


def test_store_rq_primitive_validates_like_pynetdicom() -> None:
    with pytest.raises(ValueError):
        store_rq_primitive({0x0002: UIDS[0], 0x1000: UIDS[1], 0x0700: 7, 0x0800: 1})


def test_odd_command_encoding_still_stores(chunked: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A C-STORE-RQ the direct decoding declines goes through pydicom's decoding."""
    calls: list[Any] = []

    def declining(command: Any) -> Any:
        calls.append(decode_store_rq(command))
        return None  # as if the encoding were unusual

    monkeypatch.setattr(_fastpath, "decode_store_rq", declining)
    scp = _Scp(chunked, fast=True)
    try:
        assoc = _scu(scp.port)
        assert int(assoc.send_c_store(pydicom.dcmread(CT)).Status) == 0
        assoc.release()
    finally:
        scp.stop()
    assert calls and calls[0] is not None
    stored = pydicom.dcmread(io.BytesIO(scp.stored[0]))
    assert stored.SOPInstanceUID == pydicom.dcmread(CT).SOPInstanceUID


def test_idle_association_waits_instead_of_polling(
    chunked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    original = FastDUL._wait

    def counting(self: FastDUL) -> bool:
        waits.append(time.monotonic())
        return original(self)

    monkeypatch.setattr(FastDUL, "_wait", counting)
    scp = _Scp(chunked, fast=True)
    try:
        assoc = _scu(scp.port)
        assert int(assoc.send_c_echo().Status) == 0
        time.sleep(0.1)
        before = len(waits)
        time.sleep(0.5)
        idle_waits = len(waits) - before
        assert scp.associations[0].dul._spurious == 0
        assoc.release()
    finally:
        scp.stop()
    # ~10 wake-ups per 0.5 s (MAX_WAIT = 50 ms), not pynetdicom's ~500.
    assert idle_waits <= 0.5 / _fastpath.MAX_WAIT + 5


def test_start_writeback_accepts_any_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    with path.open("wb") as fh:
        fh.write(b"x" * 300_000)
        fh.flush()
        _fastpath.start_writeback(fh.fileno())
    assert path.read_bytes() == b"x" * 300_000


def test_write_back_starts_while_a_dataset_arrives(
    chunked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(_fastpath, "WRITEBACK_CHUNK", 1)
    monkeypatch.setattr(_fastpath, "start_writeback", calls.append)
    scp = _Scp(chunked, fast=True)
    try:
        assoc = _scu(scp.port)  # CT_small: 3 dataset fragments of at most 16 KiB
        assert int(assoc.send_c_store(pydicom.dcmread(CT)).Status) == 0
        assoc.release()
    finally:
        scp.stop()
    assert len(calls) == 2  # after each fragment but the last
    stored = pydicom.dcmread(io.BytesIO(scp.stored[0]))
    assert stored.PixelData == pydicom.dcmread(CT).PixelData
