"""Prometheus metrics of a node's pipeline, read from PostgreSQL at scrape time (the worker
exports them; the receiver exports its own, :mod:`dicom_nodes.scp.metrics`).

PostgreSQL is the one durable state, so counters derived from it are exact across any number of
workers and survive restarts. Gauges separate what waits for a destination (pending, sent) from
what is held for a person (quarantined, dead) and what matched no route.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool

from dicom_nodes.pipeline.status import WAITING_INSTANCE_STATES
from dicom_nodes.pipeline.timeline import stage_histograms

__all__ = ["PipelineCollector"]

LOGGER = logging.getLogger(__name__)


class PipelineCollector(Collector):
    def __init__(self, pool: ConnectionPool, node: str) -> None:
        self.pool = pool
        self.node = node

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("radiogate_database_up", "1 if PostgreSQL answered the scrape")
        try:
            with self.pool.connection(timeout=2) as conn:
                row = conn.execute(
                    """SELECT
                         (SELECT count(*) FROM forward_item f JOIN ingest_instance i
                              USING (sop_instance_uid)
                          WHERE i.node = %(n)s AND f.sent_at IS NOT NULL),
                         (SELECT count(*) FROM forward_item f JOIN ingest_instance i
                              USING (sop_instance_uid)
                          WHERE i.node = %(n)s AND f.state = 'confirmed'),
                         (SELECT count(*) FROM forward_item f JOIN ingest_instance i
                              USING (sop_instance_uid)
                          WHERE i.node = %(n)s AND f.state = 'dead'),
                         (SELECT coalesce(sum(attempts - 1), 0) FROM forward_item f
                          JOIN ingest_instance i USING (sop_instance_uid)
                          WHERE i.node = %(n)s AND f.attempts > 1),
                         (SELECT extract(epoch FROM clock_timestamp() - min(received_at))
                          FROM ingest_instance WHERE node = %(n)s
                            AND state = ANY(%(waiting)s)),
                         (SELECT count(*) FROM forward_item f JOIN ingest_instance i
                              USING (sop_instance_uid)
                          WHERE i.node = %(n)s AND f.state = 'quarantined'),
                         (SELECT count(*) FROM ingest_instance
                          WHERE node = %(n)s AND state = 'unroutable'),
                         (SELECT count(*) FROM ingest_instance
                          WHERE node = %(n)s AND state = 'missing')""",
                    {"n": self.node, "waiting": list(WAITING_INSTANCE_STATES)},
                ).fetchone()
                histograms = list(stage_histograms(conn, self.node))
                lanes: dict[int, int] = dict(
                    conn.execute(
                        """SELECT f.lane_rank, count(*) FROM forward_item f
                           JOIN ingest_instance i USING (sop_instance_uid)
                           WHERE i.node = %s AND f.state IN ('pending', 'sent')
                           GROUP BY 1""",
                        (self.node,),
                    ).fetchall()
                )
        except Exception as exc:
            LOGGER.warning("metrics: database unavailable (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        assert row is not None
        labels = ["node"]
        for name, doc, value in (
            ("radiogate_forwarded_instances", "Instance forwards sent (per destination)", row[0]),
            ("radiogate_confirmed_instances", "Instance forwards confirmed", row[1]),
            ("radiogate_failed_instances", "Instance forwards failed permanently", row[2]),
            ("radiogate_forward_retries", "Forward attempts beyond the first", row[3]),
        ):
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric([self.node], float(value))
            yield c
        depth = GaugeMetricFamily(
            "radiogate_queue_depth",
            "Forwards waiting for a destination (pending or sent, not confirmed) per lane",
            labels=["node", "lane"],
        )
        for rank, lane in ((0, "critical"), (1, "urgent"), (2, "routine")):
            depth.add_metric([self.node, lane], float(lanes.get(rank, 0)))
        yield depth
        oldest = GaugeMetricFamily(
            "radiogate_oldest_unconfirmed_seconds",
            "Age of the oldest instance the pipeline still works on (received or routed; held,"
            " cancelled and unroutable ones wait for a person and are counted apart)",
            labels=labels,
        )
        oldest.add_metric([self.node], float(row[4] or 0.0))
        yield oldest
        held = GaugeMetricFamily(
            "radiogate_quarantined_instances",
            "Forwards held back by de-identification (burned-in text, failures) for an admin",
            labels=labels,
        )
        held.add_metric([self.node], float(row[5]))
        yield held
        waiting = GaugeMetricFamily(
            "radiogate_forwards_waiting",
            "Forwards waiting for a destination (pending or sent, not confirmed)",
            labels=labels,
        )
        waiting.add_metric([self.node], float(sum(lanes.values())))
        yield waiting
        for_person = GaugeMetricFamily(
            "radiogate_forwards_held",
            "Forwards held for a person's decision, by kind (quarantined, dead)",
            labels=["node", "kind"],
        )
        for_person.add_metric([self.node, "quarantined"], float(row[5]))
        for_person.add_metric([self.node, "dead"], float(row[2]))
        yield for_person
        for name, doc, value in (
            ("radiogate_unroutable_instances", "Instances that matched no route", row[6]),
            ("radiogate_missing_instances", "Instances whose spool file was gone", row[7]),
        ):
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric([self.node], float(value))
            yield g
        yield from histograms
