"""Worker pools per kind of job, with real PostgreSQL and real ``radiogate worker`` processes:
an analysis worker takes analysis jobs only and runs in the idle class on ``analysis.cpus``
CPUs; a pipeline worker never takes an analysis job; a worker taking all jobs (the pools off)
takes both, as before."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dicom_nodes.state.jobs import defer_analyse, defer_route
from tests.support import ACCELERATOR_ENV
from tests.support.pipeline import WorkerProcess
from tests.support.triage import node_secrets

pytestmark = pytest.mark.timeout(300)
NODE = "pools"


def _env(dsn: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RADIOGATE_") or k in ACCELERATOR_ENV
    }
    env.update(
        {
            "RADIOGATE_DATABASE__DSN": dsn,
            "RADIOGATE_NODE__NAME": NODE,
            "RADIOGATE_NODE__DATA_DIR": str(data_dir),
            "RADIOGATE_WORKER__METRICS_PORT": "0",
            "RADIOGATE_WORKER__CONCURRENCY": "1",
            "RADIOGATE_LOGGING__LEVEL": "DEBUG",
            **node_secrets(),  # the default route de-identifies
            **extra,
        }
    )
    return env


def _defer(dsn: str, *kinds: str) -> dict[str, int]:
    """Defer the node's routing and/or analysis job; their procrastinate ids."""
    with psycopg.connect(dsn) as conn:
        for kind in kinds:
            (defer_route if kind == "route" else defer_analyse)(conn, NODE)
        rows = conn.execute(
            "SELECT task_name, max(id) FROM procrastinate_jobs GROUP BY task_name"
        ).fetchall()
    names = {"radiogate.route_received": "route", "radiogate.analyse_series": "analyse"}
    return {names[str(t)]: int(i) for t, i in rows}


def _status(dsn: str, job: int) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT status FROM procrastinate_jobs WHERE id = %s", (job,)).fetchone()
    assert row is not None
    return str(row[0])


def _wait(dsn: str, job: int, worker: WorkerProcess, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while _status(dsn, job) != "succeeded":
        assert worker.proc is not None
        if time.monotonic() > deadline or worker.proc.poll() is not None:
            raise TimeoutError(worker.log_path.read_text()[-3000:])
        time.sleep(0.2)


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.stop()


def _start(
    started: list[WorkerProcess], env: dict[str, str], log: Path, jobs: str
) -> WorkerProcess:
    worker = WorkerProcess(env, log, jobs=jobs).start()
    started.append(worker)
    return worker


def test_the_pipeline_worker_never_takes_an_analysis_job(
    fresh_dsn: str, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    ids = _defer(fresh_dsn, "analyse", "route")
    worker = _start(workers, _env(fresh_dsn, tmp_path), tmp_path / "w.log", "pipeline")
    _wait(fresh_dsn, ids["route"], worker)
    # One job at a time: a worker that could take the analysis job would have taken it before
    # this second routing job (deferred once the first was done).
    second = _defer(fresh_dsn, "route")["route"]
    _wait(fresh_dsn, second, worker)
    assert _status(fresh_dsn, ids["analyse"]) == "todo"


def test_the_analysis_worker_takes_only_analysis_jobs_idle_on_its_cpus(
    fresh_dsn: str, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    ids = _defer(fresh_dsn, "route", "analyse")
    env = _env(fresh_dsn, tmp_path, RADIOGATE_ANALYSIS__NICE="12", RADIOGATE_ANALYSIS__CPUS="1")
    worker = _start(workers, env, tmp_path / "a.log", "analysis")
    _wait(fresh_dsn, ids["analyse"], worker)
    again = _defer(fresh_dsn, "analyse")["analyse"]
    _wait(fresh_dsn, again, worker)
    assert _status(fresh_dsn, ids["route"]) == "todo"
    assert worker.proc is not None
    pid = worker.proc.pid
    tasks = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    assert len(tasks) > 1  # procrastinate, the connection pool: threads of their own
    last = {max(os.sched_getaffinity(0))} if len(os.sched_getaffinity(0)) > 1 else None
    for tid in tasks:
        if hasattr(os, "SCHED_IDLE"):
            assert os.sched_getscheduler(tid) == os.SCHED_IDLE, tid
        assert os.getpriority(os.PRIO_PROCESS, tid) == 12, tid
        if last is not None:
            assert os.sched_getaffinity(tid) == last, tid


def test_a_worker_taking_all_jobs_takes_both_at_normal_priority(
    fresh_dsn: str, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    ids = _defer(fresh_dsn, "route", "analyse")
    with psycopg.connect(fresh_dsn) as conn:
        queues = conn.execute("SELECT queue_name FROM procrastinate_jobs ORDER BY id").fetchall()
    assert queues == [(f"node:{NODE}",), (f"node:{NODE}:analysis",)]
    worker = _start(workers, _env(fresh_dsn, tmp_path), tmp_path / "all.log", "")
    _wait(fresh_dsn, ids["route"], worker)
    _wait(fresh_dsn, ids["analyse"], worker)
    assert worker.proc is not None
    assert os.sched_getscheduler(worker.proc.pid) == os.SCHED_OTHER
    assert os.sched_getaffinity(worker.proc.pid) == os.sched_getaffinity(0)


def test_an_analysis_job_left_on_the_pipeline_queue_moves_to_the_analysis_queue(
    fresh_dsn: str, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    """As an earlier version deferred it: the pipeline worker hands it on, it does not run it."""
    with psycopg.connect(fresh_dsn) as conn:
        conn.execute(
            """INSERT INTO procrastinate_jobs (queue_name, task_name, priority, lock, args)
               VALUES (%s, 'radiogate.analyse_series', -10, 'old-analyse', %s)""",
            (f"node:{NODE}", f'{{"node": "{NODE}"}}'),
        )
    (old,) = _defer(fresh_dsn).values()
    worker = _start(workers, _env(fresh_dsn, tmp_path), tmp_path / "w.log", "pipeline")
    _wait(fresh_dsn, old, worker)
    with psycopg.connect(fresh_dsn) as conn:
        moved = conn.execute(
            "SELECT queue_name, status FROM procrastinate_jobs WHERE id > %s", (old,)
        ).fetchall()
    assert moved == [(f"node:{NODE}:analysis", "todo")]
