"""pyradiomics features per segment, under a versioned parameter set.

For each segment: crop the image and mask to the segment's bounding box plus a margin (and, when
the parameter set asks for it, interpolate that crop on the IBSI grid: :mod:`.preprocess`), then
run pyradiomics' extractor (:mod:`._extractor`) on the crop. pyradiomics would otherwise copy and
filter the whole image for every segment; on the crop the cost follows the segment's size.

Segments run in a process pool when ``processes > 1`` (or in an ``Executor`` the caller owns and
reuses); only the crops travel to the workers. :func:`extract_in_background` starts the same
extraction in other processes and returns at once, so that the caller can do what does not need
the features meanwhile (the chest CT pipeline builds its SEG).

Every result names the pyradiomics version and the parameter set's name and BLAKE3. A feature
that pyradiomics cannot compute for a segment (NaN, a failing class, a segment too small) is
listed in :attr:`SegmentFeatures.missing` with the reason; the other segments and features are
unaffected.

Values keep pyradiomics' names and conventions (``original_firstorder_Kurtosis`` is pyradiomics'
kurtosis); :func:`analysis.radiomics.ibsi.ibsi_values` converts to IBSI conventions and
:mod:`.codes` maps to DICOM concepts.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import multiprocessing
import os
import pickle
import signal
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import radiomics  # type: ignore[import-untyped]

from analysis.radiomics.params import BinOrigin, ParameterSet, parse_parameters
from analysis.radiomics.preprocess import Crop, CropPlan, apply_crop, plan_crop, to_sitk
from analysis.radiomics.volume import Geometry, Volume

__all__ = [
    "PYRADIOMICS_VERSION",
    "PendingFeatures",
    "Segment",
    "SegmentFeatures",
    "extract",
    "extract_crop",
    "extract_in_background",
]

PYRADIOMICS_VERSION: str = str(radiomics.__version__).lstrip("v")


@dataclass(frozen=True)
class Segment:
    """A named region: a boolean mask on the image's grid."""

    name: str
    mask: npt.NDArray[np.bool_]


@dataclass(frozen=True)
class SegmentFeatures:
    """Features of one segment: ``values`` by pyradiomics name, ``missing`` feature -> reason
    (``"*"`` when the whole segment failed). ``voxel_count`` and ``spacing_mm`` describe the
    mask the features were computed on (after interpolation)."""

    segment: str
    values: Mapping[str, float]
    missing: Mapping[str, str]
    voxel_count: int
    spacing_mm: tuple[float, float, float]
    bin_origin: float | None
    pyradiomics_version: str
    parameters_name: str
    parameters_blake3: str
    settings: Mapping[str, Any] = field(default_factory=dict, repr=False)


_EXTRACTORS: dict[str, Any] = {}


def _extractor(params: ParameterSet) -> Any:
    """One extractor per parameter set and process (building one validates the settings)."""
    from analysis.radiomics._extractor import Extractor

    key = params.blake3
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = Extractor(params.pyradiomics)
    return _EXTRACTORS[key]


def _bin_origin(params: ParameterSet, crop: Crop) -> float | None:
    if params.bin_origin is BinOrigin.PYRADIOMICS:
        return None
    reseg = params.settings.get("resegmentRange")
    if reseg:
        return float(reseg[0])
    return float(crop.image[crop.mask].min())


def extract_crop(
    name: str, crop: Crop, params: ParameterSet, *, bin_origin: float | str | None = "auto"
) -> SegmentFeatures:
    """Features of one prepared crop (the worker's job; also used for per-slice IBSI runs,
    which pass the 3-D ROI's *bin_origin*)."""
    origin = _bin_origin(params, crop) if bin_origin == "auto" else bin_origin
    result = SegmentFeatures(
        segment=name,
        values={},
        missing={},
        voxel_count=int(crop.mask.sum()),
        spacing_mm=crop.geometry.spacing,
        bin_origin=origin if isinstance(origin, float) else None,
        pyradiomics_version=PYRADIOMICS_VERSION,
        parameters_name=params.name,
        parameters_blake3=params.blake3,
        settings=params.settings,
    )
    extractor = _extractor(params)
    extractor.bin_origin = result.bin_origin
    try:
        # a feature pyradiomics cannot compute comes back as NaN (reported as missing below),
        # often with numpy's "mean of empty slice" warning on the way
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            raw = extractor.execute(
                to_sitk(crop.image, crop.geometry),
                to_sitk(crop.mask.astype(np.uint8), crop.geometry),
            )
    except Exception as error:
        return replace(result, missing={"*": f"{type(error).__name__}: {error}"})
    values: dict[str, float] = {}
    missing: dict[str, str] = dict(extractor.failures)
    for key, value in raw.items():
        if key.startswith("diagnostics_"):
            continue
        number = float(value)
        if math.isfinite(number):
            values[key] = number
        else:
            missing[key] = "not a finite value"
    return replace(result, values=values, missing=missing)


