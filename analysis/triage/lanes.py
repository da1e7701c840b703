"""Priority lanes and the score thresholds that lead to them.

A model card gives, per lane, the lowest score that puts a slice (or a series) in that lane. A
lane the card does not name is never assigned by that model; a score below every threshold gives
no lane (``None``): the model has nothing to say and the route's rules decide (routine by default).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Lane", "Thresholds"]


class Lane(StrEnum):
    """The pipeline's priority lanes, most urgent first (the values used in route settings)."""

    CRITICAL = "critical"
    URGENT = "urgent"
    ROUTINE = "routine"

    @property
    def rank(self) -> int:
        """0 for the most urgent lane."""
        return list(Lane).index(self)


@dataclass(frozen=True)
class Thresholds:
    """Lowest score per lane; scores are probabilities in [0, 1].

    A more urgent lane never has a lower threshold than a less urgent one (checked), so the lane
    of a score is the most urgent lane whose threshold it reaches.
    """

    by_lane: Mapping[Lane, float]

    def __post_init__(self) -> None:
        if not self.by_lane:
            raise ValueError("at least one lane needs a threshold")
        for lane, value in self.by_lane.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"threshold of lane {lane.value!r} is {value}, not in [0, 1]")
        ordered = sorted(self.by_lane.items(), key=lambda item: item[0].rank)
        for (urgent, high), (calmer, low) in itertools.pairwise(ordered):
            if high < low:
                raise ValueError(
                    f"threshold of lane {urgent.value!r} ({high}) is below that of "
                    f"{calmer.value!r} ({low})"
                )

    def lane_for(self, score: float) -> Lane | None:
        """The most urgent lane whose threshold *score* reaches, or ``None``.

        A score that is not a number is a defect of the model, not a calm finding: it raises.
        """
        if not math.isfinite(score):
            raise ValueError(f"score {score!r} is not a finite number")
        for lane in sorted(self.by_lane, key=lambda item: item.rank):
            if score >= self.by_lane[lane]:
                return lane
        return None
