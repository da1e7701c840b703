"""Wiring of ``radiogate worker``: pool, destinations, tasks, housekeeping, metrics."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry
from psycopg_pool import ConnectionPool

from config import Settings, data_path
from dicom_nodes.forward.model import Destination
from dicom_nodes.metrics_server import serve
from dicom_nodes.pipeline.metrics import PipelineCollector
from dicom_nodes.pipeline.tasks import AuditHook
from dicom_nodes.pipeline.worker import Housekeeper, build_app, make_context

__all__ = ["make_destinations", "run_worker"]

LOGGER = logging.getLogger(__name__)


def make_destinations(settings: Settings) -> dict[str, Destination]:
    """Destinations from ``[[destinations]]``."""
    from dicom_nodes.forward.factory import build_destination

    workdir = data_path(settings, "forward-tmp")
    workdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Destination] = {}
    for d in settings.destinations:
        out[d.name] = build_destination(d, workdir)
    return out


def audit_hook(settings: Settings) -> AuditHook:
    """Pipeline events queued in the transaction of the transition they record."""
    import audit as audit_trail
    from dicom_nodes.audit_events import pipeline_event

    node, local_ae = settings.node.name, settings.scp.ae_title

    def hook(conn: Any, events: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        audit_trail.enqueue_many(
            conn, [pipeline_event(node, local_ae, step, details) for step, details in events]
        )

    return hook


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


def _health(pool: ConnectionPool) -> dict[str, bool]:
    try:
        with pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
        return {"database": True}
    except Exception:
        return {"database": False}


def run_worker(settings: Settings, dsn: str, audit: AuditHook | None = None) -> int:
    """Run until SIGTERM/SIGINT."""
    if audit is None:
        audit = audit_hook(settings)
    pool = ConnectionPool(dsn, min_size=1, max_size=settings.worker.concurrency + 3, open=True)
    destinations = make_destinations(settings)
    ctx = make_context(
        settings.node.name,
        pool=pool,
        routes=settings.routes,
        lane_rules=settings.lane_rules,
        destinations=destinations,
        settings=settings.pipeline,
        audit=audit,
    )
    ctx.deid, ctx.vault = _deid(settings)
    if settings.worker.metrics_port:
        registry = CollectorRegistry()
        registry.register(PipelineCollector(pool, settings.node.name))
        serve("127.0.0.1", settings.worker.metrics_port, registry, lambda: _health(pool))
        LOGGER.info("worker metrics on http://127.0.0.1:%d/metrics", settings.worker.metrics_port)
    housekeeper = Housekeeper(ctx, settings.pipeline)
    housekeeper.start()
    app = build_app(dsn, ctx)
    LOGGER.info(
        "worker for node %s: %d concurrent jobs, destinations %s",
        settings.node.name,
        settings.worker.concurrency,
        ", ".join(destinations),
    )
    stop = threading.Event()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        app.run_worker(
            queues=[f"node:{settings.node.name}"],
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
        pool.close()
    return 0
