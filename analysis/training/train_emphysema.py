"""Train, evaluate and export the demonstration emphysema model, and choose its imputer.

Reads the simulated lungs of :mod:`analysis.training.emphysema_data` (default
``tests/data/emphysema/features.csv``) and writes, all reproducibly from that file and the seed:

* ``analysis/models/data/emphysema.onnx``: the model (scikit-learn, exported with skl2onnx);
* ``analysis/models/data/emphysema.imputer.json``: the imputer that won the comparison;
* ``analysis/models/data/emphysema.card.json``: the card (hashes, inputs, outputs, figures);
* ``tests/data/emphysema/fixture.json``: held-out vectors with scikit-learn's predictions and
  imputations, which the tests reproduce with onnxruntime and the numpy imputer.

Model: ridge regression, on standardised inputs, of the **difference between the simulated
extent and %LAA-950**. The penalty thus shrinks towards %LAA-950, the standard quantitative
estimate, rather than towards the mean extent: with little data the model stays close to what
a radiologist's software would report and only corrects it where the texture says so. The
fitted difference plus %LAA-950 is one linear function, exported as such (the %LAA-950
coefficient carries the +1). The penalty is chosen by 5-fold cross-validation on the training
lungs, grouped by simulated CT (both lungs of one CT stay in one fold).

Split: simulated CTs 40-49 of each patient (20 %, 40 lungs) are held out; 0-39 train. Held-out
lungs are new simulations of emphysema and acquisition on anatomy seen in training. A second
evaluation trains the same recipe on one patient and tests on the other: how it does on a
lung it has never seen (two patients are all the licensed chest CT we have).

Run: ``python -m analysis.training.train_emphysema`` (needs the ``training`` extra; a few
seconds, plus the imputation comparison: about a minute).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import blake3
import numpy as np
import numpy.typing as npt

from analysis.models.attribution import METHOD as ATTRIBUTION_METHOD
from analysis.radiomics import load_parameters
from analysis.radiomics.codes import feature_codes
from analysis.radiomics.features import PYRADIOMICS_VERSION
from analysis.training.imputation_study import (
    Fold,
    StudyResult,
    compare,
    make_imputer,
    standard_scenarios,
    summary,
)

__all__ = ["INPUTS", "main"]

Array = npt.NDArray[np.float64]

#: Lung measures, then first-order, GLCM, GLSZM, NGTDM, GLRLM and GLDM features: where the
#: density histogram sits and how wide and skewed it is (%LAA-950 moves with all of it), and
#: texture that sees noise, blur and the size of low-attenuation clusters.
INPUTS: tuple[str, ...] = (
    "lung_laa950_percent",
    "lung_perc15_hu",
    "lung_mean_hu",
    "original_firstorder_10Percentile",
    "original_firstorder_InterquartileRange",
    "original_firstorder_Variance",
    "original_firstorder_Skewness",
    "original_firstorder_Kurtosis",
    "original_glcm_Contrast",
    "original_glcm_Correlation",
    "original_glcm_JointEntropy",
    "original_glcm_Idm",
    "original_glszm_SmallAreaEmphasis",
    "original_glszm_ZonePercentage",
    "original_ngtdm_Coarseness",
    "original_ngtdm_Busyness",
    "original_glrlm_LowGrayLevelRunEmphasis",
    "original_gldm_LowGrayLevelEmphasis",
)
_LUNG = {
    "lung_laa950_percent": ("%", "%LAA-950: percentage of lung voxels below -950 HU (QIBA)"),
    "lung_perc15_hu": ("[hnsf'U]", "Perc15: 15th percentile of the lung's HU histogram (QIBA)"),
    "lung_mean_hu": ("[hnsf'U]", "mean lung density"),
}
LAA = INPUTS.index("lung_laa950_percent")
TEST_FROM_DRAW = 40
GRID: tuple[Mapping[str, int], ...] = tuple(
    {"max_depth": depth, "n_estimators": n} for depth in (2, 3) for n in (100, 200, 400)
)
ALPHAS = tuple(float(a) for a in np.logspace(-2, 3, 11))
GRADES = ((0, "none", 5.0), (1, "mild", 15.0), (2, "moderate", 25.0), (3, "severe", None))
SEED = 20240506
NAME, VERSION = "emphysema-extent", "1.0.0"
OPSET = {"": 17, "ai.onnx.ml": 3}
OUTPUT = "extent"


@dataclass(frozen=True)
class Data:
    x: Array
    y: Array
    patient: npt.NDArray[np.str_]
    draw: npt.NDArray[np.int64]

    def subset(self, rows: npt.NDArray[np.bool_]) -> Data:
        return Data(self.x[rows], self.y[rows], self.patient[rows], self.draw[rows])

    @property
    def groups(self) -> npt.NDArray[np.str_]:
        return np.char.add(np.char.add(self.patient, "-"), self.draw.astype(str))

    @property
    def laa(self) -> Array:
        return self.x[:, LAA]


def load(path: Path) -> Data:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return Data(
        x=np.array([[float(r[c]) for c in INPUTS] for r in rows]),
        y=np.array([float(r["target_percent"]) for r in rows]),
        patient=np.array([r["patient"] for r in rows]),
        draw=np.array([int(r["draw"]) for r in rows]),
    )


@dataclass
class Model:
    """The shipped model: %LAA-950 plus gradient-boosted trees fitted to extent - %LAA-950."""

    trees: Any

    def predict(self, x: Array) -> Array:
        out: Array = np.asarray(self.trees.predict(x), dtype=np.float64) + x[:, LAA]
        return out


def _trees(params: Mapping[str, int]) -> Any:
    from sklearn.ensemble import GradientBoostingRegressor  # type: ignore[import-untyped]

    return GradientBoostingRegressor(learning_rate=0.05, subsample=0.8, random_state=SEED, **params)


def fit(data: Data, params: Mapping[str, int] | None = None) -> Model:
    """The model on *data*; tree depth and count by grouped cross-validation when not given."""
    if params is None:
        params = choose(data, GRID, fit)
    return Model(_trees(params).fit(data.x, data.y - data.laa))


def fit_ridge(data: Data, alpha: float | None = None) -> Any:
    """The linear alternative (for the record): ridge regression of extent - %LAA-950 on
    standardised inputs, %LAA-950 folded into its coefficients (a scikit-learn Pipeline)."""
    from sklearn.linear_model import Ridge  # type: ignore[import-untyped]
    from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]
    from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]

    if alpha is None:
        grid = tuple({"alpha": a} for a in ALPHAS)
        alpha = float(choose(data, grid, lambda d, p: fit_ridge(d, p["alpha"]))["alpha"])
    scaler = StandardScaler().fit(data.x)
    ridge = Ridge(alpha=alpha).fit(scaler.transform(data.x), data.y - data.laa)
    ridge.coef_[LAA] += scaler.scale_[LAA]
    ridge.intercept_ += scaler.mean_[LAA]
    return Pipeline([("scale", scaler), ("ridge", ridge)])


_P = TypeVar("_P", bound=Mapping[str, Any])


def choose(data: Data, grid: Sequence[_P], make: Callable[[Data, _P], Any]) -> _P:
    """The settings of *grid* with the least grouped 5-fold cross-validated mean absolute
    error on *data* (both lungs of a simulated CT stay in one fold)."""
    from sklearn.model_selection import GroupKFold  # type: ignore[import-untyped]

    best: tuple[float, int] | None = None
    for index, params in enumerate(grid):
        errors = np.zeros(len(data.y))
        for train, test in GroupKFold(n_splits=5).split(data.x, data.y, data.groups):
            model = make(data.subset(_rows(train, len(data.y))), params)
            errors[test] = np.abs(predict(model, data.x[test]) - data.y[test])
        mae = float(errors.mean())
        if best is None or mae < best[0]:
            best = (mae, index)
    assert best is not None
    return grid[best[1]]


def _rows(index: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.bool_]:
    rows = np.zeros(n, dtype=bool)
    rows[index] = True
    return rows


def predict(model: Any, x: Array) -> Array:
    """The model's extent, clipped to [0, 100] % as the runtime clips it."""
    return np.clip(np.asarray(model.predict(x), dtype=np.float64), 0.0, 100.0)


