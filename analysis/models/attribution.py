"""Which inputs made a prediction: occlusion to the training mean, computed with the model itself.

For an input vector x, a baseline b (the training mean of every input) and the model f, the
attribution of input i is

    phi_i = f(x) - f(x with x_i replaced by b_i)

computed in **one batch** of d + 2 rows (the baseline itself is the last) through the same ONNX
session that made the prediction (so it is the attribution of the model that ran, not of a
copy of its coefficients).

Why this method: the shipped models are linear in their standardised inputs,
f(x) = c + sum_i w_i (x_i - b_i) / s_i. Then phi_i = w_i (x_i - b_i) / s_i exactly: the
**coefficient times the standardised value**, which is also the input's exact SHAP value for a
linear model with the training mean as reference. The attributions add up:
sum_i phi_i = f(x) - f(b), the prediction's distance from the prediction for an average lung,
and each phi_i has the sign of w_i x (x_i - b_i). For a model that is not linear, phi_i is the
first-order occlusion effect: still the change of *this* prediction when the input is set to
its mean, but the sum is no longer exact: what interactions add is left over
(:attr:`Occlusion.unattributed`, given with every prediction) rather than shared out by a
rule. The shipped emphysema model is %LAA-950 plus boosted trees: its %LAA-950 attribution
holds the input's own change (one for one) plus the trees' response to it, and the other
attributions are the trees' local response to each input. Path-based tree attributions
(TreeSHAP) would need the trees' structure; occlusion needs only the ONNX model that ran, and
reads the same for any model the card may describe.

Imputed inputs are attributed like the others: the value the model was given did contribute,
and the measurement report marks the value as imputed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from analysis.results.model import Attribution

__all__ = ["METHOD", "Occlusion", "occlusion", "top_attributions"]

METHOD = "occlusion-to-training-mean"
"""The card's ``attribution.method`` for :func:`occlusion`."""


@dataclass(frozen=True)
class Occlusion:
    """A prediction, the prediction at the baseline, and each input's attribution."""

    value: float
    baseline_value: float
    contributions: npt.NDArray[np.float64]

    @property
    def unattributed(self) -> float:
        """value - baseline_value - sum of the attributions: 0 for a linear model (up to
        float32 rounding), the share of interactions for any other."""
        return self.value - self.baseline_value - float(self.contributions.sum())


def occlusion(
    predict: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float64]],
    vector: npt.NDArray[np.float64],
    baseline: npt.NDArray[np.float64],
) -> Occlusion:
    """The prediction for *vector* and each input's attribution (see the module doc), from one
    batch: the vector, the vector with each input in turn set to the baseline, the baseline.

    *predict* maps a float32 matrix (one row per vector) to one value per row.
    """
    if vector.shape != baseline.shape or vector.ndim != 1:
        raise ValueError("vector and baseline must be 1-D and of one length")
    d = vector.size
    rows = np.tile(vector, (d + 2, 1))
    rows[np.arange(1, d + 1), np.arange(d)] = baseline
    rows[-1] = baseline
    values = np.asarray(predict(rows.astype(np.float32)), dtype=np.float64).reshape(-1)
    if values.shape != (d + 2,):
        raise ValueError(f"the model gave {values.size} values for {d + 2} rows")
    return Occlusion(float(values[0]), float(values[-1]), values[0] - values[1:-1])


def top_attributions(
    names: Sequence[str], contributions: npt.NDArray[np.float64], count: int
) -> tuple[Attribution, ...]:
    """The *count* largest contributions by magnitude, largest first (ties: input order)."""
    order = sorted(range(len(names)), key=lambda i: (-abs(float(contributions[i])), i))
    return tuple(Attribution(names[i], float(contributions[i])) for i in order[:count])
