"""Appending in the caller's transaction, append-only enforcement, concurrency (real PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import psycopg
import pytest

from audit import (
    ActiveParticipant,
    AuditQuery,
    AuditSource,
    Checkpointer,
    EventID,
    FileSink,
    Keyring,
    Signer,
    Study,
    append,
    append_many,
    audited_search,
    read_head,
    search,
    verify,
)
from audit.chain import GENESIS, link_hash
from audit.keys import generate_key
from tests.unit.audit._factory import received

pytestmark = pytest.mark.integration


def _seqs(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [int(r[0]) for r in conn.execute("SELECT seq FROM audit_event ORDER BY seq")]


def test_append_in_callers_transaction(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn) as conn:
        conn.execute("CREATE TABLE side (x int)")
        conn.commit()
        with conn.transaction():
            conn.execute("INSERT INTO side VALUES (1)")
            first = append(conn, received(0))
        assert first.seq == 1
        assert first.hash == link_hash(GENESIS, 1, received(0).to_bytes())
        with pytest.raises(RuntimeError), conn.transaction():
            conn.execute("INSERT INTO side VALUES (2)")
            assert append(conn, received(1)).seq == 2
            raise RuntimeError("caller fails after appending")
        second = append(conn, received(2))  # implicit transaction, then commit
        conn.commit()
        assert second.seq == 2  # the rolled-back event left no gap
        assert conn.execute("SELECT count(*) FROM side").fetchone() == (1,)
        head = read_head(conn)
        assert (head.seq, head.hash) == (2, second.hash)
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        results = append_many(conn, [received(i) for i in range(3, 6)])
        assert [r.seq for r in results] == [3, 4, 5]
    assert _seqs(fresh_dsn) == [1, 2, 3, 4, 5]
    with psycopg.connect(fresh_dsn) as conn:
        assert verify(conn, Keyring()).ok


def test_stored_bytes_are_the_canonical_bytes(fresh_dsn: str) -> None:
    event = received(7)
    with psycopg.connect(fresh_dsn) as conn:
        append(conn, event)
        conn.commit()
        row = conn.execute("SELECT body, event_id, step, keys FROM audit_event").fetchone()
    assert row is not None
    assert bytes(row[0]) == event.to_bytes()
    assert (row[1], row[2], row[3]) == ("110104", "received", event.index_keys())


@pytest.mark.parametrize("table", ["audit_event", "audit_checkpoint", "audit_head"])
def test_triggers_refuse_changes_even_for_the_owner(fresh_dsn: str, table: str) -> None:
    with psycopg.connect(fresh_dsn) as conn:
        append(conn, received())
        conn.execute(
            "INSERT INTO audit_checkpoint (chain_id, seq, hash, signed_at, key_id, signature)"
            " SELECT chain_id, seq, hash, now(), 'k', %s FROM audit_head",
            (bytes(64),),
        )
        conn.commit()
        statements = [f"DELETE FROM {table}", f"TRUNCATE {table}"]
        if table != "audit_head":
            statements.append(f"UPDATE {table} SET seq = seq")
        else:
            statements.append("UPDATE audit_head SET seq = 0")  # backwards
        for sql in statements:
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(sql.encode())
            conn.rollback()


def test_application_role_may_append_but_not_change(fresh_dsn: str, tmp_path: Path) -> None:
    signer = generate_key(tmp_path / "k.pem", tmp_path / "ring.json")
    with psycopg.connect(fresh_dsn) as conn:
        conn.execute("SET ROLE radiogate_app")
        assert append(conn, received()).seq == 1
        conn.commit()
        cpr = Checkpointer(signer, [FileSink(tmp_path / "cp.jsonl")], every=1, seconds=0)
        assert cpr.maybe_checkpoint(conn) is not None
        assert list(search(conn, AuditQuery(event_id=EventID.INSTANCES_TRANSFERRED)))
        for sql in (
            "UPDATE audit_event SET body = 'x'",
            "DELETE FROM audit_event",
            "TRUNCATE audit_event",
            "UPDATE audit_head SET seq = seq + 1",
            "DELETE FROM audit_checkpoint",
            "TRUNCATE audit_checkpoint",
            "INSERT INTO audit_event (seq, hash, body, event_time, event_id, step, keys)"
            " VALUES (2, '\\x00', '\\x00', now(), 'x', 'y', '{}')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.encode())
            conn.rollback()
            conn.execute("SET ROLE radiogate_app")


def test_migration_is_idempotent_about_the_role(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn) as conn:
        row = conn.execute(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'radiogate_app'"
        ).fetchone()
    assert row == (False,)  # NOLOGIN; a second database's migration found it and granted again


def test_concurrent_writers_gap_free(fresh_dsn: str) -> None:
    writers, per_writer = 8, 1000
    errors: list[BaseException] = []
    barrier = threading.Barrier(writers)

    def write(w: int) -> None:
        try:
            with psycopg.connect(fresh_dsn) as conn:
                barrier.wait()
                for i in range(per_writer):
                    with conn.transaction():
                        append(conn, received(i, ae=f"CT{w}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _seqs(fresh_dsn) == list(range(1, writers * per_writer + 1))
    with psycopg.connect(fresh_dsn) as conn:
        report = verify(conn, Keyring())
        assert report.ok, report.summary()
        assert report.checked == writers * per_writer
        for w in range(writers):
            assert len(list(search(conn, AuditQuery(ae_title=f"CT{w}")))) == per_writer


def test_query_is_itself_audited(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn) as conn:
        append_many(conn, [received(i) for i in range(3)])
        append(conn, received(0, study="1.2.3.4"))
        conn.commit()
        admin = ActiveParticipant("alice", requestor=True, network_address="127.0.0.1")
        position, hits = audited_search(
            conn, AuditQuery(study_uid="1.2.3.4"), admin, AuditSource("node1")
        )
        assert [h.seq for h in hits] == [4]
        assert position.seq == 5
        logged = list(search(conn, AuditQuery(event_id=EventID("110112"))))
        assert [h.seq for h in logged] == [5]
        q = logged[0].event
        assert q.participants[0].user_id == "alice" and q.participants[0].requestor
        assert q.objects[0].parameters == (("study", "1.2.3.4"),)  # type: ignore[union-attr]
        by_user = list(search(conn, AuditQuery(user="alice")))
        assert [h.seq for h in by_user] == [5]
        t0 = dt.datetime(2024, 5, 1, 12, 0, 1, tzinfo=dt.UTC)
        window = list(search(conn, AuditQuery(since=t0, until=t0 + dt.timedelta(seconds=1))))
        assert [h.seq for h in window] == [2]
        study = hits[0].event.objects[1]
        assert isinstance(study, Study)
        assert [h.seq for h in search(conn, AuditQuery(sop_uid=f"{study.study_uid}.1.1"))] == [4]


def test_checkpointer_every_n_events_or_t_seconds(fresh_dsn: str, tmp_path: Path) -> None:
    signer: Signer = generate_key(tmp_path / "k.pem", tmp_path / "ring.json")
    now = [dt.datetime(2030, 1, 1, tzinfo=dt.UTC)]
    cpr = Checkpointer(
        signer, [FileSink(tmp_path / "cp.jsonl")], every=10, seconds=60, clock=lambda: now[0]
    )
    with psycopg.connect(fresh_dsn) as conn:
        assert cpr.maybe_checkpoint(conn) is None  # no events
        append_many(conn, [received(i) for i in range(3)])
        conn.commit()
        assert cpr.maybe_checkpoint(conn) is not None  # first one: due at once
        append_many(conn, [received(i) for i in range(5)])
        conn.commit()
        assert cpr.maybe_checkpoint(conn) is None  # 5 < 10 events, 0 s elapsed
        now[0] += dt.timedelta(seconds=61)
        cp = cpr.maybe_checkpoint(conn)
        assert cp is not None and cp.seq == 8
        append_many(conn, [received(i) for i in range(10)])
        conn.commit()
        cp = cpr.maybe_checkpoint(conn)
        assert cp is not None and cp.seq == 18
        assert cpr.maybe_checkpoint(conn) is None  # nothing new
    assert len((tmp_path / "cp.jsonl").read_text().splitlines()) == 3
