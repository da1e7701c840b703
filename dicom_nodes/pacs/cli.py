"""``radiogate pacs record``: the access recorder (started and supervised by ``radiogate run``)."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import Any

import psycopg

from config import Settings, data_path

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    pacs = sub.add_parser("pacs", help="the archive side: record the access journal")
    psub = pacs.add_subparsers(dest="pacs_command", required=True)
    rec = psub.add_parser("record", help="chain the archive's access journal into the audit log")
    rec.add_argument("--once", action="store_true", help="one pass, then exit")


def recorder_for(settings: Settings, dsn: str) -> Any:
    """The :class:`~dicom_nodes.pacs.recorder.Recorder` of these settings."""
    from dicom_nodes.pacs.arrivals import defer_arrival
    from dicom_nodes.pacs.recorder import OrthancResolver, Recorder
    from dicom_nodes.services.credentials import load_credentials

    o, p, node = settings.orthanc, settings.pacs, settings.node.name
    creds_path = data_path(settings, o.credentials_file)
    auth = load_credentials(creds_path).authorization if creds_path.exists() else None
    resolver = OrthancResolver(f"http://{o.host}:{o.http_port}", auth)
    route = next((r for r in settings.routes if r.name == p.archive_arrivals), None)
    on_stable = None
    if route is not None:
        steps = list(route.steps)

        def on_stable(conn: psycopg.Connection[Any], orthanc_id: str) -> None:
            defer_arrival(conn, node, orthanc_id, steps)

    return Recorder(dsn, Path(p.journal_dir), node, o.ae_title, resolver, on_stable)


def run(args: argparse.Namespace, settings: Settings, dsn: str) -> int:
    from dicom_nodes.lifecycle import record_start, record_stop

    recorder = recorder_for(settings, dsn)
    if args.once:
        print(f"{recorder.record_once()} journal lines recorded")
        return 0
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    recorded = record_start(dsn, settings, "pacs-recorder")
    try:
        recorder.run(settings.pacs.record_interval, stop.is_set)
    finally:
        if recorded:
            record_stop(dsn, settings, "pacs-recorder")
    return 0
