"""SimpleITK, typed as ``Any``: its bindings are generated and most calls are unannotated."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["sitk"]

sitk: Any = importlib.import_module("SimpleITK")
