"""De-identification of Explicit VR Little Endian files at the byte level, same output.

:meth:`Deidentifier.deidentify_bytes <dicom_nodes.deid.engine.Deidentifier.deidentify_bytes>`
parses the whole file into pydicom objects, walks it and writes it again; for a typical image
header that is 1.5-2 ms of Python per instance, almost all of it pydicom's per-element
machinery. :func:`rewrite` produces the same bytes for the common case without building the
dataset:

* the top-level elements are split from the bytes (PS3.5 7.1.2, explicit VR little endian);
* an element the engine would leave alone (not in Table E.1-1, or action K) is copied as its
  bytes — pydicom writes an element it never decoded verbatim;
* an element the engine removes (X, private, group length) is skipped;
* an element the engine changes (U, Z, D, the pseudonyms, shifted dates) is decoded by pydicom,
  changed by the engine's own :meth:`~dicom_nodes.deid.engine.Deidentifier._apply` in a
  one-element dataset, and encoded by pydicom's element writer;
* an element the engine or pydicom's writer may have decoded and kept (Specific Character Set,
  SOP Class UID, Modality, Burned In Annotation, C on times and numbers ...) is copied only when
  pydicom's encoding of its decoded value is byte for byte its input;
* the engine's marks (PS3.15 E.1.1, PS3.3 C.12.1.1.2) are encoded once per character set, the
  File Meta Information (PS3.10 7.1) by :func:`dicom_nodes.dimse.codec.encode_file_meta`.

Anything else returns None and the caller uses the engine: another transfer syntax, any
sequence that the profile does not remove, undefined lengths, curves and overlays, ``UN``
elements, text cleaning (action C on text), safe private attributes, a custom pixel step, images
that may carry burned-in text, a missing SOP Class or Instance UID, a value pydicom would
re-encode differently. ``tests/unit/deid/test_rewrite.py`` checks that the output equals the
engine's, byte for byte, on every file of the test corpus the rewriter takes.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Final

from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.tag import Tag
from pydicom.uid import UID

from dicom_nodes.deid.model import BurnedIn, DeidResult
from dicom_nodes.deid.table import Action
from dicom_nodes.dimse.codec import encode_file_meta, read_part10_meta

if TYPE_CHECKING:
    from dicom_nodes.deid.engine import Deidentifier

__all__ = ["EXPLICIT_VR_LE", "rewrite"]

EXPLICIT_VR_LE: Final = "1.2.840.10008.1.2.1"
_LONG_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})
_UNPACK_HEADER: Final = struct.Struct("<HH2sH").unpack_from
_UNPACK_UL: Final = struct.Struct("<I").unpack_from
_UNDEFINED: Final = 0xFFFFFFFF
_CHARSET: Final = 0x00080005
_SOP_CLASS: Final = 0x00080016
_SOP_INSTANCE: Final = 0x00080018
_MODALITY: Final = 0x00080060
_BURNED_IN: Final = 0x00280301
_ROWS: Final = 0x00280010
_COLUMNS: Final = 0x00280011
_PIXEL_DATA: Final = 0x7FE00010
_PROLOGUE: Final = frozenset({0x00100020, 0x00100021, 0x00100010, 0x00100030, 0x0020000D,
                              0x00080050, 0x00200010})  # fmt: skip
"""What :meth:`Deidentifier._prologue` reads (patient key, vault entries)."""
_DECODED: Final = _PROLOGUE | {_CHARSET, _SOP_CLASS, _SOP_INSTANCE, _MODALITY, _BURNED_IN}
"""Elements the engine, its pixel step or pydicom's writer may decode and keep: copied only
when pydicom writes their decoded value back as the same bytes."""
_MARK_TAGS: Final = frozenset({0x00120062, 0x00120063, 0x00120064, 0x00280303})


def _elements(data: bytes, start: int) -> list[tuple[int, str, int, int, int]] | None:
    """(tag, VR, element start, value start, value end) of each top-level element, or None
    unless every element is plainly encoded with a defined length."""
    out = []
    pos, end = start, len(data)
    while pos < end:
        if pos + 8 > end:
            return None
        group, elem, raw_vr, short = _UNPACK_HEADER(data, pos)
        try:
            vr = raw_vr.decode("ascii")
        except UnicodeDecodeError:
            return None
        if vr in _LONG_VRS:
            if pos + 12 > end:
                return None
            (length,) = _UNPACK_UL(data, pos + 8)
            value = pos + 12
        else:
            length, value = short, pos + 8
        if length == _UNDEFINED or value + length > end or not vr.isalpha() or not vr.isupper():
            return None
        out.append(((group << 16) | elem, vr, pos, value, value + length))
        pos = value + length
    return out


def _decode(data: bytes, item: tuple[int, str, int, int, int], charset: Any) -> DataElement:
    tag, vr, _start, value, end = item
    raw = RawDataElement(Tag(tag), vr, end - value, data[value:end], value, False, True)
    return convert_raw_data_element(raw, encoding=charset)


def _encode(elem: DataElement, charset: Any) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_data_element(buffer, elem, charset)
    return bytes(buffer.getvalue())


def rewrite(engine: Deidentifier, data: bytes) -> tuple[bytes, DeidResult] | None:
    """The engine's output for the Part 10 file *data*, or None (module docstring). Whatever
    raises on the way (a value pydicom cannot decode, an unknown character set) is left to
    the engine too, which then answers as it always does."""
    try:
        return _rewrite(engine, data)
    except Exception:
        return None


def _rewrite(engine: Deidentifier, data: bytes) -> tuple[bytes, DeidResult] | None:
    meta = read_part10_meta(data)
    if meta is None or meta.transfer_syntax_uid != EXPLICIT_VR_LE or not engine.rewritable:
        return None
    items = _elements(data, meta.dataset_offset)
    if items is None:
        return None
    by_tag = {item[0]: item for item in items}
    if len(by_tag) != len(items):
        return None
    charset: Any = "iso8859"
    if _CHARSET in by_tag:
        charset = _decode(data, by_tag[_CHARSET], charset).value or "iso8859"
    # The engine's reading of the object: identity, pixel step.
    known = Dataset()
    for tag in _PROLOGUE | {_SOP_CLASS, _MODALITY, _BURNED_IN, _ROWS, _COLUMNS}:
        if tag in by_tag:
            known[tag] = _decode(data, by_tag[tag], charset)
    if _PIXEL_DATA in by_tag or 0x7FE00008 in by_tag or 0x7FE00009 in by_tag:
        known[_PIXEL_DATA] = DataElement(_PIXEL_DATA, "OB", b"")  # only its presence counts
    if engine.pixel_outcome(known) is not BurnedIn.NONE:
        return None
    pseudonym, vault, ctx = engine.prologue(known)
    out: list[tuple[int, bytes]] = []
    new_class = new_instance = None
    for item in items:
        tag, vr, start, _value, end = item
        group, number = tag >> 16, tag & 0xFFFF
        if number == 0 or group & 1:
            continue  # group lengths; private attributes (no safe list: module docstring)
        if vr in ("SQ", "UN") or group & 0xFF00 in (0x5000, 0x6000) or tag in _MARK_TAGS:
            if vr == "SQ" and engine.action_for(tag) is Action.REMOVE:
                continue
            return None
        action = engine.action_for(tag)
        if action is Action.REMOVE:
            continue
        if action is None or action is Action.KEEP:
            if (tag in _DECODED or tag == _PIXEL_DATA) and not _kept_as_is(data, item, charset):
                return None
            if tag == _SOP_CLASS:
                new_class = _decode(data, item, charset).value
            elif tag == _SOP_INSTANCE:
                new_instance = _decode(data, item, charset).value
            out.append((tag, data[start:end]))
            continue
        one = known  # read above; from here on a scratch dataset for one element at a time
        one.clear()
        one[tag] = _decode(data, item, charset)
        engine.apply_one(one, tag, action, ctx)
        if tag not in one:
            continue
        encoded = _encode(one[tag], charset)
        if tag == _SOP_CLASS:
            new_class = one[tag].value
        elif tag == _SOP_INSTANCE:
            new_instance = one[tag].value
        out.append((tag, encoded))
    if not new_class or not new_instance:
        return None
    out.extend(engine.mark_elements(charset))
    out.sort(key=lambda pair: pair[0])
    header = encode_file_meta(
        str(new_class), str(new_instance), EXPLICIT_VR_LE,
        implementation_uid=engine.implementation_uid, version_name=engine.version_name,
    )  # fmt: skip
    file_meta = FileMetaDataset()
    file_meta.TransferSyntaxUID = UID(EXPLICIT_VR_LE)
    result_ds = Dataset()
    result_ds.file_meta = file_meta
    return header + b"".join(b for _t, b in out), DeidResult(result_ds, pseudonym, vault)


def _kept_as_is(data: bytes, item: tuple[int, str, int, int, int], charset: Any) -> bool:
    """pydicom writes the decoded value of *item* back as the same bytes."""
    tag, vr, start, value, end = item
    if tag == _PIXEL_DATA:
        return vr in ("OB", "OW") and (end - value) % 2 == 0
    return _encode(_decode(data, item, charset), charset) == data[start:end]
