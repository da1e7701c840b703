"""The de-identifier: DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile.

:class:`Deidentifier` applies Table E.1-1 (:mod:`dicom_nodes.deid.table`) with the options a
profile selects (PS3.15 E.3) to every attribute, at every nesting level of every sequence:

* standard attributes in the table get their action (:class:`~dicom_nodes.deid.table.Action`);
  attributes not in the table are kept (E.1.1: the table lists every standard attribute that
  may identify);
* private attributes are removed, except those on the profile's safe list under the Retain
  Safe Private option (E.3.10), whose private creator elements are kept with them;
* curves (50xx,xxxx) and overlays (60xx,3000/4000) are removed; a bitmap overlay cannot be
  cleaned automatically, so Clean Graphics removes them as well; an overlay group whose Overlay
  Data goes is removed whole (an overlay plane without its data is not conformant);
* ``X/Z`` resolves to an empty value (Type 2), except Referenced Study Sequence, which is Type 3
  wherever it is used and must not be an empty sequence: it is removed;
* D on Institution Code Sequence and Person Identification Code Sequence replaces the codes of
  their items by dummies (the codes are the identity); other D sequences keep their items, each
  nested attribute getting its own row's action;
* Patient ID and Patient's Name become the patient's keyed pseudonym (action Z permits a dummy
  value; a consistent one lets an archive group the patient's studies), UIDs become keyed
  ``2.25`` UIDs (action U), and with Modified Dates every date of a patient moves back by the
  same number of days (:mod:`dicom_nodes.deid.pseudonyms`);
* inside sequences whose action is D (dummy, e.g. Content Sequence) the free text of content
  items — Text Value (0040,A160) and Unformatted Text Value (0070,0006) — is replaced by a dummy,
  keeping codes, numbers and references; with Clean Structured Content or Clean Graphics that
  text is cleaned instead (:mod:`dicom_nodes.deid.clean`).

The object is then marked (PS3.15 E.1.1 and PS3.3 C.12.1.1.2, SOP Common): Patient Identity
Removed (0012,0062) YES, De-identification Method (0012,0063) naming the edition, profile and
options, De-identification Method Code Sequence (0012,0064) with the CID 7050 codes, and
Longitudinal Temporal Information Modified (0028,0303). It gets a new File Meta Information
group (PS3.10 7.1) and a zeroed preamble.

Output depends only on the input bytes, the profile and the site secret: no clock, no random
number. The same input gives byte-identical output in any process.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import PersonName

from config.deid import DeidOption, DeidProfile
from dicom_nodes.deid.clean import TextCleaner
from dicom_nodes.deid.model import BurnedIn, DeidResult, VaultEntry
from dicom_nodes.deid.patient import patient_fields
from dicom_nodes.deid.pseudonyms import Pseudonymiser
from dicom_nodes.deid.table import (
    CLEAN_PIXEL_DATA_CODE,
    EDITION,
    OPTION_CODES,
    Action,
    Table,
    load_table,
    resolve_action,
)

__all__ = ["IMPLEMENTATION_CLASS_UID", "IMPLEMENTATION_VERSION_NAME", "Deidentifier"]

IMPLEMENTATION_CLASS_UID = "2.25.257783659745181240726707931439842356698"
"""Radiogate's Implementation Class UID (PS3.7 D.3.3.2), written into new file meta groups."""
IMPLEMENTATION_VERSION_NAME = "RADIOGATE_1"

