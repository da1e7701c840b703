"""Direct encodings of the few DIMSE and Upper Layer structures on the C-STORE path.

Each function produces (or reads) exactly the bytes pynetdicom produces (or reads) for the same
input, without building pydicom datasets or PDU objects; the tests compare them byte for byte
with pynetdicom's own encoders on the installed version. They use only pynetdicom's public API
(primitives and the implementation UID/version name), so they hold whatever the accelerator
(:mod:`dicom_nodes.accelerator`) does.

- :func:`parse_pdv_items`, :func:`encode_p_data_tf`: P-DATA-TF PDU (PS3.8 9.3.5, E.2).
- :func:`encode_store_rsp`: C-STORE-RSP Command Set (PS3.7 9.3.1.2, E.1).
- :func:`decode_store_rq`, :func:`store_rq_primitive`, :func:`encode_store_rq`: C-STORE-RQ
  Command Set (PS3.7 9.3.1.1).
- :func:`decode_response`, :func:`response_primitive`: C-STORE-RSP and C-FIND-RSP Command
  Sets (PS3.7 9.3.1.2, 9.3.2.2) as the forwarder receives them.
- :func:`read_part10_meta`: the UIDs of a Part 10 file's File Meta Information and where its
  dataset starts (PS3.10 7.1).
- :func:`encode_file_meta`: preamble and File Meta Information (PS3.10 7.1) as pynetdicom writes
  them in front of a received dataset.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import pynetdicom
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.pdu_primitives import P_DATA

__all__ = [
    "NO_DATASET",
    "PREAMBLE",
    "Part10Meta",
    "decode_response",
    "decode_store_rq",
    "encode_file_meta",
    "encode_p_data_tf",
    "encode_store_rq",
    "encode_store_rsp",
    "parse_pdv_items",
    "read_part10_meta",
    "response_primitive",
    "store_rq_primitive",
]

NO_DATASET: Final = 0x0101
"""Command Data Set Type value meaning "no Data Set" (PS3.7 E.1-1)."""
PREAMBLE: Final = b"\x00" * 128 + b"DICM"
"""The Part 10 preamble and prefix (PS3.10 7.1)."""

_P_DATA_TF: Final = 0x04
_DATASET_PRESENT: Final = 0x0001
"""Command Data Set Type value pynetdicom writes when a Data Set follows (PS3.7 E.1-1)."""
_C_STORE_RQ: Final = 0x0001
_C_STORE_RSP: Final = 0x8001
_C_FIND_RSP: Final = 0x8020
_UNPACK_UINT4: Final = struct.Struct(">L").unpack_from
_PACK_PDU_HEADER: Final = struct.Struct(">BBL").pack
_PACK_PDV_HEADER: Final = struct.Struct(">LB").pack
_PACK_IMPLICIT_HEADER: Final = struct.Struct("<HHI").pack
_UNPACK_IMPLICIT_HEADER: Final = struct.Struct("<HHI").unpack_from
_PACK_US: Final = struct.Struct("<HHIH").pack
_PACK_UL: Final = struct.Struct("<HHII").pack
_PACK_EXPLICIT_SHORT: Final = struct.Struct("<HH2sH").pack


# --------------------------------------------------------------------------- P-DATA-TF


def parse_pdv_items(body: memoryview) -> list[tuple[int, memoryview]]:
    """Split the variable field of a P-DATA-TF PDU into (context ID, PDV value) pairs.

    *body* is the PDU after its 6-byte header. Each Presentation Data Value Item is a 4-byte
    big-endian item length, a 1-byte presentation context ID and the value: message control
    header followed by a command or dataset fragment (PS3.8 9.3.5.1, E.2). The values are
    views into *body*, not copies. Raises :class:`ValueError` on an item that is shorter than
    two bytes or runs past the PDU.
    """
    items: list[tuple[int, memoryview]] = []
    offset = 0
    end = len(body)
    while offset < end:
        if offset + 4 > end:
            raise ValueError(f"truncated PDV item header at offset {offset}")
        (length,) = _UNPACK_UINT4(body, offset)
        if length < 2:
            raise ValueError(f"PDV item at offset {offset} has length {length} (< 2)")
        stop = offset + 4 + length
        if stop > end:
            raise ValueError(f"PDV item at offset {offset} runs past the end of the PDU")
        items.append((body[offset + 4], body[offset + 5 : stop]))
        offset = stop
    return items


def encode_p_data_tf(primitive: P_DATA) -> bytes:
    """The P-DATA-TF PDU (PS3.8 9.3.5) for *primitive*, as ``pynetdicom.pdu.P_DATA_TF``
    encodes it."""
    parts: list[bytes] = []
    length = 0
    for context_id, value in primitive.presentation_data_value_list:
        parts.append(_PACK_PDV_HEADER(len(value) + 1, context_id))
        parts.append(value)
        length += 5 + len(value)
    return _PACK_PDU_HEADER(_P_DATA_TF, 0, length) + b"".join(parts)


# --------------------------------------------------------------------------- C-STORE


_UID_CHARS: Final = frozenset(b"0123456789.")


def _padded_uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def encode_store_rsp(rsp: C_STORE) -> bytes | None:
    """The Command Set of a C-STORE-RSP (PS3.7 9.3.1.2, E.1), implicit VR little endian.

    Byte for byte what pynetdicom encodes for the same primitive. Returns ``None`` when the
    response carries optional fields (Offending Element, Error Comment) or values outside this
    encoder (non-ASCII UIDs); the caller then uses pynetdicom's encoder.
    """
    if rsp.OffendingElement is not None or rsp.ErrorComment is not None:
        return None
    msg_id = rsp.MessageIDBeingRespondedTo
    status = rsp.Status
    if msg_id is None or status is None:
        return None
    try:
        body = b""
        if rsp.AffectedSOPClassUID is not None:
            value = _padded_uid(str(rsp.AffectedSOPClassUID))
            body += _PACK_IMPLICIT_HEADER(0x0000, 0x0002, len(value)) + value
        body += _PACK_US(0x0000, 0x0100, 2, _C_STORE_RSP)
        body += _PACK_US(0x0000, 0x0120, 2, int(msg_id))
        body += _PACK_US(0x0000, 0x0800, 2, NO_DATASET)
        body += _PACK_US(0x0000, 0x0900, 2, int(status))
        if rsp.AffectedSOPInstanceUID is not None:
            value = _padded_uid(str(rsp.AffectedSOPInstanceUID))
            body += _PACK_IMPLICIT_HEADER(0x0000, 0x1000, len(value)) + value
    except (UnicodeEncodeError, struct.error):
        return None
    return _PACK_UL(0x0000, 0x0000, 4, len(body)) + body


def encode_store_rq(
    message_id: int, sop_class_uid: str, sop_instance_uid: str, priority: int = 2
) -> bytes:
    """The Command Set of a C-STORE-RQ with a dataset (PS3.7 9.3.1.1, E.1), implicit VR little
    endian, without the optional Move Originator fields.

    Byte for byte what pynetdicom encodes for a ``C_STORE`` primitive with the same values
    (its ``send_c_store`` default *priority* is 2, LOW). Raises :class:`ValueError` for a
    value that is not a plain UID or does not fit an US field."""
    for value in (sop_class_uid, sop_instance_uid):
        if not value or len(value) > 64 or not _UID_CHARS.issuperset(value.encode("ascii")):
            raise ValueError(f"not a UID: {value!r}")
    if not (0 <= message_id <= 0xFFFF and priority in (0, 1, 2)):
        raise ValueError("message ID or priority out of range")
    cls = _padded_uid(sop_class_uid)
    inst = _padded_uid(sop_instance_uid)
    body = (
        _PACK_IMPLICIT_HEADER(0x0000, 0x0002, len(cls)) + cls
        + _PACK_US(0x0000, 0x0100, 2, _C_STORE_RQ)
        + _PACK_US(0x0000, 0x0110, 2, message_id)
        + _PACK_US(0x0000, 0x0700, 2, priority)
        + _PACK_US(0x0000, 0x0800, 2, _DATASET_PRESENT)
        + _PACK_IMPLICIT_HEADER(0x0000, 0x1000, len(inst)) + inst
    )  # fmt: skip
    return _PACK_UL(0x0000, 0x0000, 4, len(body)) + body


@dataclass(frozen=True)
class Part10Meta:
    """What a Part 10 file's File Meta Information says about it (PS3.10 7.1)."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    dataset_offset: int
    """Where the dataset starts: after the preamble, ``DICM`` and group 0002."""


