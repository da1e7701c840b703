"""PostgresCommitmentSink against a real PostgreSQL: the sink contract, the rows the SCP
writes, LISTEN/NOTIFY wake-ups and the polling fallback, outages, clean-up."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from dicom_nodes.db.commitment import CHANNEL, PostgresCommitmentSink
from dicom_nodes.errors import DatabaseUnavailable
from dicom_nodes.forward.commitment import CommitmentReport
from tests.support import free_port
from tests.support.commitment import CT, check_sink_contract, report

pytestmark = pytest.mark.integration


@pytest.fixture
def pool(fresh_dsn: str) -> Iterator[ConnectionPool]:
    with ConnectionPool(fresh_dsn, min_size=1, max_size=2) as p:
        yield p


def _rows(dsn: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def _wait_in_thread(
    sink: PostgresCommitmentSink, tx: str, timeout: float
) -> tuple[threading.Thread, list[tuple[CommitmentReport | None, float]]]:
    got: list[tuple[CommitmentReport | None, float]] = []

    def run() -> None:
        got.append((sink.wait(tx, timeout), time.monotonic()))

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.5)  # the waiter is LISTENing by now
    return thread, got


def test_contract_worker_and_scp_sides(fresh_dsn: str, pool: ConnectionPool) -> None:
    """The worker's sink (DSN only) and the SCP's (pooled) are one store."""
    worker = PostgresCommitmentSink(fresh_dsn, poll_interval=0.2)
    scp = PostgresCommitmentSink(fresh_dsn, pool=pool)

    class Split:
        """Requests and waits on the worker's side, reports on the SCP's."""

        put = scp.put
        expect = worker.expect
        wait = worker.wait
        committed_earlier = worker.committed_earlier

    check_sink_contract(Split())


def test_report_rows_say_who_committed_what(fresh_dsn: str, pool: ConnectionPool) -> None:
    worker = PostgresCommitmentSink(fresh_dsn)
    worker.expect("2.25.11", "archive", "ORTHANC", "RADIOGATE", [(CT, "1.2.1"), (CT, "1.2.2")])
    PostgresCommitmentSink(fresh_dsn, pool=pool).put(
        report("2.25.11", ["1.2.1"], {"1.2.2": 0x0112})
    )
    rows = _rows(
        fresh_dsn,
        """SELECT transaction_uid, sop_instance_uid, sop_class_uid, committed, failure_reason,
                  event_type, destination, reporter_ae, reporter_address,
                  received_at > now() - interval '1 minute'
           FROM commitment_result ORDER BY sop_instance_uid""",
    )
    assert rows == [
        ("2.25.11", "1.2.1", CT, True, None, 2, "archive", "ORTHANC", "127.0.0.1", True),
        ("2.25.11", "1.2.2", CT, False, 0x0112, 2, "archive", "ORTHANC", "127.0.0.1", True),
    ]
    (request,) = _rows(
        fresh_dsn,
        "SELECT destination, peer_ae, calling_ae, instance_count, reported_at IS NOT NULL "
        "FROM commitment_request",
    )
    assert request == ("archive", "ORTHANC", "RADIOGATE", 2, True)


def test_notify_wakes_the_waiter_long_before_the_poll(fresh_dsn: str, pool: ConnectionPool) -> None:
    worker = PostgresCommitmentSink(fresh_dsn, poll_interval=60.0)
    worker.expect("2.25.12", "archive", "ORTHANC", "RADIOGATE", [(CT, "1.2.1")])
    thread, got = _wait_in_thread(worker, "2.25.12", timeout=30.0)
    PostgresCommitmentSink(fresh_dsn, pool=pool).put(report("2.25.12", ["1.2.1"]))
    put_done = time.monotonic()
    thread.join()
    found, woke = got[0]
    assert found is not None and found.committed == {"1.2.1"}
    assert woke - put_done < 2.0  # NOTIFY, not the 60 s poll


def test_polling_finds_rows_written_without_a_notification(fresh_dsn: str) -> None:
    worker = PostgresCommitmentSink(fresh_dsn, poll_interval=0.3)
    thread, got = _wait_in_thread(worker, "2.25.13", timeout=30.0)
    with psycopg.connect(fresh_dsn) as conn:  # as if the notification was lost
        conn.execute(
            "INSERT INTO commitment_result (transaction_uid, sop_instance_uid, committed, "
            "event_type, reporter_ae) VALUES ('2.25.13', '1.2.1', true, 1, 'ORTHANC')"
        )
    written = time.monotonic()
    thread.join()
    found, woke = got[0]
    assert found is not None and found.committed == {"1.2.1"}
    assert woke - written < 3.0


def test_waiter_survives_losing_its_connection(fresh_dsn: str, pool: ConnectionPool) -> None:
    worker = PostgresCommitmentSink(fresh_dsn, poll_interval=0.3)
    thread, got = _wait_in_thread(worker, "2.25.14", timeout=30.0)
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE %s AND pid <> pg_backend_pid()",
            ("%commitment_result%",),
        ).fetchall()
        killed += conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE %s AND pid <> pg_backend_pid()",
            (f"LISTEN {CHANNEL}%",),
        ).fetchall()
    assert any(row[0] for row in killed), "the waiter's connection was not found"
    time.sleep(0.5)
    PostgresCommitmentSink(fresh_dsn, pool=pool).put(report("2.25.14", ["1.2.1"]))
    thread.join()
    found, _ = got[0]
    assert found is not None and found.committed == {"1.2.1"}


def test_database_down_is_retryable_and_records_nothing() -> None:
    down = PostgresCommitmentSink(
        f"host=127.0.0.1 port={free_port()} dbname=x user=x", timeout=1.0, poll_interval=0.2
    )
    with pytest.raises(DatabaseUnavailable):
        down.put(report("2.25.15", ["1.2.1"]))
    with pytest.raises(DatabaseUnavailable):
        down.expect("2.25.15", "archive", "ORTHANC", "RADIOGATE", [(CT, "1.2.1")])
    with pytest.raises(DatabaseUnavailable):
        down.committed_earlier("archive", "ORTHANC", [(CT, "1.2.1")])
    started = time.monotonic()
    assert down.wait("2.25.15", timeout=1.0) is None
    assert time.monotonic() - started < 10


def test_old_rows_are_deleted_when_a_worker_next_asks(fresh_dsn: str) -> None:
    """A worker cleans up at its first request and then at most every purge_interval."""
    worker = PostgresCommitmentSink(fresh_dsn, retention=3600.0, purge_interval=3600.0)
    worker.expect("2.25.16", "archive", "ORTHANC", "RADIOGATE", [(CT, "1.2.1")])  # purges
    worker.put(report("2.25.16", ["1.2.1"]))
    with psycopg.connect(fresh_dsn) as conn:  # two hours ago
        conn.execute("UPDATE commitment_result SET received_at = now() - interval '2 hours'")
        conn.execute("UPDATE commitment_request SET requested_at = now() - interval '2 hours'")
    # too old to count any more, even before the clean-up
    assert worker.committed_earlier("archive", "ORTHANC", [(CT, "1.2.1")]) == set()
    worker.expect("2.25.17", "archive", "ORTHANC", "RADIOGATE", [(CT, "1.2.2")])  # not due
    assert _rows(fresh_dsn, "SELECT count(*) FROM commitment_result") == [(1,)]
    # another worker process (or this one, an interval later) cleans up
    other = PostgresCommitmentSink(fresh_dsn, retention=3600.0)
    other.expect("2.25.18", "archive", "ORTHANC", "RADIOGATE", [(CT, "1.2.3")])
    assert _rows(fresh_dsn, "SELECT count(*) FROM commitment_result") == [(0,)]
    assert _rows(fresh_dsn, "SELECT transaction_uid FROM commitment_request ORDER BY 1") == [
        ("2.25.17",),
        ("2.25.18",),
    ]
    worker.put(report("2.25.17", ["1.2.2"]))
    with psycopg.connect(fresh_dsn) as conn:
        conn.execute("UPDATE commitment_result SET received_at = now() - interval '2 hours'")
    assert worker.purge() == (1, 0)
