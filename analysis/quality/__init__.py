"""Data-quality checks of received series (pure): broken transmissions flagged with reasons."""

__all__ = ["series"]
