"""Model cards: what a triage model applies to, how its input is made and what its output means.

A card is a TOML (``.toml``) or JSON (``.json``) file next to its ONNX model; ``docs/triage.md``
lists every key. This module parses and validates a card's own content; the checks that need the
model file (its BLAKE3, the ONNX graph's input and output) are made when the model is loaded
(:mod:`analysis.triage.model`). Every problem raises :class:`ModelCardError` naming the card and
the key, e.g. ``model card models/x.toml: key 'preprocessing.size' must be ...``. Unknown keys are
errors too: a misspelt key would otherwise be ignored and its default silently used.

Applicability is stated in DICOM terms: ``applies_to.modality`` holds Modality (0008,0060) defined
terms (PS3.3 C.7.3.1.1.1), ``applies_to.body_part`` Body Part Examined (0018,0015) defined terms
(PS3.16 Annex L).
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from analysis.triage.lanes import Lane, Thresholds

__all__ = [
    "CARD_FORMAT",
    "DataRole",
    "DataSource",
    "Evaluation",
    "Layout",
    "ModelCard",
    "ModelCardError",
    "ModelIdentity",
    "OperatingPoint",
    "Preprocessing",
    "ReliabilityBin",
    "Resample",
    "Window",
    "parse_card",
    "read_card",
]

CARD_FORMAT = 1
"""The card format this module reads (key ``card_format``)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_BLAKE3 = re.compile(r"[0-9a-f]{64}")
_DTYPES = ("float32", "float16")


class ModelCardError(ValueError):
    """A model card is invalid or does not match its model file.

    ``card`` is the card's path and ``key`` the dotted key at fault ("" for the card as a whole).
    """

    def __init__(self, card: Path | str, key: str, problem: str) -> None:
        self.card = str(card)
        self.key = key
        where = f"key '{key}' " if key else ""
        super().__init__(f"model card {card}: {where}{problem}")


class Layout(StrEnum):
    """Axis order of the model's input tensor (N = batch, C = channel = one HU window)."""

    NCHW = "NCHW"
    NHWC = "NHWC"


class Resample(StrEnum):
    """How a slice is brought to the input size.

    ``spacing``: resampled to ``pixel_spacing_mm`` (antialiased linear), then centred in the
    input size (cropped or padded with ``pad_hu``), so one input pixel is the same physical size
    whatever the scanner's field of view. ``none``: the slice must already have the input size.
    """

    NONE = "none"
    SPACING = "spacing"


class DataRole(StrEnum):
    """What a data source was used for."""

    TRAIN = "train"
    TEST = "test"


@dataclass(frozen=True)
class Window:
    """A linear HU window: ``center - width/2`` maps to 0 and ``center + width/2`` to 1,
    clipped to [0, 1] (PS3.3 C.11.2.1.2.1 without its half-unit offsets, so that the mapping is
    symmetric about ``center`` for real-valued, resampled input)."""

    center: float
    width: float


@dataclass(frozen=True)
class Preprocessing:
    """How one CT slice in HU becomes one model input (:func:`analysis.triage.preprocess`)."""

    windows: tuple[Window, ...]
    size: tuple[int, int]
    """Rows, columns."""
    resample: Resample
    pixel_spacing_mm: float | None
    """Target pixel spacing (square pixels); set exactly when ``resample`` is ``spacing``."""
    pad_hu: float
    clip_hu: tuple[float, float] | None
    """HU values are clipped to [low, high] first (e.g. padding outside the reconstruction
    circle, stored as -2000 or -3024, becomes air); ``None``: no clipping."""
    layout: Layout
    dtype: str

    @property
    def channels(self) -> int:
        """One channel per window."""
        return len(self.windows)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """Shape of one preprocessed slice (the input shape without the batch axis)."""
        rows, cols = self.size
        if self.layout is Layout.NCHW:
            return (self.channels, rows, cols)
        return (rows, cols, self.channels)


@dataclass(frozen=True)
class ModelIdentity:
    """What every triage result carries about the model that produced it."""

    name: str
    version: str
    blake3: str
    """BLAKE3 of the ONNX file (hex)."""
    demonstration: bool
    """True: a demonstration model, not for clinical use."""


@dataclass(frozen=True)
class OperatingPoint:
    """Sensitivity and specificity at one lane's threshold, with 95 % Wilson intervals."""

    lane: Lane
    threshold: float
    sensitivity: float
    specificity: float
    sensitivity_ci95: tuple[float, float] | None
    specificity_ci95: tuple[float, float] | None