_LONG_VRS: Final = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN",
                              b"UR", b"UT"})  # fmt: skip
_META_UIDS: Final = {0x0002: "sop_class_uid", 0x0003: "sop_instance_uid",
                     0x0010: "transfer_syntax_uid"}  # fmt: skip
_UNPACK_EXPLICIT: Final = struct.Struct("<HH2sH").unpack_from


def read_part10_meta(data: bytes | memoryview) -> Part10Meta | None:
    """The File Meta Information of the Part 10 file *data* (PS3.10 7.1), read directly.

    Returns None unless the file is plainly encoded: preamble and ``DICM``, group 0002 in
    explicit VR little endian starting with its Group Length (0002,0000), which covers exactly
    the group's elements, each once, with the three UIDs present and made of digits and dots
    (one trailing NUL or space of padding). Anything else is left to pydicom's reader."""
    view = memoryview(data)
    if len(view) < 144 or bytes(view[128:140]) != b"DICM\x02\x00\x00\x00UL\x04\x00":
        return None
    (length,) = struct.unpack_from("<I", view, 140)
    end = 144 + length
    if end > len(view):
        return None
    values: dict[str, str] = {}
    pos = 144
    while pos < end:
        if pos + 8 > end:
            return None
        group, elem, vr, short = _UNPACK_EXPLICIT(view, pos)
        if group != 0x0002:
            return None
        if vr in _LONG_VRS:
            if pos + 12 > end:
                return None
            (size,) = struct.unpack_from("<I", view, pos + 8)
            pos += 12
        else:
            size = short
            pos += 8
        if pos + size > end:
            return None
        key = _META_UIDS.get(elem)
        if key is not None:
            raw = bytes(view[pos : pos + size])
            if raw[-1:] in (b"\x00", b" "):
                raw = raw[:-1]
            if key in values or vr != b"UI" or not raw or not _UID_CHARS.issuperset(raw):
                return None
            values[key] = raw.decode("ascii")
        pos += size
    if pos != end or len(values) != 3:
        return None
    return Part10Meta(dataset_offset=end, **values)


