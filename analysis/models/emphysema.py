"""The demonstration emphysema model: emphysema extent (% of the lung) and its grade, per lung,
from the lung's density measures and pyradiomics features. **Not for clinical use**: it was
trained on simulated emphysema in two real chest CTs (``docs/models.md``, its card
``data/emphysema.card.json``, the script ``analysis/training/train_emphysema.py``).

For the pipeline, per lung segment (right, left)::

    model = load_emphysema_model()
    features = lung_inputs(segment_features, region_measures, model.card.parameters.blake3)
    prediction = model.predict(features)
    outputs = prediction.model_outputs()           # -> SegmentResult(model_outputs=...)
    flagged, _ = imputed_measurements(prediction)  # -> Measurement(imputed=True) in the report

The lung measures (%LAA-950, Perc15, mean lung density) are required: they come from the mask
itself, and a lung without them has no prediction. pyradiomics features that could not be
computed are imputed (:mod:`.imputer`). The features must have been computed with the
parameter set the card names (``ct_ibsi``; its BLAKE3 is checked).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from pathlib import Path

from pydicom.sr.coding import Code

from analysis.models.tabular import Prediction, TabularModel
from analysis.radiomics.codes import Concept, feature_codes, ibsi_value
from analysis.radiomics.features import SegmentFeatures
from analysis.radiomics.lung import RegionMeasures
from analysis.results.model import Measurement

__all__ = [
    "CARD",
    "LUNG_MEASURES",
    "WrongParameters",
    "imputed_measurements",
    "load_emphysema_model",
    "lung_inputs",
]

CARD = Path(__file__).resolve().parent / "data" / "emphysema.card.json"
#: Model inputs taken from :class:`RegionMeasures` (input name -> attribute).
LUNG_MEASURES: Mapping[str, str] = {
    "lung_laa950_percent": "laa950_percent",
    "lung_perc15_hu": "perc15_hu",
    "lung_mean_hu": "mean_hu",
}
_LOCK = threading.Lock()
_MODELS: dict[Path, TabularModel] = {}


class WrongParameters(ValueError):
    """The features were computed with another parameter set than the model was trained on."""


def load_emphysema_model(threads: int | None = None, card: Path = CARD) -> TabularModel:
    """The process's emphysema model (loaded once; *threads* as :func:`.runtime.session`)."""
    key = card.resolve()
    with _LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = TabularModel(key, threads)
            _MODELS[key] = model
    if threads is not None and threads != model.session.threads:
        raise ValueError(f"the emphysema model already runs with {model.session.threads} thread(s)")
    return model


def lung_inputs(
    features: SegmentFeatures | None,
    region: RegionMeasures | None,
    parameters_blake3: str | None = None,
) -> dict[str, float | None]:
    """The model's inputs of one lung: the lung measures of *region* and the pyradiomics values
    of *features* under their pyradiomics names. Features pyradiomics could not compute are
    absent (they are imputed). *parameters_blake3*, when given, must be the hash the features
    were computed with (the card's ``parameters.blake3``)."""
    out: dict[str, float | None] = {}
    if region is not None:
        for name, attribute in LUNG_MEASURES.items():
            out[name] = float(getattr(region, attribute))
    if features is not None:
        if parameters_blake3 is not None and features.parameters_blake3 != parameters_blake3:
            raise WrongParameters(
                f"features of {features.segment!r} were computed with parameter set"
                f" {features.parameters_name!r} ({features.parameters_blake3[:12]}...), the model"
                f" needs {parameters_blake3[:12]}..."
            )
        out.update(features.values)
    return out


def _code(concept: Concept) -> Code:
    return Code(concept.value, concept.scheme, concept.meaning)


def imputed_measurements(prediction: Prediction) -> tuple[list[Measurement], list[str]]:
    """The imputed inputs as the report's measurements (IBSI conventions, ``imputed=True``), so
    that the report shows the value the model was given and marks it as imputed; and the names
    of the imputed inputs that have no measurement: not in the feature-code table, or a concept
    and unit the report refuses (:class:`analysis.results.Measurement` checks them)."""
    table = feature_codes()
    out: list[Measurement] = []
    without: list[str] = []
    for name in prediction.imputed:
        image_type, _, feature = name.partition("_")
        code = table.get(feature) if image_type == "original" else None
        value = math.nan
        if code is not None:
            value = ibsi_value(code.conversion, prediction.inputs[name], voxel_count=0)
        if code is None or not math.isfinite(value):
            without.append(name)
            continue
        try:
            out.append(
                Measurement(
                    concept=_code(code.concept),
                    value=value,
                    unit=_code(code.unit),
                    derivation=None if code.derivation is None else _code(code.derivation),
                    imputed=True,
                )
            )
        except ValueError:
            without.append(name)
    return out, without
