"""Several workers of one node: exactly one exports the node's PostgreSQL figures (no double
counting in a sum over workers); when it stops, another takes over."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from psycopg_pool import ConnectionPool

from dicom_nodes.pipeline.metrics import ExporterLock, PipelineCollector

pytestmark = pytest.mark.integration


def _text(collector: PipelineCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_one_exporter_per_node(fresh_dsn: str) -> None:
    with ConnectionPool(fresh_dsn, min_size=1, max_size=2) as pool:
        first, second, other = (ExporterLock(fresh_dsn, n) for n in ("n1", "n1", "n2"))
        a = PipelineCollector(pool, "n1", first)
        b = PipelineCollector(pool, "n1", second)
        c = PipelineCollector(pool, "n2", other)
        text_a, text_b, text_c = _text(a), _text(b), _text(c)
        assert 'radiogate_node_metrics_exporter{node="n1"} 1.0' in text_a
        assert "radiogate_oldest_unconfirmed_seconds" in text_a
        assert 'radiogate_node_metrics_exporter{node="n1"} 0.0' in text_b
        assert "radiogate_oldest_unconfirmed_seconds" not in text_b
        assert "radiogate_database_up 1.0" in text_b
        assert 'radiogate_node_metrics_exporter{node="n2"} 1.0' in text_c  # its own node
        # The exporting worker stops (its session ends): the other one takes over.
        first.close()
        assert 'radiogate_node_metrics_exporter{node="n1"} 1.0' in _text(b)
        assert 'radiogate_node_metrics_exporter{node="n1"} 0.0' in _text(a)
        for lock in (first, second, other):
            lock.close()