def encode_file_meta(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax: str,
    *,
    implementation_uid: str | None = None,
    version_name: str | None = None,
) -> bytes:
    """Preamble, ``DICM`` and File Meta Information (PS3.10 7.1) as pynetdicom writes them.

    Byte for byte ``create_file_meta()`` + ``write_file_meta_info()`` (explicit VR little
    endian, pynetdicom's implementation class UID and version name unless others are given)
    without building pydicom datasets. Raises :class:`UnicodeEncodeError` for non-ASCII values.
    """
    if implementation_uid is None:
        implementation_uid = str(pynetdicom.PYNETDICOM_IMPLEMENTATION_UID)
    if version_name is None:
        version_name = pynetdicom.PYNETDICOM_IMPLEMENTATION_VERSION
    elements = b""
    for elem, value in (
        (0x0002, sop_class_uid),
        (0x0003, sop_instance_uid),
        (0x0010, transfer_syntax),
        (0x0012, implementation_uid),
    ):
        raw = _padded_uid(value)
        elements += _PACK_EXPLICIT_SHORT(0x0002, elem, b"UI", len(raw)) + raw
    name = version_name.encode("ascii")
    if len(name) % 2:
        name += b" "
    elements += _PACK_EXPLICIT_SHORT(0x0002, 0x0013, b"SH", len(name)) + name
    version = b"\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01"
    group = version + elements
    return PREAMBLE + b"\x02\x00\x00\x00UL\x04\x00" + struct.pack("<I", len(group)) + group


_RQ_ELEMENTS: Final = {
    0x0000: "UL",  # Command Group Length
    0x0002: "UI",  # Affected SOP Class UID
    0x0100: "US",  # Command Field
    0x0110: "US",  # Message ID
    0x0700: "US",  # Priority
    0x0800: "US",  # Command Data Set Type
    0x1000: "UI",  # Affected SOP Instance UID
    0x1030: "AE",  # Move Originator Application Entity Title
    0x1031: "US",  # Move Originator Message ID
}
_RQ_KEYWORDS: Final = {
    0x0002: "AffectedSOPClassUID",
    0x0110: "MessageID",
    0x0700: "Priority",
    0x1000: "AffectedSOPInstanceUID",
    0x1030: "MoveOriginatorApplicationEntityTitle",
    0x1031: "MoveOriginatorMessageID",
}
_RQ_REQUIRED: Final = frozenset({0x0002, 0x0800, 0x1000})
_AE_CHARS: Final = frozenset(range(0x20, 0x7F)) - {0x5C}


def decode_store_rq(command: bytes | bytearray) -> dict[int, int | str] | None:
    """The elements of a C-STORE-RQ Command Set (PS3.7 9.3.1.1, E.1) by element number.

    Returns ``None`` unless *command* is a plainly encoded C-STORE-RQ: only the elements of that
    message, each once, single-valued, UIDs of digits and dots (optionally padded with one NUL),
    AE titles of printable ASCII; anything else is left to pynetdicom's pydicom-based decoding,
    so that odd encodings get exactly pynetdicom's treatment (warnings, first of several values).
    """
    values = _decode_command(command, _RQ_ELEMENTS)
    if values is None or values.get(0x0100) != _C_STORE_RQ or not _RQ_REQUIRED.issubset(values):
        return None
    return values