@dataclass(frozen=True)
class ReliabilityBin:
    """Calibration: slices whose score fell in [low, high), their mean score and the fraction
    that were positive."""

    low: float
    high: float
    count: int
    mean_predicted: float | None
    observed: float | None


@dataclass(frozen=True)
class Evaluation:
    """Evaluation figures as measured by whoever trained the model."""

    summary: str
    held_out: tuple[str, ...]
    positives: int | None
    negatives: int | None
    roc_auc: float | None
    brier: float | None
    operating_points: tuple[OperatingPoint, ...]
    reliability: tuple[ReliabilityBin, ...]


@dataclass(frozen=True)
class DataSource:
    """One source of training or test data, with its licence."""

    source: str
    license: str
    role: DataRole
    description: str


@dataclass(frozen=True)
class ModelCard:
    """A validated model card (see the module docstring)."""

    path: Path
    name: str
    version: str
    model_file: Path
    """Absolute path of the ONNX file (``model.file`` is relative to the card)."""
    blake3: str
    license: str
    demonstration: bool
    intended_use: str
    modalities: tuple[str, ...]
    body_parts: tuple[str, ...]
    preprocessing: Preprocessing
    labels: tuple[str, ...]
    score_label: str
    thresholds: Thresholds
    min_slices: int
    """Slices at or above a lane's threshold needed for a series to get that lane."""
    evaluation: Evaluation
    data: tuple[DataSource, ...]

    @property
    def identity(self) -> ModelIdentity:
        return ModelIdentity(self.name, self.version, self.blake3, self.demonstration)

    @property
    def score_index(self) -> int:
        """Column of ``score_label`` in the model's output."""
        return self.labels.index(self.score_label)


_MISSING = object()
_E = TypeVar("_E", bound=StrEnum)


class _Table:
    """One table of the card: typed getters that name the dotted key in every error."""

    def __init__(self, card: Path, prefix: str, data: object, allowed: set[str]) -> None:
        self.card = card
        self.prefix = prefix
        if not isinstance(data, Mapping):
            raise ModelCardError(card, prefix.rstrip("."), "must be a table")
        self.data: Mapping[str, object] = data
        for key in sorted(data):
            if key not in allowed:
                raise ModelCardError(
                    card, self.key(key), f"is unknown (allowed here: {', '.join(sorted(allowed))})"
                )

    def key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def error(self, key: str, problem: str) -> ModelCardError:
        return ModelCardError(self.card, self.key(key), problem)

    def raw(self, key: str, required: bool = True) -> object:
        if key not in self.data:
            if required:
                raise self.error(key, "is missing")
            return _MISSING
        return self.data[key]

    def text(self, key: str, required: bool = True, pattern: re.Pattern[str] | None = None) -> str:
        value = self.raw(key, required)
        if value is _MISSING:
            return ""
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string, got {value!r}")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.error(key, f"must match {pattern.pattern}, got {value!r}")
        return value

    def number(self, key: str, required: bool = True) -> float | None:
        value = self.raw(key, required)
        if value is _MISSING:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise self.error(key, f"must be finite, got {value!r}")
        return float(value)

    def fraction(self, key: str, required: bool = True) -> float | None:
        value = self.number(key, required)
        if value is not None and not 0.0 <= value <= 1.0:
            raise self.error(key, f"must be in [0, 1], got {value}")
        return value

    def integer(self, key: str, required: bool = True, minimum: int = 0) -> int | None:
        value = self.raw(key, required)
        if value is _MISSING:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(key, f"must be an integer >= {minimum}, got {value!r}")
        return value

    def flag(self, key: str) -> bool:
        value = self.raw(key)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {value!r}")
        return value

    def texts(self, key: str, required: bool = True) -> tuple[str, ...]:
        value = self.raw(key, required)
        if value is _MISSING:
            return ()
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and v.strip() for v in value)
        ):
            raise self.error(key, f"must be a non-empty list of strings, got {value!r}")
        return tuple(value)

    def interval(self, key: str) -> tuple[float, float] | None:
        value = self.raw(key, required=False)
        if value is _MISSING:
            return None
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            or not 0.0 <= value[0] <= value[1] <= 1.0
        ):
            raise self.error(key, f"must be [low, high] within [0, 1], got {value!r}")
        return (float(value[0]), float(value[1]))

    def choice(self, key: str, enum: type[_E]) -> _E:
        value = self.raw(key)
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            return enum(value)
        except ValueError:
            allowed = ", ".join(repr(e.value) for e in enum)
            raise self.error(key, f"must be one of {allowed}, got {value!r}") from None

    def table(self, key: str, allowed: set[str], required: bool = True) -> _Table | None:
        value = self.raw(key, required)
        if value is _MISSING:
            return None
        return _Table(self.card, f"{self.key(key)}.", value, allowed)

    def tables(self, key: str, allowed: set[str], required: bool = True) -> list[_Table]:
        value = self.raw(key, required)
        if value is _MISSING:
            return []
        if not isinstance(value, list) or (required and not value):
            raise self.error(key, f"must be a non-empty list of tables, got {value!r}")
        return [
            _Table(self.card, f"{self.key(key)}[{i}].", item, allowed)
            for i, item in enumerate(value)
        ]


