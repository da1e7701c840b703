"""The services ``radiogate run`` starts: a private PostgreSQL cluster, Orthanc, the stack."""

__all__ = ["orthanc", "postgres", "stack"]
