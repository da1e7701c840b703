"""dicom_nodes.dimse.codec: every encoding equals pynetdicom's byte for byte (installed version).

No accelerator involved: these hold for any pynetdicom the project allows, and run always.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom.dimse_messages import _MESSAGE_TYPES, C_FIND_RSP, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.dsutils import create_file_meta, decode, encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from dicom_nodes.dimse.codec import (
    decode_response,
    decode_store_rq,
    encode_file_meta,
    encode_p_data_tf,
    encode_store_rq,
    encode_store_rsp,
    parse_pdv_items,
    read_part10_meta,
    response_primitive,
    store_rq_primitive,
)

UIDS = [
    "1.2.840.10008.5.1.4.1.1.2",  # even length
    "1.2.840.10008.5.1.4.1.1.20",  # odd length
    "1.2.3",
    "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678",  # 64 characters
    "1.2.826.0.1.3680043.8.498.1234567890123456789012345678901234567",  # 63
]


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


def test_parse_pdv_items_reads_what_pynetdicom_encodes() -> None:
    primitive = P_DATA()
    values = [(1, b"\x03" + b"c" * 41), (3, b"\x00" + bytes(range(256)) * 4), (5, b"\x02")]
    # The setter accepts [context id, bytes] lists only, whatever its annotation says.
    primitive.presentation_data_value_list = [[cx, value] for cx, value in values]  # type: ignore[misc]
    pdu = P_DATA_TF(primitive).encode()
    assert [(cx, bytes(v)) for cx, v in parse_pdv_items(memoryview(pdu)[6:])] == values


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


def test_p_data_tf_encoded_as_pynetdicom_does() -> None:
    for values in (
        [(1, b"\x03" + b"c" * 41)],
        [(3, b"\x00" + bytes(range(256)) * 64), (5, b"\x02")],
    ):
        primitive = P_DATA()
        # The setter accepts [context id, bytes] lists only, whatever its annotation says.
        primitive.presentation_data_value_list = [[cx, value] for cx, value in values]  # type: ignore[misc]
        assert encode_p_data_tf(primitive) == P_DATA_TF(primitive).encode()


# --------------------------------------------------------------------------- C-STORE-RSP


def _command_bytes(message: Any, primitive: Any) -> bytes:
    """The command set of *primitive* as pynetdicom encodes it in *message* (a message class)."""
    msg = message()
    msg.primitive_to_message(primitive)
    out = encode(msg.command_set, True, True)
    assert out is not None
    return bytes(out)


def _pynetdicom_rsp_bytes(rsp: C_STORE) -> bytes:
    return _command_bytes(C_STORE_RSP, rsp)


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
    # pynetdicom annotates these optional fields as always None.
    rsp.ErrorComment = "cannot understand"  # type: ignore[assignment]
    assert encode_store_rsp(rsp) is None
    rsp.ErrorComment = None
    rsp.OffendingElement = [0x00080018]  # type: ignore[assignment]
    assert encode_store_rsp(rsp) is None
    rsp.OffendingElement = None
    rsp.Status = None
    assert encode_store_rsp(rsp) is None


# --------------------------------------------------------------------------- File Meta


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


# --------------------------------------------------------------------------- C-STORE-RQ


def rq_command(**fields: Any) -> bytes:
    """A C-STORE-RQ command set as pynetdicom encodes it."""
    rq = C_STORE()
    rq.MessageID = fields.get("MessageID", 7)
    rq.AffectedSOPClassUID = fields.get("AffectedSOPClassUID", UIDS[0])
    rq.AffectedSOPInstanceUID = fields.get("AffectedSOPInstanceUID", UIDS[1])
    rq.Priority = fields.get("Priority", 2)
    if "MoveOriginatorApplicationEntityTitle" in fields:
        rq.MoveOriginatorApplicationEntityTitle = fields["MoveOriginatorApplicationEntityTitle"]
        rq.MoveOriginatorMessageID = fields.get("MoveOriginatorMessageID", 3)
    rq.DataSet = io.BytesIO(b"\x08\x00\x18\x00\x00\x00\x00\x00")
    return _command_bytes(C_STORE_RQ, rq)


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
    command = rq_command(
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
    assert decode_store_rq(mutate(rq_command())) is None


def test_store_rq_primitive_validates_like_pynetdicom() -> None:
    with pytest.raises(ValueError):
        store_rq_primitive({0x0002: UIDS[0], 0x1000: UIDS[1], 0x0700: 7, 0x0800: 1})


# --------------------------------------------------------------------------- C-STORE-RQ encoding


@pytest.mark.parametrize("sop_class", UIDS[:3])
@pytest.mark.parametrize("sop_instance", UIDS)
@pytest.mark.parametrize(("msg_id", "priority"), [(1, 2), (65535, 0), (7, 1)])
def test_encode_store_rq_equals_pynetdicom(
    sop_class: str, sop_instance: str, msg_id: int, priority: int, tmp_path: Any
) -> None:
    primitive = C_STORE()
    primitive.MessageID = msg_id
    primitive.Priority = priority
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = sop_instance
    primitive._dataset_path = (tmp_path / "x.dcm", 0)  # as send_c_store sets it for a file
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    expected = encode(message.command_set, True, True)
    assert encode_store_rq(msg_id, sop_class, sop_instance, priority) == expected
    assert decode_store_rq(expected) is not None


@pytest.mark.parametrize("bad", ["", "1.2.a", "1." * 40, "1.2\x00"])
def test_encode_store_rq_refuses_what_is_not_a_uid(bad: str) -> None:
    with pytest.raises(ValueError):
        encode_store_rq(1, bad, "1.2.3")
    with pytest.raises(ValueError):
        encode_store_rq(1, "1.2.3", bad)


def test_encode_store_rq_refuses_out_of_range_fields() -> None:
    with pytest.raises(ValueError):
        encode_store_rq(65536, "1.2.3", "1.2.3")
    with pytest.raises(ValueError):
        encode_store_rq(1, "1.2.3", "1.2.3", priority=3)


@pytest.mark.parametrize(
    "syntax",
    [
        pydicom.uid.ExplicitVRLittleEndian,
        pydicom.uid.ImplicitVRLittleEndian,
        pydicom.uid.DeflatedExplicitVRLittleEndian,
    ],
)
@pytest.mark.parametrize(("sop_class", "sop_instance"), [(UIDS[0], UIDS[1]), (UIDS[1], UIDS[3])])
def test_read_part10_meta_equals_pynetdicom(
    syntax: str, sop_class: str, sop_instance: str, tmp_path: Any
) -> None:
    from pynetdicom.dsutils import split_dataset

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_instance
    ds.PatientName = "Test^Split"
    ds.file_meta = create_file_meta(
        sop_class_uid=UID(sop_class),
        sop_instance_uid=UID(sop_instance),
        transfer_syntax=UID(syntax),
    )
    ds.file_meta.SourceApplicationEntityTitle = "ODD"  # a short-VR element after the UIDs
    ds.file_meta.PrivateInformationCreatorUID = UID("1.2.3")
    ds.file_meta.PrivateInformation = b"\x01\x02"  # a long-VR (OB) element
    path = tmp_path / "f.dcm"
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    meta, offset = split_dataset(path)  # what send_c_store uses for a file
    found = read_part10_meta(data)
    assert found is not None
    assert found.dataset_offset == offset
    assert found.sop_class_uid == meta.MediaStorageSOPClassUID
    assert found.sop_instance_uid == meta.MediaStorageSOPInstanceUID
    assert found.transfer_syntax_uid == meta.TransferSyntaxUID


def test_read_part10_meta_leaves_odd_files_to_pydicom(tmp_path: Any) -> None:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = UIDS[0], UIDS[1]
    ds.file_meta = create_file_meta(
        sop_class_uid=UID(UIDS[0]), sop_instance_uid=UID(UIDS[1]),
        transfer_syntax=pydicom.uid.ExplicitVRLittleEndian,
    )  # fmt: skip
    path = tmp_path / "f.dcm"
    ds.save_as(path, enforce_file_format=True)
    data = bytearray(path.read_bytes())
    assert read_part10_meta(bytes(data)) is not None
    assert read_part10_meta(bytes(data[:100])) is None  # no preamble
    assert read_part10_meta(bytes(data[:150])) is None  # the group runs past the end
    no_length = data[:132] + data[144:]
    assert read_part10_meta(bytes(no_length)) is None  # no group length first
    wrong = bytearray(data)
    struct.pack_into("<I", wrong, 140, struct.unpack_from("<I", data, 140)[0] - 2)
    assert read_part10_meta(bytes(wrong)) is None  # the length cuts an element
    bad_uid = bytes(data).replace(UIDS[1].encode(), UIDS[1][:-1].encode() + b"x")
    assert read_part10_meta(bad_uid) is None


# --------------------------------------------------------------------------- responses received


def _store_rsp_command(
    sop_instance: str | None = UIDS[1], status: int = 0, **optional: Any
) -> bytes:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 5
    rsp.AffectedSOPClassUID = UIDS[0]
    if sop_instance is not None:
        rsp.AffectedSOPInstanceUID = sop_instance
    rsp.Status = status
    for name, value in optional.items():
        setattr(rsp, name, value)
    return _pynetdicom_rsp_bytes(rsp)


def _find_rsp_command(status: int, identifier: bool, sop_class: str | None = UIDS[0]) -> bytes:
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = 65535
    if sop_class is not None:
        rsp.AffectedSOPClassUID = sop_class
    rsp.Status = status
    if identifier:
        rsp.Identifier = io.BytesIO(b"\x08\x00\x18\x00\x00\x00\x00\x00")
    return _command_bytes(C_FIND_RSP, rsp)


def _pynetdicom_response(command: bytes) -> Any:
    command_set = decode(io.BytesIO(command), True, True)
    msg = _MESSAGE_TYPES[command_set.CommandField][1]()
    msg.command_set = command_set
    msg.context_id = 1
    return msg.message_to_primitive()


_RSP_FIELDS = (
    "MessageIDBeingRespondedTo",
    "AffectedSOPClassUID",
    "AffectedSOPInstanceUID",
    "Status",
)


@pytest.mark.parametrize(
    "command",
    [
        *(_store_rsp_command(uid) for uid in [*UIDS, None]),
        _store_rsp_command(status=0xA700),
        _store_rsp_command(status=0xB000),
        _find_rsp_command(0xFF00, True),
        _find_rsp_command(0xFF01, True, UIDS[1]),
        _find_rsp_command(0x0000, False),
        _find_rsp_command(0xA700, False, None),
    ],
)
def test_response_decoding_matches_pynetdicom(command: bytes) -> None:
    values = decode_response(command)
    assert values is not None
    fast, reference = response_primitive(values), _pynetdicom_response(command)
    assert type(fast) is type(reference)
    for name in _RSP_FIELDS:
        if hasattr(reference, name):
            assert getattr(fast, name) == getattr(reference, name), name
            assert type(getattr(fast, name)) is type(getattr(reference, name)), name


@pytest.mark.parametrize(
    "command",
    [
        _store_rsp_command(status=0xB000, ErrorComment="coerced"),  # optional fields: pynetdicom
        _store_rsp_command(status=0xA900, OffendingElement=[0x00100010]),
        _replace(_store_rsp_command(), 0x0800, b"\x01\x00"),  # a C-STORE-RSP announcing data
        _find_rsp_command(0xFF00, True) + _element(0x1000, b"1.2.3\x00"),  # not a C-FIND-RSP's
        _replace(_store_rsp_command(), 0x0100, b"\x21\x80"),  # C-MOVE-RSP
        _replace(_store_rsp_command(), 0x0900, None),  # no status
        _replace(_store_rsp_command(), 0x0002, b"1.2.3 "),  # space padding
        _store_rsp_command()[:-3],  # truncated
        rq_command(),  # a request
    ],
)
def test_response_decoding_leaves_odd_encodings_to_pynetdicom(command: bytes) -> None:
    assert decode_response(command) is None
