"""Analysis pipelines (pure): from a series' datasets to results objects and feature rows."""

__all__ = ["chest_ct"]
