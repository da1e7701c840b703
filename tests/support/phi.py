"""A PHI scanner for de-identified output, and a synthetic dataset with every Table E.1-1 row.

:func:`identifying_values` collects, from an *input* dataset, every original value that must not
survive de-identification under a set of PS3.15 E.3 options:

* every value of every attribute whose action (Table E.1-1 row, :func:`resolve_action`) is D, Z,
  X, U or C, at any nesting level; everything inside a sequence that is removed (X) or emptied
  (Z) is collected whatever its own row says;
* every value of every private attribute (and every private creator), unless the profile keeps
  it under Retain Safe Private;
* every Person Name value anywhere, as a whole, per component group (alphabetic, ideographic,
  phonetic) and per name part;
* every DA value, and the date part of every DT value, of attributes whose action is not K, in
  several renderings (``YYYYMMDD``, ``YYYY-MM-DD``, ``YYYY.MM.DD``, ``DD/MM/YYYY``,
  ``MM/DD/YYYY``);
* everything inside Institution Code Sequence and Person Identification Code Sequence unless
  an option keeps them: their codes name the institution or the person;
* the free text of content items (Text Value, Unformatted Text Value) anywhere;
* the file meta group's Media Storage SOP Instance UID and Source/Sending/Receiving AE Titles.

:func:`find_leaks` then looks for each value in the whole output file (preamble, file meta,
dataset, sequences, private attributes, pixel data): encoded in the character set(s) of the
dataset (Specific Character Set; UTF-8 as well), and for ASCII values also case-insensitively.

False-positive filter (what is *not* searched for), on purpose:

* values shorter than 4 characters (``M``, ``CT``, ``1``), and numbers of fewer than 5 digits
  (``1234`` occurs by chance in any file of some size);
* values that are equal to, or part of, a value the profile legitimately keeps in the same input
  (an attribute not in the table or kept by an option: e.g. Study Description ``CT BRAIN WO
  IVCON`` that is also the Code Meaning of the Procedure Code Sequence, or a word of a kept
  Manufacturer's Model Name); PN values and dates of kept attributes do not count as
  "legitimately kept" for this purpose;
* standard UIDs of the DICOM dictionary (SOP classes, transfer syntaxes, coding schemes): they
  name kinds of objects, not patients, and Referenced SOP Class UIDs keep them;
* what the engine itself writes: the pseudonym, its dummy values (``ANONYMIZED``), the marks
  (``YES``, ``MODIFIED``, CID 7050 code values and meanings) and its implementation UID/name;
* binary values (OB/OW/UN, private binaries) shorter than 16 bytes or made of fewer than 4
  distinct byte values, and private binary numbers (US, SL, FD, ...): short byte strings occur
  in pixel data by chance;
* times (TM) under Retain Longitudinal Temporal Information with Modified Dates: the engine
  moves whole days and keeps the time of day (action C, engine module doc); dates under Retain
  Full Dates and anything else an option keeps (action K) are not collected either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from pydicom._uid_dict import UID_dictionary
from pydicom.charset import convert_encodings, encode_string
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID
from pydicom.valuerep import PersonName

from config.deid import DeidOption
from dicom_nodes.deid.table import Action, load_table, resolve_action

__all__ = [
    "EVERYTHING_PRIVATE",
    "Leak",
    "Phi",
    "build_everything",
    "find_leaks",
    "identifying_values",
    "table_rows",
]

_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DS", "IS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
)
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_NUMBER_VRS = frozenset({"AT", "FD", "FL", "SL", "SS", "SV", "UL", "US", "UV"})
_FREE_TEXT = frozenset({0x0040A160, 0x00700006})
_IDENTITY_CODE_SEQUENCES = frozenset({0x00080082, 0x00401101})
_META_TAGS = (0x00020003, 0x00020016, 0x00020017, 0x00020018)
_ENGINE_WORDS = (
    "ANONYMIZED",
    "YES",
    "MODIFIED",
    "UNMODIFIED",
    "REMOVED",
    "Radiogate",
    "RADIOGATE_1",
    "DICOM PS3.15 2023b Table E.1-1",
    "19000101",
    "000000",
)


@dataclass(frozen=True)
class Phi:
    """One original value to look for, with where it came from."""

    value: str | bytes
    origin: str
    encodings: tuple[str, ...] = ()
    """Python codecs of the Specific Character Set in force where the value was found."""
    derived: bool = False
    """A rendering or a part of the original value rather than the value as stored."""


@dataclass(frozen=True)
class Leak:
    phi: Phi
    form: bytes

    def __str__(self) -> str:
        return f"{self.phi.origin}: {self.phi.value!r} found as {self.form!r}"


@dataclass
class _Collector:
    options: tuple[DeidOption, ...]
    safe_private: frozenset[tuple[str, int, int]]
    found: list[Phi] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def modified_dates_clean(self, tag: int) -> bool:
        row = load_table().row_for(tag)
        return (
            row is not None
            and row.options.get(DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES) == "C"
        )

    def action(self, tag: int) -> Action | None:
        row = load_table().row_for(tag)
        return None if row is None else resolve_action(row, self.options)


def _path(parent: str, elem: DataElement) -> str:
    return f"{parent}({elem.tag >> 16:04X},{elem.tag & 0xFFFF:04X})"


def _values(elem: DataElement) -> list[object]:
    value = elem.value
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [v for v in value if v is not None and v != ""]
    return [value]


def _date_forms(date: str) -> list[str]:
    if not re.fullmatch(r"\d{8}", date):
        return [date]
    y, m, d = date[:4], date[4:6], date[6:8]
    return [date, f"{y}-{m}-{d}", f"{y}.{m}.{d}", f"{d}/{m}/{y}", f"{m}/{d}/{y}"]


def _pn_parts(value: PersonName) -> list[str]:
    parts = [str(value)]
    for group in value.components:
        parts.append(group)
        parts.extend(p for p in re.split(r"[\^ ]", group) if p)
    return parts


def _is_private_creator(tag: int) -> bool:
    return bool((tag >> 16) & 1) and 0x10 <= tag & 0xFFFF <= 0xFF


def _safe(collector: _Collector, item: Dataset, tag: int) -> bool:
    if DeidOption.RETAIN_SAFE_PRIVATE not in collector.options:
        return False
    group, block, low = tag >> 16, (tag >> 8) & 0xFF, tag & 0xFF
    if _is_private_creator(tag):
        creator = str(item[tag].value).strip()
        return any(c == creator and g == group for c, g, _ in collector.safe_private)
    creator_elem = item.get((group << 16) | block)
    creator = str(creator_elem.value).strip() if creator_elem is not None else ""
    return (creator, group, low) in collector.safe_private


def _visit(
    collector: _Collector, item: Dataset, parent: str, *, removed: bool, encodings: tuple[str, ...]
) -> None:
    if 0x00080005 in item:  # an item may name its own character set (PS3.5 C.12.1.1.2)
        encodings = tuple(_encodings(item))

    def phi(value: str | bytes, path: str, *, derived: bool = False) -> Phi:
        return Phi(value, path, encodings, derived)

    for elem in item:
        tag = int(elem.tag)
        path = _path(parent, elem)
        private = bool((tag >> 16) & 1)
        action = None if private else collector.action(tag)
        if private:
            gone = removed or not _safe(collector, item, tag)
        else:
            gone = removed or action in (Action.REMOVE, Action.ZERO)
        if elem.VR == "SQ":
            # the codes of these sequences are the identity (an institution's, a person's)
            gone = gone or (tag in _IDENTITY_CODE_SEQUENCES and action is not Action.KEEP)
            for i, child in enumerate(elem.value or ()):
                _visit(collector, child, f"{path}[{i}]", removed=gone, encodings=encodings)
            continue
        identifying = gone or action in (Action.DUMMY, Action.UID, Action.CLEAN)
        if (
            action is Action.CLEAN
            and elem.VR not in ("DA", "DT")
            and DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES in collector.options
            and collector.modified_dates_clean(tag)
        ):
            identifying = False  # whole days are shifted: times and UTC offsets are kept
        if private and not gone:
            identifying = False  # kept by Retain Safe Private
        if elem.VR in _NUMBER_VRS:
            continue  # binary numbers: a few bytes that occur anywhere by chance
        for value in _values(elem):
            if isinstance(value, bytes):
                if identifying and elem.VR in _BINARY_VRS:
                    collector.found.append(phi(value, path))
                continue
            if elem.VR == "PN":
                pn = value if isinstance(value, PersonName) else PersonName(str(value))
                if identifying or action is None:  # every name anywhere
                    parts = _pn_parts(pn)
                    collector.found.append(phi(parts[0], path))
                    collector.found.extend(phi(p, path, derived=True) for p in parts[1:])
                continue
            text = str(value)
            if elem.VR in ("DA", "DT"):
                if action is Action.KEEP and not gone:
                    collector.kept.append(text)  # an option keeps it (e.g. Full Dates)
                elif identifying or action is None:
                    forms = _date_forms(text[:8])
                    collector.found.extend(phi(f, path, derived=f != text) for f in forms)
                    if identifying and text not in forms:
                        collector.found.append(phi(text, path))
                continue
            if tag in _FREE_TEXT or identifying:
                collector.found.append(phi(text, path))
            elif elem.VR in _TEXT_VRS or elem.VR == "UI":
                collector.kept.append(text)


def identifying_values(
    ds: Dataset,
    options: Iterable[DeidOption] = (),
    *,
    safe_private: Iterable[str] = (),
    extra_allowed: Iterable[str] = (),
) -> list[Phi]:
    """Every original identifying value of *ds* (see the module doc), after the filter."""
    safe = frozenset(_parse_safe(s) for s in safe_private)
    collector = _Collector(tuple(options), safe)
    _visit(collector, ds, "", removed=False, encodings=tuple(_encodings(ds)))
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for tag in _META_TAGS:
            if tag in meta and meta[tag].value:
                collector.found.append(Phi(str(meta[tag].value), _path("meta", meta[tag])))
    allowed = [*collector.kept, *_ENGINE_WORDS, *extra_allowed]
    allowed_folded = [a.casefold() for a in allowed]
    out: dict[tuple[str | bytes, str], Phi] = {}
    for phi in collector.found:
        if _trivial(phi.value, allowed_folded):
            continue
        out.setdefault((phi.value, phi.origin), phi)
    return list(out.values())


def _trivial(value: str | bytes, allowed_folded: Sequence[str]) -> bool:
    if isinstance(value, bytes):
        return len(value) < 16 or len(set(value)) < 4
    text = value.strip().strip("^= ")
    if len(text) < 4:
        return True
    if text.isdigit() and len(text) < 5:
        return True
    if text in UID_dictionary:
        return True
    folded = text.casefold()
    return any(folded in a for a in allowed_folded)


def _parse_safe(entry: str) -> tuple[str, int, int]:
    creator, _, tag = entry.rpartition(":")
    group, element = tag.split(",")
    return creator.strip(), int(group, 16), int(element[2:], 16)


def _encodings(ds: Dataset) -> list[str]:
    charset = ds.get(0x00080005)
    names: list[str] = []
    if charset is not None and charset.value:
        value = charset.value
        names = [str(v) for v in value] if isinstance(value, MultiValue | list) else [str(value)]
    return convert_encodings(names or ["ISO_IR 6"])


def _forms(value: str | bytes, encodings: list[str]) -> Iterator[tuple[bytes, bool]]:
    """(bytes to look for, whether to compare case-insensitively)."""
    if isinstance(value, bytes):
        yield value, False
        return
    seen: set[bytes] = set()
    candidates = []
    try:
        candidates.append(encode_string(value, encodings))
        if "=" in value or "^" in value:  # as a PN value encodes it (groups, delimiters)
            candidates.append(PersonName(value).encode(encodings))
    except (UnicodeError, LookupError):
        pass
    candidates.append(value.encode("utf-8"))
    for encoded in candidates:
        # ISO 2022: also the payload between escape sequences, as another string would hold it
        pieces = [
            encoded,
            *(
                p
                for p in re.split(rb"\x1b[\x24\x28\x29\x2d][\x28\x29\x2d]?.", encoded)
                if len(p) >= 4
            ),
        ]
        for piece in pieces:
            if piece and piece not in seen:
                seen.add(piece)
                yield piece, piece.isascii() and value.isascii()


def find_leaks(phi: Iterable[Phi], output: bytes) -> list[Leak]:
    """The identifying values found anywhere in the *output* file bytes.

    Each value is looked for as its dataset's character set encodes it (and as UTF-8)."""
    folded = output.lower()
    leaks = []
    for item in phi:
        for form, fold in _forms(item.value, list(item.encodings) or ["iso8859"]):
            haystack, needle = (folded, form.lower()) if fold else (output, form)
            if needle in haystack:
                leaks.append(Leak(item, form))
                break
    return leaks


