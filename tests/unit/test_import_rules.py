"""The layout's import rules (docs/architecture.md):
config and audit import nothing else of ours (audit may import config); analysis does no I/O;
pacs_plugin never loads onnxruntime or pyradiomics."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"config", "dicom_nodes", "analysis", "audit", "pacs_plugin"}
IO_MODULES = {"socket", "psycopg", "psycopg_pool", "pynetdicom", "requests", "urllib", "http",
              "subprocess", "orthanc_api_client", "httpx"}  # fmt: skip


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(("package", "allowed"), [("config", set()), ("audit", {"config"})])
def test_config_and_audit_import_nothing_else_of_ours(package: str, allowed: set[str]) -> None:
    assert (_imports(package) & OURS) - {package} - allowed == set()


def test_analysis_does_no_io() -> None:
    assert _imports("analysis") & (IO_MODULES | {"dicom_nodes", "audit"}) == set()


def test_pacs_plugin_stays_light() -> None:
    imports = _imports("pacs_plugin")
    assert not imports & {"onnxruntime", "radiomics", "sklearn", "dicom_nodes", "analysis"}


def _module_imports(path: Path) -> set[str]:
    """Modules *path* imports at module level (not inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_forwarder_does_not_import_the_receiver() -> None:
    for path in (ROOT / "dicom_nodes" / "forward").rglob("*.py"):
        assert not {m for m in _module_imports(path) if m.startswith("dicom_nodes.scp")}, path


def test_only_the_accelerator_loads_its_class_swaps() -> None:
    """Outside ``dicom_nodes/accelerator`` nobody imports its private modules at module level:
    they load only once ``scp.accelerate`` / ``forward.accelerate`` enable them."""
    for path in (ROOT / "dicom_nodes").rglob("*.py"):
        if "accelerator" in path.parts:
            continue
        private = {m for m in _module_imports(path) if m.startswith("dicom_nodes.accelerator._")}
        assert not private, path
