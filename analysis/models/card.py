"""Model cards of the models that run on a feature vector: what the model is, what it takes,
what it gives, how well it did, and the file it is.

A card is a JSON file next to its ONNX model (``data/<name>.card.json``); ``docs/models.md``
lists its keys. This module parses and validates the card's content; the checks that need the
model file (its BLAKE3) are made when the model is loaded (:mod:`.runtime`). Every problem
raises :class:`ModelCardError` naming the card and the dotted key, and unknown keys are errors
too (a misspelt key would otherwise be ignored).

The inputs are named, in the order of the model's input tensor, with their UCUM unit and their
training mean and standard deviation: the mean is the baseline of the attributions
(:mod:`.attribution`), both are the scale of the imputation figures. Inputs marked ``required``
are never imputed: a vector without them is refused.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydicom.sr.coding import Code

__all__ = [
    "CARD_FORMAT",
    "DataSource",
    "Grade",
    "ImputerInfo",
    "InputFeature",
    "ModelCard",
    "ModelCardError",
    "OutputInfo",
    "ParameterInfo",
    "parse_card",
    "read_card",
]

CARD_FORMAT = 1
"""The card format this module reads (key ``card_format``)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_BLAKE3 = re.compile(r"[0-9a-f]{64}")
_ROLES = ("train", "test", "train+test")


class ModelCardError(ValueError):
    """A model card is invalid or does not match its files; ``key`` is the dotted key at fault
    ("" for the card as a whole)."""

    def __init__(self, card: Path | str, key: str, problem: str) -> None:
        self.card = str(card)
        self.key = key
        where = f"key '{key}' " if key else ""
        super().__init__(f"model card {card}: {where}{problem}")


@dataclass(frozen=True)
class InputFeature:
    """One input of the model, in tensor order."""

    name: str
    unit: str
    """UCUM code of the value as the model takes it."""
    description: str
    training_mean: float
    training_sd: float
    required: bool
    """True: never imputed (the vector is refused without it)."""


@dataclass(frozen=True)
class OutputInfo:
    """The model's output: one value, as a coded concept in a UCUM unit, clipped to ``range``;
    its grade (:class:`Grade`) is reported under ``grade_concept``."""

    tensor: str
    concept: Code
    unit: Code
    range: tuple[float, float]
    grade_concept: Code


@dataclass(frozen=True)
class Grade:
    """A band of the output: values below ``below`` (and at or above the previous band's
    ``below``) get this grade; the last band has no upper bound (``below`` is None)."""

    value: int
    label: str
    below: float | None


@dataclass(frozen=True)
class ParameterInfo:
    """The radiomics parameter set the inputs were computed with."""

    name: str
    blake3: str
    pyradiomics_version: str


@dataclass(frozen=True)
class ImputerInfo:
    """The imputer shipped with the model and the figures it was chosen on."""

    file: Path
    blake3: str
    method: str
    figures: Mapping[str, object]


@dataclass(frozen=True)
class DataSource:
    """One source of training or test data, with its licence."""

    source: str
    license: str
    role: str
    description: str


@dataclass(frozen=True)
class ModelCard:
    """A validated card (see the module docstring)."""

    path: Path
    name: str
    version: str
    model_file: Path
    """Absolute path of the ONNX file (``model.file`` is relative to the card)."""
    blake3: str
    license: str
    demonstration: bool
    intended_use: str
    method: str
    inputs: tuple[InputFeature, ...]
    output: OutputInfo
    grades: tuple[Grade, ...]
    attribution: str
    top_attributions: int
    parameters: ParameterInfo
    imputer: ImputerInfo
    evaluation: Mapping[str, object]
    training: Mapping[str, object]
    data: tuple[DataSource, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.inputs)

    def grade(self, value: float) -> Grade:
        """The band *value* falls in."""
        for grade in self.grades:
            if grade.below is None or value < grade.below:
                return grade
        raise AssertionError("the last grade has no upper bound")  # checked when parsed


