"""A triage model: an ONNX graph run by onnxruntime on the CPU, described by its model card.

Loading checks, before any slice is scored, that the card matches the file: the file exists, its
BLAKE3 is the card's ``model.blake3`` (the bytes hashed are the bytes given to onnxruntime, so the
file cannot change in between), the graph has one input whose element type and shape are those the
card's preprocessing produces, and one output with one column per ``outputs.labels``. Each
mismatch raises :class:`~analysis.triage.card.ModelCardError` naming the key.

A process holds one onnxruntime session per model (keyed by the file's BLAKE3), shared by every
card that names the same file; its intra-op thread count is set when it is first loaded.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import numpy.typing as npt
import onnxruntime as ort  # type: ignore[import-untyped]

from analysis.triage.card import ModelCard, ModelCardError, ModelIdentity, read_card
from analysis.triage.lanes import Lane
from analysis.triage.preprocess import preprocess
from analysis.triage.series import SeriesScore, aggregate

__all__ = ["TriageModel", "load_model"]

_ONNX_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)"}
_sessions: dict[str, tuple[Any, int]] = {}
_sessions_lock = threading.Lock()


def _session(digest: str, data: bytes, threads: int) -> Any:
    """The process's one session for the model whose file hashes to *digest*."""
    with _sessions_lock:
        if digest in _sessions:
            session, loaded_threads = _sessions[digest]
            if loaded_threads != threads:
                raise ValueError(
                    f"model {digest[:12]} is already loaded in this process with "
                    f"{loaded_threads} intra-op thread(s), not {threads}"
                )
            return session
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads sleep instead of spinning: the worker shares its cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        _sessions[digest] = (session, threads)
        return session


def _read_model(card: ModelCard) -> bytes:
    try:
        data = card.model_file.read_bytes()
    except FileNotFoundError:
        raise ModelCardError(
            card.path, "model.file", f"names {card.model_file}, which does not exist"
        ) from None
    except OSError as exc:
        raise ModelCardError(
            card.path, "model.file", f"names {card.model_file}, which cannot be read ({exc})"
        ) from None
    digest = blake3.blake3(data).hexdigest()
    if digest != card.blake3:
        raise ModelCardError(
            card.path,
            "model.blake3",
            f"is {card.blake3} but {card.model_file.name} hashes to {digest}",
        )
    return data


def _dims(shape: Sequence[object]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else f"'{d}'" for d in shape) + "]"


