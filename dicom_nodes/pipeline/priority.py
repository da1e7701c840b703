"""Lowering a process's CPU priority, so that work after the acknowledgement never slows the
receiver (the door).

Niceness alone (``setpriority``, POSIX) lowers a process's share of the CPU, but on Linux a
receiver thread that wakes up (the next PDU, the database answering) may still wait for the
niced process's time slice to end before it runs: a receive path made of many short wake-ups
loses throughput to it even at niceness 19. The idle scheduling class (``SCHED_IDLE``,
sched(7)) runs a process only when no other wants the CPU, and a waking normal task preempts it
at once. A process may always move itself down to it, without privileges.
"""

from __future__ import annotations

import logging
import os

__all__ = ["lower_priority"]

LOGGER = logging.getLogger(__name__)


def lower_priority(nice: int, idle: bool) -> bool:
    """Add *nice* to this process's niceness and, with *idle*, move it to ``SCHED_IDLE``
    where the platform has it. Returns whether the idle class was taken."""
    if nice:
        os.nice(nice)
    if not idle:
        return False
    policy = getattr(os, "SCHED_IDLE", None)
    if policy is None:
        LOGGER.info("no SCHED_IDLE on this platform: niceness %d only", nice)
        return False
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError as exc:
        LOGGER.warning("cannot enter SCHED_IDLE (%s): niceness %d only", exc, nice)
        return False
    return True
