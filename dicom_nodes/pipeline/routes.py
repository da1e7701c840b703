"""Route selection: which route (and lane) applies to a received instance.

Facts about an instance come from the receipt (AE titles) and from its header, read with
pydicom without pixel data. Patterns use DICOM wildcard matching (PS3.4 C.2.2.2.4: ``*`` any
sequence, ``?`` one character), case-sensitive.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.tag import BaseTag, Tag

from config.routes import LaneRule, MatchSettings, RouteSettings
from dicom_nodes.state.lanes import Lane

__all__ = [
    "Facts",
    "Step",
    "StepKind",
    "explain",
    "facts_from_file",
    "lane_for",
    "matches",
    "parse_step",
    "select_route",
    "tags_needed",
]


class StepKind(StrEnum):
    TRIAGE = "triage"
    DEIDENTIFY = "deidentify"
    FORWARD = "forward"
    ANALYSE = "analyse"


@dataclass(frozen=True)
class Step:
    kind: StepKind
    argument: str = ""


def parse_step(text: str) -> Step:
    """``forward:archive`` -> Step(FORWARD, "archive"); raises ValueError on unknown steps."""
    kind, _, arg = text.partition(":")
    step = Step(StepKind(kind.strip()), arg.strip())
    if step.kind in (StepKind.FORWARD, StepKind.DEIDENTIFY, StepKind.ANALYSE) and not step.argument:
        raise ValueError(f"step {text!r} needs an argument, e.g. {kind}:name")
    return step


@dataclass(frozen=True)
class Facts:
    """What routing may look at (header values as strings; multi-valued joined with ``\\``)."""

    calling_ae: str = ""
    called_ae: str = ""
    modality: str = ""
    sop_class_uid: str = ""
    tags: dict[str, str] = field(default_factory=dict)


@lru_cache(maxsize=512)
def _tag(name: str) -> BaseTag:
    hex_form = re.fullmatch(r"\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?", name.strip())
    if hex_form:
        return Tag(int(hex_form.group(1), 16), int(hex_form.group(2), 16))
    value = tag_for_keyword(name)
    if value is None:
        raise ValueError(f"unknown DICOM attribute {name!r} in a route condition")
    return Tag(value)


def tags_needed(routes: Sequence[RouteSettings], rules: Sequence[LaneRule]) -> list[str]:
    names = {n for r in routes for n in r.match.tags} | {n for r in rules for n in r.match.tags}
    return sorted(names)


def facts_from_file(path: Path, calling_ae: str, called_ae: str, tag_names: Sequence[str]) -> Facts:
    """Read the header of *path* (no pixel data) and collect the facts routes need."""
    ds = pydicom.dcmread(path, stop_before_pixels=True, defer_size=1024)
    values: dict[str, str] = {}
    for name in tag_names:
        elem = ds.get(_tag(name))
        if elem is None or elem.VR == "SQ":
            continue
        value = elem.value
        if isinstance(value, list | tuple | pydicom.multival.MultiValue):
            text = "\\".join(str(v) for v in value)
        else:
            text = "" if value is None else str(value)
        values[name] = text
    return Facts(
        calling_ae=calling_ae,
        called_ae=called_ae,
        modality=str(ds.get("Modality", "")),
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        tags=values,
    )


def _any(patterns: Sequence[str], value: str) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(value, p) for p in patterns)


def matches(match: MatchSettings, facts: Facts) -> bool:
    """All conditions of *match* hold for *facts* (an absent attribute matches nothing)."""
    if not (
        _any(match.calling_ae, facts.calling_ae)
        and _any(match.called_ae, facts.called_ae)
        and _any(match.modality, facts.modality)
        and _any(match.sop_class_uid, facts.sop_class_uid)
    ):
        return False
    for name, patterns in match.tags.items():
        if name not in facts.tags:
            return False
        value = facts.tags[name]
        candidates = value.split("\\") if "\\" in value else [value]
        if not any(_any(patterns, v.strip()) for v in candidates):
            return False
    return True


def select_route(routes: Sequence[RouteSettings], facts: Facts) -> RouteSettings | None:
    """The first route whose conditions hold, or None."""
    for route in routes:
        if matches(route.match, facts):
            return route
    return None


def lane_for(route: RouteSettings, rules: Sequence[LaneRule], facts: Facts) -> Lane:
    """The route's fixed lane, else the most urgent matching lane rule, else routine."""
    if route.lane:
        return Lane(route.lane)
    lanes = [Lane(rule.lane) for rule in rules if matches(rule.match, facts)]
    return Lane.most_urgent(*lanes)


def explain(match: MatchSettings, facts: Facts) -> str | None:
    """Why *match* does not hold for *facts* (the first failing condition), or None."""
    for name, patterns, value in (
        ("calling AE", match.calling_ae, facts.calling_ae),
        ("called AE", match.called_ae, facts.called_ae),
        ("modality", match.modality, facts.modality),
        ("SOP class", match.sop_class_uid, facts.sop_class_uid),
    ):
        if not _any(patterns, value):
            return f"{name} {value or '(empty)'!r} is not one of {patterns}"
    for tag, patterns in match.tags.items():
        if tag not in facts.tags:
            return f"{tag} is absent"
        if not matches(MatchSettings(tags={tag: patterns}), facts):
            return f"{tag} {facts.tags[tag]!r} is not one of {patterns}"
    return None
