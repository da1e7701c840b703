"""The receivers' audit buffer with a fake database behind the pool's interface."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dicom_nodes.scp import audit_buffer
from dicom_nodes.scp.audit_buffer import BufferedAuditWriter, buffer_state
from tests.unit.audit._factory import received


class FakePool:
    def __init__(self) -> None:
        self.up = True
        self.rows: list[Any] = []

    @contextlib.contextmanager
    def connection(self, timeout: float = 0) -> Iterator[FakePool]:
        if not self.up:
            raise OSError("database down")
        yield self


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> FakePool:
    p = FakePool()
    audit = "dicom_nodes.scp.audit_buffer.audit"
    monkeypatch.setattr(f"{audit}.enqueue", lambda conn, e: conn.rows.append(e))
    monkeypatch.setattr(f"{audit}.enqueue_many", lambda conn, es: conn.rows.extend(es))
    monkeypatch.setattr(audit_buffer, "RETRY_SECONDS", 0.01)
    return p


@pytest.fixture
def writer(pool: FakePool, tmp_path: Path) -> Iterator[Callable[..., BufferedAuditWriter]]:
    """Makes writers on *pool* and *tmp_path*; closes the ones a test left open (an open writer
    keeps retrying and logging from its thread while later tests run)."""
    made: list[BufferedAuditWriter] = []

    def make(**kwargs: Any) -> BufferedAuditWriter:
        made.append(BufferedAuditWriter(pool, "n", tmp_path, timeout=0, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for w in made:
        w.close()


def test_buffered_in_order_then_recorded_before_newer_events(
    pool: FakePool, tmp_path: Path, writer: Callable[..., BufferedAuditWriter]
) -> None:
    w = writer()
    events = [received(i) for i in range(5)]
    assert w.write(events[0])
    pool.up = False
    assert not any(w.write(e) for e in events[1:4])
    assert buffer_state(tmp_path)[0] > 0
    pool.up = True
    time.sleep(0.05)
    assert w.write(events[4])
    assert [e.to_bytes() for e in pool.rows] == [e.to_bytes() for e in events]
    assert buffer_state(tmp_path) == (0, False)


def test_a_dead_process_buffer_is_recorded_and_a_torn_record_ignored(
    pool: FakePool, tmp_path: Path, writer: Callable[..., BufferedAuditWriter]
) -> None:
    pool.up = False
    dead = writer()
    dead.write(received(1))
    dead.write(received(2))
    with dead.path.open("ab") as fh:
        fh.write(b"\x00\x00\x10\x00partial")  # a crash in the middle of a record
    dead.close()  # the process is gone: its lock with it
    pool.up = True
    alive = writer()
    assert alive.flush()
    assert [e.to_bytes() for e in pool.rows] == [received(i).to_bytes() for i in (1, 2)]
    assert not dead.path.exists()


def test_a_full_buffer_drops_with_an_error_and_raises_the_alarm(
    pool: FakePool,
    tmp_path: Path,
    writer: Callable[..., BufferedAuditWriter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool.up = False
    size = len(received(0).to_bytes()) + 4
    w = writer(max_bytes=2 * size + 10)
    for i in range(3):
        w.write(received(i))
    assert "audit buffer full" in caplog.text
    monkeypatched = audit_buffer.MAX_BUFFER_BYTES
    assert buffer_state(tmp_path)[0] == 2 * size and monkeypatched > 0
