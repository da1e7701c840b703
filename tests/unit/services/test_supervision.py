"""Restart back-off, the data directory lock and the port check, without real services."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dicom_nodes.services.lock import AlreadyRunning, StackLock, held_by
from dicom_nodes.services.ports import PortInUse, PortUse, check_ports, env_name
from dicom_nodes.services.supervisor import Supervised
from tests.support import free_port


@dataclass
class FakeService:
    name: str = "worker"
    alive: bool = False
    starts: int = 0
    fail_starts: int = 0
    events: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return 1000 + self.starts if self.alive else None

    def start(self) -> None:
        if self.fail_starts:
            self.fail_starts -= 1
            raise RuntimeError("cannot start")
        self.starts += 1
        self.alive = True

    def running(self) -> bool:
        return self.alive

    def exit_status(self) -> int | None:
        return None if self.alive else -9

    def stop(self) -> None:
        self.alive = False


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr("dicom_nodes.services.supervisor.time.monotonic", c)
    return c


def test_restart_backs_off_doubling_and_resets_when_healthy(clock: Clock) -> None:
    service = FakeService()
    events: list[tuple[str, str, int]] = []
    child = Supervised(service, on_event=lambda n, w, r: events.append((n, w, r)))
    child.start()
    delays = []
    for _ in range(8):
        service.alive = False  # dies at once, again and again
        child.check()  # notices, schedules
        died_at = clock.now
        while service.starts == child.restarts + 1 and not service.alive:
            clock.now += 0.25
            child.check()
        delays.append(clock.now - died_at)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert child.restarts == 8
    assert events[0] == ("worker", "started", 0)
    assert events[1:3] == [("worker", "died", 0), ("worker", "started", 1)]
    # Healthy for a minute: the next death waits 1 s again.
    clock.now += 61
    child.check()
    service.alive = False
    child.check()
    clock.now += 1.0
    child.check()
    assert service.alive and child.restarts == 9


def test_a_start_that_fails_is_retried_never_given_up(clock: Clock) -> None:
    service = FakeService()
    child = Supervised(service)
    child.start()
    service.alive = False
    service.fail_starts = 3
    for _ in range(400):
        clock.now += 0.5
        child.check()
        if service.alive:
            break
    assert service.alive and child.restarts == 4


def test_second_lock_names_the_holder(tmp_path: Path) -> None:
    first = StackLock(tmp_path)
    first.acquire({"pid": 4242, "ports": {"scp.port": 11112}})
    assert held_by(tmp_path) == {"pid": 4242, "ports": {"scp.port": 11112}}
    with pytest.raises(AlreadyRunning, match=r"already running \(pid 4242, ports scp.port 11112\)"):
        StackLock(tmp_path).acquire({"pid": 1})
    first.release()
    assert held_by(tmp_path) is None
    again = StackLock(tmp_path)
    again.acquire({"pid": 7})
    again.release()


def test_ports_busy_or_doubled_are_named_with_their_setting() -> None:
    assert env_name("orthanc.http_port") == "RADIOGATE_ORTHANC__HTTP_PORT"
    free = free_port()
    check_ports([PortUse("scp.port", free), PortUse("scp.metrics_port", 0)])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PortInUse) as err:
            check_ports([PortUse("scp.port", free), PortUse("worker.metrics_port", port)])
    assert str(err.value) == (
        f"port {port} is in use: set worker.metrics_port or RADIOGATE_WORKER__METRICS_PORT"
    )
    with pytest.raises(PortInUse, match="configured twice"):
        check_ports([PortUse("scp.port", free), PortUse("database.port", free)])
