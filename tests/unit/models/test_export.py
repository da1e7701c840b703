"""The feature store's files: Parquet and CSV partitioned by date, one file per study replaced
atomically, read back to the same rows (and by a partitioned dataset reader)."""

from __future__ import annotations

import csv
import dataclasses
import datetime
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from analysis.results.table import CSV_COLUMNS, IDC_COLUMNS, PROVENANCE_COLUMNS, MeasurementRow
from dicom_nodes.features import export_study, parquet_schema
from tests.unit.models.conftest import study_rows

DAY = datetime.date(2024, 5, 6)


def _parse(column: str, text: str) -> object:
    """A CSV cell as the row holds it."""
    if text == "":
        return None
    if column in ("measurementGroup_number", "segmentationSegmentNumber"):
        return int(text)
    if column == "Value":
        return float(text)
    if column == "imputed":
        return {"true": True, "false": False}[text]
    return text


def test_parquet_and_csv_round_trip(tmp_path: Path, study: dict[str, Any]) -> None:
    rows = study_rows(study)
    uid = f"{study['report'].StudyInstanceUID}_{rows[0].reference.source_series_uid}"
    written = export_study(rows, tmp_path, DAY)
    assert written.parquet == tmp_path / "parquet" / "date=2024-05-06" / f"{uid}.parquet"
    assert written.csv == tmp_path / "csv" / "date=2024-05-06" / f"{uid}.csv"
    assert written.rows == len(rows)

    table = pq.read_table(written.parquet)
    assert table.schema.names == [*IDC_COLUMNS, *PROVENANCE_COLUMNS]
    assert table.schema.equals(parquet_schema())
    assert table.to_pylist() == [r.record() for r in rows]

    with written.csv.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        back = [{c: _parse(c, v) for c, v in line.items()} for line in reader]
    assert back == [r.flat() for r in rows]  # floats exactly: written as repr


def test_a_partitioned_reader_sees_the_date(tmp_path: Path, study: dict[str, Any]) -> None:
    rows = study_rows(study)
    export_study(rows, tmp_path, DAY)
    export_study(rows, tmp_path, DAY + datetime.timedelta(days=1))
    dataset = ds.dataset(tmp_path / "parquet", format="parquet", partitioning="hive")
    table = dataset.to_table()
    assert table.num_rows == 2 * len(rows)
    assert sorted(set(table.column("date").to_pylist())) == ["2024-05-06", "2024-05-07"]


def test_exporting_again_replaces_the_study_and_leaves_no_temporary_file(
    tmp_path: Path,
    study: dict[str, Any],
) -> None:
    rows = study_rows(study)
    first = export_study(rows, tmp_path, DAY)
    changed = [dataclasses.replace(rows[0], value=rows[0].value + 1.0), *rows[1:]]
    again = export_study(changed, tmp_path, DAY)
    assert again == first
    assert pq.read_table(again.parquet).column("Value")[0].as_py() == rows[0].value + 1.0
    names = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert [n for n in names if n.startswith(".")] == []
    assert len(names) == 2


def test_a_failed_write_keeps_the_previous_file(
    tmp_path: Path,
    study: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = study_rows(study)
    first = export_study(rows, tmp_path, DAY)
    before = first.parquet.read_bytes()

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("dicom_nodes.features.export.os.replace", refuse)
    changed = [dataclasses.replace(r, value=r.value * 2) for r in rows]
    with pytest.raises(OSError, match="No space"):
        export_study(changed, tmp_path, DAY)
    assert first.parquet.read_bytes() == before
    assert [p for p in first.parquet.parent.iterdir() if p.name.startswith(".")] == []


def test_rows_of_one_study_and_series_only(tmp_path: Path, study: dict[str, Any]) -> None:
    rows = study_rows(study)
    other = dataclasses.replace(
        rows[0], reference=dataclasses.replace(rows[0].reference, study_instance_uid="1.2.3")
    )
    with pytest.raises(ValueError, match="exactly one study and series"):
        export_study([*rows, other], tmp_path, DAY)
    with pytest.raises(ValueError, match="exactly one study and series"):
        export_study([], tmp_path, DAY)
    series = dataclasses.replace(
        rows[0], reference=dataclasses.replace(rows[0].reference, source_series_uid="1.2.4")
    )
    with pytest.raises(ValueError, match="exactly one study and series"):
        export_study([*rows, series], tmp_path, DAY)
    bad: list[MeasurementRow] = [
        dataclasses.replace(
            r, reference=dataclasses.replace(r.reference, study_instance_uid="../x")
        )
        for r in rows
    ]
    with pytest.raises(ValueError, match="not a UID"):
        export_study(bad, tmp_path, DAY)
