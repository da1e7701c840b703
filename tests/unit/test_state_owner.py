"""State has one owner: no module but ``dicom_nodes/state/repository.py`` writes the tables
whose rows carry state (``ingest_instance``, ``forward_item``, ``study``, ``alert``,
``alert_delivery``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OWNER = ROOT / "dicom_nodes" / "state" / "repository.py"
STATE_TABLES = (
    "ingest_instance",
    "forward_item",
    "study",
    "series",
    "series_triage",
    "alert",
    "alert_delivery",
)
WRITE = re.compile(
    r"\b(?:UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+(" + "|".join(STATE_TABLES) + r")\b",
    re.IGNORECASE,
)


def writes_in(path: Path) -> list[str]:
    """SQL in *path*'s string literals that writes a state table."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [m.group(0) for m in WRITE.finditer(node.value)]
    return found


def test_only_the_repository_writes_state_tables() -> None:
    offenders = {}
    for package in ("dicom_nodes", "config", "audit", "analysis", "pacs_plugin"):
        for path in (ROOT / package).rglob("*.py"):
            if path != OWNER and (found := writes_in(path)):
                offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}


def test_the_check_finds_a_write(tmp_path: Path) -> None:
    assert writes_in(OWNER), "the owner itself writes: the pattern matches real SQL"
    probe = tmp_path / "probe.py"
    probe.write_text(
        'SQL = """UPDATE forward_item SET state = %s"""\nX = "insert into study (x)"\n'
    )
    assert writes_in(probe) == ["UPDATE forward_item", "insert into study"]
