"""Evaluation figures of a binary classifier's probabilities (numpy only).

* ROC AUC as the Mann-Whitney statistic: the probability that a random positive scores above a
  random negative, ties counting one half.
* Sensitivity and specificity at a threshold (score >= threshold is positive), each with a 95 %
  Wilson score interval (Wilson 1927), which stays inside [0, 1] for small counts.
* Brier score: the mean squared difference between probability and outcome.
* Reliability bins: per probability bin, the mean probability and the fraction positive; a
  calibrated model has the two equal. The expected calibration error is their count-weighted
  mean absolute difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "Bin",
    "OperatingPoint",
    "brier",
    "expected_calibration_error",
    "operating_point",
    "reliability",
    "roc_auc",
    "wilson",
]

Scores = npt.NDArray[np.float64]
Labels = npt.NDArray[np.bool_]


def _arrays(
    scores: Sequence[float] | Scores, labels: Sequence[bool] | Labels
) -> tuple[Scores, Labels]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.bool_)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores {s.shape} and labels {y.shape} must be 1-D and of one length")
    return s, y


def roc_auc(scores: Sequence[float] | Scores, labels: Sequence[bool] | Labels) -> float:
    """Area under the ROC curve (needs at least one positive and one negative)."""
    s, y = _arrays(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        raise ValueError("ROC AUC needs positives and negatives")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def wilson(successes: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (``(0, 1)`` when *total* is 0)."""
    if total == 0:
        return (0.0, 1.0)
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    true_positives: int
    positives: int
    true_negatives: int
    negatives: int

    @property
    def sensitivity(self) -> float:
        return self.true_positives / self.positives if self.positives else float("nan")

    @property
    def specificity(self) -> float:
        return self.true_negatives / self.negatives if self.negatives else float("nan")

    @property
    def sensitivity_ci95(self) -> tuple[float, float]:
        return wilson(self.true_positives, self.positives)

    @property
    def specificity_ci95(self) -> tuple[float, float]:
        return wilson(self.true_negatives, self.negatives)


def operating_point(
    scores: Sequence[float] | Scores, labels: Sequence[bool] | Labels, threshold: float
) -> OperatingPoint:
    """Counts at *threshold* (a score at or above it is called positive)."""
    s, y = _arrays(scores, labels)
    called = s >= threshold
    return OperatingPoint(
        threshold,
        int((called & y).sum()),
        int(y.sum()),
        int((~called & ~y).sum()),
        int((~y).sum()),
    )


def brier(scores: Sequence[float] | Scores, labels: Sequence[bool] | Labels) -> float:
    s, y = _arrays(scores, labels)
    if not len(s):
        raise ValueError("Brier score of nothing")
    return float(np.mean((s - y.astype(np.float64)) ** 2))


@dataclass(frozen=True)
class Bin:
    low: float
    high: float
    count: int
    mean_predicted: float | None
    observed: float | None


def reliability(
    scores: Sequence[float] | Scores, labels: Sequence[bool] | Labels, bins: int = 5
) -> list[Bin]:
    """*bins* equal-width probability bins, [low, high) except the last, which includes 1."""
    s, y = _arrays(scores, labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    out = []
    for k in range(bins):
        inside = (s >= edges[k]) & ((s < edges[k + 1]) if k < bins - 1 else (s <= 1.0))
        n = int(inside.sum())
        out.append(
            Bin(
                float(edges[k]),
                float(edges[k + 1]),
                n,
                float(s[inside].mean()) if n else None,
                float(y[inside].mean()) if n else None,
            )
        )
    return out


def expected_calibration_error(table: Sequence[Bin]) -> float:
    total = sum(b.count for b in table)
    if not total:
        raise ValueError("no scores in the reliability table")
    return (
        sum(
            b.count * abs(b.mean_predicted - b.observed)
            for b in table
            if b.mean_predicted is not None and b.observed is not None
        )
        / total
    )
