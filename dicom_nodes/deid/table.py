"""DICOM PS3.15 Table E.1-1 (Application Level Confidentiality Profile Attributes) as data.

The table ships with Radiogate as ``data/annex_e_2023b.json``: the 2023b edition parsed from
NEMA's DocBook source of PS3.15 (611 rows; the ``source_sha256`` in the file names the source).
The edition is pinned because the table changes between editions; it is named in every
de-identified object's De-identification Method (0012,0063).

Each row gives the action of the Basic Profile and, per option, the action that replaces it when
that option is selected (PS3.15 E.3). Action codes (Table E.1-1 legend):

* ``D`` replace with a non-zero length dummy value consistent with the VR;
* ``Z`` replace with a zero length value, or a dummy value consistent with the VR;
* ``X`` remove;
* ``K`` keep (unchanged for non-sequence attributes, cleaned for sequences);
* ``C`` clean: replace with values of similar meaning known not to identify the patient;
* ``U`` replace with a non-zero length UID that is internally consistent within a set of
  instances;
* ``Z/D``, ``X/Z``, ``X/D``, ``X/Z/D``, ``X/Z/U*``: the least destructive choice that keeps the
  IOD conformant (PS3.15 E.1.1 note). Without knowing each IOD's attribute types this engine
  takes the conformant end: ``Z/D`` → ``D``, ``X/Z`` → ``Z``, ``X/D`` → ``D``, ``X/Z/D`` → ``D``,
  ``X/Z/U*`` → keep the sequence and replace the UIDs inside it (``U``). None of these keeps an
  original value.

When two selected options name different actions for one attribute (only Retain Device
Identity ``K`` against Retain Longitudinal Temporal Information with Modified Dates ``C`` on
calibration dates), the more protective one (``C``) wins.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources

from config.deid import DeidOption

__all__ = [
    "EDITION",
    "OPTION_CODES",
    "Action",
    "Row",
    "Table",
    "load_table",
    "resolve_action",
]

EDITION = "2023b"
"""The edition of PS3.15 whose Table E.1-1 is applied."""


class Action(StrEnum):
    """The single action applied to an attribute once combined codes are resolved."""

    DUMMY = "D"
    ZERO = "Z"
    REMOVE = "X"
    KEEP = "K"
    CLEAN = "C"
    UID = "U"


_COMBINED: dict[str, Action] = {
    "D": Action.DUMMY,
    "Z": Action.ZERO,
    "X": Action.REMOVE,
    "K": Action.KEEP,
    "C": Action.CLEAN,
    "U": Action.UID,
    "Z/D": Action.DUMMY,
    "X/Z": Action.ZERO,
    "X/D": Action.DUMMY,
    "X/Z/D": Action.DUMMY,
    "X/Z/U*": Action.UID,
}
"""Table codes → the action taken (see the module doc for the combined codes)."""

OPTION_COLUMNS: dict[DeidOption, str] = {
    DeidOption.RETAIN_SAFE_PRIVATE: "rtn_safe_priv",
    DeidOption.RETAIN_UIDS: "rtn_uids",
    DeidOption.RETAIN_DEVICE_IDENTITY: "rtn_dev_id",
    DeidOption.RETAIN_INSTITUTION_IDENTITY: "rtn_inst_id",
    DeidOption.RETAIN_PATIENT_CHARACTERISTICS: "rtn_pat_chars",
    DeidOption.RETAIN_LONGITUDINAL_FULL_DATES: "rtn_long_full_dates",
    DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES: "rtn_long_modif_dates",
    DeidOption.CLEAN_DESCRIPTORS: "clean_desc",
    DeidOption.CLEAN_STRUCTURED_CONTENT: "clean_struct_cont",
    DeidOption.CLEAN_GRAPHICS: "clean_graph",
}
"""Option → its column in the shipped table."""

OPTION_CODES: dict[DeidOption | None, tuple[str, str]] = {
    None: ("113100", "Basic Application Confidentiality Profile"),
    DeidOption.RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private Option"),
    DeidOption.RETAIN_UIDS: ("113110", "Retain UIDs Option"),
    DeidOption.RETAIN_DEVICE_IDENTITY: ("113109", "Retain Device Identity Option"),
    DeidOption.RETAIN_INSTITUTION_IDENTITY: ("113112", "Retain Institution Identity Option"),
    DeidOption.RETAIN_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics Option"),
    DeidOption.RETAIN_LONGITUDINAL_FULL_DATES: (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES: (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    DeidOption.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors Option"),
    DeidOption.CLEAN_STRUCTURED_CONTENT: ("113104", "Clean Structured Content Option"),
    DeidOption.CLEAN_GRAPHICS: ("113103", "Clean Graphics Option"),
}
"""CID 7050 De-identification Method codes (scheme DCM) of the profile (key None) and options."""

CLEAN_PIXEL_DATA_CODE = ("113101", "Clean Pixel Data Option")
"""CID 7050 code added when configured regions of the pixel data were blacked out."""


@dataclass(frozen=True)
class Row:
    """One row of Table E.1-1: a tag (or tag pattern) and its action codes."""

    tag: str
    """As printed in the standard: ``(0010,0010)``, ``(50xx,xxxx)``, ``(gggg,eeee) …``."""
    name: str
    basic: str
    options: Mapping[DeidOption, str]

    @property
    def is_private_row(self) -> bool:
        return self.tag.startswith("(gggg")


def _pattern(tag: str) -> tuple[int, int] | None:
    """``(50xx,xxxx)`` → (mask, value) over the 32-bit tag; None for exact or private rows."""
    digits = tag.strip("()").replace(",", "").lower()
    if len(digits) != 8 or "g" in digits or "x" not in digits:
        return None
    mask = int("".join("0" if c == "x" else "f" for c in digits), 16)
    value = int("".join("0" if c == "x" else c for c in digits), 16)
    return mask, value


@dataclass(frozen=True)
class Table:
    """The parsed table: exact tags, masked patterns (curves, overlays) and the private row."""

    edition: str
    rows: tuple[Row, ...]
    exact: Mapping[int, Row]
    patterns: tuple[tuple[int, int, Row], ...]
    private: Row

    def row_for(self, tag: int) -> Row | None:
        """The row governing *tag* (exact match first, then patterns, then the private row)."""
        row = self.exact.get(tag)
        if row is not None:
            return row
        if (tag >> 16) & 1:
            return self.private
        for mask, value, pattern_row in self.patterns:
            if tag & mask == value:
                return pattern_row
        return None


@cache
def load_table() -> Table:
    """Load the shipped table once per process."""
    text = (resources.files("dicom_nodes.deid") / "data" / f"annex_e_{EDITION}.json").read_text(
        encoding="utf-8"
    )
    raw = json.loads(text)
    if raw.get("edition") != EDITION:
        raise ValueError(f"annex_e_{EDITION}.json holds edition {raw.get('edition')!r}")
    rows: list[Row] = []
    exact: dict[int, Row] = {}
    patterns: list[tuple[int, int, Row]] = []
    private: Row | None = None
    for item in raw["rows"]:
        row = Row(
            tag=item["tag"],
            name=item["name"],
            basic=item["basic"],
            options={opt: item[col] for opt, col in OPTION_COLUMNS.items() if item[col]},
        )
        for code in (row.basic, *row.options.values()):
            if code not in _COMBINED:
                raise ValueError(f"{row.tag}: unknown action code {code!r}")
        rows.append(row)
        if row.is_private_row:
            private = row
            continue
        pattern = _pattern(row.tag)
        if pattern is None:
            tag = int(row.tag.strip("()").replace(",", ""), 16)
            # Three AE Title attributes appear twice (two modules) with Retain Device Identity
            # C in one row and K in the other: the rows merge, the more protective code wins.
            earlier = exact.get(tag)
            exact[tag] = row if earlier is None else _merge(earlier, row)
        else:
            patterns.append((pattern[0], pattern[1], row))
    if private is None:
        raise ValueError("Table E.1-1 without the private attributes row")
    return Table(EDITION, tuple(rows), exact, tuple(patterns), private)


_PROTECTIVE = {Action.KEEP: 0, Action.CLEAN: 1}


def _more_protective(a: str, b: str) -> str:
    return a if _PROTECTIVE.get(_COMBINED[a], 2) >= _PROTECTIVE.get(_COMBINED[b], 2) else b


def _merge(a: Row, b: Row) -> Row:
    """One row from two rows of the same tag: per column, the more protective code."""
    options = dict(a.options)
    for option, code in b.options.items():
        options[option] = _more_protective(options[option], code) if option in options else code
    return Row(a.tag, a.name, _more_protective(a.basic, b.basic), options)


def resolve_action(row: Row, options: Iterable[DeidOption]) -> Action:
    """The action for *row* under the Basic Profile plus *options* (PS3.15 E.3)."""
    chosen: Action | None = None
    for option in options:
        code = row.options.get(option)
        if not code:
            continue
        action = _COMBINED[code]
        if chosen is None or _PROTECTIVE.get(action, 2) > _PROTECTIVE.get(chosen, 2):
            chosen = action
    return chosen if chosen is not None else _COMBINED[row.basic]
