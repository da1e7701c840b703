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


def test_the_one_database_function_that_writes_state_is_called_by_the_owner() -> None:
    """A SQL function writing a state table is a writer too: the only one is the alert's
    acknowledgement, run by the owner's statement (and the archive plugin's copy of it, checked
    equal in tests/unit/pacs/test_ack_events.py)."""
    functions: dict[str, list[str]] = {}
    for sql_file in sorted((ROOT / "dicom_nodes" / "db" / "migrations").glob("*.sql")):
        for name, body in re.findall(
            r"CREATE (?:OR REPLACE )?FUNCTION (\w+)\(.*?\$\$(.*?)\$\$", sql_file.read_text(), re.S
        ):
            if found := [m.group(0) for m in WRITE.finditer(body)]:
                functions[name] = found
    assert set(functions) == {"radiogate_acknowledge_alert"}
    callers = {
        str(path.relative_to(ROOT))
        for package in ("dicom_nodes", "config", "audit", "analysis", "pacs_plugin")
        for path in (ROOT / package).rglob("*.py")
        if "radiogate_acknowledge_alert(" in path.read_text()
    }
    assert callers == {"dicom_nodes/state/repository.py", "pacs_plugin/queries.py"}
