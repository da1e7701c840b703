"""The imputation comparison: its figures in the card reproduce from the data and the seed, the
ranking it reports holds, every method beats filling zeros, and GAIN's hand-written gradients
are right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis.models import TabularModel
from analysis.training.gain import Gain, GainSettings, _Mlp
from analysis.training.imputation_study import (
    METHODS,
    Fold,
    Scenario,
    compare,
    mask_for,
    standard_scenarios,
)
from analysis.training.train_emphysema import TEST_FROM_DRAW, Data, best_method, load, study


@pytest.fixture(scope="module")
def split(features_csv: Path) -> tuple[Data, Data]:
    data = load(features_csv)
    return data.subset(data.draw < TEST_FROM_DRAW), data.subset(data.draw >= TEST_FROM_DRAW)


def test_the_cards_figures_reproduce_and_their_ranking_holds(
    model: TabularModel, split: tuple[Data, Data]
) -> None:
    """The whole protocol again (10 masks per rate, GAIN fully trained: a few seconds)."""
    train, test = split

    def shipped(x: np.ndarray) -> np.ndarray:
        return np.clip(model.run(x.astype(np.float32)), 0.0, 100.0)

    result = study(train, test, shipped, repeats=10)
    figures = model.card.imputer.figures["scenarios"]
    assert isinstance(figures, dict)
    for scenario, by_method in result.table().items():
        for method, rmse in by_method.items():
            assert rmse == pytest.approx(figures[scenario][method]["rmse_sd"], abs=2e-4)
            assert rmse < by_method["zero"] or method == "zero"
        assert result.ranking(scenario)[-1] == "zero"
    for scenario in ("mcar10", "mcar20", "mcar30", "glcm-failed"):
        assert result.ranking(scenario)[0] == "iterative"
    # GAIN loses to the iterative imputer in every scenario
    assert all(result.table()[s]["gain"] > result.table()[s]["iterative"] for s in figures)
    assert best_method(result) == model.card.imputer.method == "iterative"


def test_a_fixed_seed_gives_the_same_numbers(split: tuple[Data, Data]) -> None:
    train, test = split
    names = [f"f{i}" for i in range(train.x.shape[1])]
    keep = names[:3]
    fold = Fold(train.x, test.x)
    scenarios = [Scenario("mcar20", rate=0.2), Scenario("block", columns=tuple(names[3:8]))]
    gain = GainSettings(iterations=200)
    runs = [
        compare([fold], names, keep, scenarios, repeats=2, seed=5, gain=gain).table()
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    other = compare([fold], names, keep, scenarios, repeats=2, seed=6, gain=gain).table()
    assert other["mcar20"]["knn"] != runs[0]["mcar20"]["knn"]  # the seed does choose the masks
    assert set(runs[0]["mcar20"]) == set(METHODS)


def test_masks_keep_the_required_columns_and_an_entry_per_row() -> None:
    names = [f"f{i}" for i in range(6)]
    rng = np.random.default_rng(0)
    removed = mask_for(Scenario("x", rate=0.95), (200, 6), names, names[:1], rng)
    assert not removed[:, 0].any()
    assert (~removed).sum(axis=1).min() >= 1
    assert removed.mean() > 0.6
    scenarios = standard_scenarios(
        ["lung_a", "original_glcm_Contrast", "original_glcm_Idm", "original_ngtdm_Busyness"],
        ["lung_a"],
    )
    by_name = {s.name: s for s in scenarios}
    assert by_name["glcm-failed"].columns == ("original_glcm_Contrast", "original_glcm_Idm")
    assert len(by_name["radiomics-failed"].columns) == 3


def test_gain_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(0)
    net = _Mlp.create([6, 5, 5, 3], rng)
    for b in net.biases:
        b[:] = rng.normal(0.0, 0.3, b.shape)  # away from ReLU kinks
    x, target = rng.normal(size=(4, 6)), rng.uniform(size=(4, 3))

    def loss(inputs: np.ndarray) -> float:
        out, _ = net.forward(inputs)
        return float(np.sum((out - target) ** 2))

    out, seen = net.forward(x)
    grads, grad_in = net.backward(seen, 2 * (out - target))
    for param, grad in zip(net.parameters(), grads, strict=True):
        for index in np.ndindex(param.shape):
            old = param[index]
            param[index] = old + 1e-6
            up = loss(x)
            param[index] = old - 1e-6
            down = loss(x)
            param[index] = old
            assert grad[index] == pytest.approx((up - down) / 2e-6, abs=1e-6)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = 1e-6
        assert grad_in[index] == pytest.approx((loss(x + step) - loss(x - step)) / 2e-6, abs=1e-6)


def test_gain_keeps_observed_values_and_learns() -> None:
    rng = np.random.default_rng(1)
    latent = rng.normal(size=(300, 1))
    data = np.hstack([latent, 2 * latent, -latent]) + rng.normal(0, 0.05, (300, 3))
    gain = Gain(GainSettings(iterations=1500), seed=2).fit(data)
    holed = data[:50].copy()
    holed[:, 1] = np.nan
    filled = gain.transform(holed)
    assert np.array_equal(filled[:, [0, 2]], data[:50, [0, 2]])
    rmse = float(np.sqrt(np.mean((filled[:, 1] - data[:50, 1]) ** 2)))
    assert rmse < 0.5 * float(np.std(data[:, 1]))  # far better than the mean
