"""A measurement report's rows as files: Parquet (records as IDC's BigQuery schema has them) and
CSV (records spread over dotted columns), partitioned by date, replaced atomically per analysed
series.

Layout under the export directory::

    parquet/date=YYYY-MM-DD/<StudyInstanceUID>_<SeriesInstanceUID>.parquet
    csv/date=YYYY-MM-DD/<StudyInstanceUID>_<SeriesInstanceUID>.csv

(the series is the one segmented: ``sourceSegmentedSeriesUID``; a study with two analysed series
has two files.)

``date=`` is a Hive-style partition: Spark, DuckDB and ``pyarrow.dataset`` read it as a
column. The two formats live in separate trees so that a reader of one never meets the other.

Each file is written whole to a temporary file in its partition (a dot-name, which dataset
readers skip), flushed and ``fsync``\\ ed, renamed over the study's file and the directory
``fsync``\\ ed: a reader sees the series' previous file or its new one, never a part. Exporting
a series again on the same date replaces its files (the export is idempotent); on another date it
adds a file in that date's partition, whose report SOP Instance UID tells the versions apart.
"""

from __future__ import annotations

import csv
import datetime
import io
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from analysis.results.table import (
    CODE_COLUMNS,
    CSV_COLUMNS,
    IDC_COLUMNS,
    PROVENANCE_COLUMNS,
    MeasurementRow,
)

__all__ = ["ExportedStudy", "export_study", "parquet_schema"]

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_TYPES: dict[str, Any] = {
    "measurementGroup_number": pa.int64(),
    "segmentationSegmentNumber": pa.int64(),
    "Value": pa.float64(),
    "imputed": pa.bool_(),
}


def parquet_schema() -> Any:
    """The Parquet schema: IDC's columns (records as structs of strings, integers as int64,
    the value as float64), then the provenance columns."""
    fields = []
    for column in (*IDC_COLUMNS, *PROVENANCE_COLUMNS):
        if column in CODE_COLUMNS:
            kind = pa.struct([pa.field(part, pa.string()) for part in CODE_COLUMNS[column]])
        else:
            kind = _TYPES.get(column, pa.string())
        fields.append(pa.field(column, kind))
    return pa.schema(fields)


@dataclass(frozen=True)
class ExportedStudy:
    """The files written for one study."""

    parquet: Path
    csv: Path
    rows: int


def _atomic_write(path: Path, data: bytes) -> None:
    """*data* as the file *path*, replacing any previous one atomically (module doc)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _parquet_bytes(rows: Sequence[MeasurementRow]) -> bytes:
    table = pa.Table.from_pylist([r.record() for r in rows], schema=parquet_schema())
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _csv_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back to the same float
    return str(value)


def _csv_bytes(rows: Sequence[MeasurementRow]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        flat = row.flat()
        writer.writerow([_csv_text(flat[c]) for c in CSV_COLUMNS])
    return text.getvalue().encode("utf-8")


def export_study(
    rows: Sequence[MeasurementRow], directory: Path, day: datetime.date
) -> ExportedStudy:
    """Write the rows of one report (all of the same study and segmented series) under
    *directory* in the partition of *day* (the analysis date, UTC by convention)."""
    studies = {(r.reference.study_instance_uid, r.reference.source_series_uid) for r in rows}
    if len(studies) != 1:
        raise ValueError(
            f"rows of exactly one study and series are exported together, not {len(studies)}"
        )
    ((study, series),) = studies
    if not (_UID.fullmatch(study) and _UID.fullmatch(series)):
        raise ValueError("the study's or the series' UID is not a UID")
    partition = f"date={day.isoformat()}"
    name = f"{study}_{series}"
    parquet_path = directory / "parquet" / partition / f"{name}.parquet"
    csv_path = directory / "csv" / partition / f"{name}.csv"
    _atomic_write(parquet_path, _parquet_bytes(rows))
    _atomic_write(csv_path, _csv_bytes(rows))
    return ExportedStudy(parquet_path, csv_path, len(rows))
