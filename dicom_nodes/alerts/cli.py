"""``radiogate alert list|ack``: what was announced, to whom, and who acknowledged it.

Exit codes: 0 done; 1 the alert is unknown or was already acknowledged; 3 the database cannot
be reached.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

import psycopg

from config import Settings

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    alert = sub.add_parser("alert", help="alerts raised by triage: list, acknowledge")
    asub = alert.add_subparsers(dest="alert_command", required=True)
    listing = asub.add_parser("list", help="open alerts (--all: also acknowledged ones)")
    listing.add_argument("--all", action="store_true")
    ack = asub.add_parser("ack", help="acknowledge an alert (stops its escalation; audited)")
    ack.add_argument("alert_id")
    ack.add_argument("--user", default=None, help="who acknowledges (default: your login)")


def run(args: argparse.Namespace, settings: Settings, dsn: str) -> int:
    from dicom_nodes.alerts.outbox import acknowledge, list_alerts
    from dicom_nodes.audit_events import pipeline_sink

    try:
        conn = psycopg.connect(dsn, connect_timeout=5)
    except psycopg.OperationalError as exc:
        print(f"radiogate: cannot reach the database: {type(exc).__name__}", file=sys.stderr)
        return 3
    with conn:
        if args.alert_command == "list":
            rows = list_alerts(conn, open_only=not args.all)
            print("\t".join(("alert", "state", "category", "kind", "finding", "level",
                             "delivered to", "raised", "acknowledged by", "at")))  # fmt: skip
            for row in rows:
                print("\t".join("-" if v is None or v == "" else str(v) for v in row))
            print(f"{len(rows)} alerts", file=sys.stderr)
            return 0
        sink = pipeline_sink(settings.node.name, settings.scp.ae_title)
        result = acknowledge(conn, sink, args.alert_id, args.user or getpass.getuser())
    print({"acknowledged": "acknowledged", "already": "already acknowledged",
           "unknown": "unknown alert"}[result])  # fmt: skip
    return 0 if result == "acknowledged" else 1