def grade(values: Array) -> npt.NDArray[np.int64]:
    bounds = [b for _, _, b in GRADES if b is not None]
    return np.searchsorted(np.asarray(bounds), values, side="right").astype(np.int64)


def figures(predicted: Array, truth: Array, laa: Array) -> dict[str, Any]:
    """Errors of the model and of %LAA-950 taken as the extent, in percentage points."""
    err, base = predicted - truth, laa - truth
    g_true, g_pred, g_laa = grade(truth), grade(predicted), grade(laa)
    confusion = np.zeros((len(GRADES), len(GRADES)), dtype=int)
    for t, p in zip(g_true, g_pred, strict=True):
        confusion[t, p] += 1
    return {
        "lungs": len(truth),
        "mae_percent": round(float(np.mean(np.abs(err))), 3),
        "rmse_percent": round(float(np.sqrt(np.mean(err**2))), 3),
        "bias_percent": round(float(np.mean(err)), 3),
        "r2": round(float(1 - np.sum(err**2) / np.sum((truth - truth.mean()) ** 2)), 4),
        "laa950_mae_percent": round(float(np.mean(np.abs(base))), 3),
        "laa950_rmse_percent": round(float(np.sqrt(np.mean(base**2))), 3),
        "grade_accuracy": round(float(np.mean(g_pred == g_true)), 3),
        "laa950_grade_accuracy": round(float(np.mean(g_laa == g_true)), 3),
        "grade_confusion_true_by_predicted": confusion.tolist(),
    }


