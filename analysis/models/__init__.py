"""Models on a segment's feature vector (pure computation; the only files read are the
package's own model, card and imputer files in ``data/``):

* :mod:`.card`: the model card (inputs in order with units, output, grades, hashes, figures);
* :mod:`.runtime`: onnxruntime, one verified session per model file per process;
* :mod:`.imputer`: missing inputs filled in numpy, and flagged;
* :mod:`.attribution`: each prediction's top contributing inputs;
* :mod:`.tabular`: the path from a feature mapping to a prediction and its report values;
* :mod:`.emphysema`: the demonstration emphysema model (not for clinical use).

``docs/models.md`` describes the shipped model, how it was trained and how its imputer was
chosen.
"""

from analysis.models.card import ModelCard, ModelCardError, read_card
from analysis.models.emphysema import (
    imputed_measurements,
    load_emphysema_model,
    lung_inputs,
)
from analysis.models.imputer import Imputer, read_imputer
from analysis.models.runtime import ModelFileError
from analysis.models.tabular import MissingInput, Prediction, TabularModel

__all__ = [
    "Imputer",
    "MissingInput",
    "ModelCard",
    "ModelCardError",
    "ModelFileError",
    "Prediction",
    "TabularModel",
    "imputed_measurements",
    "load_emphysema_model",
    "lung_inputs",
    "read_card",
    "read_imputer",
]