class _Table:
    """One table of the card: typed getters that name the dotted key in every error."""

    def __init__(self, card: Path, prefix: str, data: object, allowed: set[str]) -> None:
        self.card, self.prefix = card, prefix
        if not isinstance(data, Mapping):
            raise ModelCardError(card, prefix.rstrip(".") or "", "must be a table (JSON object)")
        self.data: Mapping[str, object] = data
        for key in sorted(data):
            if key not in allowed:
                names = ", ".join(sorted(allowed))
                raise ModelCardError(card, prefix + key, f"is unknown (allowed here: {names})")

    def error(self, key: str, problem: str) -> ModelCardError:
        return ModelCardError(self.card, self.prefix + key, problem)

    def raw(self, key: str) -> object:
        if key not in self.data:
            raise self.error(key, "is missing")
        return self.data[key]

    def text(self, key: str, pattern: re.Pattern[str] | None = None) -> str:
        value = self.raw(key)
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string, got {value!r}")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.error(key, f"must match {pattern.pattern}, got {value!r}")
        return value

    def number(self, key: str) -> float:
        value = self.raw(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.error(key, f"must be a finite number, got {value!r}")
        return float(value)

    def flag(self, key: str) -> bool:
        value = self.raw(key)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {value!r}")
        return value

    def table(self, key: str, allowed: set[str]) -> _Table:
        return _Table(self.card, f"{self.prefix}{key}.", self.raw(key), allowed)

    def tables(self, key: str, allowed: set[str]) -> list[_Table]:
        value = self.raw(key)
        if not isinstance(value, list) or not value:
            raise self.error(key, "must be a non-empty list of tables")
        return [
            _Table(self.card, f"{self.prefix}{key}[{i}].", v, allowed) for i, v in enumerate(value)
        ]

    def mapping(self, key: str) -> Mapping[str, object]:
        value = self.raw(key)
        if not isinstance(value, Mapping):
            raise self.error(key, "must be a table (JSON object)")
        return value

    def code(self, key: str, scheme: str | None = None) -> Code:
        table = self.table(key, {"value", "scheme", "meaning"})
        designator = table.text("scheme")
        if scheme is not None and designator != scheme:
            raise table.error("scheme", f"must be {scheme}, got {designator!r}")
        return Code(table.text("value"), designator, table.text("meaning"))


def _inputs(top: _Table) -> tuple[InputFeature, ...]:
    keys = {"name", "unit", "description", "training_mean", "training_sd", "required"}
    out = []
    for item in top.tables("inputs", keys):
        sd = item.number("training_sd")
        if sd <= 0:
            raise item.error("training_sd", f"must be > 0, got {sd}")
        out.append(
            InputFeature(
                name=item.text("name"),
                unit=item.text("unit"),
                description=item.text("description"),
                training_mean=item.number("training_mean"),
                training_sd=sd,
                required=item.flag("required"),
            )
        )
    names = [f.name for f in out]
    if len(set(names)) != len(names):
        raise ModelCardError(top.card, "inputs", "name an input twice")
    return tuple(out)


def _output(top: _Table) -> OutputInfo:
    table = top.table("output", {"tensor", "concept", "unit", "range", "grade_concept"})
    bounds = table.raw("range")
    if (
        not isinstance(bounds, list)
        or len(bounds) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bounds)
        or not bounds[0] < bounds[1]
    ):
        raise table.error("range", f"must be [low, high] with low < high, got {bounds!r}")
    return OutputInfo(
        tensor=table.text("tensor"),
        concept=table.code("concept"),
        unit=table.code("unit", scheme="UCUM"),
        range=(float(bounds[0]), float(bounds[1])),
        grade_concept=table.code("grade_concept"),
    )