def paired_interval(predicted: Array, test: Data, draws: int = 5000) -> list[float]:
    """95 % bootstrap interval of (model MAE - %LAA-950 MAE), resampling simulated CTs (the two
    lungs of one CT are not independent)."""
    diff = np.abs(predicted - test.y) - np.abs(test.laa - test.y)
    groups = test.groups
    names = np.unique(groups)
    members = [np.flatnonzero(groups == n) for n in names]
    rng = np.random.default_rng(SEED)
    means = []
    for _ in range(draws):
        picked = np.concatenate([members[i] for i in rng.integers(0, len(names), len(names))])
        means.append(float(diff[picked].mean()))
    low, high = np.percentile(means, [2.5, 97.5])
    return [round(float(low), 3), round(float(high), 3)]


def _summary(held_out: Mapping[str, Any], others: Mapping[str, Mapping[str, Any]]) -> str:
    parts = [
        f"{f['mae_percent']:.2f} % vs {f['laa950_mae_percent']:.2f} % ({name.rsplit('_', 1)[1]})"
        for name, f in others.items()
    ]
    return (
        "Demonstration only. Held out (40 lungs of 20 simulated CTs not used in training, on the"
        f" two patients' anatomy): MAE {held_out['mae_percent']:.2f} % vs"
        f" {held_out['laa950_mae_percent']:.2f} % for %LAA-950 taken as the extent (difference"
        f" 95 % interval {held_out['mae_minus_laa950_mae_ci95']}). On a patient"
        " never seen in training (the same recipe trained on the other patient): MAE "
        + " and ".join(parts)
        + ". With two patients, generalisation to new anatomy is not shown."
    )


def new_patient(data: Data) -> dict[str, Any]:
    """The recipe trained on one patient's lungs and tested on the other's (all draws)."""
    out = {}
    for test in ("lung2", "lung1"):
        train = data.subset(data.patient != test)
        held = data.subset(data.patient == test)
        model = fit(train)
        f = figures(predict(model, held.x), held.y, held.laa)
        keys = ("lungs", "mae_percent", "laa950_mae_percent", "bias_percent", "grade_accuracy")
        out[f"train_{'lung1' if test == 'lung2' else 'lung2'}_test_{test}"] = {
            k: f[k] for k in keys
        }
    return out


