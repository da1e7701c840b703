"""Training and evaluation of the demonstration triage model (``README.md`` here).

``synthetic`` (the finding generator), ``metrics``, ``cardfile`` and ``ctdata`` need only numpy
and pydicom; ``train_triage`` needs the ``training`` extra (PyTorch, onnx) and is run as a script.
"""

from __future__ import annotations

__all__ = ["cardfile", "ctdata", "metrics", "synthetic"]
