"""dicom_nodes.pipeline.pools: the analysis pool's bounds reach every thread and child of the
real process that takes them (read back from /proc and the scheduler), and which queues each
kind of worker reads. Run in spawned processes so the test runner keeps its own priority."""

from __future__ import annotations

import multiprocessing
import os
import threading
from typing import Any

import pytest

from dicom_nodes.pipeline.pools import THREAD_VARIABLES, Jobs, enter_analysis_pool, queues
from dicom_nodes.services.stack import worker_commands

needs_idle = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="no SCHED_IDLE here")


def _describe() -> dict[str, Any]:
    """Policy, niceness and CPUs of every thread of this process, from the kernel."""
    tasks = [int(t) for t in os.listdir("/proc/self/task")]
    return {
        "pid": os.getpid(),
        "threads": {
            tid: (
                os.sched_getscheduler(tid),
                os.getpriority(os.PRIO_PROCESS, tid),
                frozenset(os.sched_getaffinity(tid)),
            )
            for tid in tasks
        },
        "env": {name: os.environ.get(name) for name in THREAD_VARIABLES},
    }


def _grandchild(out: Any) -> None:
    out.put(_describe())


def _child(nice: int, cpus: int, threads: int, out: Any) -> None:
    enter_analysis_pool(nice, True, cpus, threads)
    import numpy as np
    import SimpleITK

    # Work in a thread started afterwards, with SimpleITK's filters (its own thread pool).
    def work() -> None:
        image = SimpleITK.GetImageFromArray(np.random.default_rng(1).random((24, 64, 64)))
        SimpleITK.SmoothingRecursiveGaussian(image, 2.0)  # type: ignore[no-untyped-call]
        release.wait(30)

    release = threading.Event()
    worker = threading.Thread(target=work)
    worker.start()
    context = multiprocessing.get_context("spawn")  # as pyradiomics' processes start
    inner = context.Queue()
    grandchild = context.Process(target=_grandchild, args=(inner,))
    grandchild.start()
    seen = _describe()
    release.set()
    worker.join()
    out.put(
        {
            "self": seen,
            "child": inner.get(timeout=60),
            "sitk_threads": SimpleITK.ProcessObject.GetGlobalDefaultNumberOfThreads(),  # type: ignore[no-untyped-call]
        }
    )
    grandchild.join(timeout=30)


def _run(nice: int, cpus: int, threads: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    process = context.Process(target=_child, args=(nice, cpus, threads, out))
    process.start()
    result = out.get(timeout=120)
    process.join(timeout=30)
    assert isinstance(result, dict)
    return result


@needs_idle
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_every_thread_and_child_is_idle_niced_and_on_the_last_cpu() -> None:
    last = frozenset({max(os.sched_getaffinity(0))})
    got = _run(7, 1, 1)
    for who in ("self", "child"):
        threads = got[who]["threads"]
        assert len(threads) >= (2 if who == "self" else 1)
        assert set(threads.values()) == {(os.SCHED_IDLE, 7, last)}, (who, threads)
        assert set(got[who]["env"].values()) == {"1"}
    assert got["sitk_threads"] == 1
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the test runner is untouched


@needs_idle
def test_no_cpu_or_thread_bound_leaves_them_to_the_libraries() -> None:
    allowed = frozenset(os.sched_getaffinity(0))
    got = _run(0, 0, 0)
    assert {v[2] for v in got["self"]["threads"].values()} == {allowed}
    assert {v[0] for v in got["self"]["threads"].values()} == {os.SCHED_IDLE}
    assert got["sitk_threads"] != 1 or os.cpu_count() == 1


@needs_idle
def test_a_cpu_bound_above_the_cpus_there_are_changes_nothing() -> None:
    allowed = frozenset(os.sched_getaffinity(0))
    got = _run(0, len(allowed), 1)
    assert {v[2] for v in got["self"]["threads"].values()} == {allowed}


def test_queues_per_kind_of_worker() -> None:
    assert queues(Jobs.ALL, "n1") == ["node:n1", "node:n1:analysis"]
    assert queues(Jobs.PIPELINE, "n1") == ["node:n1"]
    assert queues(Jobs.ANALYSIS, "n1") == ["node:n1:analysis"]


def test_make_run_starts_two_workers_by_default_and_one_with_the_pools_off() -> None:
    import config

    default = config.load(env={})
    assert worker_commands(default) == [
        ("worker", ["worker", "--jobs", "pipeline"]),
        ("analysis-worker", ["worker", "--jobs", "analysis"]),
    ]
    off = config.load(env={"RADIOGATE_ANALYSIS__SEPARATE_WORKER": "false"})
    assert worker_commands(off) == [("worker", ["worker"])]