def _grades(top: _Table) -> tuple[Grade, ...]:
    out: list[Grade] = []
    items = top.tables("grades", {"value", "label", "below"})
    for i, item in enumerate(items):
        below: float | None = None
        if i < len(items) - 1:
            below = item.number("below")  # a band below the last has an upper bound
            if out and out[-1].below is not None and below <= out[-1].below:
                raise item.error("below", "bands must increase")
        elif item.raw("below") is not None:
            raise item.error("below", "the last grade has no upper bound (null)")
        value = item.raw("value")
        if isinstance(value, bool) or not isinstance(value, int) or value != i:
            raise item.error("value", f"must be {i} (grades are numbered in order from 0)")
        out.append(Grade(value, item.text("label"), below))
    return tuple(out)


def _data(top: _Table) -> tuple[DataSource, ...]:
    out = []
    for item in top.tables("data", {"source", "license", "role", "description"}):
        role = item.text("role")
        if role not in _ROLES:
            raise item.error("role", f"must be one of {', '.join(_ROLES)}, got {role!r}")
        out.append(
            DataSource(item.text("source"), item.text("license"), role, item.text("description"))
        )
    return tuple(out)


_TOP = {"card_format", "model", "inputs", "output", "grades", "attribution", "parameters"}
_TOP |= {"imputer", "evaluation", "training", "data"}
_MODEL = {"name", "version", "file", "blake3", "license", "demonstration", "intended_use", "method"}


def _relative(table: _Table, key: str, base: Path) -> Path:
    name = table.text(key)
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise table.error(key, "must be a file name relative to the card")
    return (base / name).resolve()


def parse_card(content: Mapping[str, object], path: Path) -> ModelCard:
    """Validate a card's parsed *content*; *path* names it in errors and anchors file names."""
    top = _Table(path, "", content, _TOP)
    if top.raw("card_format") != CARD_FORMAT:
        raise top.error("card_format", f"must be {CARD_FORMAT} (the format this version reads)")
    model = top.table("model", _MODEL)
    attribution = top.table("attribution", {"method", "top"})
    top_n = attribution.raw("top")
    inputs = _inputs(top)
    if isinstance(top_n, bool) or not isinstance(top_n, int) or not 1 <= top_n <= len(inputs):
        raise attribution.error("top", f"must be an integer in [1, {len(inputs)}], got {top_n!r}")
    params = top.table("parameters", {"name", "blake3", "pyradiomics_version"})
    imputer = top.table("imputer", {"file", "blake3", "method", "figures"})
    return ModelCard(
        path=path,
        name=model.text("name", _NAME),
        version=model.text("version"),
        model_file=_relative(model, "file", path.parent),
        blake3=model.text("blake3", _BLAKE3),
        license=model.text("license"),
        demonstration=model.flag("demonstration"),
        intended_use=model.text("intended_use"),
        method=model.text("method"),
        inputs=inputs,
        output=_output(top),
        grades=_grades(top),
        attribution=attribution.text("method"),
        top_attributions=top_n,
        parameters=ParameterInfo(
            params.text("name"), params.text("blake3", _BLAKE3), params.text("pyradiomics_version")
        ),
        imputer=ImputerInfo(
            file=_relative(imputer, "file", path.parent),
            blake3=imputer.text("blake3", _BLAKE3),
            method=imputer.text("method"),
            figures=imputer.mapping("figures"),
        ),
        evaluation=top.mapping("evaluation"),
        training=top.mapping("training"),
        data=_data(top),
    )


def read_card(path: str | Path) -> ModelCard:
    """Read and validate the JSON card at *path*."""
    card = Path(path).resolve()
    try:
        content = json.loads(card.read_bytes())
    except OSError as exc:
        raise ModelCardError(card, "", f"cannot be read ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelCardError(card, "", f"is not valid JSON: {exc}") from None
    if not isinstance(content, Mapping):
        raise ModelCardError(card, "", "must be a JSON object at the top")
    return parse_card(content, card)
