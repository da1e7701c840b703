"""All of Radiogate's DICOM and pipeline I/O, and the wiring of its processes.

Packages: ``scp`` (the Storage SCP), ``spool`` (durable content-addressed storage of what was
received), ``db`` (migrations, the receiver's ingest), ``state`` (state machines, their one
writer, jobs), ``deid`` (de-identification), ``forward`` (destinations), ``pipeline`` (the
stages after reception), ``services`` (the private PostgreSQL and Orthanc, ``radiogate run``).
"""

__all__ = [
    "accelerator",
    "alerts",
    "db",
    "deid",
    "dimse",
    "features",
    "forward",
    "pipeline",
    "scp",
    "services",
    "spool",
    "state",
]