def _preprocessing(top: _Table) -> Preprocessing:
    allowed = {"windows", "size", "resample", "pixel_spacing_mm", "pad_hu", "clip_hu", "layout"}
    allowed.add("dtype")
    pre = top.table("preprocessing", allowed)
    assert pre is not None
    windows = []
    for win in pre.tables("windows", {"center", "width"}):
        center, width = win.number("center"), win.number("width")
        assert center is not None and width is not None
        if width <= 0:
            raise win.error("width", f"must be > 0, got {width}")
        windows.append(Window(center, width))
    size = pre.raw("size")
    if (
        not isinstance(size, list)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise pre.error("size", f"must be [rows, columns] (positive integers), got {size!r}")
    resample = pre.choice("resample", Resample)
    spacing = pre.number("pixel_spacing_mm", required=resample is Resample.SPACING)
    if resample is Resample.NONE and spacing is not None:
        raise pre.error("pixel_spacing_mm", "must be absent when resample is 'none'")
    if spacing is not None and spacing <= 0:
        raise pre.error("pixel_spacing_mm", f"must be > 0, got {spacing}")
    pad = pre.number("pad_hu")
    assert pad is not None
    clip = pre.raw("clip_hu", required=False)
    clip_hu: tuple[float, float] | None = None
    if clip is not _MISSING:
        if (
            not isinstance(clip, list)
            or len(clip) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in clip)
            or not clip[0] < clip[1]
        ):
            raise pre.error("clip_hu", f"must be [low, high] with low < high, got {clip!r}")
        clip_hu = (float(clip[0]), float(clip[1]))
    dtype = pre.text("dtype")
    if dtype not in _DTYPES:
        raise pre.error("dtype", f"must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    return Preprocessing(
        windows=tuple(windows),
        size=(size[0], size[1]),
        resample=resample,
        pixel_spacing_mm=spacing,
        pad_hu=pad,
        clip_hu=clip_hu,
        layout=pre.choice("layout", Layout),
        dtype=dtype,
    )


def _thresholds(top: _Table) -> Thresholds:
    table = top.table("thresholds", {lane.value for lane in Lane})
    assert table is not None
    values: dict[Lane, float] = {}
    for lane in Lane:
        value = table.fraction(lane.value, required=False)
        if value is not None:
            values[lane] = value
    if not values:
        raise ModelCardError(top.card, "thresholds", "must give at least one lane's threshold")
    try:
        return Thresholds(values)
    except ValueError as exc:
        raise ModelCardError(top.card, "thresholds", str(exc)) from None


