"""Prometheus metrics of a node's pipeline (the worker exports them; the receiver exports its
own, :mod:`dicom_nodes.scp.metrics`).

- **From PostgreSQL at scrape time** (:class:`PipelineCollector`): forwards sent, confirmed,
  failed and retried per destination, queue depths per destination and lane, what is held for
  a person (quarantined, dead) apart from what waits for a destination, unroutable and missing
  instances. PostgreSQL is the one durable state, so these are exact and survive restarts;
  they describe the node, so exactly one worker per node exports them (the one holding the
  node's metrics lock, :func:`exporter_lock`); other workers of the node export only their own
  process figures.
- **In the worker process** (:data:`STAGES`): how long de-identification, sending and
  confirmation took, per instance (a batch's time shared out over its instances), observed
  where the work is done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool

from dicom_nodes.pipeline.status import WAITING_INSTANCE_STATES
from dicom_nodes.pipeline.timeline import stage_histograms

__all__ = ["STAGES", "ExporterLock", "PipelineCollector", "StageCollector", "observe"]

LOGGER = logging.getLogger(__name__)

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STAGES: dict[str, Histogram] = {
    "deidentify": Histogram(
        "radiogate_deidentify_seconds",
        "Seconds to de-identify one instance under one profile (a batch's time shared out)",
        ["node"], buckets=_BUCKETS, registry=None,
    ),
    "forward": Histogram(
        "radiogate_forward_seconds",
        "Seconds to send one instance to a destination (a batch's time shared out)",
        ["node", "destination"], buckets=_BUCKETS, registry=None,
    ),
    "confirm": Histogram(
        "radiogate_confirm_seconds",
        "Seconds to ask a destination whether it holds one instance (storage commitment or "
        "query; a batch's time shared out)",
        ["node", "destination"], buckets=_BUCKETS, registry=None,
    ),
}  # fmt: skip
"""This process's stage histograms (exported by :class:`StageCollector`)."""


def observe(stage: str, started: float, count: int, *labels: str) -> None:
    """Record a batch of *count* instances of *stage* that began at ``time.perf_counter()``
    *started*: each instance gets the batch's time divided by *count*."""
    if count <= 0:
        return
    share = (time.perf_counter() - started) / count
    child = STAGES[stage].labels(*labels)
    for _ in range(count):
        child.observe(share)


class StageCollector(Collector):
    """Exports :data:`STAGES` (this process's observations)."""

    def collect(self) -> Iterator[Any]:
        for histogram in STAGES.values():
            yield from histogram.collect()


