"""The services ``radiogate run`` starts: a private PostgreSQL cluster, Orthanc, the OHIF
viewer, the stack."""

__all__ = [
    "credentials",
    "lock",
    "orthanc",
    "ports",
    "postgres",
    "stack",
    "supervisor",
    "viewer",
]
