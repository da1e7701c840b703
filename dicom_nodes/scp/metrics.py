"""Prometheus metrics the receiver owns.

Two sources, each counted once:

- **PostgreSQL** (at scrape time): instances received and duplicates recorded by this node,
  exact across any number of receiver processes and restarts.
- **The receiver processes themselves**: C-STORE answers by status, associations accepted and
  rejected by reason, C-STORE handling time. Receivers are forked processes, so each writes its
  values to memory-mapped files (prometheus_client's multiprocess mode) in a directory the SCP
  supervisor empties at start; the SCP's metrics process sums them (:func:`register`). They
  count from the SCP's start, like any process counter; ``rate()`` handles restarts.

The pipeline's figures (forwards, queues, held items) are the worker's
(:mod:`dicom_nodes.pipeline.metrics`): each process exports what it owns.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool

from dicom_nodes.scp.audit_buffer import buffer_state
from dicom_nodes.spool.store import Spool

__all__ = [
    "RECEIVE_BUCKETS",
    "ReceiverCollector",
    "SpoolCollector",
    "association",
    "enable",
    "prepare_directory",
    "register",
    "store",
]

LOGGER = logging.getLogger(__name__)

RECEIVE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""C-STORE handling time buckets (seconds): structural check, spool fsync, database commit."""


class _Receiver:
    """The counters of one receiver process (created after :func:`enable`)."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.stores = Counter(
            "radiogate_store_responses",
            "C-STORE responses sent, by status (PS3.4 B.2.3, hex) and outcome",
            ["node", "status", "outcome"],
            registry=None,
        )
        self.received_bytes = Counter(
            "radiogate_received_bytes", "Bytes of instances stored", ["node"], registry=None
        )
        self.associations = Counter(
            "radiogate_associations",
            "Associations accepted, rejected (A-ASSOCIATE-RJ, by reason) or refused before "
            "any association (network not allowed, TLS handshake failed)",
            ["node", "result", "reason"],
            registry=None,
        )
        self.receive_seconds = Histogram(
            "radiogate_receive_seconds",
            "C-STORE handling time: structural check, spool write and fsync, database commit",
            ["node"],
            buckets=RECEIVE_BUCKETS,
            registry=None,
        )
        # The labelled children the C-STORE path counts into, looked up once (``labels()``
        # validates and locks on every call: ~1.5 % of a receiver's interpreter time).
        self.seconds = self.receive_seconds.labels(node)
        self.bytes = self.received_bytes.labels(node)
        self._stores: dict[int, Any] = {}

    def store_counter(self, status: int) -> Any:
        """The ``radiogate_store_responses`` child of *status*."""
        child = self._stores.get(status)
        if child is None:
            child = self.stores.labels(self.node, f"{status:04X}", _outcome(status))
            self._stores[status] = child
        return child


_ACTIVE: dict[str, _Receiver] = {}
"""This process's receiver counters (key ``"receiver"``), once :func:`enable` ran."""


def _outcome(status: int) -> str:
    if status == 0:
        return "success"
    if status & 0xF000 == 0xB000:  # PS3.4 B.2.3: Warning 0xB000, 0xB006, 0xB007
        return "warning"
    return "failure"


def store(status: int, seconds: float, size: int = 0) -> None:
    """Count one C-STORE response (no-op unless :func:`enable` ran in this process)."""
    r = _ACTIVE.get("receiver")
    if r is None:
        return
    r.store_counter(status).inc()
    r.seconds.observe(seconds)
    if size:
        r.bytes.inc(size)


def association(result: str, reason: str = "") -> None:
    """Count an association ``accepted``, ``rejected`` or ``refused`` (with its reason code)."""
    r = _ACTIVE.get("receiver")
    if r is not None:
        r.associations.labels(r.node, result, reason).inc()


def prepare_directory(directory: Path) -> Path:
    """Empty (create) the directory the receivers write their values to; at SCP start."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    return directory


def enable(directory: Path, node: str) -> None:
    """In a receiver process (after fork): write this process's values under *directory*."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _ACTIVE["receiver"] = _Receiver(node)


class ReceiverCollector(Collector):
    """Counts the receiver recorded in PostgreSQL (node-wide, exact), and the state of the
    receivers' local audit buffer."""

    def __init__(self, pool: ConnectionPool, node: str, audit_buffer: Path | None = None) -> None:
        self.pool = pool
        self.node = node
        self.audit_buffer = audit_buffer

    def collect(self) -> Iterator[Any]:
        if self.audit_buffer is not None:
            size, full = buffer_state(self.audit_buffer)
            yield GaugeMetricFamily(
                "radiogate_audit_buffered_bytes",
                "Audit events waiting in the receivers' local buffer for PostgreSQL",
                value=size,
            )
            yield GaugeMetricFamily(
                "radiogate_audit_buffer_full",
                "1 when a receiver's audit buffer is full and events are being dropped",
                value=int(full),
            )
        up = GaugeMetricFamily("radiogate_database_up", "1 if PostgreSQL answered the scrape")
        try:
            with self.pool.connection(timeout=2) as conn:
                row = conn.execute(
                    """SELECT
                         (SELECT count(*) FROM ingest_instance WHERE node = %(n)s),
                         (SELECT count(*) FROM ingest_duplicate WHERE node = %(n)s)""",
                    {"n": self.node},
                ).fetchone()
        except Exception as exc:
            LOGGER.warning("metrics: database unavailable (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        assert row is not None
        for name, doc, value in (
            ("radiogate_received_instances", "Instances received and recorded", row[0]),
            ("radiogate_duplicate_instances", "Re-sent instances recorded as duplicates", row[1]),
        ):
            c = CounterMetricFamily(name, doc, labels=["node"])
            c.add_metric([self.node], float(value))
            yield c


class SpoolCollector(Collector):
    """Free bytes of the spool's file system and the watermark under which C-STORE answers
    0xA700 (the receiver owns the spool; :meth:`Spool.check_space`)."""

    def __init__(self, spool: Spool, node: str) -> None:
        self.spool = spool
        self.node = node

    def collect(self) -> Iterator[Any]:
        try:
            st = os.statvfs(self.spool.root)
        except OSError:
            return
        total = st.f_blocks * st.f_frsize
        watermark = max(self.spool.min_free_bytes, total * self.spool.min_free_percent / 100.0)
        for name, doc, value in (
            ("radiogate_spool_free_bytes",
             "Bytes available to Radiogate on the spool's file system", st.f_bavail * st.f_frsize),
            ("radiogate_spool_size_bytes", "Size of the spool's file system", total),
            ("radiogate_spool_min_free_bytes",
             "Free bytes under which the receiver refuses instances (0xA700)", watermark),
        ):  # fmt: skip
            g = GaugeMetricFamily(name, doc, labels=["node"])
            g.add_metric([self.node], float(value))
            yield g


def register(registry: CollectorRegistry, directory: Path) -> None:
    """Sum every receiver's values (live and exited since the SCP started) into *registry*."""
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
