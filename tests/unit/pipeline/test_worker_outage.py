"""What the worker waits out (PostgreSQL unreachable) and what it does not (bugs)."""

from __future__ import annotations

import threading

import procrastinate.exceptions
import psycopg
from psycopg_pool import PoolTimeout

from dicom_nodes.pipeline.runner import database_outage, wait_for_database


def _caused_by(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception as exc:
            raise outer from exc
    except Exception as exc:
        return exc


def test_database_outages_are_recognised_through_their_causes() -> None:
    assert database_outage(psycopg.OperationalError("server closed the connection"))
    assert database_outage(PoolTimeout("no connection"))
    assert database_outage(
        _caused_by(procrastinate.exceptions.ConnectorException("listen"), PoolTimeout("x"))
    )
    assert database_outage(_caused_by(RuntimeError("wrapped"), ConnectionRefusedError()))


def test_bugs_are_not_waited_out() -> None:
    assert not database_outage(ValueError("bug"))
    assert not database_outage(
        procrastinate.exceptions.UniqueViolation(constraint_name="c", queueing_lock="q")
    )
    assert not database_outage(psycopg.errors.UndefinedTable("no table"))


def test_waiting_stops_when_asked() -> None:
    stop = threading.Event()
    stop.set()
    assert wait_for_database("host=127.0.0.1 port=1 connect_timeout=1", stop) < 1.0


def test_waiting_stops_when_the_supervisor_is_gone() -> None:
    stop = threading.Event()
    waited = wait_for_database("host=127.0.0.1 port=1 connect_timeout=1", stop, parent=-1)
    assert stop.is_set() and waited < 2.0