_PATIENT_NAME = 0x00100010
_PATIENT_ID = 0x00100020
_STUDY_UID = 0x0020000D
_ACCESSION = 0x00080050
_STUDY_ID = 0x00200010
_TEXT_VALUE = 0x0040A160
_UNFORMATTED_TEXT = 0x00700006
_PIXEL_DATA = 0x7FE00010
_TIMEZONE_OFFSET = 0x00080201
_MEDIA_STORAGE_SOP_INSTANCE = 0x00020003
_OVERLAY_DATA = 0x60003000  # (60xx,3000), xx even
_FREE_TEXT = frozenset({_TEXT_VALUE, _UNFORMATTED_TEXT})
_TYPE3_SEQUENCES = frozenset({0x00081110})
"""X/Z sequences that are Type 3 wherever a composite IOD has them (Referenced Study Sequence,
PS3.3 C.7.2.1 General Study): removed, since a Type 3 sequence must not be empty (1-n items)."""
_IDENTITY_CODE_SEQUENCES = frozenset({0x00080082, 0x00401101})
"""Institution Code and Person Identification Code Sequences (D): their codes are the identity."""
_CODE_ATTRIBUTES = (0x00080100, 0x00080102, 0x00080103, 0x00080104, 0x00080119, 0x00080120)
"""Code Value, Coding Scheme Designator and Version, Code Meaning, Long and URN Code Value."""
_TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "CS", "AE", "UR"})
_CLEANED = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "CS", "AE", "UR", "SQ"})
"""VRs whose action C uses the text cleaner (directly, or for the free text of items)."""
_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"})
_BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
_DUMMY_TEXT = "ANONYMIZED"
_REPLACED = frozenset({Action.DUMMY, Action.ZERO, Action.REMOVE, Action.UID})
_DUMMY = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000D", "IS": "0",
          "DS": "0"}  # fmt: skip


class _Mode:
    """How free text of content items is treated inside the sequence being walked."""

    KEEP = 0
    DUMMY = 1
    CLEAN = 2


@dataclass
class _Context:
    """Per-object state of one de-identification."""

    ds: Dataset
    pseudonym: str
    shift: int
    identifying: list[str] | None = None
    """Values the profile replaces, collected before the walk changes any of them."""
    cleaner: TextCleaner | None = None


def _vr_of(ds: Dataset, tag: BaseTag) -> str:
    """The VR of an element without converting a raw element's value."""
    raw = ds.get_item(tag)
    vr = getattr(raw, "VR", None)
    if vr:
        return str(vr)
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def _text(ds: Dataset, tag: int) -> str:
    elem = ds.get(tag)
    if elem is None or elem.value is None:
        return ""
    value = elem.value
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    return str(value)


