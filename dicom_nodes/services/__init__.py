"""The services ``radiogate run`` starts: a private PostgreSQL cluster, Orthanc, the stack."""

__all__ = [
    "credentials",
    "lock",
    "orthanc",
    "ports",
    "postgres",
    "stack",
    "supervisor",
]
