"""ONNX models run with onnxruntime: one session per model file per process.

A session is created the first time a model is asked for and kept for the life of the process
(creating one parses and optimises the graph: milliseconds for a small model, but not per
prediction). The file's bytes are hashed (BLAKE3) and checked against the card *before* the
session is built from those same bytes, so the model that runs is the one the card names.

Threads: ``threads`` sets onnxruntime's intra-op pool of that session (inter-op is 1, execution
sequential). A worker process that runs several jobs should keep it at 1 and scale by processes;
asking for a model already loaded with another thread count is an error, not a silent second
session. Sessions are shared by threads (onnxruntime's ``run`` is thread-safe); processes
started by *spawn* or *fork* build their own on first use (a session is never pickled).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import numpy.typing as npt
import onnxruntime  # type: ignore[import-untyped]

__all__ = ["ModelFileError", "Session", "clear_sessions", "session"]


class ModelFileError(ValueError):
    """The model file is missing or is not the file its card names (BLAKE3 differs)."""


@dataclass(frozen=True)
class Session:
    """An onnxruntime session of one verified model file."""

    path: Path
    blake3: str
    threads: int
    inference: Any
    input_name: str
    output_names: tuple[str, ...]

    def run(self, rows: npt.NDArray[Any]) -> dict[str, npt.NDArray[Any]]:
        """Outputs by name for *rows* (a float32 matrix, one row per vector)."""
        values = self.inference.run(None, {self.input_name: np.ascontiguousarray(rows)})
        return {name: np.asarray(v) for name, v in zip(self.output_names, values, strict=True)}


_LOCK = threading.Lock()
_SESSIONS: dict[Path, Session] = {}


def _build(path: Path, expected: str, threads: int) -> Session:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"model file {path} cannot be read ({exc.strerror})") from None
    digest = blake3.blake3(data).hexdigest()
    if digest != expected:
        raise ModelFileError(f"model file {path} has BLAKE3 {digest}, its card says {expected}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: onnxruntime warns on stderr otherwise
    inference = onnxruntime.InferenceSession(
        data, sess_options=options, providers=["CPUExecutionProvider"]
    )
    (first,) = inference.get_inputs()
    outputs = tuple(o.name for o in inference.get_outputs())
    return Session(path, digest, threads, inference, first.name, outputs)


def session(path: Path, blake3_hex: str, threads: int | None = None) -> Session:
    """The process's session of the model file at *path*, whose BLAKE3 must be *blake3_hex*.

    *threads* (default 1 for a new session) must match the loaded session's if given.
    """
    key = path.resolve()
    with _LOCK:
        found = _SESSIONS.get(key)
        if found is None:
            found = _build(key, blake3_hex, 1 if threads is None else threads)
            _SESSIONS[key] = found
    if found.blake3 != blake3_hex:
        raise ModelFileError(f"model file {key} was loaded with BLAKE3 {found.blake3}")
    if threads is not None and threads != found.threads:
        raise ValueError(f"{key.name} already runs with {found.threads} thread(s), not {threads}")
    return found


def clear_sessions(path: Path | None = None) -> None:
    """Forget the session of the model file at *path*, or every session (a process that
    replaces its model files; tests)."""
    with _LOCK:
        if path is None:
            _SESSIONS.clear()
        else:
            _SESSIONS.pop(path.resolve(), None)
