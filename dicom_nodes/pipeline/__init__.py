"""The pipeline after reception, one module per stage.

``route`` → ``deidentify`` → ``forward`` → ``confirm`` → ``release``, with ``housekeeping``
(quiet studies, re-deferring jobs, retention) and ``admin`` (decisions of a person as events).
Support: ``claims`` (locking reads), ``routes`` (matching), ``context``, ``worker`` /
``runner`` (the procrastinate worker process), ``metrics``, ``status``, ``cli``. State is
written only through :mod:`dicom_nodes.state`.
"""

__all__ = ["admin", "claims", "cli", "confirm", "context", "deidentify", "forward",
           "housekeeping", "metrics", "release", "route", "routes", "runner", "status",
           "worker"]  # fmt: skip