# -- the synthetic "everything" dataset ---------------------------------------------------------

EVERYTHING_PRIVATE = (
    ("RG TEST BLOCK A", 0x0011, 0x10),
    ("RG TEST BLOCK B", 0x0011, 0x11),
)
"""The two private creator blocks of :func:`build_everything` (creator, group, block)."""


def table_rows() -> list[dict[str, str]]:
    """The rows of the shipped Table E.1-1 JSON."""
    import json
    from importlib import resources

    text = (resources.files("dicom_nodes.deid") / "data" / "annex_e_2023b.json").read_text()
    rows: list[dict[str, str]] = json.loads(text)["rows"]
    return rows


def exact_tag(row: dict[str, str]) -> int | None:
    digits = row["tag"].strip("()").replace(",", "")
    if not re.fullmatch(r"[0-9A-Fa-f]{8}", digits):
        return None
    return int(digits, 16)


def _letters(tag: int) -> str:
    """A tag as letters only: no cleaning pattern (dates, long numbers) can match it."""
    return "".join("GHJKLMNPQRSTVWXY"[int(c, 16)] for c in f"{tag:08X}")


EVERYTHING_DATE = "20230115"
"""Every DA of :func:`build_everything` outside the deep chain: one date, so that no shifted date
(1..365 days back) can equal another attribute's original date."""


