"""Prometheus metrics and health of a node, read from PostgreSQL at scrape time.

PostgreSQL is the one durable state, so counters derived from it are exact across any number of
SCP receiver processes and workers, survive restarts, and every process that serves
``/metrics`` reports the same figures.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool

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
                         (SELECT count(*) FROM ingest_instance WHERE node = %(n)s),
                         (SELECT count(*) FROM ingest_duplicate WHERE node = %(n)s),
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
                            AND state IN ('received', 'routed', 'forwarded')),
                         (SELECT count(*) FROM forward_item f JOIN ingest_instance i
                              USING (sop_instance_uid)
                          WHERE i.node = %(n)s AND f.state = 'quarantined')""",
                    {"n": self.node},
                ).fetchone()
                lanes: dict[int, int] = dict(
                    conn.execute(
                        """SELECT f.lane_rank, count(*) FROM forward_item f
                           JOIN ingest_instance i USING (sop_instance_uid)
                           WHERE i.node = %s AND f.state = 'pending' GROUP BY 1""",
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
            ("radiogate_received_instances", "Instances received and recorded", row[0]),
            ("radiogate_duplicate_instances", "Re-sent instances recorded as duplicates", row[1]),
            ("radiogate_forwarded_instances", "Instance forwards sent (per destination)", row[2]),
            ("radiogate_confirmed_instances", "Instance forwards confirmed", row[3]),
            ("radiogate_failed_instances", "Instance forwards failed permanently", row[4]),
            ("radiogate_forward_retries", "Forward attempts beyond the first", row[5]),
        ):
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric([self.node], float(value))
            yield c
        depth = GaugeMetricFamily(
            "radiogate_queue_depth", "Pending forwards per lane", labels=["node", "lane"]
        )
        for rank, lane in ((0, "critical"), (1, "urgent"), (2, "routine")):
            depth.add_metric([self.node, lane], float(lanes.get(rank, 0)))
        yield depth
        oldest = GaugeMetricFamily(
            "radiogate_oldest_unconfirmed_seconds",
            "Age of the oldest received instance not yet confirmed by every destination",
            labels=labels,
        )
        oldest.add_metric([self.node], float(row[6] or 0.0))
        yield oldest
        held = GaugeMetricFamily(
            "radiogate_quarantined_instances",
            "Forwards held back by de-identification (burned-in text, failures) for an admin",
            labels=labels,
        )
        held.add_metric([self.node], float(row[7]))
        yield held
