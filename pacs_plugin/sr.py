"""Model outputs and their attributions, read from Radiogate's TID 1500 SR as Orthanc gives it
(``/instances/{id}/simplified-tags``; pure).

In the report (``analysis.results.measurements_sr``) each model output is a NUM of a
Measurement Group (125007, DCM) whose Tracking Identifier (112039, DCM) names the segment; each
of its top attributions is a child NUM (FEATURE-ATTRIB, 99RADIOGATE) with a TEXT
(FEATURE-NAME, 99RADIOGATE) naming the feature (PS3.3 C.17.3 content items).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["model_outputs"]

_GROUP = ("125007", "DCM")
_TRACKING_ID = ("112039", "DCM")
_ATTRIBUTION = ("FEATURE-ATTRIB", "99RADIOGATE")
_FEATURE_NAME = ("FEATURE-NAME", "99RADIOGATE")


def _concept(item: Mapping[str, Any]) -> tuple[str, str, str]:
    seq = item.get("ConceptNameCodeSequence") or [{}]
    code = seq[0] if isinstance(seq, list) and seq else {}
    return (
        str(code.get("CodeValue", "")),
        str(code.get("CodingSchemeDesignator", "")),
        str(code.get("CodeMeaning", "")),
    )


def _number(item: Mapping[str, Any]) -> float | None:
    seq = item.get("MeasuredValueSequence") or []
    try:
        return float(seq[0]["NumericValue"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


def _children(item: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    seq = item.get("ContentSequence") or []
    return [c for c in seq if isinstance(c, Mapping)] if isinstance(seq, list) else []


def _attributions(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = []
    for child in _children(item):
        if child.get("ValueType") != "NUM" or _concept(child)[:2] != _ATTRIBUTION:
            continue
        names = [
            str(c.get("TextValue", ""))
            for c in _children(child)
            if c.get("ValueType") == "TEXT" and _concept(c)[:2] == _FEATURE_NAME
        ]
        found.append({"feature": names[0] if names else None, "contribution": _number(child)})
    return found


def model_outputs(tags: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every model output of the report with its attributions, in document order."""
    out: list[dict[str, Any]] = []

    def walk(items: Sequence[Mapping[str, Any]], segment: str | None) -> None:
        for item in items:
            value, scheme, meaning = _concept(item)
            children = _children(item)
            if item.get("ValueType") == "CONTAINER" and (value, scheme) == _GROUP:
                ids = [
                    str(c.get("TextValue", ""))
                    for c in children
                    if c.get("ValueType") == "TEXT" and _concept(c)[:2] == _TRACKING_ID
                ]
                segment = ids[0] if ids else segment
            if item.get("ValueType") == "NUM" and (value, scheme) != _ATTRIBUTION:
                attributions = _attributions(item)
                if attributions:
                    out.append(
                        {
                            "segment": segment,
                            "output": meaning,
                            "code": {"value": value, "scheme": scheme},
                            "value": _number(item),
                            "attributions": attributions,
                        }
                    )
            walk(children, segment)

    walk(_children(tags), None)
    return out
