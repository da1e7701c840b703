"""The evaluation metrics and the card writer used by the training script (numpy only)."""

from __future__ import annotations

import itertools
import tomllib

import numpy as np
import pytest

from analysis.training import metrics
from analysis.training.cardfile import to_toml


def _auc_by_pairs(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels], scores[~labels]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_is_the_pairwise_win_rate(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.random(60) < 0.4
    scores = np.round(rng.random(60) + labels * 0.3, 1).astype(np.float64)  # rounding makes ties
    assert metrics.roc_auc(scores, labels) == pytest.approx(_auc_by_pairs(scores, labels))


def test_roc_auc_extremes_and_errors() -> None:
    assert metrics.roc_auc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert metrics.roc_auc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    with pytest.raises(ValueError, match="positives and negatives"):
        metrics.roc_auc([0.1, 0.2], [True, True])


def test_operating_point_counts_at_or_above_the_threshold() -> None:
    op = metrics.operating_point([0.2, 0.5, 0.8, 0.4, 0.9], [False, True, True, False, False], 0.5)
    assert (op.true_positives, op.positives, op.true_negatives, op.negatives) == (2, 2, 2, 3)
    assert op.sensitivity == 1.0 and op.specificity == pytest.approx(2 / 3)


def test_wilson_interval() -> None:
    low, high = metrics.wilson(45, 50)  # reference: 0.7864 to 0.9565
    assert low == pytest.approx(0.7864, abs=1e-4) and high == pytest.approx(0.9565, abs=1e-4)
    assert metrics.wilson(0, 10)[0] == 0.0 and metrics.wilson(10, 10)[1] == pytest.approx(1.0)


def test_brier_and_reliability() -> None:
    scores = [0.0, 0.1, 0.9, 1.0, 0.55]
    labels = [False, False, True, True, True]
    assert metrics.brier(scores, labels) == pytest.approx((0.01 + 0.01 + 0.2025) / 5)
    table = metrics.reliability(scores, labels, bins=2)
    assert [(b.count, b.observed) for b in table] == [(2, 0.0), (3, 1.0)]
    assert table[1].mean_predicted == pytest.approx((0.9 + 1.0 + 0.55) / 3)
    assert metrics.expected_calibration_error(table) == pytest.approx(
        (2 * 0.05 + 3 * (1 - 2.45 / 3)) / 5
    )


def test_the_card_writer_round_trips() -> None:
    content = {
        "card_format": 1,
        "model": {"name": "x", "intended_use": 'says "quoted" things\nover lines', "flag": True},
        "preprocessing": {"size": [128, 128], "pad_hu": -1024.0,
                          "windows": [{"center": -600.0, "width": 1500.0}, {"center": 50, "width": 100}]},
        "data": [{"source": "ünïcode", "role": "train"}],
    }  # fmt: skip
    assert tomllib.loads(to_toml(content, ["a header"])) == content
    assert to_toml(content, ["a header"]).startswith("# a header\n")
    with pytest.raises(ValueError, match="finite"):
        to_toml({"x": float("nan")})
