"""Model-based triage: an ONNX model and its model card score CT slices; the card's thresholds
turn a series' score into a priority lane (``docs/triage.md``).

Pure computation: the only files read are a model's card and ONNX file.
"""

from __future__ import annotations

from pathlib import Path

from analysis.triage.card import (
    CARD_FORMAT,
    DataRole,
    DataSource,
    Evaluation,
    Layout,
    ModelCard,
    ModelCardError,
    ModelIdentity,
    OperatingPoint,
    Preprocessing,
    ReliabilityBin,
    Resample,
    Window,
    parse_card,
    read_card,
)
from analysis.triage.lanes import Lane, Thresholds
from analysis.triage.model import TriageModel, load_model
from analysis.triage.preprocess import preprocess
from analysis.triage.series import SeriesScore, aggregate

__all__ = [
    "CARD_FORMAT",
    "DEFAULT_CARD",
    "DataRole",
    "DataSource",
    "Evaluation",
    "Lane",
    "Layout",
    "ModelCard",
    "ModelCardError",
    "ModelIdentity",
    "OperatingPoint",
    "Preprocessing",
    "ReliabilityBin",
    "Resample",
    "SeriesScore",
    "Thresholds",
    "TriageModel",
    "Window",
    "aggregate",
    "load_model",
    "parse_card",
    "preprocess",
    "read_card",
]

DEFAULT_CARD = Path(__file__).with_name("models") / "ct_critical_demo.toml"
"""The card of the demonstration model shipped with Radiogate (not for clinical use)."""