def _time(tag: int) -> str:
    seconds = tag % 86400
    return f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}.25"


def value_for(tag: int, vr: str) -> object:
    """A value consistent with *vr*, unique to *tag* where the VR allows."""
    code = _letters(tag)
    match vr:
        case "AE" | "SH" | "CS":
            return f"{vr}{code}"
        case "LO" | "LT" | "ST" | "UT" | "UC":
            return f"{vr} {code}"
        case "PN":
            return f"FAM{code}^GIV{code}"
        case "DA":
            return EVERYTHING_DATE
        case "DT":
            return EVERYTHING_DATE + _time(tag)
        case "TM":
            return _time(tag)
        case "UI":
            return f"1.2.826.0.1.3680043.10.1125.{tag}"
        case "DS":
            return "12.75"
        case "IS":
            return "42"
        case "AS":
            return "045Y"
        case "US" | "SS" | "UL" | "SL":
            return 7
        case "FL" | "FD":
            return 1.5
        case "UR":
            return f"http://example.org/{code.lower()}"
        case "AT":
            return 0x00100010
        case _:  # OB, OW, UN and the other binaries
            return bytes((tag + i * 37) % 251 for i in range(32))


def _item(tag: int, *, free_text: bool) -> Dataset:
    """One sequence item: a nested name, a date and a referenced UID (and text where apt)."""
    code = _letters(tag)
    item = Dataset()
    item.CodeValue = f"CV{code}"
    item.CodingSchemeDesignator = "99RGTEST"
    item.CodeMeaning = f"MEANING {code}"
    item.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.10.1125.9.{tag}"
    item.Date = EVERYTHING_DATE
    item.PersonName = f"ITEMFAM{code}^ITEMGIV{code}"
    if free_text:
        item.TextValue = f"ITEMTEXT{code} mass in left lobe"
        text = Dataset()
        text.UnformattedTextValue = f"ITEMNOTE{code} arrow"
        item.TextObjectSequence = DicomSequence([text])
    return item