def linear_alternative(train: Data, test: Data) -> float:
    """Held-out MAE of the linear alternative (:func:`fit_ridge`), for the record."""
    return round(float(np.mean(np.abs(predict(fit_ridge(train), test.x) - test.y))), 3)


def export_onnx(model: Model) -> bytes:
    """The trees converted by skl2onnx (TreeEnsembleRegressor), then %LAA-950 added: a Slice of
    its input column and an Add, whose sum is the graph's one output ``extent`` (N, 1)."""
    # the training extra only: imported by name, so type checks need neither installed
    onnx: Any = importlib.import_module("onnx")
    skl2onnx: Any = importlib.import_module("skl2onnx")
    data_types: Any = importlib.import_module("skl2onnx.common.data_types")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    onx = skl2onnx.convert_sklearn(
        model.trees,
        name=NAME,
        initial_types=[("features", data_types.FloatTensorType([None, len(INPUTS)]))],
        target_opset=OPSET,
    )
    graph = onx.graph
    (trees_out,) = graph.output
    for name, value in (("laa_start", LAA), ("laa_end", LAA + 1), ("laa_axis", 1)):
        graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), name))
    graph.node.append(
        helper.make_node("Slice", ["features", "laa_start", "laa_end", "laa_axis"], ["laa950"])
    )
    graph.node.append(helper.make_node("Add", [trees_out.name, "laa950"], [OUTPUT]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, [None, 1]))
    onnx.checker.check_model(onx, full_check=True)
    data: bytes = onx.SerializeToString()
    return data


def onnx_predict(data: bytes, x: Array) -> Array:
    import onnxruntime  # type: ignore[import-untyped]

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    (out,) = session.run([OUTPUT], {"features": x.astype(np.float32)})
    return np.asarray(out, dtype=np.float64).reshape(-1)


def imputer_file(method: str, fitted: Any, mean: Array, sd: Array) -> dict[str, Any]:
    """The runtime's JSON of a fitted imputer of the study (:mod:`analysis.models.imputer`)."""
    out: dict[str, Any] = {"method": method, "names": list(INPUTS)}
    out["mean"], out["sd"] = mean.tolist(), sd.tolist()
    if method == "iterative":
        estimator = fitted.estimator
        out["initial"] = estimator.initial_imputer_.statistics_.tolist()
        out["rounds"] = int(estimator.n_iter_)
        out["steps"] = [
            {
                "target": int(t.feat_idx),
                "inputs": [int(j) for j in t.neighbor_feat_idx],
                "coef": t.estimator.coef_.tolist(),
                "intercept": float(t.estimator.intercept_),
            }
            for t in estimator.imputation_sequence_
        ]
    elif method == "knn":
        out["neighbours"] = int(fitted.estimator.n_neighbors)
        out["donors"] = np.asarray(fitted.estimator._fit_X).tolist()
    elif method != "mean":
        raise NotImplementedError(f"the runtime has no {method} imputer: ship another or add it")
    return out


def _json(content: object) -> bytes:
    return (json.dumps(content, indent=1, allow_nan=False) + "\n").encode()


def _input_table(train: Data) -> list[dict[str, Any]]:
    mean, sd = train.x.mean(axis=0), train.x.std(axis=0, ddof=1)
    codes = feature_codes()
    table = []
    for i, name in enumerate(INPUTS):
        if name in _LUNG:
            unit, description = _LUNG[name]
        else:
            feature = name.split("_", 1)[1]
            code = codes[feature]
            unit = code.unit.value
            ibsi = f", IBSI {code.ibsi}" if code.ibsi else ""
            description = f"pyradiomics {feature} (pyradiomics conventions{ibsi})"
        table.append(
            {
                "name": name,
                "unit": unit,
                "description": description,
                "training_mean": float(mean[i]),
                "training_sd": float(sd[i]),
                "required": name in _LUNG,
            }
        )
    return table


