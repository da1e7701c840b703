"""Service start and stop as audit events, with the hash of the effective configuration.

Every Radiogate service records, when it starts, an Application Start event naming the BLAKE3
hash of its effective configuration (:func:`config_hash`: the validated settings as canonical
JSON, environment overrides included), and a config-changed Security Alert when that hash
differs from the one it last started with on this node (``service_config``); when it stops,
an Application Stop event. Recording is best effort on the way down (the database may be the
reason for the stop) and never keeps a service from starting: a failure is logged.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import blake3
import psycopg

import audit
from config import Settings, settings_to_dict
from dicom_nodes.audit_events import application_event, config_changed

__all__ = ["config_hash", "record_start", "record_stop"]

LOGGER = logging.getLogger(__name__)


def config_hash(settings: Settings) -> str:
    """``blake3:<hex>`` of the effective configuration as canonical JSON."""
    text = json.dumps(settings_to_dict(settings), sort_keys=True, separators=(",", ":"))
    return "blake3:" + blake3.blake3(text.encode()).hexdigest()


def record_start(dsn: str, settings: Settings, service: str, timeout: float = 5.0) -> bool:
    """Record that *service* started (and whether its configuration changed)."""
    node, current = settings.node.name, config_hash(settings)
    try:
        with psycopg.connect(dsn, connect_timeout=max(1, int(timeout))) as conn:
            previous = _swap_hash(conn, node, service, current)
            events = [application_event(node, service, started=True, config_hash=current)]
            if previous != current:
                events.insert(0, config_changed(node, service, previous, current))
            audit.enqueue_many(conn, events)
    except (psycopg.Error, OSError) as exc:
        LOGGER.warning("start of %s not recorded in the audit trail: %s", service,
                       type(exc).__name__)  # fmt: skip
        return False
    return True


def record_stop(dsn: str, settings: Settings, service: str, timeout: float = 3.0) -> bool:
    """Record that *service* stopped (best effort)."""
    event = application_event(
        settings.node.name, service, started=False, config_hash=config_hash(settings)
    )
    try:
        with psycopg.connect(dsn, connect_timeout=max(1, int(timeout))) as conn:
            audit.enqueue(conn, event)
    except (psycopg.Error, OSError) as exc:
        LOGGER.warning("stop of %s not recorded in the audit trail: %s", service,
                       type(exc).__name__)  # fmt: skip
        return False
    return True


def _swap_hash(conn: psycopg.Connection[Any], node: str, service: str, current: str) -> str | None:
    row = conn.execute(
        "SELECT config_hash FROM service_config WHERE node = %s AND service = %s FOR UPDATE",
        (node, service),
    ).fetchone()
    conn.execute(
        """INSERT INTO service_config (node, service, config_hash) VALUES (%s, %s, %s)
           ON CONFLICT (node, service) DO UPDATE
               SET config_hash = EXCLUDED.config_hash, started_at = clock_timestamp()""",
        (node, service, current),
    )
    return None if row is None else str(row[0])