_Task = tuple[
    str, npt.NDArray[Any] | None, npt.NDArray[np.bool_] | None, CropPlan | None, bytes, str
]


def _run(task: _Task) -> SegmentFeatures:
    """Worker entry point: interpolate the cut-out region and extract. The parameter set
    travels as its bytes (re-parsed: same hash)."""
    name, image, mask, plan, text, params_name = task
    params = parse_parameters(text, params_name)
    if plan is None or image is None or mask is None:
        return _empty(name, params)
    return extract_crop(name, apply_crop(image, mask, plan, params.resampling), params)


def _empty(name: str, params: ParameterSet) -> SegmentFeatures:
    return SegmentFeatures(
        segment=name,
        values={},
        missing={"*": "empty mask"},
        voxel_count=0,
        spacing_mm=params.resampling.spacing_mm if params.resampling else (0.0, 0.0, 0.0),
        bin_origin=None,
        pyradiomics_version=PYRADIOMICS_VERSION,
        parameters_name=params.name,
        parameters_blake3=params.blake3,
        settings=params.settings,
    )


def _tasks(volume: Volume, segments: Sequence[Segment], params: ParameterSet) -> list[_Task]:
    """Each segment's crop (image and mask cut to its box plus the margin) and plan."""
    geometry: Geometry = volume.geometry
    tasks: list[_Task] = []
    for segment in segments:
        if segment.mask.shape != volume.array.shape:
            raise ValueError(f"segment {segment.name!r}: mask shape differs from the image")
        plan = plan_crop(
            volume.array.shape, segment.mask, geometry, params.crop_margin_voxels, params.resampling
        )
        if plan is None:
            tasks.append((segment.name, None, None, None, params.text, params.name))
        else:
            image, mask = volume.array[plan.region].copy(), segment.mask[plan.region].copy()
            tasks.append((segment.name, image, mask, plan, params.text, params.name))
    return tasks


def extract(
    volume: Volume,
    segments: Sequence[Segment],
    params: ParameterSet,
    *,
    processes: int = 1,
    executor: concurrent.futures.Executor | None = None,
) -> list[SegmentFeatures]:
    """Features of every segment of *volume*, in the order given.

    With ``processes > 1`` (and no *executor*) a pool of that many spawned processes runs the
    segments; *executor* lets a long-lived caller reuse its own pool.
    """
    tasks = _tasks(volume, segments, params)
    if executor is not None:
        return list(executor.map(_run, tasks))
    if processes <= 1 or len(tasks) <= 1:
        return [_run(task) for task in tasks]
    with _spawned_pool(processes, len(tasks)) as pool:
        return list(pool.map(_run, tasks))


def _spawned_pool(processes: int, tasks: int) -> concurrent.futures.ProcessPoolExecutor:
    context = multiprocessing.get_context("spawn")
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=min(processes, tasks), mp_context=context
    )


