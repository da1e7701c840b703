"""dicom_nodes.pipeline.priority: a process lowers itself (niceness, idle class) and nothing
else; run in a child process so the test runner keeps its own priority."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import pytest

from dicom_nodes.pipeline.priority import lower_priority


def _child(nice: int, idle: bool, out: Any) -> None:
    before = os.nice(0)
    took = lower_priority(nice, idle)
    out.put((took, os.nice(0) - before, os.sched_getscheduler(0)))


def _run(nice: int, idle: bool) -> tuple[bool, int, int]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    process = context.Process(target=_child, args=(nice, idle, out))
    process.start()
    result = out.get(timeout=30)
    process.join(timeout=10)
    assert isinstance(result, tuple)
    return result


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="no SCHED_IDLE on this platform")
def test_idle_class_and_niceness() -> None:
    took, added, policy = _run(10, True)
    assert took and added == 10 and policy == os.SCHED_IDLE
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the parent is untouched


def test_niceness_only() -> None:
    took, added, policy = _run(5, False)
    assert not took and added == 5 and policy == os.SCHED_OTHER