def study(
    train: Data, test: Data, model_predict: Callable[[Array], Array], repeats: int
) -> StudyResult:
    keep = list(_LUNG)
    fold = Fold(train.x, test.x, test.y, model_predict)
    return compare(
        [fold], INPUTS, keep, standard_scenarios(INPUTS, keep), repeats=repeats, seed=SEED
    )


def best_method(result: StudyResult) -> str:
    """Least RMSE averaged over the three random-missingness rates (zero excluded)."""
    table = result.table()
    mcar = [s for s in table if s.startswith("mcar")]
    methods = [m for m in table[mcar[0]] if m != "zero"]
    return min(methods, key=lambda m: float(np.mean([table[s][m] for s in mcar])))


def markdown(result: StudyResult) -> str:
    """The comparison as the Markdown table of docs/models.md."""
    table = result.table()
    methods = list(next(iter(table.values())))
    lines = ["| scenario | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for scenario, rmse in table.items():
        lines.append(f"| {scenario} | " + " | ".join(f"{rmse[m]:.3f}" for m in methods) + " |")
    lines.append("")
    lines.append("| scenario (model MAE, %) | " + " | ".join(methods) + " |")
    lines.append("|---" * (len(methods) + 1) + "|")
    for scenario, found in result.results.items():
        cells = [f"{r.model_mae() or math.nan:.2f}" for r in found.values()]
        lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _libraries() -> dict[str, str]:
    names = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pyradiomics")
    return {n: metadata.version(n) for n in names}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("tests/data/emphysema/features.csv"))
    parser.add_argument("--out", type=Path, default=Path("analysis/models/data"))
    parser.add_argument("--fixture", type=Path, default=Path("tests/data/emphysema/fixture.json"))
    parser.add_argument("--repeats", type=int, default=10, help="masks per MCAR scenario")
    args = parser.parse_args(argv)

    data = load(args.data)
    train, test = data.subset(data.draw < TEST_FROM_DRAW), data.subset(data.draw >= TEST_FROM_DRAW)
    params = choose(train, GRID, fit)
    model = fit(train, params)
    onnx_bytes = export_onnx(model)
    sk, ox = predict(model, test.x), np.clip(onnx_predict(onnx_bytes, test.x), 0.0, 100.0)
    if not np.allclose(sk, ox, atol=1e-3):
        raise AssertionError(f"ONNX differs from scikit-learn by {np.abs(sk - ox).max()}")
    held_out = figures(sk, test.y, test.laa)
    held_out["mae_minus_laa950_mae_ci95"] = paired_interval(sk, test)
    others = new_patient(data)
    evaluation = {
        "summary": _summary(held_out, others),
        "held_out": held_out,
        "new_patient": others,
        "linear_ridge_mae_percent": linear_alternative(train, test),
    }
    print(json.dumps(evaluation, indent=1), file=sys.stderr)

    result = study(train, test, lambda x: predict(model, x), args.repeats)
    method = best_method(result)
    mean, sd = train.x.mean(axis=0), train.x.std(axis=0, ddof=1)
    zero_z = -mean / sd
    imputer = make_imputer(method, zero_z, SEED).fit((train.x - mean) / sd)
    imputer_bytes = _json(imputer_file(method, imputer, mean, sd))
    print(markdown(result), file=sys.stderr)

    radiomics = load_parameters("ct_ibsi")
    card = {
        "card_format": 1,
        "model": {
            "name": NAME,
            "version": VERSION,
            "file": "emphysema.onnx",
            "blake3": blake3.blake3(onnx_bytes).hexdigest(),
            "license": "Apache-2.0",
            "demonstration": True,
            "intended_use": (
                "Demonstration of a radiomics model in the Radiogate pipeline: emphysema extent"
                " (% of the lung) of one lung of an adult chest CT, from its density measures and"
                " pyradiomics features. Trained on simulated emphysema in two chest CTs; not"
                " validated on patients; not for clinical use."
            ),
            "method": (
                "%LAA-950 plus gradient-boosted regression trees (scikit-learn, learning rate"
                f" 0.05, subsample 0.8, depth {params['max_depth']}, {params['n_estimators']}"
                " trees by grouped 5-fold CV) fitted to extent - %LAA-950; exported with skl2onnx"
            ),
        },
        "inputs": _input_table(train),
        "output": {
            "tensor": OUTPUT,
            "concept": {
                "value": "EMPHYSEMA-EXT",
                "scheme": "99RADIOGATE",
                "meaning": "Emphysema extent",
            },
            "unit": {"value": "%", "scheme": "UCUM", "meaning": "Percent"},
            "range": [0.0, 100.0],
            "grade_concept": {
                "value": "EMPHYSEMA-GRADE",
                "scheme": "99RADIOGATE",
                "meaning": "Emphysema severity grade",
            },
        },
        "grades": [{"value": v, "label": label, "below": b} for v, label, b in GRADES],
        "attribution": {"method": ATTRIBUTION_METHOD, "top": 5},
        "parameters": {
            "name": radiomics.name,
            "blake3": radiomics.blake3,
            "pyradiomics_version": PYRADIOMICS_VERSION,
        },
        "imputer": {
            "file": "emphysema.imputer.json",
            "blake3": blake3.blake3(imputer_bytes).hexdigest(),
            "method": method,
            "figures": {
                "protocol": (
                    "imputers fitted on the 160 training lungs, entries removed from the 40"
                    f" held-out lungs ({args.repeats} masks per random rate); RMSE in training"
                    " SDs over removed entries; model_mae: the model's MAE (%) on imputed vectors"
                ),
                "model_mae_complete": result.complete_model_mae,
                "scenarios": summary(result),
            },
        },
        "evaluation": evaluation,
        "training": {
            "script": "analysis/training/train_emphysema.py",
            "data": "tests/data/emphysema/features.csv (analysis/training/emphysema_data.py)",
            "seed": SEED,
            "split": f"simulated CTs 0-{TEST_FROM_DRAW - 1} train, {TEST_FROM_DRAW}-49 held out",
            "lungs_train": len(train.y),
            "lungs_held_out": len(test.y),
            "libraries": _libraries(),
        },
        "data": [
            {
                "source": "pyradiomics 3.0.1 sdist data/lung1_image.nrrd, data/lung2_image.nrrd",
                "license": "BSD-3-Clause",
                "role": "train+test",
                "description": (
                    "two real chest CTs (48 and 61 slices of 5 mm) with simulated emphysema,"
                    " inspiration level, kernel blur and noise"
                    " (analysis/training/emphysema_data.py)"
                ),
            }
        ],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "emphysema.onnx").write_bytes(onnx_bytes)
    (args.out / "emphysema.imputer.json").write_bytes(imputer_bytes)
    (args.out / "emphysema.card.json").write_bytes(_json(card))
    write_fixture(args.fixture, model, test, imputer=imputer, mean=mean, sd=sd)
    print(f"{method} imputer; model {card['model']['blake3']}", file=sys.stderr)  # type: ignore[index]
    return 0


def write_fixture(
    path: Path, model: Model, test: Data, *, imputer: Any, mean: Array, sd: Array
) -> None:
    """Eight held-out vectors with scikit-learn's predictions, and the same with entries
    removed, imputed by the fitted scikit-learn imputer."""
    rng = np.random.default_rng(SEED)
    rows = rng.choice(len(test.y), size=8, replace=False)
    vectors = test.x[rows]
    holed = vectors.copy()
    for i in range(len(holed)):
        gone = rng.choice(np.arange(3, len(INPUTS)), size=2 + i, replace=False)
        holed[i, gone] = np.nan
    filled = imputer.transform((holed - mean) / sd) * sd + mean

    def listed(a: Array) -> list[list[float | None]]:
        return [[None if math.isnan(v) else float(v) for v in row] for row in a]

    content = {
        "inputs": list(INPUTS),
        "vectors": listed(vectors),
        "predictions": [float(v) for v in model.predict(vectors)],
        "holed": listed(holed),
        "imputed": listed(filled),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_json(content))


if __name__ == "__main__":
    raise SystemExit(main())
