"""``radiogate scp``: a supervisor that pre-forks receiver processes sharing one port.

One pynetdicom association is CPU-bound in Python, and threads share one GIL; so concurrent
associations are spread over several processes. The supervisor reserves the port (bound with
``SO_REUSEPORT`` but not listening, which also resolves port 0), forks ``scp.processes``
receivers that each bind and listen on it, restarts a receiver that dies, and on SIGTERM/SIGINT
stops them all. Receivers finish the associations in progress for up to ``_GRACE`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from config import Settings, data_path
from dicom_nodes.db.signals import PostgresSignals
from dicom_nodes.lifecycle import record_start, record_stop
from dicom_nodes.scp import metrics as scp_metrics
from dicom_nodes.scp.app import (
    build_server,
    make_commitment_sink,
    make_pool,
    make_recorder,
    make_spool,
)
from dicom_nodes.scp.audit_buffer import BufferedAuditWriter

__all__ = ["run_scp"]

LOGGER = logging.getLogger(__name__)
_GRACE = 10.0


def audit_buffer_dir(settings: Settings) -> Path:
    """Where receivers buffer audit events PostgreSQL could not take (scp/audit_buffer.py)."""
    return data_path(settings, "audit-buffer")


def _reserve_port(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _metrics_dir(settings: Settings) -> Path:
    """Where the receivers write their counters for the SCP's metrics process."""
    return data_path(settings, "run/scp-metrics")


def _receiver(settings: Settings, dsn: str, port: int, index: int) -> None:
    """Body of one receiver process; never returns."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if settings.scp.metrics_port:
        scp_metrics.enable(_metrics_dir(settings), settings.node.name)
    spool = make_spool(settings)
    pool = make_pool(dsn, settings.database.pool_size, settings.database.connect_timeout)
    recorder = make_recorder(pool, settings)
    scp = settings.scp
    patched = Settings(
        node=settings.node,
        database=settings.database,
        scp=type(scp)(**{**scp.__dict__, "port": port}),
        spool=settings.spool,
        orthanc=settings.orthanc,
        logging=settings.logging,
    )
    writer = BufferedAuditWriter(
        pool,
        settings.node.name,
        audit_buffer_dir(settings),
        timeout=settings.database.connect_timeout,
    )
    server = build_server(
        patched,
        spool,
        recorder,
        audit_writer=writer,
        commitment_sink=make_commitment_sink(dsn, pool, settings),
        signals=PostgresSignals(
            pool, settings.node.name, timeout=settings.database.connect_timeout
        ),
    )
    stopping = threading.Event()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True
    )
    thread.start()
    LOGGER.info("receiver %d (pid %d) accepting on %s:%d", index, os.getpid(), scp.host, port)
    stopping.wait()
    server.shutdown()
    deadline = time.monotonic() + _GRACE
    while server.active_associations and time.monotonic() < deadline:
        time.sleep(0.1)
    writer.flush()
    writer.close()
    pool.close(timeout=2)
    os._exit(0)


def _spawn_metrics(settings: Settings, dsn: str, port: int, reserved: socket.socket) -> int:
    """Fork the process serving the SCP's /metrics and /health (before any thread starts)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    reserved.close()
    try:
        _metrics_process(settings, dsn, port)
    except BaseException:
        LOGGER.exception("SCP metrics process failed")
    os._exit(1)


def _metrics_process(settings: Settings, dsn: str, port: int) -> None:
    from prometheus_client import CollectorRegistry
    from psycopg_pool import ConnectionPool

    from dicom_nodes.errors import OutOfResources
    from dicom_nodes.metrics_server import ServiceProcessCollector, serve
    from dicom_nodes.scp.metrics import ReceiverCollector, SpoolCollector

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    pool = ConnectionPool(dsn, min_size=0, max_size=2, open=False, name="radiogate-scp-metrics")
    pool.open(wait=False)
    spool = make_spool(settings)
    registry = CollectorRegistry()
    registry.register(ReceiverCollector(pool, settings.node.name, audit_buffer_dir(settings)))
    registry.register(SpoolCollector(spool, settings.node.name))
    registry.register(ServiceProcessCollector(os.getppid))  # the SCP supervisor's tree
    scp_metrics.register(registry, _metrics_dir(settings))

    def health() -> dict[str, bool]:
        checks = {"database": False, "spool_space": False, "accepting": False}
        try:
            with pool.connection(timeout=2) as conn:
                conn.execute("SELECT 1")
            checks["database"] = True
        except Exception as exc:
            LOGGER.debug("health: database unavailable (%s)", type(exc).__name__)
        try:
            spool.check_space()
            checks["spool_space"] = True
        except OutOfResources:
            pass
        try:
            with socket.create_connection((settings.scp.host, port), timeout=2):
                checks["accepting"] = True
        except OSError:
            pass
        return checks

    serve("127.0.0.1", settings.scp.metrics_port, registry, health)
    LOGGER.info("SCP metrics on http://127.0.0.1:%d/metrics", settings.scp.metrics_port)
    stop.wait()
    pool.close(timeout=2)
    os._exit(0)


def run_scp(settings: Settings, dsn: str, *, on_ready: Callable[[int], None] | None = None) -> int:
    """Run the SCP supervisor until SIGTERM/SIGINT; return the exit code."""
    spool = make_spool(settings)
    stale = spool.prepare()
    if stale:
        LOGGER.info("spool: %d unacknowledged partial files removed", stale)
    reserved = _reserve_port(settings.scp.host, settings.scp.port)
    port = reserved.getsockname()[1]
    count = settings.scp.processes or os.cpu_count() or 1
    children: dict[int, int] = {}
    stopping = False
    metrics_pid = 0

    def spawn(index: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            reserved.close()
            try:
                _receiver(settings, dsn, port, index)
            except BaseException:
                LOGGER.exception("receiver %d failed", index)
            os._exit(1)
        children[pid] = index

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in [*children, metrics_pid]:
            if not pid:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if settings.scp.metrics_port:
        scp_metrics.prepare_directory(_metrics_dir(settings))
    metrics_pid = _spawn_metrics(settings, dsn, port, reserved) if settings.scp.metrics_port else 0
    for i in range(count):
        spawn(i)
    LOGGER.info(
        "SCP %s listening on %s:%d with %d receiver processes",
        settings.scp.ae_title,
        settings.scp.host,
        port,
        count,
    )
    record_start(dsn, settings, "scp")
    if on_ready is not None:
        on_ready(port)
    while children or metrics_pid:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        if pid == metrics_pid:
            metrics_pid = 0
            if not stopping:
                LOGGER.error("SCP metrics process exited with status %d; restarting", status)
                time.sleep(0.5)
                metrics_pid = _spawn_metrics(settings, dsn, port, reserved)
            continue
        index = children.pop(pid, None)
        if index is None:
            continue
        if not stopping:
            LOGGER.error(
                "receiver %d (pid %d) exited with status %d; restarting", index, pid, status
            )
            time.sleep(0.5)
            spawn(index)
    reserved.close()
    record_stop(dsn, settings, "scp")
    LOGGER.info("SCP stopped")
    return 0
