"""Wiring of ``radiogate worker``: pool, destinations, tasks, housekeeping, metrics."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry
from psycopg_pool import ConnectionPool

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
from dicom_nodes.pipeline.priority import lower_priority
from dicom_nodes.pipeline.worker import build_app
from dicom_nodes.state.jobs import queue_name
from dicom_nodes.state.repository import AuditSink

__all__ = ["health", "make_destinations", "run_worker"]

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


def run_worker(settings: Settings, dsn: str, audit: AuditSink | None = None) -> int:
    """Run until SIGTERM/SIGINT."""
    if settings.worker.nice or settings.worker.idle:  # before any thread or child starts
        lower_priority(settings.worker.nice, settings.worker.idle)
    if audit is None:
        audit = pipeline_sink(settings.node.name, settings.scp.ae_title)
    pool = ConnectionPool(dsn, min_size=1, max_size=settings.worker.concurrency + 3, open=True)
    destinations = make_destinations(settings, dsn)
    ctx = PipelineContext(
        node=settings.node.name,
        pool=pool,
        routes=list(settings.routes),
        lane_rules=list(settings.lane_rules),
        destinations=destinations,
        settings=settings.pipeline,
        audit=audit,
    )
    ctx.deid, ctx.vault = _deid(settings)
    ctx.triage = _triage(settings)
    # Always: `radiogate analyse` may ask for an analysis no route names.
    from dicom_nodes.pipeline.analyse import Analysis

    ctx.analysis = Analysis.from_settings(settings)
    exporter = ExporterLock(dsn, settings.node.name)
    if settings.worker.metrics_port:
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
    housekeeper.start()
    app = build_app(dsn, ctx, alerts)
    LOGGER.info(
        "worker for node %s: %d concurrent jobs, destinations %s",
        settings.node.name,
        settings.worker.concurrency,
        ", ".join(destinations),
    )
    record_start(dsn, settings, "worker")
    stop = threading.Event()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        app.run_worker(
            queues=[queue_name(settings.node.name)],
            concurrency=settings.worker.concurrency,
            install_signal_handlers=True,
            wait=True,
            update_heartbeat_interval=2.0,
            # A job whose lock was held when it was deferred starts at the next poll.
            fetch_job_polling_interval=0.25,
            stalled_worker_timeout=10.0,
        )
    except KeyboardInterrupt:
        pass
    finally:
        housekeeper.stop_event.set()
        if ctx.deid is not None:
            ctx.deid.close()
        for destination in destinations.values():
            close = getattr(destination, "close", None)
            if close is not None:
                close()  # associations kept open between batches
        exporter.close()
        pool.close()
        record_stop(dsn, settings, "worker")
    return 0
