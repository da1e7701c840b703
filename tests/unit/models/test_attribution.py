"""Occlusion attributions: exact and additive for a linear model (coefficient times
standardised value), and for the shipped model what the ONNX session says when one input is
reset to its training mean."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.models import TabularModel
from analysis.models.attribution import occlusion, top_attributions


def test_linear_model_attributions_are_coefficient_times_standardised_value() -> None:
    rng = np.random.default_rng(0)
    mean, sd, w = rng.normal(size=6), rng.uniform(0.5, 2.0, 6), rng.normal(size=6)

    def linear(rows: np.ndarray) -> np.ndarray:
        return 3.0 + ((rows.astype(np.float64) - mean) / sd) @ w

    x = (mean + rng.normal(size=6) * sd).astype(np.float32).astype(np.float64)
    found = occlusion(linear, x, mean)
    z = (x - mean.astype(np.float32)) / sd  # the rows travel as float32
    np.testing.assert_allclose(found.contributions, w * z, rtol=1e-5, atol=1e-6)
    assert found.value - found.baseline_value == pytest.approx(found.contributions.sum(), abs=1e-5)
    assert found.unattributed == pytest.approx(0.0, abs=1e-5)
    assert np.array_equal(np.sign(found.contributions), np.sign(w * z))


def test_top_attributions_by_magnitude() -> None:
    names = ["a", "b", "c", "d"]
    top = top_attributions(names, np.array([0.5, -2.0, 0.5, 1.0]), 3)
    assert [(t.feature, t.contribution) for t in top] == [("b", -2.0), ("d", 1.0), ("a", 0.5)]


def test_the_baseline_vector_has_no_attribution(model: TabularModel) -> None:
    prediction = model.predict(dict(zip(model.card.input_names, model.baseline, strict=True)))
    assert all(a.contribution == 0.0 for a in prediction.attributions)
    assert prediction.raw_value == prediction.baseline_value


@pytest.mark.parametrize("delta", [-8.0, 5.0, 20.0])
def test_one_changed_input_takes_the_whole_change(model: TabularModel, delta: float) -> None:
    """Only %LAA-950 differs from the baseline: it holds the whole change of the prediction,
    in the direction of its own change (the model is %LAA-950 plus a correction)."""
    x = model.baseline.copy()
    x[0] += delta
    prediction = model.predict(dict(zip(model.card.input_names, x, strict=True)))
    first = prediction.attributions[0]
    assert first.feature == "lung_laa950_percent"
    assert first.contribution == pytest.approx(prediction.raw_value - prediction.baseline_value)
    assert np.sign(first.contribution) == np.sign(delta)
    assert all(a.contribution == 0.0 for a in prediction.attributions[1:])
    assert prediction.unattributed == pytest.approx(0.0, abs=1e-9)


def test_attributions_are_the_models_own_occlusion(model: TabularModel) -> None:
    rng = np.random.default_rng(11)
    sd = np.array([f.training_sd for f in model.card.inputs])
    x = model.baseline + rng.normal(size=sd.size) * sd
    prediction = model.predict(dict(zip(model.card.input_names, x, strict=True)))
    whole = model.run(x[None, :].astype(np.float32))[0]
    assert prediction.raw_value == pytest.approx(whole)
    for attribution in prediction.attributions:
        i = model.card.input_names.index(attribution.feature)
        reset = x.copy()
        reset[i] = model.baseline[i]
        expected = whole - model.run(reset[None, :].astype(np.float32))[0]
        assert attribution.contribution == pytest.approx(expected, abs=1e-6)
    contributions = [abs(a.contribution) for a in prediction.attributions]
    assert contributions == sorted(contributions, reverse=True)
