"""Each PS3.15 E.3 option changes exactly the rows of Table E.1-1 it should.

For each option O the synthetic dataset with every table row
(:func:`tests.support.phi.build_everything`) is de-identified with the Basic Profile alone and
with Basic + O. The attributes whose output differs must be exactly the rows whose O column is
non-empty and whose action under O differs from the Basic action (both read from the shipped
JSON; combined codes resolved as the table module documents: ``Z/D``, ``X/D``, ``X/Z/D`` → D,
``X/Z`` → Z, ``X/Z/U*`` → U).

A difference inside a sequence counts for the outermost attribute on its path whose row the
option changes (a Referenced Image Sequence under Retain UIDs differs through the UIDs of its
items); otherwise for the attribute where it is found.

Deliberate exceptions (asserted, not skipped): opaque binary values (OB/UN) are removed when
their action is C, as X would, because bytes cannot be cleaned automatically; curves and
overlays (Curve rows (50xx,xxxx), Overlay Data and Comments (60xx,3000/4000)) are removed under
Clean Graphics as well (engine module doc).
"""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

from config.deid import DeidOption, DeidProfile
from dicom_nodes.deid.engine import IMPLEMENTATION_CLASS_UID, Deidentifier
from dicom_nodes.deid.model import BurnedIn
from tests.support.phi import EVERYTHING_PRIVATE, build_everything, exact_tag, table_rows

SECRET = b"options-test-secret-0123456789ab"

