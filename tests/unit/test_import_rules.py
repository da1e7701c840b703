"""The layout's import rules (docs/architecture.md), each checked so that it can fail:

* ``config`` and ``audit`` import nothing else of ours (``audit`` may import ``config``);
* ``analysis`` does no I/O; ``pacs_plugin`` never loads onnxruntime or pyradiomics;
* inside ``dicom_nodes``: the spool is a leaf (it imports only ``dicom_nodes.errors``); the
  receiver (``scp``, ``db``) never imports the pipeline or de-identification; the pipeline's
  state (``state``) imports neither the receiver nor the pipeline; forwarding never imports the
  receiver or the pipeline (once the accelerator is shared, checked below).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"config", "dicom_nodes", "analysis", "audit", "pacs_plugin"}
IO_MODULES = {"socket", "psycopg", "psycopg_pool", "pynetdicom", "requests", "urllib", "http",
              "subprocess", "orthanc_api_client", "httpx"}  # fmt: skip


def _parse(path: Path) -> ast.Module:
    """*path*'s syntax tree. CPython 3.11 keeps the AST constructor's recursion counter in
    interpreter-wide state, so a parse in another thread at the same moment (3.11's traceback
    printing parses source lines to place its carets) can fail this one with a spurious
    SystemError (python/cpython#106905); parsing again is then correct."""
    for _ in range(3):
        try:
            return ast.parse(path.read_text(), filename=str(path))
        except SystemError:
            continue
    return ast.parse(path.read_text(), filename=str(path))


def imports(folder: Path, depth: int = 1, root: Path = ROOT) -> set[str]:
    """Every module imported anywhere under *folder* (absolute imports; relative ones resolved
    against the file's package), cut to its first *depth* dotted parts."""
    found: set[str] = set()
    for path in folder.rglob("*.py"):
        tree = _parse(path)
        package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            found.update(".".join(n.split(".")[:depth]) for n in names if n)
    return found


@pytest.mark.parametrize(("package", "allowed"), [("config", set()), ("audit", {"config"})])
def test_config_and_audit_import_nothing_else_of_ours(package: str, allowed: set[str]) -> None:
    assert (imports(ROOT / package) & OURS) - {package} - allowed == set()


def test_analysis_does_no_io() -> None:
    assert imports(ROOT / "analysis") & (IO_MODULES | {"dicom_nodes", "audit"}) == set()


def test_pacs_plugin_stays_light() -> None:
    found = imports(ROOT / "pacs_plugin")
    assert not found & {"onnxruntime", "radiomics", "sklearn", "dicom_nodes", "analysis"}


NODES = ROOT / "dicom_nodes"
RULES = [
    ("spool", {"dicom_nodes.scp", "dicom_nodes.db", "dicom_nodes.pipeline", "dicom_nodes.forward",
               "dicom_nodes.deid", "dicom_nodes.state", "dicom_nodes.services",
               "dicom_nodes.audit_events"}),
    # The receiver hosts the storage commitment report handler (dicom_nodes.forward.commitment)
    # and records reports for the worker: it may use forwarding's commitment model.
    ("scp", {"dicom_nodes.pipeline", "dicom_nodes.deid"}),
    ("db", {"dicom_nodes.pipeline", "dicom_nodes.scp"}),
    ("state", {"dicom_nodes.pipeline", "dicom_nodes.scp", "dicom_nodes.db",
               "dicom_nodes.forward", "dicom_nodes.deid", "dicom_nodes.audit_events"}),
    ("forward", {"dicom_nodes.scp", "dicom_nodes.pipeline"}),
]  # fmt: skip


@pytest.mark.parametrize(("package", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_dicom_nodes_layering(package: str, forbidden: set[str]) -> None:
    found = imports(NODES / package, depth=2)
    assert found & forbidden == set()


def test_the_spool_is_a_leaf() -> None:
    ours = {m for m in imports(NODES / "spool", depth=2) if m.startswith("dicom_nodes.")}
    assert ours <= {"dicom_nodes.spool", "dicom_nodes.errors"}


def test_the_checker_sees_every_import_form(tmp_path: Path) -> None:
    """A rule is only as good as the import scan: absolute, from-, relative and function-level
    imports are all seen (so each rule above can fail)."""
    pkg = tmp_path / "dicom_nodes" / "spool"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import dicom_nodes.pipeline.route\n")
    (pkg / "b.py").write_text("from ..scp import handlers\n")
    (pkg / "c.py").write_text("def f():\n    from dicom_nodes.forward.model import Instance\n")
    found = imports(pkg, depth=2, root=tmp_path)
    assert {"dicom_nodes.pipeline", "dicom_nodes.scp", "dicom_nodes.forward"} <= found


def test_only_the_accelerator_loads_its_class_swaps() -> None:
    """Outside ``dicom_nodes/accelerator`` nobody imports its private modules (they load only
    once ``scp.accelerate`` / ``forward.accelerate`` enable them)."""
    for path in NODES.rglob("*.py"):
        if "accelerator" in path.parts:
            continue
        found = {m for m in _file_imports(path) if m.startswith("dicom_nodes.accelerator._")}
        assert not found, path


def _file_imports(path: Path) -> set[str]:
    tree = _parse(path)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out
