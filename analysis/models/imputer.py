"""Fill the inputs that could not be computed, and say which ones were filled.

:func:`Imputer.impute` takes one input vector with NaN where a feature is missing (a failed
feature class, a segment pyradiomics could not process) and returns the completed vector and the
mask of imputed entries; the pipeline marks those measurements ``imputed`` in the report
(Measurement Method IMPUTED) and the table.

The imputer is a JSON file shipped next to the model (its BLAKE3 is in the model card), run in
numpy: no scikit-learn at run time. Values are standardised with the training mean and SD,
imputed, and brought back to their units. Methods:

* ``iterative``: scikit-learn's ``IterativeImputer`` (BayesianRidge, ten rounds) as fitted by
  the training script, replayed step by step: missing entries start at the training mean
  (``initial``), then each step sets one feature's missing entries to its linear regression on
  other features (``coef`` . x[inputs] + ``intercept``), in the fitted order; observed entries
  never change. This is the arithmetic of ``IterativeImputer.transform`` without posterior
  sampling (checked against scikit-learn by the tests);
* ``knn``: the mean of the feature over the ``k`` training vectors nearest in the observed
  entries (NaN-Euclidean distance, as scikit-learn's ``KNNImputer``);
* ``mean``: the training mean.

``docs/models.md`` has the comparison the shipped method was chosen on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import numpy.typing as npt

__all__ = ["Imputer", "ImputerError", "LinearStep", "read_imputer"]

Vector = npt.NDArray[np.float64]


class ImputerError(ValueError):
    """The imputer file is invalid or is not the file the card names."""


@dataclass(frozen=True)
class LinearStep:
    """One step of an iterative imputer: feature ``target`` from ``inputs``."""

    target: int
    inputs: tuple[int, ...]
    coef: tuple[float, ...]
    intercept: float


@dataclass(frozen=True)
class Imputer:
    """A fitted imputer for vectors of ``names`` (see the module doc)."""

    method: str
    names: tuple[str, ...]
    mean: Vector
    sd: Vector
    initial: Vector
    """Standardised start values of missing entries (iterative)."""
    steps: tuple[LinearStep, ...] = ()
    neighbours: int = 0
    donors: Vector | None = None
    """Standardised training vectors (knn)."""

    def impute(self, vector: npt.ArrayLike) -> tuple[Vector, npt.NDArray[np.bool_]]:
        """*vector* (NaN = missing) completed, and the mask of the entries imputed."""
        x = np.asarray(vector, dtype=np.float64)
        if x.shape != (len(self.names),):
            raise ValueError(f"a vector of {len(self.names)} values is needed, not {x.shape}")
        if np.isinf(x).any():
            raise ValueError("infinite values are not measurements; give NaN for missing")
        missing = np.isnan(x)
        if missing.all():
            raise ValueError("nothing to impute from: every input is missing")
        if not missing.any():
            return x.copy(), missing
        z = (x - self.mean) / self.sd
        if self.method == "iterative":
            filled = self._iterative(z, missing)
        elif self.method == "knn":
            filled = self._knn(z, missing)
        else:
            filled = np.where(missing, self.initial, z)
        out = np.where(missing, filled * self.sd + self.mean, x)
        return out, missing

    def _iterative(self, z: Vector, missing: npt.NDArray[np.bool_]) -> Vector:
        filled = np.where(missing, self.initial, z)
        for step in self.steps:
            if missing[step.target]:
                value = float(np.dot(step.coef, filled[list(step.inputs)])) + step.intercept
                filled[step.target] = value
        return filled

    def _knn(self, z: Vector, missing: npt.NDArray[np.bool_]) -> Vector:
        assert self.donors is not None
        present = ~missing
        diff = self.donors[:, present] - z[present]
        # scikit-learn's nan_euclidean_distances: weight = all coordinates / present ones
        distance = np.sqrt(np.sum(diff * diff, axis=1) * (z.size / present.sum()))
        nearest = np.argsort(distance, kind="stable")[: self.neighbours]
        filled = z.copy()
        filled[missing] = self.donors[nearest][:, missing].mean(axis=0)
        return filled


def _vector(raw: Mapping[str, Any], key: str, n: int) -> Vector:
    values = raw.get(key)
    if not isinstance(values, list) or len(values) != n:
        raise ImputerError(f"imputer key '{key}' must be a list of {n} numbers")
    out = np.asarray(values, dtype=np.float64)
    if not np.isfinite(out).all():
        raise ImputerError(f"imputer key '{key}' holds a value that is not finite")
    return out


def _steps(raw: Sequence[Any], n: int) -> tuple[LinearStep, ...]:
    out = []
    for i, item in enumerate(raw):
        try:
            step = LinearStep(
                int(item["target"]),
                tuple(int(j) for j in item["inputs"]),
                tuple(float(c) for c in item["coef"]),
                float(item["intercept"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ImputerError(f"imputer step {i} is malformed: {exc}") from None
        if not 0 <= step.target < n or any(not 0 <= j < n for j in step.inputs):
            raise ImputerError(f"imputer step {i} names a feature out of range")
        if len(step.coef) != len(step.inputs) or step.target in step.inputs:
            raise ImputerError(f"imputer step {i}: one coefficient per other input")
        out.append(step)
    return tuple(out)


def read_imputer(path: Path, expected_blake3: str, names: Sequence[str]) -> Imputer:
    """The imputer at *path*, checked against the card's hash and input names."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImputerError(f"imputer file {path} cannot be read ({exc.strerror})") from None
    digest = blake3.blake3(data).hexdigest()
    if digest != expected_blake3:
        raise ImputerError(
            f"imputer file {path} has BLAKE3 {digest}, the card says {expected_blake3}"
        )
    raw = json.loads(data)
    if tuple(raw.get("names", ())) != tuple(names):
        raise ImputerError(f"imputer file {path} is for other inputs than the model's")
    n = len(names)
    method = raw.get("method")
    mean, sd = _vector(raw, "mean", n), _vector(raw, "sd", n)
    if (sd <= 0).any():
        raise ImputerError("imputer key 'sd' must be positive")
    if method == "iterative":
        return Imputer(
            method,
            tuple(names),
            mean,
            sd,
            _vector(raw, "initial", n),
            _steps(raw.get("steps", []), n),
        )
    if method == "knn":
        donors = np.asarray(raw.get("donors"), dtype=np.float64)
        k = raw.get("neighbours")
        if (
            donors.ndim != 2
            or donors.shape[1] != n
            or not isinstance(k, int)
            or not 1 <= k <= len(donors)
        ):
            raise ImputerError("a knn imputer needs 'donors' (rows of n values) and 'neighbours'")
        return Imputer(method, tuple(names), mean, sd, np.zeros(n), neighbours=k, donors=donors)
    if method == "mean":
        return Imputer(method, tuple(names), mean, sd, np.zeros(n))
    raise ImputerError(f"unknown imputation method {method!r}")