class Deidentifier:
    """Applies one profile; thread-safe for reading, memoises UIDs and pseudonyms."""

    def __init__(
        self,
        profile: DeidProfile,
        secret: bytes,
        *,
        table: Table | None = None,
        pixel_step: Callable[[Dataset, DeidProfile], BurnedIn] | None = None,
    ) -> None:
        self.profile = profile
        self.table = table or load_table()
        self.options = tuple(dict.fromkeys(profile.options))
        self.pseudo = Pseudonymiser(secret, date_shift_days=profile.date_shift_days)
        self._exact: dict[int, Action] = {
            tag: resolve_action(row, self.options) for tag, row in self.table.exact.items()
        }
        self._patterns = tuple(
            (mask, value, resolve_action(row, self.options))
            for mask, value, row in self.table.patterns
        )
        self._private = resolve_action(self.table.private, self.options)
        self._safe: frozenset[tuple[str, int, int]] = frozenset(
            _parse_safe(entry) for entry in profile.safe_private
        )
        self._modified_dates = DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES in self.options
        self._full_dates = DeidOption.RETAIN_LONGITUDINAL_FULL_DATES in self.options
        self._pixel_step = pixel_step if pixel_step is not None else _default_pixel_step
        self._marks: dict[str, list[tuple[int, bytes]]] = {}
        # Collecting the identifying values costs a pass over the object: only when some text
        # or sequence can be cleaned (dates and times are shifted, not cleaned).
        self._cleans = any(
            action is Action.CLEAN and tag != _TIMEZONE_OFFSET and _dictionary_vr(tag) in _CLEANED
            for tag, action in self._exact.items()
        )

    # -- public API ---------------------------------------------------------------------

    def action_for(self, tag: int) -> Action | None:
        """The action this profile takes on *tag* (None: not in the table, kept)."""
        action = self._exact.get(tag)
        if action is not None:
            return action
        if (tag >> 16) & 1:
            return self._private
        for mask, value, pattern_action in self._patterns:
            if tag & mask == value:
                return pattern_action
        return None

    def archived_uid(self, tag: int, original: str) -> str:
        """The value a UID attribute (*tag*) gets under this profile: the keyed replacement
        when the profile replaces it (action U), else the original."""
        if self.action_for(tag) is Action.UID:
            return str(self.pseudo.uid(original))
        return original

    def deidentify(self, ds: Dataset) -> DeidResult:
        """De-identify *ds* in place (it must carry ``file_meta``) and return the result."""
        pseudonym, vault, ctx = self.prologue(ds)
        if self._cleans:  # the walk replaces values as it goes: collect them first
            ctx.identifying = self._identifying_values(ds)
        self._walk(ds, ctx, _Mode.KEEP)
        burned_in = self._pixel_step(ds, self.profile)
        self._mark(ds, masked=burned_in is BurnedIn.MASKED)
        ds.file_meta = self._file_meta(ds)
        ds.preamble = b"\0" * 128
        return DeidResult(ds, pseudonym, vault, burned_in)

    def prologue(self, ds: Dataset) -> tuple[str, list[VaultEntry], _Context]:
        """The patient's pseudonym, the vault entries and the walk's context of *ds*, read
        before anything is changed (Patient ID, Issuer, name, birth date, Study Instance UID,
        Accession Number, Study ID are all it reads)."""
        patient_id, issuer, name, birth, study = patient_fields(ds)
        key = Pseudonymiser.patient_key(patient_id, issuer, name, birth, study)
        pseudonym = self.pseudo.patient(key)
        vault = [
            VaultEntry(
                "patient",
                pseudonym,
                {"patient_id": patient_id, "issuer": issuer, "name": name, "birth_date": birth},
            )
        ]
        study_uid = _text(ds, _STUDY_UID)
        if study_uid and self.action_for(_STUDY_UID) is Action.UID:
            vault.append(
                VaultEntry(
                    "study",
                    self.pseudo.uid(study_uid),
                    {
                        "study_instance_uid": study_uid,
                        "accession_number": _text(ds, _ACCESSION),
                        "study_id": _text(ds, _STUDY_ID),
                        "patient_pseudonym": pseudonym,
                    },
                )
            )
        return pseudonym, vault, _Context(ds, pseudonym, self.pseudo.shift_days(key))

    def deidentify_bytes(self, data: bytes, *, rewrite: bool = True) -> tuple[bytes, DeidResult]:
        """Read a Part 10 file, de-identify it and return the new file's bytes.

        With *rewrite*, an Explicit VR Little Endian file the byte-level rewriter takes
        (:mod:`dicom_nodes.deid.rewrite`: the same bytes) is not parsed into a dataset; its
        result's ``dataset`` then holds only the new file meta's Transfer Syntax UID."""
        if rewrite:
            from dicom_nodes.deid.rewrite import rewrite as rewrite_bytes

            done = rewrite_bytes(self, data)
            if done is not None:
                return done
        ds = dcmread(io.BytesIO(data))
        result = self.deidentify(ds)
        return _to_bytes(result.dataset), result

    # -- for the byte-level rewriter (dicom_nodes.deid.rewrite) ---------------------------

    @property
    def rewritable(self) -> bool:
        """The profile needs nothing the byte-level rewriter leaves to the engine: no text
        cleaning, no safe private attributes, the default pixel step."""
        return not self._cleans and not self._safe and self._pixel_step is _default_pixel_step

    def pixel_outcome(self, ds: Dataset) -> BurnedIn:
        """The pixel step's outcome for *ds* (only its header is looked at when it is NONE)."""
        return self._pixel_step(ds, self.profile)

    def apply_one(self, ds: Dataset, tag: int, action: Action, ctx: _Context) -> None:
        """The walk's step for the top-level, non-sequence element *tag* of *ds*."""
        self._apply(ds, BaseTag(tag), action, ctx, _Mode.KEEP)

    def mark_elements(self, charset: Any) -> list[tuple[int, bytes]]:
        """The marks (:meth:`_mark`, nothing masked) as encoded elements in *charset*."""
        key = repr(charset)
        cached = self._marks.get(key)
        if cached is None:
            from dicom_nodes.deid.rewrite import _encode

            marks = Dataset()
            self._mark(marks, masked=False)
            cached = [(int(tag), _encode(marks[tag], charset)) for tag in sorted(marks.keys())]
            self._marks[key] = cached
        return cached

    implementation_uid = IMPLEMENTATION_CLASS_UID
    version_name = IMPLEMENTATION_VERSION_NAME

    # -- the walk -------------------------------------------------------------------------

    def _walk(self, ds: Dataset, ctx: _Context, mode: int) -> None:
        private_seen = False
        tags = list(ds.keys())
        overlays = {t >> 16 for t in tags if t & 0xFF01FFFF == _OVERLAY_DATA}
        for tag in tags:
            element_number = tag & 0xFFFF
            group = tag >> 16
            if element_number == 0:  # group lengths are retired and would be wrong now
                del ds[tag]
                continue
            if getattr(ds.get_item(tag), "VR", "") is None:
                ds[tag]  # implicit VR inside an explicit VR file: take the dictionary's VR now
            if group & 1:
                private_seen = True
                if element_number < 0x0100:
                    continue  # private creators: decided once the block's elements are known
                self._private_element(ds, tag, ctx, mode)
                continue
            action = self.action_for(tag)
            if action is None:
                if tag in _FREE_TEXT and mode != _Mode.KEEP:
                    self._free_text(ds, tag, ctx, mode)
                elif _vr_of(ds, tag) == "SQ":
                    self._items(ds[tag], ctx, mode)
                continue
            self._apply(ds, tag, action, ctx, mode)
        if private_seen:
            _drop_unused_creators(ds)
        for group in overlays:  # an overlay plane without its data is not conformant (Type 1)
            if (group << 16) | 0x3000 not in ds:
                for tag in [t for t in ds.keys() if t >> 16 == group]:  # noqa: SIM118
                    del ds[tag]

    def _items(self, elem: DataElement, ctx: _Context, mode: int) -> None:
        for item in elem.value or ():
            self._walk(item, ctx, mode)

    def _private_element(self, ds: Dataset, tag: BaseTag, ctx: _Context, mode: int) -> None:
        if self._private is Action.CLEAN and self._safe:
            group, block, low = tag >> 16, (tag >> 8) & 0xFF, tag & 0xFF
            creator_elem = ds.get((group << 16) | block)
            creator = str(creator_elem.value).strip() if creator_elem is not None else ""
            if (creator, group, low) in self._safe:
                if _vr_of(ds, tag) == "SQ":
                    self._items(ds[tag], ctx, mode)
                return
        del ds[tag]

    def _apply(self, ds: Dataset, tag: BaseTag, action: Action, ctx: _Context, mode: int) -> None:
        vr = _vr_of(ds, tag)
        if action is Action.REMOVE:
            del ds[tag]
            return
        if action is Action.KEEP:
            if vr == "SQ":
                self._items(ds[tag], ctx, mode)
            return
        elem = ds[tag]
        if tag in (_PATIENT_ID, _PATIENT_NAME):
            elem.value = ctx.pseudonym  # Z and D permit a dummy; a consistent one
            return
        if vr == "SQ":
            if action is Action.ZERO and tag in _TYPE3_SEQUENCES:
                del ds[tag]  # X/Z: removal keeps the IOD conformant, an empty sequence does not
            elif action is Action.ZERO:
                elem.value = DicomSequence()
            elif action is Action.CLEAN:
                self._items(elem, ctx, _Mode.CLEAN)
            elif action is Action.DUMMY:
                self._items(elem, ctx, _Mode.CLEAN if mode == _Mode.CLEAN else _Mode.DUMMY)
                if tag in _IDENTITY_CODE_SEQUENCES:
                    for item in elem.value or ():
                        _dummy_codes(item)
            else:  # U: X/Z/U* sequences keep their items, whose UIDs are replaced
                self._items(elem, ctx, mode)
            return
        if action is Action.UID or (action is Action.DUMMY and vr == "UI"):
            self._uid(elem)  # a dummy UID: the keyed one keeps references consistent
        elif action is Action.ZERO:
            elem.value = None if vr in _NUMBER_VRS or vr in _BINARY_VRS else ""
        elif action is Action.DUMMY:
            elem.value = _dummy(vr)
        elif _is_curve_or_overlay(tag):
            del ds[tag]  # C under Clean Graphics: curves and overlays are removed (module doc)
        else:
            self._clean(ds, tag, elem, vr, ctx)

    def _uid(self, elem: DataElement) -> None:
        value = elem.value
        if isinstance(value, MultiValue | list):
            elem.value = [self.pseudo.uid(str(v)) for v in value if str(v).strip()]
        elif value:
            elem.value = self.pseudo.uid(str(value))

    def _clean(self, ds: Dataset, tag: BaseTag, elem: DataElement, vr: str, ctx: _Context) -> None:
        """Action C: dates shift (Modified Dates), text is cleaned, graphics are removed."""
        if vr in ("DA", "DT"):
            shift = Pseudonymiser.shift_date if vr == "DA" else Pseudonymiser.shift_datetime
            values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
            shifted: list[str] = []
            for value in values:
                if value is None or not str(value).strip():
                    continue
                new = shift(str(value), ctx.shift)
                shifted.append(new if new is not None else _DUMMY[vr])
            elem.value = shifted if len(shifted) > 1 else (shifted[0] if shifted else "")
        elif vr == "TM" or tag == _TIMEZONE_OFFSET:
            return  # whole days are shifted: the time of day and the UTC offset are kept
        elif vr in _TEXT_VRS:
            self._clean_text(elem, ctx)
        elif vr in _BINARY_VRS:
            del ds[tag]  # overlay/curve data: no automatic cleaning of bitmaps
        # numbers (e.g. ages under Retain Patient Characteristics) carry nothing to clean

    def _clean_text(self, elem: DataElement, ctx: _Context) -> None:
        cleaner = self._cleaner(ctx)
        value = elem.value
        if isinstance(value, MultiValue | list):
            elem.value = [cleaner.clean(str(v)) for v in value]
        elif value is not None:
            elem.value = cleaner.clean(str(value))

    def _free_text(self, ds: Dataset, tag: BaseTag, ctx: _Context, mode: int) -> None:
        elem = ds[tag]
        if mode == _Mode.DUMMY:
            if elem.value:
                elem.value = _DUMMY_TEXT
        elif elem.value:
            self._clean_text(elem, ctx)
            if not elem.value:  # Text Value is Type 1 in a TEXT item: cleaned away, a dummy
                elem.value = _DUMMY_TEXT

    def _cleaner(self, ctx: _Context) -> TextCleaner:
        """The cleaner knows every value the profile replaces anywhere in this object."""
        if ctx.cleaner is None:
            if ctx.identifying is None:  # pragma: no cover - collected whenever C is in use
                ctx.identifying = self._identifying_values(ctx.ds)
            ctx.cleaner = TextCleaner(ctx.identifying)
        return ctx.cleaner

    def _identifying_values(self, ds: Dataset) -> list[str]:
        found: list[str] = []

        def visit(item: Dataset) -> None:
            for tag in list(item.keys()):
                # decide from the tag and VR first: converting every raw element is slow
                vr = _vr_of(item, tag)
                if vr == "SQ":
                    for child in item[tag].value or ():
                        visit(child)
                    continue
                # values cleaned (C) or kept are not identifying as a whole: a cleaned
                # description would otherwise lose its own clinical words
                if vr not in _TEXT_VRS or self.action_for(tag) not in _REPLACED:
                    continue
                elem = item[tag]
                if elem.value is None:
                    continue
                values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
                for value in values:
                    if isinstance(value, PersonName):
                        found.extend(str(c) for c in value.components)
                    found.append(str(value))

        visit(ds)
        return found

    # -- marks and file meta --------------------------------------------------------------

    def method_codes(self, *, masked: bool = False) -> list[tuple[str, str]]:
        """CID 7050 codes for this profile (and Clean Pixel Data when *masked*)."""
        codes = [OPTION_CODES[None], *(OPTION_CODES[o] for o in self.options)]
        if masked:
            codes.append(CLEAN_PIXEL_DATA_CODE)
        return codes

    def _mark(self, ds: Dataset, *, masked: bool) -> None:
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = [
            "Radiogate",
            f"DICOM PS3.15 {EDITION} Table E.1-1",
            f"profile {self.profile.name}"[:64],
        ]
        items = []
        for value, meaning in self.method_codes(masked=masked):
            code = Dataset()
            code.CodeValue = value
            code.CodingSchemeDesignator = "DCM"
            code.CodeMeaning = meaning
            items.append(code)
        ds.DeidentificationMethodCodeSequence = DicomSequence(items)
        if self._full_dates:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        elif self._modified_dates:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"

    def _file_meta(self, ds: Dataset) -> FileMetaDataset:
        old = getattr(ds, "file_meta", None)
        meta = FileMetaDataset()
        meta.FileMetaInformationVersion = b"\x00\x01"
        # the dataset's SOP UIDs (already replaced); the old meta's when the dataset lacks them
        sop_class = ds.get("SOPClassUID") or getattr(old, "MediaStorageSOPClassUID", None)
        sop_instance = ds.get("SOPInstanceUID")
        if not sop_instance:
            original = getattr(old, "MediaStorageSOPInstanceUID", None)
            keep = self.action_for(_MEDIA_STORAGE_SOP_INSTANCE) is Action.KEEP
            sop_instance = original if keep or not original else self.pseudo.uid(str(original))
        if not sop_class or not sop_instance:
            raise ValueError("input without SOP Class/Instance UIDs in dataset and file meta")
        meta.MediaStorageSOPClassUID = UID(str(sop_class))
        meta.MediaStorageSOPInstanceUID = UID(str(sop_instance))
        syntax = getattr(old, "TransferSyntaxUID", None) if old is not None else None
        if syntax is None:
            raise ValueError("input without a transfer syntax in its file meta information")
        meta.TransferSyntaxUID = syntax
        meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        return meta


