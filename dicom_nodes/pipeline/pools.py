"""Worker pools per kind of job, and the bounds of the analysis pool (the door is protected).

A node's jobs are on two queues (:mod:`dicom_nodes.state.jobs`): the pipeline's (routing,
triage, forwarding, confirming, alerts, archive arrivals) and analysis. ``radiogate worker
--jobs`` chooses which a worker process takes:

============  ===================================  =========================================
``--jobs``    queues                               the process
============  ===================================  =========================================
``all``       both (the default)                   ``worker.nice`` / ``worker.idle``
``pipeline``  the pipeline's                       ``worker.nice`` / ``worker.idle``
``analysis``  analysis only                        :func:`enter_analysis_pool`: the idle
                                                   class at ``analysis.nice``, on
                                                   ``analysis.cpus`` CPUs, ``analysis.threads``
                                                   threads per numerical library
============  ===================================  =========================================

``radiogate run`` starts ``pipeline`` + ``analysis`` while ``analysis.separate_worker`` holds
(the default), one ``all`` worker otherwise. Each analysis job's own process
(:func:`dicom_nodes.pipeline.analyse._job`) applies the same bounds to itself whichever worker
runs it: the idle scheduling class alone does not keep an analysis off the receiver's back on a
two-CPU machine, because SimpleITK/ITK starts one thread per CPU for its filters (and OpenMP/BLAS
may too), so one analysis fills both CPUs, and a receiver thread waking on either still finds a
cache and a core sibling kept hot by it; the CPU bound leaves one CPU to the receiver whatever
the analysis does (measured: ``bench/bench_forward.py --door``, docs/operations.md).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from enum import StrEnum

from dicom_nodes.pipeline.priority import lower_priority

__all__ = [
    "THREAD_VARIABLES",
    "Jobs",
    "PoolBounds",
    "bound_threads",
    "enter_analysis_pool",
    "limit_cpus",
    "queues",
]

LOGGER = logging.getLogger(__name__)

THREAD_VARIABLES = (
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
"""Environment variables the numerical libraries read for their thread count at start."""


class Jobs(StrEnum):
    """Which jobs a worker process takes (``radiogate worker --jobs``)."""

    ALL = "all"
    PIPELINE = "pipeline"
    ANALYSIS = "analysis"


def queues(jobs: Jobs, node: str) -> list[str]:
    """The procrastinate queues a worker taking *jobs* reads."""
    from dicom_nodes.state.jobs import analysis_queue, queue_name

    return {
        Jobs.ALL: [queue_name(node), analysis_queue(node)],
        Jobs.PIPELINE: [queue_name(node)],
        Jobs.ANALYSIS: [analysis_queue(node)],
    }[jobs]


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # no procfs: the calling thread only
        return [0]


def limit_cpus(count: int) -> set[int] | None:
    """Restrict every thread of this process (and so what it starts later) to the *count*
    highest-numbered CPUs it may use now (``sched_setaffinity``); 0 or at least as many as it
    has: no change. Returns the CPU set taken, or None."""
    if count <= 0 or not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if count >= len(allowed):
        return None
    chosen = set(allowed[-count:])
    for tid in _threads():
        try:
            os.sched_setaffinity(tid, chosen)
        except OSError as exc:  # a thread that just ended; or a container's cpuset
            LOGGER.debug("affinity of thread %d not set: %s", tid, exc)
    return chosen


def bound_threads(threads: int) -> None:
    """At most *threads* threads per numerical library, for this process and what it starts:
    the environment variables of :data:`THREAD_VARIABLES` (read by libraries loaded later and by
    child processes), SimpleITK's global default (its filters' thread pool) and, through
    threadpoolctl, the BLAS/OpenMP pools of libraries already loaded. 0: no change."""
    if threads <= 0:
        return
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    try:
        import SimpleITK

        SimpleITK.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)  # type: ignore[no-untyped-call]
    except ImportError:  # pragma: no cover - SimpleITK is a dependency of analysis
        pass
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - optional
        return
    threadpool_limits(limits=threads)


@dataclass(frozen=True)
class PoolBounds:
    """What :func:`enter_analysis_pool` took."""

    idle: bool
    nice: int
    cpus: frozenset[int] | None
    threads: int


def enter_analysis_pool(nice: int, idle: bool, cpus: int, threads: int) -> PoolBounds:
    """Lower this process as an analysis process: niceness *nice*, the idle class with *idle*
    (:func:`~dicom_nodes.pipeline.priority.lower_priority`), at most *cpus* CPUs
    (:func:`limit_cpus`), *threads* threads per numerical library (:func:`bound_threads`).
    Every thread of the process is moved, those started earlier too (imported libraries may
    have started some: on Linux the class and niceness are per thread); threads and processes
    started later inherit all of it."""
    taken = lower_priority(nice, idle)
    current = os.getpriority(os.PRIO_PROCESS, 0)
    for tid in _threads():
        try:
            os.setpriority(os.PRIO_PROCESS, tid, current)
            if taken:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except OSError as exc:  # a thread that just ended
            LOGGER.debug("priority of thread %d not set: %s", tid, exc)
    chosen = limit_cpus(cpus)
    bound_threads(threads)
    return PoolBounds(taken, current, frozenset(chosen) if chosen else None, threads)
