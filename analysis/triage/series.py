"""From slice scores to one triage result per series (pure).

The series score is the **maximum** slice score. The findings a triage model looks for are local:
a large air collection or haematoma covers a handful of slices of a series of 40 to 500. A mean or
median over the series would dilute it by the series' length, so the same finding would score
lower on a thin-slice series than on a thick-slice one, and a triage step exists to not miss it.
The maximum does not depend on how many normal slices surround the finding.

Its cost is that each slice is one more chance of a spurious high score, so false alarms grow
with series length. ``series.min_slices`` in the card trades a little sensitivity back for
specificity: a lane needs that many slices at or above its threshold (adjacency is not required:
a finding may skip a slice in a noisy series). A large finding spans several slices (a 30 mm one
about six 5 mm slices), so 2 or 3 suits thin-slice series; 1, the default, is the plain
maximum, and the only sound value for series of a few thick slices.

The result also lists the slices at or above each lane's threshold (the images a Key Object
Selection would flag) and the model's identity, which every stored result carries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from analysis.triage.card import ModelIdentity
from analysis.triage.lanes import Lane, Thresholds

__all__ = ["SeriesScore", "aggregate"]


@dataclass(frozen=True)
class SeriesScore:
    """The triage result of one series under one model."""

    model: ModelIdentity
    score: float
    """The maximum slice score."""
    peak_slice: int
    """Index (in the order scored) of the first slice with the maximum score."""
    lane: Lane | None
    """The most urgent lane with at least ``min_slices`` slices at or above its threshold;
    ``None`` when there is none (the route's rules decide)."""
    slice_scores: tuple[float, ...]
    flagged: Mapping[Lane, tuple[int, ...]]
    """Per lane with a threshold: indices of the slices at or above it."""
    min_slices: int


def aggregate(
    scores: Sequence[float], thresholds: Thresholds, min_slices: int, model: ModelIdentity
) -> SeriesScore:
    """The :class:`SeriesScore` of a series whose slices scored *scores* (see the module
    docstring for the rule)."""
    if not scores:
        raise ValueError("a series needs at least one slice score")
    if min_slices < 1:
        raise ValueError(f"min_slices must be >= 1, got {min_slices}")
    values = tuple(float(s) for s in scores)
    for index, value in enumerate(values):
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"slice {index} has score {value}, not a probability")
    flagged = {
        lane: tuple(i for i, v in enumerate(values) if v >= limit)
        for lane, limit in sorted(thresholds.by_lane.items(), key=lambda item: item[0].rank)
    }
    lane = next((ln for ln, hits in flagged.items() if len(hits) >= min_slices), None)
    peak = max(values)
    return SeriesScore(
        model=model,
        score=peak,
        peak_slice=values.index(peak),
        lane=lane,
        slice_scores=values,
        flagged=flagged,
        min_slices=min_slices,
    )
