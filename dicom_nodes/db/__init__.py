"""The database: versioned migrations, and the receiver's one ingest transaction per instance."""

__all__ = ["ingest", "migrate"]