def _dictionary_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def _dummy(vr: str) -> Any:
    if vr in _DUMMY:
        return _DUMMY[vr]
    if vr in _NUMBER_VRS:
        return 0
    if vr in _BINARY_VRS:
        return b"\0\0"
    return _DUMMY_TEXT


def _dummy_codes(item: Dataset) -> None:
    """A dummy code in place of one that names an institution or a person (action D)."""
    for tag in _CODE_ATTRIBUTES:
        elem = item.get(tag)
        if elem is not None and elem.value:
            elem.value = _DUMMY_TEXT


def _is_curve_or_overlay(tag: int) -> bool:
    """Curves (50xx,xxxx) and overlay data and comments (60xx,3000/4000), PS3.15 Table E.1-1."""
    return tag >> 24 == 0x50 or tag & 0xFF00FFFF in (0x60003000, 0x60004000)


def _parse_safe(entry: str) -> tuple[str, int, int]:
    """``CREATOR:gggg,xxee`` → (creator, group, element low byte)."""
    creator, _, tag = entry.rpartition(":")
    group, element = tag.split(",")
    return creator.strip(), int(group, 16), int(element[2:], 16)


def _drop_unused_creators(ds: Dataset) -> None:
    """Remove private creator elements whose block lost all its elements (PS3.5 7.8.1)."""
    tags = list(ds.keys())  # iterating a Dataset yields elements, not tags
    used = {(t >> 16, (t >> 8) & 0xFF) for t in tags if (t >> 16) & 1 and t & 0xFFFF >= 0x100}
    for tag in [t for t in tags if (t >> 16) & 1 and 0x10 <= t & 0xFFFF <= 0xFF]:
        if (tag >> 16, tag & 0xFF) not in used:
            del ds[tag]
    for tag in [t for t in tags if (t >> 16) & 1 and t & 0xFFFF < 0x10]:
        del ds[tag]  # (gggg,0001-000F) are not allowed; never keep them


def _default_pixel_step(ds: Dataset, profile: DeidProfile) -> BurnedIn:
    from dicom_nodes.deid import pixels  # decoding libraries only load when images need it

    if _PIXEL_DATA not in ds:
        return BurnedIn.NONE
    return pixels.burned_in_outcome(ds, profile.burned_in, profile.masks)


def _to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