def _check_graph(card: ModelCard, session: Any) -> tuple[str, str, int | None]:
    """The names of the graph's input and output and its fixed batch size (``None``: any),
    after checking them against *card*."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelCardError(
            card.path,
            "model.file",
            f"names a graph with {len(inputs)} inputs and {len(outputs)} outputs; "
            "a triage model has one of each",
        )
    graph_in, graph_out = inputs[0], outputs[0]
    pre = card.preprocessing
    if graph_in.type != _ONNX_TYPES[pre.dtype]:
        raise ModelCardError(
            card.path,
            "preprocessing.dtype",
            f"is {pre.dtype!r} but the ONNX graph's input {graph_in.name!r} is {graph_in.type}",
        )
    shape = list(graph_in.shape)
    expected = pre.sample_shape
    channel_axis = 1 if pre.layout.value == "NCHW" else 3
    spatial_axes = (2, 3) if channel_axis == 1 else (1, 2)
    problem = ""
    if len(shape) != 4:
        problem = "preprocessing.layout"
    else:
        fixed = [(axis, d) for axis, d in enumerate(shape) if axis and isinstance(d, int)]
        wanted = dict(zip((1, 2, 3), expected, strict=True))
        for axis, dim in fixed:
            if dim != wanted[axis]:
                problem = "preprocessing.windows" if axis == channel_axis else "preprocessing.size"
                if axis in spatial_axes and dim == wanted[channel_axis]:
                    problem = "preprocessing.layout"
                break
    if problem:
        raise ModelCardError(
            card.path,
            problem,
            f"gives input shape {_dims(['N', *expected])} ({pre.layout.value}, "
            f"{pre.channels} window(s), size {list(pre.size)}), but the ONNX graph's input "
            f"{graph_in.name!r} has shape {_dims(shape)}",
        )
    out_shape = list(graph_out.shape)
    if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != len(card.labels)):
        raise ModelCardError(
            card.path,
            "outputs.labels",
            f"names {len(card.labels)} label(s) but the ONNX graph's output "
            f"{graph_out.name!r} has shape {_dims(out_shape)}",
        )
    batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    return graph_in.name, graph_out.name, batch


class TriageModel:
    """A loaded, checked triage model (see the module docstring).

    ``preprocess`` makes one input from one slice, ``score`` gives the probability of the card's
    ``outputs.score_label`` for a batch, ``lane_for`` maps a score to a lane, and ``score_series``
    does all three for a series and aggregates it (:func:`analysis.triage.series.aggregate`).
    Results carry :attr:`identity`.
    """

    def __init__(self, card: ModelCard, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.card = card
        self._session = _session(card.blake3, _read_model(card), threads)
        self._input, self._output, self._fixed_batch = _check_graph(card, self._session)

    @property
    def identity(self) -> ModelIdentity:
        """Name, version, BLAKE3 of the file and the demonstration flag."""
        return self.card.identity

    def applies_to(self, modality: str, body_part: str | None) -> bool:
        """Whether the card covers a series of *modality* (0008,0060) and *body_part*
        (0018,0015); an absent body part matches, since many headers leave it empty."""
        if modality.upper() not in self.card.modalities:
            return False
        return not body_part or body_part.upper() in self.card.body_parts

    def preprocess(
        self, slice_hu: npt.NDArray[np.generic], pixel_spacing: Sequence[float] | None
    ) -> npt.NDArray[np.floating]:
        """One model input from one slice in HU (:mod:`analysis.triage.preprocess`)."""
        return preprocess(slice_hu, pixel_spacing, self.card.preprocessing)

    def probabilities(self, batch: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """``(N, labels)`` probabilities for a batch of preprocessed slices."""
        pre = self.card.preprocessing
        want = pre.sample_shape
        if batch.ndim != 4 or tuple(batch.shape[1:]) != want or batch.shape[0] < 1:
            raise ValueError(f"a batch must have shape (N, {', '.join(map(str, want))})")
        if batch.dtype != np.dtype(pre.dtype):
            raise ValueError(f"a batch must be {pre.dtype}, got {batch.dtype}")
        probs = self._run(batch)
        if probs.shape != (batch.shape[0], len(self.card.labels)):
            raise ValueError(f"model {self.card.name} returned shape {probs.shape}")
        if not np.all((probs >= 0.0) & (probs <= 1.0)):
            raise ValueError(f"model {self.card.name} returned values that are not probabilities")
        return probs

    def _run(self, batch: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """The graph's output for *batch*; a graph exported with a fixed batch size gets
        batches of that size (the last padded with zeros, its padding's rows dropped)."""
        size = self._fixed_batch
        if size is None:
            (out,) = self._session.run([self._output], {self._input: batch})
            return np.asarray(out, dtype=np.float32)
        parts = []
        for start in range(0, batch.shape[0], size):
            chunk = batch[start : start + size]
            rows = chunk.shape[0]
            if rows < size:
                padding = np.zeros((size - rows, *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, padding])
            (out,) = self._session.run([self._output], {self._input: chunk})
            parts.append(np.asarray(out, dtype=np.float32)[:rows])
        return np.concatenate(parts)

    def score(self, batch: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """``(N,)`` probabilities of ``outputs.score_label`` for a batch of preprocessed slices."""
        return self.probabilities(batch)[:, self.card.score_index].copy()

    def lane_for(self, score: float) -> Lane | None:
        """The lane of one score under the card's thresholds (``None``: below all of them)."""
        return self.card.thresholds.lane_for(score)

    def score_series(
        self,
        slices_hu: Sequence[npt.NDArray[np.generic]],
        pixel_spacings: Sequence[Sequence[float] | None],
        batch_size: int = 16,
    ) -> SeriesScore:
        """Score every slice of a series, in the order given, and aggregate them. Each slice has
        its own (row, column) pixel spacing in *pixel_spacings*."""
        if not slices_hu:
            raise ValueError("a series needs at least one slice")
        if len(pixel_spacings) != len(slices_hu):
            raise ValueError(f"{len(pixel_spacings)} pixel spacings for {len(slices_hu)} slices")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        scores: list[float] = []
        for start in range(0, len(slices_hu), batch_size):
            stop = start + batch_size
            pairs = zip(slices_hu[start:stop], pixel_spacings[start:stop], strict=True)
            batch = np.stack([self.preprocess(s, spacing) for s, spacing in pairs])
            scores.extend(float(v) for v in self.score(batch))
        return aggregate(scores, self.card.thresholds, self.card.min_slices, self.identity)


def load_model(card_path: str | Path, threads: int = 1) -> TriageModel:
    """Read the card at *card_path*, check it against its ONNX file and load the model with
    *threads* intra-op threads (CPU). The session is shared with any earlier load of the same
    file in this process."""
    return TriageModel(read_card(card_path), threads=threads)
