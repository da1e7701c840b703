"""Each package states its public names in ``__init__`` (``__all__``), and they exist."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = sorted(
    ".".join(p.parent.relative_to(ROOT).parts)
    for top in ("config", "dicom_nodes", "analysis", "audit", "pacs_plugin")
    for p in (ROOT / top).rglob("__init__.py")
)


@pytest.mark.parametrize("package", PACKAGES)
def test_public_names_are_declared_and_exist(package: str) -> None:
    module = importlib.import_module(package)
    names = getattr(module, "__all__", None)
    assert isinstance(names, list | tuple), f"{package} has no __all__"
    for name in names:
        found = hasattr(module, name) or importlib.util.find_spec(f"{package}.{name}")
        assert found, f"{package}.__all__ names {name!r}, which does not exist"
