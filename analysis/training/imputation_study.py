"""Which imputer fills a model's missing inputs best: zero, mean, KNN, iterative (chained
regressions) and GAIN, compared on held-out feature vectors with entries removed on purpose.

Methods (:data:`METHODS`): ``zero`` (a raw 0), ``mean`` (the training mean), ``knn``
(scikit-learn's KNNImputer, 5 neighbours), ``iterative-complete`` (IterativeImputer with
BayesianRidge, fitted on the complete training vectors: one round, see :class:`_MaskedCopy`),
``iterative`` (the same, fitted with a masked copy as well: ten rounds), ``gain``
(:mod:`.gain`).

Protocol (:func:`compare`):

* every imputer works on **standardised** values (training mean and SD), so that distances (KNN)
  and errors weigh each feature alike; "zero" fills a raw 0 (the floor every method must beat);
* imputers are fitted on the training vectors only, which are complete;
* on the held-out vectors, entries are removed by a :class:`Scenario`: missing completely at
  random at 10, 20 or 30 % (each vector keeps at least one entry, and the ``keep`` columns), or
  structured as the pipeline loses them: one texture class failed, or every pyradiomics feature
  of the segment failed (only the lung measures remain);
* the error of an imputed entry is (imputed - true) in training SDs; a method's **RMSE** is over
  every removed entry of every repetition, its per-feature **NRMSE** the same per feature (RMSE
  divided by the feature's training SD, as the values are standardised);
* when a model is given, its mean absolute error on the imputed vectors is reported too: what
  an imputer costs the prediction, which is what matters downstream.

Randomness comes from one seed: the masks of repetition *r* of scenario *s* come from
``default_rng([seed, s, r])``, the same for every method, so methods are compared on the same
entries and the numbers reproduce exactly (checked by the tests).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from analysis.training.gain import Gain, GainSettings

__all__ = [
    "METHODS",
    "Fold",
    "MethodResult",
    "Scenario",
    "StudyResult",
    "compare",
    "make_imputer",
    "mask_for",
    "standard_scenarios",
    "summary",
]

Array = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]
METHODS = ("zero", "mean", "knn", "iterative-complete", "iterative", "gain")
#: Share of entries removed from the masked copy the iterative imputer is also fitted on.
ITERATIVE_MASK_RATE = 0.2


class _Imputer(Protocol):
    def fit(self, data: Array) -> Any: ...
    def transform(self, data: Array) -> Array: ...


@dataclass
class _Fill:
    """Fills with fixed values (zero: the raw 0 in standardised units; mean: 0)."""

    values: Array

    def fit(self, data: Array) -> _Fill:
        return self

    def transform(self, data: Array) -> Array:
        return np.where(np.isnan(data), self.values, data)


@dataclass
class _Sklearn:
    estimator: Any

    def fit(self, data: Array) -> _Sklearn:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # IterativeImputer's early-stopping notice
            self.estimator.fit(data)
        return self

    def transform(self, data: Array) -> Array:
        out: Array = np.asarray(self.estimator.transform(data), dtype=np.float64)
        return out


@dataclass
class _MaskedCopy(_Sklearn):
    """Fitted on the vectors stacked with a copy of them with entries removed at random.

    scikit-learn's IterativeImputer fitted on complete vectors stops after one round (nothing
    changes, so its tolerance is met at once) and keeps one regression per feature, fitted
    for vectors whose other entries are all known. Fitted with the masked copy as well, it
    runs its ten rounds and learns the regressions it will apply to vectors with holes.
    """

    seed: int = 0

    def fit(self, data: Array) -> _MaskedCopy:
        rng = np.random.default_rng(self.seed)
        holed = np.where(rng.uniform(size=data.shape) < ITERATIVE_MASK_RATE, np.nan, data)
        super().fit(np.vstack([data, holed]))
        return self


def make_imputer(
    method: str, zero_z: Array, seed: int, gain: GainSettings | None = None
) -> _Imputer:
    """An unfitted imputer of *method* working on standardised values; *zero_z* is the raw 0
    in standardised units."""
    from sklearn.experimental import enable_iterative_imputer  # type: ignore[import-untyped]  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer  # type: ignore[import-untyped]
    from sklearn.linear_model import BayesianRidge  # type: ignore[import-untyped]

    if method == "zero":
        return _Fill(zero_z)
    if method == "mean":
        return _Fill(np.zeros_like(zero_z))
    if method == "knn":
        return _Sklearn(KNNImputer(n_neighbors=5))
    if method in ("iterative", "iterative-complete"):
        estimator = IterativeImputer(estimator=BayesianRidge(), max_iter=10, random_state=seed)
        if method == "iterative-complete":
            return _Sklearn(estimator)
        return _MaskedCopy(estimator, seed)
    if method == "gain":
        return Gain(settings=gain or GainSettings(), seed=seed)
    raise ValueError(f"unknown imputation method {method!r}; known: {', '.join(METHODS)}")


@dataclass(frozen=True)
class Scenario:
    """How entries go missing: at random (``rate``) or whole columns (``columns``)."""

    name: str
    rate: float = 0.0
    columns: tuple[str, ...] = ()


def standard_scenarios(names: Sequence[str], keep: Sequence[str]) -> list[Scenario]:
    """MCAR 10/20/30 %, the GLCM class failed, and every pyradiomics feature failed."""
    glcm = tuple(n for n in names if n.startswith("original_glcm_"))
    radiomics = tuple(n for n in names if n not in keep)
    return [
        Scenario("mcar10", rate=0.10),
        Scenario("mcar20", rate=0.20),
        Scenario("mcar30", rate=0.30),
        Scenario("glcm-failed", columns=glcm),
        Scenario("radiomics-failed", columns=radiomics),
    ]


def mask_for(
    scenario: Scenario, shape: tuple[int, int], names: Sequence[str], keep: Sequence[str],
    rng: np.random.Generator,
) -> Mask:  # fmt: skip
    """Entries to remove (True) for *scenario*; ``keep`` columns are never removed and every
    row keeps at least one entry."""
    kept = np.array([n in keep for n in names])
    if scenario.columns:
        removed = np.zeros(shape, dtype=bool)
        removed[:, [names.index(c) for c in scenario.columns]] = True
    else:
        removed = rng.uniform(size=shape) < scenario.rate
    removed[:, kept] = False
    for row in np.flatnonzero(removed.all(axis=1)):
        removed[row, rng.integers(shape[1])] = False
    return removed


@dataclass
class MethodResult:
    """Errors of one method in one scenario (standardised units)."""

    squared: list[Array] = field(default_factory=list)  # per entry removed
    columns: list[npt.NDArray[np.int64]] = field(default_factory=list)
    model_abs_errors: list[Array] = field(default_factory=list)

    def rmse(self) -> float:
        return float(np.sqrt(np.mean(np.concatenate(self.squared))))

    def nrmse(self, d: int) -> Array:
        sq, cols = np.concatenate(self.squared), np.concatenate(self.columns)
        out = np.full(d, np.nan)
        for j in range(d):
            if np.any(cols == j):
                out[j] = np.sqrt(np.mean(sq[cols == j]))
        return out

    def model_mae(self) -> float | None:
        if not self.model_abs_errors:
            return None
        return float(np.mean(np.concatenate(self.model_abs_errors)))


@dataclass
class StudyResult:
    """Results by scenario name, then method."""

    names: tuple[str, ...]
    results: dict[str, dict[str, MethodResult]]
    complete_model_mae: float | None

    def table(self) -> dict[str, dict[str, float]]:
        """RMSE by scenario, then method."""
        return {s: {m: r.rmse() for m, r in by.items()} for s, by in self.results.items()}

    def ranking(self, scenario: str) -> list[str]:
        """Methods from best to worst RMSE in *scenario*."""
        table = self.table()[scenario]
        return sorted(table, key=table.__getitem__)


@dataclass(frozen=True)
class Fold:
    """Training vectors (complete), held-out vectors and the held-out targets."""

    train: Array
    test: Array
    test_target: Array | None = None
    model: Callable[[Array], Array] | None = None
    """Predicts from raw vectors (for the downstream error), fitted on ``train``."""


def compare(
    folds: Sequence[Fold],
    names: Sequence[str],
    keep: Sequence[str],
    scenarios: Sequence[Scenario],
    *,
    methods: Sequence[str] = METHODS,
    repeats: int = 5,
    seed: int = 0,
    gain: GainSettings | None = None,
) -> StudyResult:
    """Run the protocol of the module doc over *folds*."""
    names = list(names)
    results: dict[str, dict[str, MethodResult]] = {
        s.name: {m: MethodResult() for m in methods} for s in scenarios
    }
    complete_errors: list[Array] = []
    for fold_index, fold in enumerate(folds):
        mean, sd = fold.train.mean(axis=0), fold.train.std(axis=0, ddof=1)
        z_train = (fold.train - mean) / sd
        z_test = (fold.test - mean) / sd
        if fold.model is not None and fold.test_target is not None:
            complete_errors.append(np.abs(fold.model(fold.test) - fold.test_target))
        fitted = {
            m: make_imputer(m, -mean / sd, seed + fold_index, gain).fit(z_train) for m in methods
        }
        for s_index, scenario in enumerate(scenarios):
            for r in range(repeats):
                rng = np.random.default_rng([seed, fold_index, s_index, r])
                removed = mask_for(scenario, z_test.shape, names, keep, rng)
                holed = np.where(removed, np.nan, z_test)
                for method, imputer in fitted.items():
                    filled = imputer.transform(holed)
                    result = results[scenario.name][method]
                    result.squared.append((filled[removed] - z_test[removed]) ** 2)
                    result.columns.append(np.nonzero(removed)[1])
                    if fold.model is not None and fold.test_target is not None:
                        raw = filled * sd + mean
                        result.model_abs_errors.append(np.abs(fold.model(raw) - fold.test_target))
                if scenario.columns:
                    break  # a structured scenario removes the same entries every time
    complete = float(np.mean(np.concatenate(complete_errors))) if complete_errors else None
    return StudyResult(tuple(names), results, complete)


def summary(result: StudyResult) -> Mapping[str, object]:
    """The figures as a card or a document holds them."""
    d = len(result.names)
    out: dict[str, object] = {}
    for scenario, by in result.results.items():
        out[scenario] = {
            m: {
                "rmse_sd": round(r.rmse(), 4),
                "model_mae": None if r.model_mae() is None else round(float(r.model_mae() or 0), 4),
                "nrmse": {
                    n: round(float(v), 4)
                    for n, v in zip(result.names, r.nrmse(d), strict=True)
                    if np.isfinite(v)
                },
            }
            for m, r in by.items()
        }
    return out
