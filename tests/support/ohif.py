"""What OHIF v3's SR extension needs of a TID 1500 report to load it (docs/viewers.md).

``@ohif/extension-cornerstone-dicom-sr`` (as bundled in ``@ohif/app`` 3.12.10 to 3.14.0-beta.6)
reads the Measurement Groups of the Imaging Measurements container, merges them by Tracking
Unique Identifier, and for each merged measurement takes the coordinates of a SCOORD/SCOORD3D
content item of the group or, failing that, of a NUM's INFERRED FROM child. A measurement left
without coordinates makes it throw when it tries to place it on an image, and then the report
does not load. It reads Tracking Identifier and Tracking Unique Identifier unguarded, and does
not draw an oblique ELLIPSE. :func:`ohif_problems` lists each of these problems, so a test can
check a report without a browser; ``tests/integration/viewers`` checks OHIF itself.
"""

from __future__ import annotations

from collections import defaultdict

from pydicom.dataset import Dataset

__all__ = ["ohif_problems"]

_REPORT = "126000"
_MEASUREMENTS = "126010"
_GROUP = "125007"
_TRACKING_ID = "112039"
_TRACKING_UID = "112040"
_GRAPHICS = {"SCOORD", "SCOORD3D"}


def _code(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence") or []
    return str(names[0].CodeValue) if names else ""


def _coordinates(items: list[Dataset]) -> list[Dataset]:
    found = [i for i in items if i.ValueType in _GRAPHICS]
    for num in (i for i in items if i.ValueType == "NUM"):
        found += [c for c in num.get("ContentSequence", []) if c.ValueType in _GRAPHICS]
    return found


def _oblique_ellipse(item: Dataset) -> bool:
    if item.get("GraphicType") != "ELLIPSE":
        return False
    x0, y0, x1, y1 = (float(v) for v in item.GraphicData[:4])
    return x0 != x1 and y0 != y1  # the major axis is neither vertical nor horizontal


def ohif_problems(sr: Dataset) -> list[str]:
    """Why OHIF would fail on or mis-draw the report *sr* (empty: it loads and draws)."""
    if _code(sr) != _REPORT:
        return []  # not an Imaging Measurement Report: OHIF lists it, never parses the groups
    problems: list[str] = []
    merged: dict[str, list[Dataset]] = defaultdict(list)
    containers = [i for i in sr.ContentSequence if _code(i) == _MEASUREMENTS]
    for container in containers:
        for n, group in enumerate(i for i in container.ContentSequence if _code(i) == _GROUP):
            items = list(group.get("ContentSequence", []))
            uids = [i for i in items if _code(i) == _TRACKING_UID]
            if not uids or not any(_code(i) == _TRACKING_ID for i in items):
                problems.append(f"group {n + 1} lacks a Tracking Identifier or Tracking UID")
                continue
            merged[str(uids[0].UID)] += items
    for uid, items in merged.items():
        graphics = _coordinates(items)
        if not graphics:
            problems.append(f"measurement {uid} cannot be placed on an image")
        problems += [f"measurement {uid} has an oblique ELLIPSE" for g in graphics
                     if _oblique_ellipse(g)]  # fmt: skip
    return problems
