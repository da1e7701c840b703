"""Deferred appends: enqueue in the caller's transaction, seal into the chain later."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from audit import (
    AuditQuery,
    Checkpointer,
    FileSink,
    Keyring,
    append,
    enqueue,
    enqueue_many,
    generate_key,
    load_checkpoints,
    pending_count,
    read_head,
    seal,
    search,
    verify,
)
from tests.unit.audit._factory import received

pytestmark = pytest.mark.integration


def test_enqueue_then_seal(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn) as conn:
        append(conn, received(0))
        conn.commit()
        with conn.transaction():
            enqueue(conn, received(1))
            enqueue_many(conn, [received(2), received(3)])
        with pytest.raises(RuntimeError), conn.transaction():
            enqueue(conn, received(99))
            raise RuntimeError("caller rolls back")
        assert pending_count(conn) == 3
        conn.commit()
        report = verify(conn, Keyring())
        assert report.ok and report.checked == 1
        assert any("not sealed" in w for w in report.warnings)
        assert seal(conn) == 3
        assert seal(conn) == 0
        assert read_head(conn).seq == 4
        hits = list(search(conn, AuditQuery()))
        assert [h.seq for h in hits] == [1, 2, 3, 4]
        assert [h.event for h in hits] == [received(i) for i in range(4)]
        conn.commit()
        assert verify(conn, Keyring()).ok


def test_pending_events_are_protected(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn) as conn:
        enqueue(conn, received())
        conn.commit()
        for sql in ("DELETE FROM audit_pending", "UPDATE audit_pending SET step = 'x'"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(sql.encode())
            conn.rollback()
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("TRUNCATE audit_pending")
        conn.rollback()
        conn.execute("SET ROLE radiogate_app")
        enqueue(conn, received(1))
        conn.commit()
        conn.execute("SET ROLE radiogate_app")
        for sql in ("DELETE FROM audit_pending", "TRUNCATE audit_pending"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.encode())
            conn.rollback()
            conn.execute("SET ROLE radiogate_app")
        assert seal(conn) == 2  # the application role may seal
        conn.commit()
        assert verify(conn, Keyring()).ok


def test_concurrent_enqueue_with_sealer(fresh_dsn: str) -> None:
    writers, per_writer = 8, 500
    stop = threading.Event()

    def sealer() -> None:
        with psycopg.connect(fresh_dsn) as conn:
            while not stop.is_set():
                if not seal(conn, limit=300):
                    stop.wait(0.01)

    def write(w: int) -> None:
        with psycopg.connect(fresh_dsn) as conn:
            for i in range(per_writer):
                with conn.transaction():
                    enqueue(conn, received(i, ae=f"CT{w}"))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    seal_thread = threading.Thread(target=sealer)
    seal_thread.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with psycopg.connect(fresh_dsn) as conn:
        deadline = time.monotonic() + 60
        while pending_count(conn) and time.monotonic() < deadline:
            time.sleep(0.05)
        conn.commit()
        stop.set()
        seal_thread.join()
        seqs = [int(r[0]) for r in conn.execute("SELECT seq FROM audit_event ORDER BY seq")]
        assert seqs == list(range(1, writers * per_writer + 1))
        conn.commit()
        report = verify(conn, Keyring())
        assert report.ok and report.checked == writers * per_writer
        for w in range(writers):  # each writer's events keep their order
            mine = [h.event for h in search(conn, AuditQuery(ae_title=f"CT{w}"))]
            assert mine == [received(i, ae=f"CT{w}") for i in range(per_writer)]


def test_checkpointer_loop_seals_and_signs(fresh_dsn: str, tmp_path: Path) -> None:
    signer = generate_key(tmp_path / "k.pem", tmp_path / "ring.json")
    cpr = Checkpointer(signer, [FileSink(tmp_path / "cp.jsonl")], every=5, seconds=0)
    with psycopg.connect(fresh_dsn) as conn:
        enqueue_many(conn, [received(i) for i in range(12)])
        conn.commit()
    stop = threading.Event()
    loop = threading.Thread(
        target=cpr.run, args=(lambda: psycopg.connect(fresh_dsn), stop), kwargs={"poll": 0.05}
    )
    loop.start()
    try:
        with psycopg.connect(fresh_dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (
                pending_count(conn) == 0 and any(c.seq == 12 for c in load_checkpoints(conn))
            ):
                time.sleep(0.05)
            assert pending_count(conn) == 0
            assert [c.seq for c in load_checkpoints(conn)] == [12]
    finally:
        stop.set()
        loop.join()
    assert len((tmp_path / "cp.jsonl").read_text().splitlines()) == 1