class ExporterLock:
    """The node's metrics lock: a session advisory lock on a connection of its own, so exactly
    one worker of a node exports the node's PostgreSQL figures (another takes over when it
    stops: its session ends and the lock with it)."""

    def __init__(self, dsn: str, node: str) -> None:
        self.dsn = dsn
        self.node = node
        self._conn: psycopg.Connection[Any] | None = None

    def close(self) -> None:
        """Give the lock up (the worker stops)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __call__(self) -> bool:
        try:
            if self._conn is not None and not self._conn.closed:
                self._conn.execute("SELECT 1")
                return True
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
            row = conn.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                (f"radiogate-metrics:{self.node}",),
            ).fetchone()
            if row and row[0]:
                self._conn = conn
                return True
            conn.close()
        except psycopg.Error:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
        return False


class PipelineCollector(Collector):
    """The node's pipeline figures from PostgreSQL (see the module docstring)."""

    def __init__(
        self, pool: ConnectionPool, node: str, exporter: Callable[[], bool] = lambda: True
    ) -> None:
        self.pool = pool
        self.node = node
        self.exporter = exporter

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("radiogate_database_up", "1 if PostgreSQL answered the scrape")
        exporting = GaugeMetricFamily(
            "radiogate_node_metrics_exporter",
            "1 if this worker exports its node's PostgreSQL figures (one worker per node does)",
            labels=["node"],
        )
        try:
            owner = self.exporter()
            with self.pool.connection(timeout=2) as conn:
                if not owner:
                    conn.execute("SELECT 1")
                    rows: list[Any] = []
                else:
                    rows = conn.execute(
                        """SELECT f.destination,
                                  count(*) FILTER (WHERE f.sent_at IS NOT NULL),
                                  count(*) FILTER (WHERE f.state = 'confirmed'),
                                  count(*) FILTER (WHERE f.state = 'dead'),
                                  coalesce(sum(f.attempts - 1) FILTER (WHERE f.attempts > 1), 0),
                                  count(*) FILTER (WHERE f.state = 'quarantined'),
                                  count(*) FILTER (WHERE f.state IN ('pending', 'sent')
                                                   AND f.lane_rank = 0),
                                  count(*) FILTER (WHERE f.state IN ('pending', 'sent')
                                                   AND f.lane_rank = 1),
                                  count(*) FILTER (WHERE f.state IN ('pending', 'sent')
                                                   AND f.lane_rank >= 2)
                           FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
                           WHERE i.node = %s GROUP BY f.destination""",
                        (self.node,),
                    ).fetchall()
                    node_row = conn.execute(
                        """SELECT
                             (SELECT extract(epoch FROM clock_timestamp() - min(received_at))
                              FROM ingest_instance WHERE node = %(n)s
                                AND state = ANY(%(waiting)s)),
                             (SELECT count(*) FROM ingest_instance
                              WHERE node = %(n)s AND state = 'unroutable'),
                             (SELECT count(*) FROM ingest_instance
                              WHERE node = %(n)s AND state = 'missing')""",
                        {"n": self.node, "waiting": list(WAITING_INSTANCE_STATES)},
                    ).fetchone()
                    histograms = list(stage_histograms(conn, self.node))
        except Exception as exc:
            LOGGER.warning("metrics: database unavailable (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        exporting.add_metric([self.node], 1.0 if owner else 0.0)
        yield exporting
        if not owner:
            return
        assert node_row is not None
        labels = ["node", "destination"]
        for column, (name, doc) in enumerate((
            ("radiogate_forwarded_instances", "Instance forwards sent, per destination"),
            ("radiogate_confirmed_instances", "Instance forwards confirmed, per destination"),
            ("radiogate_failed_instances", "Instance forwards failed for good (dead)"),
            ("radiogate_forward_retries", "Forward attempts beyond the first"),
        ), start=1):  # fmt: skip
            c = CounterMetricFamily(name, doc, labels=labels)
            for row in rows:
                c.add_metric([self.node, row[0]], float(row[column]))
            yield c
        depth = GaugeMetricFamily(
            "radiogate_queue_depth",
            "Forwards waiting for a destination (pending or sent, not confirmed) per lane",
            labels=["node", "destination", "lane"],
        )
        waiting = GaugeMetricFamily(
            "radiogate_forwards_waiting",
            "Forwards waiting for a destination (pending or sent, not confirmed)",
            labels=labels,
        )
        held = GaugeMetricFamily(
            "radiogate_forwards_held",
            "Forwards held for a person's decision, by kind (quarantined, dead): not waiting "
            "for a destination",
            labels=["node", "destination", "kind"],
        )
        quarantined = GaugeMetricFamily(
            "radiogate_quarantined_instances",
            "Forwards held back by de-identification (burned-in text, failures) for an admin",
            labels=labels,
        )
        for row in rows:
            for lane, value in zip(("critical", "urgent", "routine"), row[6:9], strict=True):
                depth.add_metric([self.node, row[0], lane], float(value))
            waiting.add_metric([self.node, row[0]], float(sum(row[6:9])))
            held.add_metric([self.node, row[0], "quarantined"], float(row[5]))
            held.add_metric([self.node, row[0], "dead"], float(row[3]))
            quarantined.add_metric([self.node, row[0]], float(row[5]))
        yield from (depth, waiting, held, quarantined)
        oldest = GaugeMetricFamily(
            "radiogate_oldest_unconfirmed_seconds",
            "Age of the oldest instance the pipeline still works on (received or routed; held,"
            " cancelled and unroutable ones wait for a person and are counted apart)",
            labels=["node"],
        )
        oldest.add_metric([self.node], float(node_row[0] or 0.0))
        yield oldest
        for name, doc, value in (
            ("radiogate_unroutable_instances", "Instances that matched no route", node_row[1]),
            ("radiogate_missing_instances", "Instances whose spool file was gone", node_row[2]),
        ):
            g = GaugeMetricFamily(name, doc, labels=["node"])
            g.add_metric([self.node], float(value))
            yield g
        yield from histograms