COLUMN = {
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
"""Option → column of the JSON (its ``columns`` header: "Rtn. Safe Priv. Opt." …)."""

CID_7050 = {
    DeidOption.RETAIN_SAFE_PRIVATE: "113111",
    DeidOption.RETAIN_UIDS: "113110",
    DeidOption.RETAIN_DEVICE_IDENTITY: "113109",
    DeidOption.RETAIN_INSTITUTION_IDENTITY: "113112",
    DeidOption.RETAIN_PATIENT_CHARACTERISTICS: "113108",
    DeidOption.RETAIN_LONGITUDINAL_FULL_DATES: "113106",
    DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES: "113107",
    DeidOption.CLEAN_DESCRIPTORS: "113105",
    DeidOption.CLEAN_STRUCTURED_CONTENT: "113104",
    DeidOption.CLEAN_GRAPHICS: "113103",
}
"""PS3.16 CID 7050 De-identification Method codes; 113100 is the Basic Profile."""

RESOLVED = {
    "D": "D", "Z": "Z", "X": "X", "K": "K", "C": "C", "U": "U",
    "Z/D": "D", "X/Z": "Z", "X/D": "D", "X/Z/D": "D", "X/Z/U*": "U",
}  # fmt: skip

PRIVATE_ROW = "(gggg,eeee) where gggg is odd"
CURVES, OVERLAY_DATA, OVERLAY_COMMENTS = "(50xx,xxxx)", "(60xx,3000)", "(60xx,4000)"
SAFE = f"{EVERYTHING_PRIVATE[0][0]}:{EVERYTHING_PRIVATE[0][1]:04X},xx01"
"""One private attribute kept under Retain Safe Private (the LO of block A, at every level)."""

MARKS = frozenset({0x00120062, 0x00120063, 0x00120064, 0x00280303})
"""Written by the engine (checked separately below), not taken from the input."""


def no_pixels(ds: Dataset, profile: DeidProfile) -> BurnedIn:
    return BurnedIn.NONE


def _binary(row: dict[str, str]) -> bool:
    tag = exact_tag(row)
    return tag is not None and dictionary_VR(tag) in ("OB", "UN")


EXCEPTIONS: dict[DeidOption, dict[str, str]] = {
    DeidOption.CLEAN_GRAPHICS: {
        CURVES: "curves are removed under Clean Graphics too",
        OVERLAY_DATA: "overlay bitmaps are removed under Clean Graphics too",
        OVERLAY_COMMENTS: "overlay comments are removed under Clean Graphics too",
    },
}
"""Rows an option names whose output nonetheless does not change, and why."""
for _row in table_rows():
    for _option, _column in COLUMN.items():
        if _row[_column] == "C" and RESOLVED[_row["basic"]] == "X" and _binary(_row):
            EXCEPTIONS.setdefault(_option, {})[_row["tag"]] = "C on bytes removes, as X"


def _row_key(tag: int) -> str | None:
    """The row of the table (its printed tag) that governs *tag*, read from the JSON."""
    if (tag >> 16) & 1:
        return PRIVATE_ROW
    text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    if any(row["tag"] == text for row in table_rows()):
        return text
    if tag >> 24 == 0x50:
        return CURVES
    if tag & 0xFF00FFFF == 0x60003000:
        return OVERLAY_DATA
    if tag & 0xFF00FFFF == 0x60004000:
        return OVERLAY_COMMENTS
    return None


def expected_rows(option: DeidOption) -> set[str]:
    """Rows whose option column is set with an action other than the Basic one."""
    column = COLUMN[option]
    rows: set[str] = set()
    for row in table_rows():
        code = row[column]
        if not code or RESOLVED[code] == RESOLVED[row["basic"]]:
            continue
        if row["tag"].startswith(("(0000,", "(0002,")):
            continue  # command elements are not in files; file meta is checked separately
        rows.add(row["tag"])
    return rows


def _deidentify(options: list[DeidOption]) -> tuple[Dataset, Deidentifier]:
    profile = DeidProfile(name="options-test", options=options, safe_private=[SAFE])
    engine = Deidentifier(profile, SECRET, pixel_step=no_pixels)
    data, _ = engine.deidentify_bytes(_everything_bytes())
    return pydicom.dcmread(io.BytesIO(data)), engine


def _everything_bytes() -> bytes:
    buffer = io.BytesIO()
    build_everything().save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def differing_rows(a: Dataset, b: Dataset, changed: set[str]) -> dict[str, list[str]]:
    """Rows (or bare tags) whose output differs between *a* and *b*, with example paths."""
    out: dict[str, list[str]] = {}

    def walk(x: Dataset, y: Dataset, responsible: str | None, path: str, top: bool) -> None:
        for tag in sorted(set(x.keys()) | set(y.keys())):
            if top and tag in MARKS:
                continue
            key = _row_key(tag)
            owner = responsible or (key if key in changed else None)
            where = owner or key or f"({tag >> 16:04X},{tag & 0xFFFF:04X}) not in table"
            here = f"{path}({tag >> 16:04X},{tag & 0xFFFF:04X})"
            ex, ey = x.get(tag), y.get(tag)
            if ex is None or ey is None:
                out.setdefault(where, []).append(
                    f"{here} only in {'Basic+O' if ex is None else 'Basic'}"
                )
                continue
            if ex.VR == "SQ" and ey.VR == "SQ":
                if len(ex.value) != len(ey.value):
                    out.setdefault(where, []).append(
                        f"{here} items {len(ex.value)}/{len(ey.value)}"
                    )
                    continue
                for i, (ix, iy) in enumerate(zip(ex.value, ey.value, strict=True)):
                    walk(ix, iy, owner, f"{here}[{i}]", False)
            elif ex.value != ey.value:
                out.setdefault(where, []).append(f"{here}: {ex.value!r} / {ey.value!r}")

    walk(a, b, None, "", True)
    return out


@pytest.fixture(scope="module")
def basic() -> Dataset:
    return _deidentify([])[0]


def test_the_synthetic_dataset_has_every_exact_row() -> None:
    ds = build_everything()
    tags = {exact_tag(r) for r in table_rows()} - {None}
    missing = {t for t in tags if t is not None and t >> 16 not in (0, 2) and t not in ds}
    assert not missing
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    sequences = [
        e
        for e in ds
        if e.VR == "SQ" and exact_tag({"tag": f"({e.tag.group:04X},{e.tag.element:04X})"})
    ]
    assert all(len(e.value) == 1 and "PersonName" in e.value[0] for e in sequences)


@pytest.mark.parametrize("option", list(DeidOption))
def test_option_changes_exactly_its_rows(option: DeidOption, basic: Dataset) -> None:
    with_option, _ = _deidentify([option])
    expected = expected_rows(option)
    exceptions = EXCEPTIONS.get(option, {})
    assert set(exceptions) <= expected, "an exception for a row the option does not change"
    differs = differing_rows(basic, with_option, expected)
    unexpected = {k: v for k, v in differs.items() if k not in expected - set(exceptions)}
    missing = (expected - set(exceptions)) - set(differs)
    assert not unexpected and not missing, (
        f"option {option}: differs but not expected: "
        + "\n".join(f"  {k}: {v[:3]}" for k, v in sorted(unexpected.items()))
        + f"\nexpected but unchanged: {sorted(missing)}"
    )
    assert expected, "every option names some rows"


@pytest.mark.parametrize(("option", "rows"), sorted(EXCEPTIONS.items()))
def test_deliberate_exceptions_are_removed_under_both(
    option: DeidOption, rows: dict[str, str], basic: Dataset
) -> None:
    with_option, _ = _deidentify([option])
    for ds in (basic, with_option):
        present = {_row_key(int(t)) for t in ds.keys()}  # noqa: SIM118 - a Dataset yields elements
        assert not present & set(rows), sorted(str(p) for p in present & set(rows))


@pytest.mark.parametrize("option", [None, *DeidOption])
def test_marks_name_exactly_the_profile(option: DeidOption | None) -> None:
    options = [] if option is None else [option]
    profile = DeidProfile(name="marks", options=options)
    source = _everything_bytes()
    original = pydicom.dcmread(io.BytesIO(source))
    data, result = Deidentifier(profile, SECRET, pixel_step=no_pixels).deidentify_bytes(source)
    ds = pydicom.dcmread(io.BytesIO(data))
    codes = [
        (item.CodeValue, item.CodingSchemeDesignator)
        for item in ds.DeidentificationMethodCodeSequence
    ]
    assert sorted(codes) == sorted(
        [("113100", "DCM"), *(() if option is None else [(CID_7050[option], "DCM")])]
    )
    assert all(item.CodeMeaning for item in ds.DeidentificationMethodCodeSequence)
    expected_ltim = {
        DeidOption.RETAIN_LONGITUDINAL_FULL_DATES: "UNMODIFIED",
        DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES: "MODIFIED",
    }.get(option, "REMOVED")  # type: ignore[arg-type]
    assert ds.LongitudinalTemporalInformationModified == expected_ltim
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod
    # new file meta, zero preamble
    assert data[:128] == b"\0" * 128 and data[128:132] == b"DICM"
    meta = ds.file_meta
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationClassUID != original.file_meta.get("ImplementationClassUID")
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert meta.MediaStorageSOPClassUID == ds.SOPClassUID == original.SOPClassUID
    assert meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert "SourceApplicationEntityTitle" not in meta
    if option is DeidOption.RETAIN_UIDS:
        assert meta.MediaStorageSOPInstanceUID == original.file_meta.MediaStorageSOPInstanceUID
    else:
        assert meta.MediaStorageSOPInstanceUID != original.file_meta.MediaStorageSOPInstanceUID
    assert result.dataset.SOPInstanceUID == ds.SOPInstanceUID


def test_two_options_both_apply() -> None:
    """Combined options: the union of their changes (Full Dates keeps, Clean Descriptors cleans)."""
    ds, _ = _deidentify([DeidOption.RETAIN_LONGITUDINAL_FULL_DATES, DeidOption.CLEAN_DESCRIPTORS])
    original = build_everything()
    assert ds.StudyDate == original.StudyDate
    assert ds.StudyDescription == original.StudyDescription  # nothing identifying in it
    codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
    assert codes == {"113100", "113106", "113105"}


def test_rows_listed_twice_take_the_more_protective_code() -> None:
    """Table E.1-1 lists three AE Titles twice (two modules), with C in one row, K in the other."""
    by_tag: dict[str, list[dict[str, str]]] = {}
    for row in table_rows():
        by_tag.setdefault(row["tag"], []).append(row)
    duplicates = {tag: rows for tag, rows in by_tag.items() if len(rows) > 1}
    assert duplicates
    checked = 0
    for tag_text, rows in duplicates.items():
        tag = exact_tag(rows[0])
        assert tag is not None
        for option, column in COLUMN.items():
            codes = {RESOLVED[r[column]] for r in rows if r[column]}
            if len(codes) < 2:
                continue
            engine = Deidentifier(DeidProfile(options=[option]), SECRET, pixel_step=no_pixels)
            action = engine.action_for(tag)
            assert action is not None and action.value == sorted(codes - {"K"})[0], tag_text
            checked += 1
    assert checked == 3