_FREE_TEXT_SEQUENCES = frozenset({0x0040A730, 0x00400555, 0x00400610, 0x00700001})
"""Content, Acquisition Context, Specimen Preparation and Graphic Annotation Sequences."""


def _private_blocks(item: Dataset, depth: int) -> None:
    for creator, group, block in EVERYTHING_PRIVATE:
        item.add_new((group << 16) | block, "LO", creator)
        base = (group << 16) | (block << 8)
        item.add_new(base | 0x01, "LO", f"PRIVLO {creator[-1]}{depth} SECRETWORD")
        item.add_new(base | 0x02, "PN", f"PRIVFAM{creator[-1]}{depth}^PRIVGIV")
        item.add_new(base | 0x03, "DA", f"{1970 + 2 * depth}0609")
        item.add_new(base | 0x04, "OB", bytes((depth * 13 + i * 7) % 256 for i in range(40)))


def build_everything() -> Dataset:
    """A dataset with one element for every exact row of the table, with file meta.

    SQ rows get one item with a nested Person Name, Date and Referenced SOP Instance UID (free
    text in the sequences that carry it); private attributes in two creator blocks; curves
    (5000,xxxx) and overlays (6000,3000/4000); a chain of sequences three deep, each level with
    a name, a date and private attributes."""
    ds = Dataset()
    seen: set[int] = set()
    for row in table_rows():
        tag = exact_tag(row)
        if tag is None or tag in seen or tag >> 16 in (0x0000, 0x0002):  # command, file meta
            continue
        seen.add(tag)
        vr = dictionary_VR(tag).split(" or ")[0]
        if vr == "SQ":
            ds.add_new(
                tag, "SQ", DicomSequence([_item(tag, free_text=tag in _FREE_TEXT_SEQUENCES)])
            )
        else:
            ds.add_new(tag, vr, value_for(tag, vr))
    ds.TimezoneOffsetFromUTC = "+0130"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.Modality = "OT"
    # curves and overlays
    ds.add_new(0x50000005, "US", 1)
    ds.add_new(0x50002500, "LO", "CURVELABEL WAVEFORM")
    ds.add_new(0x50003000, "OB", bytes((i * 11 + 3) % 256 for i in range(64)))
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", bytes((i * 29 + 5) % 256 for i in range(8)))
    ds.add_new(0x60004000, "LT", "OVERLAYCOMMENT arrow")
    _private_blocks(ds, 0)
    # a chain three deep in a sequence that is not in the table (kept and walked)
    outer = Dataset()
    current = outer
    for depth in range(1, 4):
        current.CodeValue = f"CODE{depth}"
        current.CodingSchemeDesignator = "99RGTEST"
        current.CodeMeaning = f"Procedure level {depth}"
        current.PersonName = f"DEEPFAM{depth}^DEEPGIV{depth}"
        current.Date = f"{1984 + 2 * depth}030{depth}"  # years apart: no shift reaches another
        _private_blocks(current, depth)
        if depth < 3:
            child = Dataset()
            current.ProcedureCodeSequence = DicomSequence([child])
            current = child
    ds.ProcedureCodeSequence = DicomSequence([outer])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.1")
    ds.file_meta.SourceApplicationEntityTitle = "SOURCEAEPHI"
    return ds
