"""dicom_nodes.pipeline.door: an analysis process (and its children) is stopped while a real
TCP connection to the receiver's port is open, and continues once the door is quiet or the
job has been held long enough. Real sockets and processes; the guard's clock is a counter, so
no assertion depends on time."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dicom_nodes.pipeline.door import (
    _TABLES,
    DoorGuard,
    _netlink_established,
    _proc_established,
    open_connections,
    process_tree,
)

CHILD = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "time.sleep(120)\n"
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def door() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


@contextlib.contextmanager
def association(server: socket.socket) -> Iterator[Callable[[], None]]:
    """An open TCP connection to *server*; yields what closes it (both ends)."""
    client = socket.create_connection(server.getsockname()[:2])
    accepted, _ = server.accept()

    def close() -> None:
        client.close()
        accepted.close()

    try:
        yield close
    finally:
        close()


@pytest.fixture
def job() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD])
    try:
        while len(process_tree(proc.pid)) < 2:  # its child has started
            time.sleep(0.05)
        yield proc.pid
    finally:
        for pid in reversed(process_tree(proc.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _state(pid: int) -> str:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2]


def _wait_state(pids: list[int], stopped: bool) -> list[str]:
    """The kernel applies SIGSTOP/SIGCONT asynchronously: wait until it has (bounded)."""
    for _ in range(200):
        states = [_state(p) for p in pids]
        if all((s == "T") == stopped for s in states):
            return states
        time.sleep(0.02)
    return [_state(p) for p in pids]


def test_open_connections_counts_established_ones_to_the_port(door: socket.socket) -> None:
    port = door.getsockname()[1]
    assert open_connections([port]) == 0
    with association(door):
        assert open_connections([port]) == 1
        assert open_connections([port + 1 if port < 65535 else port - 1]) == 0
    assert open_connections([port]) == 0


@pytest.mark.parametrize("family", ["127.0.0.1", "::1"])
def test_netlink_and_the_kernel_tables_count_the_same(family: str) -> None:
    """Both ways of asking (sock_diag netlink, /proc/net/tcp*) see the same connections, over
    IPv4 and IPv6; the netlink one is what runs here."""
    try:
        server = socket.create_server((family, 0), family=_family(family))
    except OSError as exc:
        pytest.skip(f"no {family} loopback on this machine: {exc}")
    port = server.getsockname()[1]
    with server:
        counts = [(_netlink_established({port}), _proc_established({port}, _TABLES))]
        with association(server), association(server):
            counts.append((_netlink_established({port}), _proc_established({port}, _TABLES)))
        counts.append((_netlink_established({port}), _proc_established({port}, _TABLES)))
    assert counts == [(0, 0), (2, 2), (0, 0)]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def test_the_job_and_its_children_are_held_while_an_association_is_open(
    door: socket.socket, job: int
) -> None:
    clock = Clock()
    guard = DoorGuard((door.getsockname()[1],), resume_after=2.0, max_pause=600.0, clock=clock)
    tree = process_tree(job)
    assert len(tree) == 2
    guard.tick(job)
    assert not guard.holding and "T" not in _wait_state(tree, stopped=False)
    with association(door):
        guard.tick(job)
        assert guard.holding and _wait_state(tree, stopped=True) == ["T", "T"]
        clock.now = 100.0
        guard.tick(job)  # still open: still held
        assert guard.holding
    clock.now = 101.0
    guard.tick(job)  # quiet since now
    assert guard.holding
    clock.now = 103.0
    guard.tick(job)  # quiet for resume_after
    assert not guard.holding and "T" not in _wait_state(tree, stopped=False)
    assert guard.held == 103.0 and guard.holds == 1


def test_a_job_held_max_pause_runs_to_its_end(door: socket.socket, job: int) -> None:
    clock = Clock()
    guard = DoorGuard((door.getsockname()[1],), resume_after=2.0, max_pause=30.0, clock=clock)
    with association(door):
        guard.tick(job)
        assert guard.holding
        clock.now = 30.0
        guard.tick(job)
        assert not guard.holding and "T" not in _wait_state([job], stopped=False)
        clock.now = 40.0
        guard.tick(job)  # the door is still busy, but this job has waited enough
        assert not guard.holding and guard.holds == 1


def test_release_continues_a_held_job(door: socket.socket, job: int) -> None:
    clock = Clock()
    guard = DoorGuard((door.getsockname()[1],), clock=clock)
    with association(door):
        guard.tick(job)
        assert _wait_state([job], stopped=True) == ["T"]
        guard.release(job)  # before the worker kills or waits for it
        assert "T" not in _wait_state([job], stopped=False)


def test_a_job_waits_to_start_until_the_door_is_quiet(door: socket.socket) -> None:
    clock = Clock()
    guard = DoorGuard((door.getsockname()[1],), resume_after=2.0, max_pause=600.0, clock=clock)
    guard.wait_quiet(sleep=lambda s: None)  # quiet: at once
    assert guard.holds == 0 and guard.held == 0.0
    steps: list[float] = []
    with association(door) as release:

        def sleep(seconds: float) -> None:
            steps.append(seconds)
            clock.now += 1.0
            if len(steps) == 5:  # the modality releases its association
                release()

        guard.wait_quiet(sleep=sleep)
    assert guard.holds == 1 and guard.held == 7.0  # 5 s busy, then quiet for 2 s


def test_a_job_waits_to_start_at_most_max_pause(door: socket.socket) -> None:
    clock = Clock()
    guard = DoorGuard((door.getsockname()[1],), resume_after=2.0, max_pause=10.0, clock=clock)
    with association(door):

        def sleep(seconds: float) -> None:
            clock.now += 1.0

        guard.wait_quiet(sleep=sleep)  # the door stays busy
        assert guard.held == 10.0 and guard.holds == 1