class _Forked:
    """A forked process running :func:`_forked`, its answer coming back through a pipe.

    ``os.fork`` and not ``multiprocessing``: the analysis job is itself a daemonic
    ``multiprocessing`` process, which ``multiprocessing`` does not let have children."""

    def __init__(self, tasks: list[_Task]) -> None:
        parent = os.getpid()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child (its coverage is not collected)
            code = 1
            try:
                os.close(read)
                _end_with_parent(parent)
                with os.fdopen(write, "wb") as reply:
                    _forked(tasks, reply)
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        self.pid, self._read = pid, read
        self.exit_code: int | None = None

    def receive(self) -> list[SegmentFeatures]:
        with os.fdopen(self._read, "rb") as answer:
            self._read = -1
            data = answer.read()
        self.wait()
        if not data:
            raise RuntimeError(
                f"the feature process ended without an answer (exit code {self.exit_code})"
            )
        kind, value = pickle.loads(data)  # noqa: S301 - our own child's answer
        if kind != "ok":
            raise value if isinstance(value, BaseException) else RuntimeError(str(value))
        return list(value)

    def wait(self) -> None:
        if self.exit_code is None:
            _, status = os.waitpid(self.pid, 0)
            self.exit_code = os.waitstatus_to_exitcode(status)

    def end(self) -> None:
        """Kill the process if it still runs, and reap it."""
        if self.exit_code is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.wait()
        if self._read >= 0:
            os.close(self._read)
            self._read = -1


def _forked(tasks: list[_Task], reply: Any) -> None:
    """The forked process of :func:`extract_in_background`: extract, send the features back."""
    try:
        data = pickle.dumps(("ok", [_run(task) for task in tasks]))
    except Exception as exc:
        try:
            data = pickle.dumps(("error", exc))
        except Exception:  # an exception that cannot be pickled
            data = pickle.dumps(("error", f"{type(exc).__name__}: {exc}"))
    reply.write(data)


class PendingFeatures:
    """Features being extracted in other processes (:func:`extract_in_background`): the
    caller's process is free meanwhile. :meth:`result` waits for them; leaving the ``with``
    block ends the processes that are still running (the caller failed or gave up)."""

    def __init__(
        self,
        *,
        done: list[SegmentFeatures] | None = None,
        futures: Sequence[concurrent.futures.Future[SegmentFeatures]] = (),
        pool: concurrent.futures.ProcessPoolExecutor | None = None,
        child: _Forked | None = None,
    ) -> None:
        self._done, self._futures, self._pool = done, list(futures), pool
        self._child = child

    def result(self) -> list[SegmentFeatures]:
        """Every segment's features, in the order given (waits for them)."""
        if self._done is None:
            try:
                if self._child is not None:
                    self._done = self._child.receive()
                else:
                    self._done = [f.result() for f in self._futures]
            finally:
                self.close()
        return self._done

    def close(self) -> None:
        """End what still runs and release the processes (idempotent)."""
        if self._child is not None:
            self._child.end()
            self._child = None
        if self._pool is not None:
            if self._done is None:
                for process in list(getattr(self._pool, "_processes", {}).values()):
                    process.kill()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> PendingFeatures:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def extract_in_background(
    volume: Volume,
    segments: Sequence[Segment],
    params: ParameterSet,
    *,
    processes: int = 1,
    executor: concurrent.futures.Executor | None = None,
) -> PendingFeatures:
    """:func:`extract` in other processes, returning at once: the same features, in the same
    order, from :meth:`PendingFeatures.result`.

    With ``processes <= 1`` one forked process extracts every segment in turn, as :func:`extract`
    would in the caller's: the fork inherits the crops (nothing is pickled on the way in, only
    the features on the way back) and the imported modules, and starts in a few milliseconds.
    With ``processes > 1`` (or an *executor*) the segments go to that pool. Where processes
    cannot be forked, the features are extracted here, before returning.
    """
    tasks = _tasks(volume, segments, params)
    if executor is not None:
        return PendingFeatures(futures=[executor.submit(_run, t) for t in tasks])
    if processes > 1 and len(tasks) > 1:
        pool = _spawned_pool(processes, len(tasks))
        return PendingFeatures(futures=[pool.submit(_run, t) for t in tasks], pool=pool)
    if not hasattr(os, "fork"):  # pragma: no cover - not a POSIX system
        return PendingFeatures(done=[_run(task) for task in tasks])
    return PendingFeatures(child=_Forked(tasks))


def _end_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies (``PR_SET_PDEATHSIG``): an analysis
    stopped at its time limit is killed, and its feature process must not run on alone."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
