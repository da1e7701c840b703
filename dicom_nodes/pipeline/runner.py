"""Wiring of ``radiogate worker``: pool, destinations, tasks, housekeeping, metrics.

``--jobs`` (:class:`~dicom_nodes.pipeline.pools.Jobs`) chooses the queues: a worker taking the
pipeline's jobs (``all`` or ``pipeline``) has the destinations, de-identification, triage, the
housekeeping thread and the metrics endpoint; an analysis worker has none of them and lowers
itself first (:func:`~dicom_nodes.pipeline.pools.enter_analysis_pool`)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

import procrastinate.exceptions
import psycopg
from prometheus_client import CollectorRegistry
from psycopg_pool import ConnectionPool, PoolTimeout

from config import Settings, data_path
from dicom_nodes.alerts.outbox import AlertContext
from dicom_nodes.alerts.targets import build_targets
from dicom_nodes.audit_events import pipeline_sink
from dicom_nodes.forward.model import Destination
from dicom_nodes.lifecycle import record_start, record_stop
from dicom_nodes.metrics_server import ServiceProcessCollector, serve
from dicom_nodes.pipeline.context import PipelineContext
from dicom_nodes.pipeline.housekeeping import Housekeeper, stalled_destinations
from dicom_nodes.pipeline.metrics import ExporterLock, PipelineCollector, StageCollector
from dicom_nodes.pipeline.pools import Jobs, enter_analysis_pool, queues
from dicom_nodes.pipeline.priority import lower_priority
from dicom_nodes.pipeline.worker import build_app
from dicom_nodes.spool.store import Spool
from dicom_nodes.state.repository import AuditSink

__all__ = ["database_outage", "health", "make_destinations", "run_worker", "wait_for_database"]

LOGGER = logging.getLogger(__name__)


def make_destinations(settings: Settings, dsn: str) -> dict[str, Destination]:
    """Destinations from ``[[destinations]]``; those confirming by storage commitment wait
    for the reports ``radiogate scp`` records in PostgreSQL (PS3.4 J.3,
    :mod:`dicom_nodes.db.commitment`)."""
    from dicom_nodes.db.commitment import PostgresCommitmentSink
    from dicom_nodes.forward.factory import build_destination

    workdir = data_path(settings, "forward-tmp")
    workdir.mkdir(parents=True, exist_ok=True)
    sink = PostgresCommitmentSink(dsn)
    return {d.name: build_destination(d, workdir, commitment_sink=sink)
            for d in settings.destinations}  # fmt: skip


def _deid(settings: Settings) -> tuple[Any, Any]:
    """The de-identification step and vault, when a route names a profile."""
    if not any(step.startswith("deidentify:") for r in settings.routes for step in r.steps):
        return None, None
    from dicom_nodes.deid.secrets import load_vault_key
    from dicom_nodes.deid.step import DeidStep
    from dicom_nodes.deid.vault import Vault

    step = DeidStep.from_settings(settings)
    LOGGER.info(
        "de-identification: profiles %s, %s",
        ", ".join(step.engines),
        "in the worker process" if step.processes <= 1 else f"in {step.processes} processes",
    )
    return step, Vault(load_vault_key(settings))


def _triage(settings: Settings) -> Any:
    """The triage stage, when a route has a ``triage`` step."""
    if not any(step == "triage" for r in settings.routes for step in r.steps):
        return None
    from dicom_nodes.pipeline.triage import Triage

    triage = Triage.from_settings(settings)
    LOGGER.info(
        "triage: models %s, policy %s",
        ", ".join(f"{m.identity.name} {m.identity.version}" for m in triage.models) or "none",
        settings.triage.policy.value,
    )
    return triage


def health(ctx: PipelineContext) -> dict[str, bool]:
    """The worker's ``/health`` checks: the database answers, and no destination's queue is
    stalled (:func:`~dicom_nodes.pipeline.housekeeping.stalled_destinations`)."""
    try:
        with ctx.pool.connection(timeout=2) as conn:
            stalled = set(stalled_destinations(conn, ctx))
    except Exception:
        return {"database": False}
    checks = {"database": True}
    checks.update({f"destination:{name}": name not in stalled for name in ctx.destinations})
    return checks


def database_outage(exc: BaseException) -> bool:
    """Whether *exc* (or what caused it) is PostgreSQL being unreachable, not a bug."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, psycopg.OperationalError | PoolTimeout | ConnectionError):
            return True
        if isinstance(seen, procrastinate.exceptions.ConnectorException) and not isinstance(
            seen, procrastinate.exceptions.UniqueViolation
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def wait_for_database(
    dsn: str, stop: threading.Event, ceiling: float = 30.0, parent: int | None = None
) -> float:
    """Block until PostgreSQL answers (back-off 0.5 s doubling up to *ceiling*), *stop* is set
    or the process's parent is no longer *parent* (its supervisor died: a SIGTERM that
    arrived while procrastinate held the signal handlers is not lost that way); return the
    seconds waited. An outage of any length is waited out."""
    started = time.monotonic()
    delay = 0.5
    while not stop.wait(delay):
        if parent is not None and os.getppid() != parent:
            stop.set()
            break
        try:
            with psycopg.connect(dsn, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            break
        except psycopg.Error:
            delay = min(delay * 2, ceiling)
    return time.monotonic() - started


def _watch_supervisor(parent: int, done: threading.Event, grace: float = 10.0) -> None:
    """Stop once ``radiogate run`` is gone (its PR_SET_PDEATHSIG can be lost): SIGTERM (jobs
    finish), again after *grace* seconds (jobs are interrupted: each is one transaction), and
    exit after another *grace* — an orphaned worker never lingers. *done* is set when the
    worker has finished stopping."""
    while not done.wait(1.0):
        if os.getppid() != parent:
            LOGGER.warning("worker: radiogate run is gone; stopping")
            for _ in range(2):
                os.kill(os.getpid(), signal.SIGTERM)
                if done.wait(grace):
                    return
            LOGGER.error("worker: did not stop after its supervisor died; exiting")
            os._exit(1)


def run_worker(
    settings: Settings, dsn: str, audit: AuditSink | None = None, jobs: Jobs = Jobs.ALL
) -> int:
    """Run the workers taking *jobs* until SIGTERM/SIGINT."""
    analysis_only = jobs is Jobs.ANALYSIS
    a = settings.analysis
    if analysis_only:  # before any thread or child starts
        bounds = enter_analysis_pool(a.nice, a.idle, a.cpus, a.threads)
        LOGGER.info(
            "analysis worker: niceness %d, %s class, CPUs %s, %s threads per library",
            bounds.nice, "idle" if bounds.idle else "normal",
            ",".join(map(str, sorted(bounds.cpus))) if bounds.cpus else "any",
            bounds.threads or "default",
        )  # fmt: skip
    elif settings.worker.nice or settings.worker.idle:
        lower_priority(settings.worker.nice, settings.worker.idle)
    service = "analysis-worker" if analysis_only else "worker"
    concurrency = 1 if analysis_only else settings.worker.concurrency  # one analysis at a time
    if audit is None:
        audit = pipeline_sink(settings.node.name, settings.scp.ae_title)
    pool = ConnectionPool(dsn, min_size=1, max_size=concurrency + 3, open=True)
    destinations = {} if analysis_only else make_destinations(settings, dsn)
    ctx = PipelineContext(
        node=settings.node.name,
        pool=pool,
        routes=list(settings.routes),
        lane_rules=list(settings.lane_rules),
        destinations=destinations,
        settings=settings.pipeline,
        audit=audit,
    )
    if not analysis_only:
        ctx.deid, ctx.vault = _deid(settings)
        ctx.triage = _triage(settings)
        ctx.spool = Spool(data_path(settings, settings.spool.path), fsync=settings.spool.fsync)
    # Always: `radiogate analyse` may ask for an analysis no route names.
    from dicom_nodes.pipeline.analyse import Analysis

    ctx.analysis = Analysis.from_settings(settings)
    exporter = ExporterLock(dsn, settings.node.name)
    if settings.worker.metrics_port and not analysis_only:
        registry = CollectorRegistry()
        registry.register(PipelineCollector(pool, settings.node.name, exporter))
        registry.register(StageCollector())
        registry.register(ServiceProcessCollector())
        serve("127.0.0.1", settings.worker.metrics_port, registry, lambda: health(ctx))
        LOGGER.info("worker metrics on http://127.0.0.1:%d/metrics", settings.worker.metrics_port)
    alerts = AlertContext(
        node=settings.node.name,
        pool=pool,
        settings=settings.alerts,
        targets=build_targets(settings),
        audit=audit,
    )
    housekeeper = Housekeeper(ctx, alerts=alerts)
    if not analysis_only:
        housekeeper.start()
    app = build_app(dsn, ctx, alerts, jobs=jobs)
    LOGGER.info(
        "worker for node %s (%s jobs): %d concurrent jobs, destinations %s",
        settings.node.name,
        jobs.value,
        concurrency,
        ", ".join(destinations) or "none",
    )
    record_start(dsn, settings, service)
    stop = threading.Event()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    parent = int(os.environ.get("RADIOGATE_SUPERVISOR_PID", "0") or 0) or None
    done = threading.Event()
    if parent is not None:
        threading.Thread(
            target=_watch_supervisor, args=(parent, done), name="supervisor-watch", daemon=True
        ).start()
    try:
        while not stop.is_set():
            try:
                app.run_worker(
                    queues=queues(jobs, settings.node.name),
                    concurrency=concurrency,
                    install_signal_handlers=True,
                    wait=True,
                    update_heartbeat_interval=2.0,
                    # A job whose lock was held when it was deferred starts at the next poll.
                    fetch_job_polling_interval=0.25,
                    stalled_worker_timeout=10.0,
                )
                break
            except Exception as exc:
                if not database_outage(exc):
                    raise
                LOGGER.warning(
                    "worker: database unavailable (%s); waiting for it", type(exc).__name__
                )
                waited = wait_for_database(dsn, stop, parent=parent)
                if stop.is_set():
                    LOGGER.warning("worker: stopping while the database is unavailable")
                    break
                LOGGER.info("worker: database back after %.1f s; jobs resume", waited)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        housekeeper.stop_event.set()
        if ctx.deid is not None:
            ctx.deid.close()
        for destination in destinations.values():
            close = getattr(destination, "close", None)
            if close is not None:
                close()  # associations kept open between batches
        exporter.close()
        pool.close()
        record_stop(dsn, settings, service)
        done.set()
    return 0