def _decode_command(
    command: bytes | bytearray, elements: dict[int, str]
) -> dict[int, int | str] | None:
    """Group 0000 elements of *command* (implicit VR little endian, PS3.7 6.3.1) by element
    number, when each is one of *elements* (element -> VR), present once and plainly encoded
    (see :func:`decode_store_rq`); otherwise ``None``."""
    values: dict[int, int | str] = {}
    pos = 0
    end = len(command)
    while pos < end:
        if pos + 8 > end:
            return None
        group, elem, length = _UNPACK_IMPLICIT_HEADER(command, pos)
        pos += 8
        vr = elements.get(elem)
        if group != 0x0000 or vr is None or elem in values or pos + length > end:
            return None
        raw = bytes(command[pos : pos + length])
        pos += length
        if vr == "US":
            if length != 2:
                return None
            values[elem] = int.from_bytes(raw, "little")
        elif vr == "UL":
            if length != 4:
                return None
            values[elem] = int.from_bytes(raw, "little")
        elif vr == "UI":
            if raw.endswith(b"\x00"):
                raw = raw[:-1]
            if not raw or not _UID_CHARS.issuperset(raw):
                return None
            values[elem] = raw.decode("ascii")
        else:  # AE
            stripped = raw.strip(b" ")
            if not stripped or not _AE_CHARS.issuperset(raw):
                return None
            values[elem] = stripped.decode("ascii")
    return values


_RSP_ELEMENTS: Final = {
    0x0000: "UL",  # Command Group Length
    0x0002: "UI",  # Affected SOP Class UID
    0x0100: "US",  # Command Field
    0x0120: "US",  # Message ID Being Responded To
    0x0800: "US",  # Command Data Set Type
    0x0900: "US",  # Status
    0x1000: "UI",  # Affected SOP Instance UID (C-STORE-RSP only)
}
_RSP_KEYWORDS: Final = {
    0x0002: "AffectedSOPClassUID",
    0x0120: "MessageIDBeingRespondedTo",
    0x0900: "Status",
    0x1000: "AffectedSOPInstanceUID",
}
_RSP_REQUIRED: Final = frozenset({0x0100, 0x0120, 0x0800, 0x0900})


def decode_response(command: bytes | bytearray) -> dict[int, int | str] | None:
    """The elements of a C-STORE-RSP (PS3.7 9.3.1.2) or C-FIND-RSP (9.3.2.2) Command Set by
    element number, as :func:`decode_store_rq` decodes a request.

    Returns ``None`` unless *command* is a plainly encoded response of one of these two with
    only the elements above: a response carrying optional fields (Offending Element, Error
    Comment, Error ID), a C-STORE-RSP announcing a data set, or a C-FIND-RSP with an Affected
    SOP Instance UID is left to pynetdicom."""
    values = _decode_command(command, _RSP_ELEMENTS)
    if values is None or not _RSP_REQUIRED.issubset(values):
        return None
    field = values[0x0100]
    if field == _C_STORE_RSP and values[0x0800] == NO_DATASET:
        return values
    if field == _C_FIND_RSP and 0x1000 not in values:
        return values
    return None


def response_primitive(values: dict[int, int | str]) -> C_STORE | C_FIND:
    """The C-STORE or C-FIND response primitive for :func:`decode_response`'s *values*, set
    through the primitive's validating setters in the order ``message_to_primitive`` sets
    them (the command set's, ascending tags). A C-FIND-RSP's identifier is the caller's."""
    primitive: C_STORE | C_FIND = C_STORE() if values[0x0100] == _C_STORE_RSP else C_FIND()
    for elem, keyword in _RSP_KEYWORDS.items():
        if elem in values:
            setattr(primitive, keyword, values[elem])
    return primitive


def store_rq_primitive(values: dict[int, int | str]) -> C_STORE:
    """The C-STORE request primitive for :func:`decode_store_rq`'s *values*, set through the
    primitive's validating setters as ``DIMSEMessage.message_to_primitive`` does."""
    primitive = C_STORE()
    for elem, keyword in _RQ_KEYWORDS.items():
        if elem in values:
            setattr(primitive, keyword, values[elem])
    return primitive
