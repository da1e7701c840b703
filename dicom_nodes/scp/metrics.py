"""Prometheus metrics the receiver owns, read from PostgreSQL at scrape time.

PostgreSQL is the one durable state, so the counts are exact across any number of receiver
processes and survive restarts. The pipeline's figures (forwards, queues, held items) are the
worker's to export (:mod:`dicom_nodes.pipeline.metrics`): each process exports what it owns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool

from dicom_nodes.scp.audit_buffer import buffer_state

__all__ = ["ReceiverCollector"]

LOGGER = logging.getLogger(__name__)


class ReceiverCollector(Collector):
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
