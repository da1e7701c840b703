"""Typed access to the content of a Structured Report read back with highdicom."""

from __future__ import annotations

import highdicom as hd

__all__ = ["measurement_report"]


def measurement_report(content: hd.sr.ContentSequence) -> hd.sr.MeasurementReport:
    """*content* (an SR's ``content``) as the TID 1500 Measurement Report highdicom parsed it
    into (PS3.16 TID 1500); fails if it is anything else."""
    assert isinstance(content, hd.sr.MeasurementReport)
    return content
