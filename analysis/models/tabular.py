"""A model on a feature vector, as its card describes it: inputs by name, imputation of the
missing ones, an ONNX session, the output clipped and graded, the top attributions.

:meth:`TabularModel.predict` is the whole path for one vector; :meth:`Prediction.model_outputs`
gives the values for the measurement report (:class:`analysis.results.ModelOutput`, written as
NUMs with the model's TID 4019 Algorithm Identification and its attributions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.sr.coding import Code

from analysis.models.attribution import METHOD, occlusion, top_attributions
from analysis.models.card import Grade, ModelCard, ModelCardError, read_card
from analysis.models.imputer import Imputer, read_imputer
from analysis.models.runtime import Session, session
from analysis.results.model import Algorithm, Attribution, ModelOutput

__all__ = ["GRADE_UNIT", "MissingInput", "Prediction", "TabularModel"]

#: UCUM unit of a grade (a unity with an annotation, UCUM 2.4 "curly braces").
GRADE_UNIT = Code("{grade}", "UCUM", "grade")


class MissingInput(ValueError):
    """A required input is missing (required inputs are never imputed)."""


@dataclass(frozen=True)
class Prediction:
    """One prediction: the value (clipped to the card's range), its grade, the vector the
    model was given, which of its entries were imputed, and the top attributions.

    ``raw_value`` is the model's output before clipping, ``baseline_value`` its output for the
    training-mean vector; the attributions explain ``raw_value - baseline_value`` up to
    ``unattributed`` (:mod:`.attribution`)."""

    value: float
    grade: Grade
    inputs: Mapping[str, float]
    imputed: tuple[str, ...]
    attributions: tuple[Attribution, ...]
    algorithm: Algorithm
    concept: Code
    unit: Code
    grade_concept: Code
    raw_value: float
    baseline_value: float
    unattributed: float

    def model_outputs(self) -> tuple[ModelOutput, ModelOutput]:
        """The value with its attributions, and the grade (0 = lowest band) as its own NUM."""
        return (
            ModelOutput(self.concept, self.value, self.unit, self.algorithm, self.attributions),
            ModelOutput(self.grade_concept, float(self.grade.value), GRADE_UNIT, self.algorithm),
        )


class TabularModel:
    """A card's model, loaded: one onnxruntime session per process (:mod:`.runtime`)."""

    def __init__(self, card_path: Path, threads: int | None = None) -> None:
        card = read_card(card_path)
        if card.attribution != METHOD:
            raise ModelCardError(card.path, "attribution.method", f"must be {METHOD!r}")
        self.card: ModelCard = card
        self.session: Session = session(card.model_file, card.blake3, threads)
        self._check_graph()
        self.imputer: Imputer = read_imputer(
            card.imputer.file, card.imputer.blake3, card.input_names
        )
        self.baseline = np.array([f.training_mean for f in card.inputs], dtype=np.float64)
        self.algorithm = Algorithm(
            card.name,
            card.version,
            model_hash=card.blake3,
            parameter_hash=card.parameters.blake3,
            demonstration=card.demonstration,
        )

    def _check_graph(self) -> None:
        (tensor,) = self.session.inference.get_inputs()
        width = tensor.shape[-1]
        if width != len(self.card.inputs):
            raise ModelCardError(
                self.card.path, "inputs", f"lists {len(self.card.inputs)}, the model takes {width}"
            )
        if self.card.output.tensor not in self.session.output_names:
            raise ModelCardError(
                self.card.path,
                "output.tensor",
                f"is not an output of the model ({self.session.output_names})",
            )

    def run(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """The raw model output for each row (no imputation, no clipping)."""
        out = self.session.run(rows.astype(np.float32))[self.card.output.tensor]
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def vector(self, features: Mapping[str, float | None]) -> npt.NDArray[np.float64]:
        """The inputs in the card's order, NaN where *features* has no finite value."""
        values = []
        for name in self.card.input_names:
            value = features.get(name)
            ok = value is not None and not isinstance(value, bool) and math.isfinite(value)
            values.append(float(value) if ok and value is not None else math.nan)
        return np.array(values, dtype=np.float64)

    def predict(self, features: Mapping[str, float | None]) -> Prediction:
        """Predict from *features* by input name (absent, None or NaN: missing)."""
        vector = self.vector(features)
        lacking = [
            f.name
            for f, v in zip(self.card.inputs, vector, strict=True)
            if f.required and math.isnan(v)
        ]
        if lacking:
            raise MissingInput(f"{self.card.name}: required inputs missing: {', '.join(lacking)}")
        filled, imputed = self.imputer.impute(vector)
        found = occlusion(self.run, filled, self.baseline)
        low, high = self.card.output.range
        value = min(max(found.value, low), high)
        names = self.card.input_names
        return Prediction(
            value=value,
            grade=self.card.grade(value),
            inputs=dict(zip(names, (float(v) for v in filled), strict=True)),
            imputed=tuple(n for n, flag in zip(names, imputed, strict=True) if flag),
            attributions=top_attributions(names, found.contributions, self.card.top_attributions),
            raw_value=found.value,
            baseline_value=found.baseline_value,
            unattributed=found.unattributed,
            algorithm=self.algorithm,
            concept=self.card.output.concept,
            unit=self.card.output.unit,
            grade_concept=self.card.output.grade_concept,
        )