def _evaluation(top: _Table) -> Evaluation:
    allowed = {"summary", "held_out", "positives", "negatives", "roc_auc", "brier"}
    allowed |= {"operating_points", "reliability"}
    ev = top.table("evaluation", allowed)
    assert ev is not None
    points = []
    point_keys = {"lane", "threshold", "sensitivity", "specificity"}
    point_keys |= {"sensitivity_ci95", "specificity_ci95"}
    for p in ev.tables("operating_points", point_keys, required=False):
        threshold, sens, spec = (
            p.fraction("threshold"),
            p.fraction("sensitivity"),
            p.fraction("specificity"),
        )
        assert threshold is not None and sens is not None and spec is not None
        points.append(
            OperatingPoint(
                lane=p.choice("lane", Lane),
                threshold=threshold,
                sensitivity=sens,
                specificity=spec,
                sensitivity_ci95=p.interval("sensitivity_ci95"),
                specificity_ci95=p.interval("specificity_ci95"),
            )
        )
    bins = []
    bin_keys = {"low", "high", "count", "mean_predicted", "observed"}
    for b in ev.tables("reliability", bin_keys, required=False):
        low, high, count = b.fraction("low"), b.fraction("high"), b.integer("count")
        assert low is not None and high is not None and count is not None
        if high <= low:
            raise b.error("high", f"must be above low ({low}), got {high}")
        bins.append(
            ReliabilityBin(
                low,
                high,
                count,
                b.fraction("mean_predicted", required=False),
                b.fraction("observed", required=False),
            )
        )
    return Evaluation(
        summary=ev.text("summary"),
        held_out=ev.texts("held_out", required=False),
        positives=ev.integer("positives", required=False),
        negatives=ev.integer("negatives", required=False),
        roc_auc=ev.fraction("roc_auc", required=False),
        brier=ev.fraction("brier", required=False),
        operating_points=tuple(points),
        reliability=tuple(bins),
    )


def _data(top: _Table) -> tuple[DataSource, ...]:
    keys = {"source", "license", "role", "description"}
    return tuple(
        DataSource(
            source=d.text("source"),
            license=d.text("license"),
            role=d.choice("role", DataRole),
            description=d.text("description", required=False),
        )
        for d in top.tables("data", keys, required=False)
    )


_TOP_KEYS = {"card_format", "model", "applies_to", "preprocessing", "outputs", "thresholds"}
_TOP_KEYS |= {"series", "evaluation", "data"}
_MODEL_KEYS = {"name", "version", "file", "blake3", "license", "demonstration", "intended_use"}


def parse_card(content: Mapping[str, object], path: Path) -> ModelCard:
    """Validate a card's parsed *content*; *path* names it in errors and anchors ``model.file``."""
    top = _Table(path, "", content, _TOP_KEYS)
    fmt = top.integer("card_format")
    if fmt != CARD_FORMAT:
        raise top.error("card_format", f"must be {CARD_FORMAT} (the format this version reads)")
    model = top.table("model", _MODEL_KEYS)
    assert model is not None
    applies = top.table("applies_to", {"modality", "body_part"})
    assert applies is not None
    outputs = top.table("outputs", {"labels", "score_label"})
    assert outputs is not None
    labels = outputs.texts("labels")
    if len(set(labels)) != len(labels):
        raise outputs.error("labels", f"must not repeat a label, got {list(labels)!r}")
    score_label = outputs.text("score_label")
    if score_label not in labels:
        raise outputs.error("score_label", f"must be one of labels {list(labels)!r}")
    series = top.table("series", {"min_slices"}, required=False)
    min_slices = series.integer("min_slices", minimum=1) if series else None
    file_name = model.text("file")
    if Path(file_name).is_absolute():
        raise model.error("file", "must be relative to the card")
    return ModelCard(
        path=path,
        name=model.text("name", pattern=_NAME),
        version=model.text("version"),
        model_file=(path.parent / file_name).resolve(),
        blake3=model.text("blake3", pattern=_BLAKE3),
        license=model.text("license"),
        demonstration=model.flag("demonstration"),
        intended_use=model.text("intended_use"),
        modalities=tuple(m.upper() for m in applies.texts("modality")),
        body_parts=tuple(b.upper() for b in applies.texts("body_part")),
        preprocessing=_preprocessing(top),
        labels=labels,
        score_label=score_label,
        thresholds=_thresholds(top),
        min_slices=min_slices or 1,
        evaluation=_evaluation(top),
        data=_data(top),
    )


def read_card(path: str | Path) -> ModelCard:
    """Read and validate the card at *path* (``.toml`` or ``.json``)."""
    card = Path(path).resolve()
    try:
        raw = card.read_bytes()
    except OSError as exc:
        raise ModelCardError(card, "", f"cannot be read ({exc.strerror})") from None
    try:
        if card.suffix == ".toml":
            content: object = tomllib.loads(raw.decode("utf-8"))
        elif card.suffix == ".json":
            content = json.loads(raw)
        else:
            raise ModelCardError(card, "", "must be a .toml or .json file")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelCardError(card, "", f"is not valid {card.suffix[1:].upper()}: {exc}") from None
    if not isinstance(content, Mapping):
        raise ModelCardError(card, "", "must be a table (JSON object) at the top")
    return parse_card(content, card)
