"""The feature store's files: a study's measurement rows (IDC ``quantitative_measurements``
columns, :mod:`analysis.results.table`) written as Parquet and CSV, partitioned by date."""

from dicom_nodes.features.export import ExportedStudy, export_study, parquet_schema

__all__ = ["ExportedStudy", "export_study", "parquet_schema"]
