"""``radiogate scp``: a supervisor that pre-forks receiver processes sharing one port.

One pynetdicom association is CPU-bound in Python, and threads share one GIL; so concurrent
associations are spread over several processes. The supervisor binds and listens on the port
(which also resolves port 0), forks ``scp.processes`` receivers that inherit the listening
socket and accept from its one queue (the receiver with the fewest connections takes the
next: :mod:`dicom_nodes.scp.accept`), restarts a receiver that dies, and on SIGTERM/SIGINT
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
from dicom_nodes.scp.accept import AcceptBoard, AcceptTurn, listen
from dicom_nodes.scp.app import (
    build_server,
    make_commitment_sink,
    make_pool,
    make_recorder,
    make_spool,
)
from dicom_nodes.scp.audit_buffer import BufferedAuditWriter
from dicom_nodes.services.ports import PortUse, check_ports
from dicom_nodes.services.supervisor import die_with_parent

__all__ = ["AUTO_MIN_RECEIVERS", "SUPERVISOR_ENV", "receivers_for", "run_scp"]

LOGGER = logging.getLogger(__name__)
_GRACE = 10.0


SUPERVISOR_ENV = "RADIOGATE_SUPERVISOR_PID"
"""Set by ``radiogate run`` for its children: the pid they must not outlive."""


def _orphaned(watched: int) -> bool:
    """Whether the supervisor named by :data:`SUPERVISOR_ENV` is no longer our parent (its
    PR_SET_PDEATHSIG can be lost when it dies while starting us)."""
    return bool(watched) and os.getppid() != watched


def _die_with(parent: int) -> None:
    """In a forked child: SIGTERM when the supervisor dies, even by SIGKILL (Linux
    ``PR_SET_PDEATHSIG``), so no receiver outlives it holding the port; exit at once if it
    died before this call. SIGTERM's action is the default again until the child installs its
    own handler (the supervisor's, inherited by the fork, would swallow it: a child still
    starting up when the supervisor died would live on)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent()
    if os.getppid() != parent:
        os._exit(1)


def audit_buffer_dir(settings: Settings) -> Path:
    """Where receivers buffer audit events PostgreSQL could not take (scp/audit_buffer.py)."""
    return data_path(settings, "audit-buffer")


def _metrics_dir(settings: Settings) -> Path:
    """Where the receivers write their counters for the SCP's metrics process."""
    return data_path(settings, "run/scp-metrics")


def _receiver(
    settings: Settings,
    dsn: str,
    listener: socket.socket,
    board: AcceptBoard,
    index: int,
    *,
    supervisor: int,
) -> None:
    """Body of one receiver process (forked by the process *supervisor*); never returns."""
    port = listener.getsockname()[1]
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
    turn = AcceptTurn(board, index)
    server = build_server(
        patched,
        spool,
        recorder,
        listener=listener,
        accept_turn=turn,
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
    turn.publish(0)
    thread.start()
    LOGGER.info("receiver %d (pid %d) accepting on %s:%d", index, os.getpid(), scp.host, port)
    while not stopping.wait(1.0):
        if os.getppid() != supervisor:  # PR_SET_PDEATHSIG's signal can be lost in a race
            LOGGER.warning("receiver %d: the SCP supervisor is gone; stopping", index)
            break
    turn.retire()
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
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    reserved.close()
    _die_with(parent)
    try:
        _metrics_process(settings, dsn, port, parent)
    except BaseException:
        LOGGER.exception("SCP metrics process failed")
    os._exit(1)


def _metrics_process(settings: Settings, dsn: str, port: int, supervisor: int) -> None:
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
    while not stop.wait(1.0):
        if os.getppid() != supervisor:  # PR_SET_PDEATHSIG's signal can be lost in a race
            break
    pool.close(timeout=2)
    os._exit(0)


AUTO_MIN_RECEIVERS = 4
"""Receivers when ``scp.processes`` is 0 on a machine with fewer cores: each receiver serves its
associations as threads under one interpreter lock, so up to this many modalities sending at
once each get a process. Measured (``bench/bench_receive.py --receivers
radiogate,radiogate@SCP__PROCESSES=4 --sizes small64 --count 1000 --reps 4``, 2 cores): 10 KB
over 4 associations 514 against 432 img/s (higher in each of the 4 rounds), CPU 2.88 against
3.12 ms per instance; over one association no difference (317 / 312)."""


def receivers_for(cores: int) -> int:
    """Receiver processes for ``scp.processes = 0``: one per core, at least
    :data:`AUTO_MIN_RECEIVERS`."""
    return max(AUTO_MIN_RECEIVERS, cores)


def run_scp(settings: Settings, dsn: str, *, on_ready: Callable[[int], None] | None = None) -> int:
    """Run the SCP supervisor until SIGTERM/SIGINT; return the exit code."""
    # A leftover receiver of an earlier run holds the port (or shares it with SO_REUSEPORT) and
    # associations: a port anyone listens on is refused before anything starts.
    check_ports(
        [
            PortUse("scp.port", settings.scp.port, settings.scp.host),
            PortUse("scp.metrics_port", settings.scp.metrics_port),
        ]
    )
    spool = make_spool(settings)
    stale = spool.prepare()
    if stale:
        LOGGER.info("spool: %d unacknowledged partial files removed", stale)
    watched = int(os.environ.get(SUPERVISOR_ENV, "0") or 0)
    if _orphaned(watched):
        LOGGER.warning("SCP: the process that started it is already gone; not starting")
        return 0
    reserved = listen(settings.scp.host, settings.scp.port)
    supervisor = os.getpid()
    port = reserved.getsockname()[1]
    count = settings.scp.processes or receivers_for(os.cpu_count() or 1)
    board = AcceptBoard(count)
    children: dict[int, int] = {}
    stopping = False
    metrics_pid = 0

    def spawn(index: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _die_with(supervisor)
            try:
                _receiver(settings, dsn, reserved, board, index, supervisor=supervisor)
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
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if not stopping and _orphaned(watched):
                LOGGER.warning("SCP: the process that started it is gone; stopping")
                on_signal(signal.SIGTERM, None)
            time.sleep(0.2)
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
        board.retire(index)
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
