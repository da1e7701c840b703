"""docs/audit.md lists every step Radiogate emits, and only those; reserved steps are named as
such and emitted nowhere."""

from __future__ import annotations

import re
from pathlib import Path

from audit import Step

ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs" / "audit.md").read_text()


def _emitted() -> set[Step]:
    """Steps the code names (``Step.X``) outside their own declaration."""
    names: set[str] = set()
    for package in ("dicom_nodes", "audit", "pacs_plugin", "analysis"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "codes.py":
                continue
            names |= set(re.findall(r"\bStep\.([A-Z_]+)\b", path.read_text()))
    return {Step[name] for name in names}


def _documented() -> set[Step]:
    return {Step(v) for v in re.findall(r"^\| `([a-z-]+)` \|", DOC, re.MULTILINE)}


def _reserved() -> set[Step]:
    line = DOC.split("Reserved for stages not built yet", 1)[1].split("\n\n", 1)[0]
    return {Step(v) for v in re.findall(r"`([a-z-]+)`", line)}


def test_every_emitted_step_is_documented_and_every_documented_one_emitted() -> None:
    assert _emitted() == _documented()


def test_reserved_steps_are_the_rest_and_unused() -> None:
    assert _reserved() == set(Step) - _documented()
    assert not _reserved() & _emitted()
