"""Pipeline commands: ``radiogate worker|study|route|job|status``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import psycopg

from config import Settings

__all__ = ["add_parsers", "run"]

COMMANDS = ("worker", "study", "route", "job", "status", "quarantine")


def add_parsers(sub: Any) -> None:
    sub.add_parser("worker", help="run pipeline workers for this node (routing, forwarding)")
    study = sub.add_parser("study", help="study administration")
    ssub = study.add_subparsers(dest="study_command", required=True)
    complete = ssub.add_parser("complete", help="mark a study complete now (audited)")
    complete.add_argument("uid", help="Study Instance UID")
    complete.add_argument("--user", default="admin", help="who completes it (for the audit trail)")
    route = sub.add_parser("route", help="routes")
    rsub = route.add_subparsers(dest="route_command", required=True)
    rtest = rsub.add_parser("test", help="print which route and lane a file would get")
    rtest.add_argument("file", type=Path)
    rtest.add_argument("--calling-ae", default="", help="calling AE title to assume")
    rtest.add_argument("--called-ae", default="", help="called AE title to assume")
    job = sub.add_parser("job", help="forwarding queue administration")
    jsub = job.add_subparsers(dest="job_command", required=True)
    jlist = jsub.add_parser("list", help="list forwarding items that are failing or dead")
    jlist.add_argument("--all", action="store_true", help="also pending items")
    for name, text in (
        ("retry", "re-queue dead or cancelled items now"),
        ("cancel", "give up on pending or dead items"),
    ):
        p = jsub.add_parser(name, help=text)
        p.add_argument("uids", nargs="*", help="SOP Instance UIDs (default: every dead item)")
        p.add_argument("--destination", default=None)
    sub.add_parser("status", help="summary of queues, lanes and the oldest unconfirmed instance")
    quarantine = sub.add_parser(
        "quarantine", help="instances held back by de-identification (burned-in text, failures)"
    )
    qsub = quarantine.add_subparsers(dest="quarantine_command", required=True)
    qsub.add_parser("list", help="list quarantined instances (UIDs, destination, profile, reason)")
    release = qsub.add_parser(
        "release",
        help="after reviewing the pixels: de-identify and forward them anyway (audited)",
    )
    release.add_argument("uids", nargs="+", help="SOP Instance UIDs")
    release.add_argument("--user", required=True, help="who reviewed them (for the audit trail)")


def run(args: argparse.Namespace, settings: Settings, dsn: str) -> int:
    if args.command == "worker":
        from dicom_nodes.pipeline.runner import run_worker

        return run_worker(settings, dsn)
    if args.command == "route":
        return _route_test(args, settings)
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        if args.command == "study":
            return _study_complete(conn, args, settings)
        if args.command == "job":
            return _job(conn, args)
        if args.command == "status":
            print(json.dumps(status(conn, settings.node.name), indent=2, default=str))
        if args.command == "quarantine":
            return _quarantine(conn, args, settings)
            return 0
    return 2


def _route_test(args: argparse.Namespace, settings: Settings) -> int:
    from dicom_nodes.pipeline.routes import (
        facts_from_file,
        lane_for,
        select_route,
        tags_needed,
    )

    needed = tags_needed(settings.routes, settings.lane_rules)
    facts = facts_from_file(args.file, args.calling_ae, args.called_ae, needed)
    route = select_route(settings.routes, facts)
    if route is None:
        print("no route matches")
        return 1
    lane = lane_for(route, settings.lane_rules, facts)
    print(f"route: {route.name}\nlane: {lane.value}\nsteps: {', '.join(route.steps)}")
    return 0


def _study_complete(
    conn: psycopg.Connection[Any], args: argparse.Namespace, settings: Settings
) -> int:
    import audit
    from dicom_nodes.audit_events import pipeline_event
    from dicom_nodes.pipeline import store

    with conn.transaction():
        done = store.complete_study(conn, args.uid, f"admin:{args.user}")
        if done:
            audit.enqueue(
                conn,
                pipeline_event(
                    settings.node.name,
                    settings.scp.ae_title,
                    "study-complete",
                    {"study_instance_uid": args.uid, "reason": "admin"},
                    user=args.user,
                ),
            )
    print("study completed" if done else "study not found or already complete")
    return 0 if done else 1


def _job(conn: psycopg.Connection[Any], args: argparse.Namespace) -> int:
    if args.job_command == "list":
        states = ("dead", "pending") if args.all else ("dead",)
        rows = conn.execute(
            """SELECT sop_instance_uid, destination, state, attempts, last_status, last_error,
                      next_attempt_at
               FROM forward_item WHERE state = ANY(%s) ORDER BY created_at LIMIT 1000""",
            (list(states),),
        ).fetchall()
        for r in rows:
            status = "-" if r[4] is None else f"0x{int(r[4]):04X}"
            print(f"{r[0]}\t{r[1]}\t{r[2]}\tattempts={r[3]}\tstatus={status}\t{r[5]}")
        print(f"{len(rows)} items", file=sys.stderr)
        return 0
    target = "pending" if args.job_command == "retry" else "cancelled"
    source = (
        ("dead", "cancelled") if args.job_command == "retry" else ("dead", "pending", "quarantined")
    )
    with conn.transaction():
        rows = conn.execute(
            """UPDATE forward_item SET state = %s, next_attempt_at = clock_timestamp()
               WHERE state = ANY(%s) AND (cardinality(%s::text[]) = 0 OR sop_instance_uid = ANY(%s))
                 AND (%s::text IS NULL OR destination = %s)
               RETURNING sop_instance_uid""",
            (target, list(source), args.uids, args.uids, args.destination, args.destination),
        ).fetchall()
    print(f"{len(rows)} items {'re-queued' if target == 'pending' else 'cancelled'}")
    return 0


def _quarantine(conn: psycopg.Connection[Any], args: argparse.Namespace, settings: Settings) -> int:
    """List quarantined items, or release reviewed ones: de-identify without the burned-in
    hold, record the copy and the vault entries, re-queue, audit who decided."""
    if args.quarantine_command == "list":
        rows = conn.execute(
            """SELECT f.sop_instance_uid, f.destination, f.profile, i.sop_class_uid,
                      i.study_instance_uid, f.created_at
               FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
               WHERE f.state = 'quarantined' ORDER BY f.created_at LIMIT 1000"""
        ).fetchall()
        for r in rows:
            print(f"{r[0]}\t{r[1]}\tprofile={r[2]}\tclass={r[3]}\tstudy={r[4]}\tsince={r[5]}")
        print(f"{len(rows)} quarantined items", file=sys.stderr)
        return 0
    import audit as audit_trail
    from dicom_nodes.audit_events import pipeline_event
    from dicom_nodes.deid.secrets import load_vault_key
    from dicom_nodes.deid.step import DeidStep, Quarantine
    from dicom_nodes.deid.vault import Vault
    from dicom_nodes.pipeline import store

    step = DeidStep.from_settings(settings)
    vault = Vault(load_vault_key(settings))
    failed = 0
    with conn.transaction():
        rows = conn.execute(
            """SELECT f.sop_instance_uid, f.destination, f.profile, i.spool_path,
                      i.sop_class_uid, i.study_instance_uid
               FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
               WHERE f.state = 'quarantined' AND f.sop_instance_uid = ANY(%s)
               FOR UPDATE OF f""",
            (args.uids,),
        ).fetchall()
        made: dict[tuple[str, str], Any] = {}  # one copy per (instance, profile)
        for uid, destination, profile, path, sop_class, study in rows:
            first = (uid, profile) not in made
            if first:
                made[(uid, profile)] = (
                    step.apply(Path(path), profile, text_reviewed=True) if profile else None
                )
            outcome = made[(uid, profile)]
            if isinstance(outcome, Quarantine):
                print(f"{uid}: still not releasable ({outcome.reason})", file=sys.stderr)
                failed += 1
                continue
            if outcome is not None and first:
                store.record_deid_outputs(
                    conn,
                    [store.DeidOutput(uid, profile, outcome.spool_path,
                                      outcome.transfer_syntax_uid, outcome.size,
                                      "released after pixel review")],
                )  # fmt: skip
                vault.record(conn, outcome.vault)
            conn.execute(
                """UPDATE forward_item SET state = 'pending', next_attempt_at = clock_timestamp()
                   WHERE sop_instance_uid = %s AND destination = %s""",
                (uid, destination),
            )
            details = {"sop_instance_uid": uid, "sop_class_uid": sop_class,
                       "study_instance_uid": study, "destination": destination,
                       "reason": "released-after-review"}  # fmt: skip
            audit_trail.enqueue(
                conn,
                pipeline_event(
                    settings.node.name, settings.scp.ae_title, "quarantine-released", details,
                    user=args.user,
                ),
            )  # fmt: skip
        # The worker's housekeeping defers forwarding jobs for pending items.
    print(f"{len(rows) - failed} items released, {len(args.uids) - len(rows)} not quarantined")
    return 1 if failed else 0


def status(conn: psycopg.Connection[Any], node: str) -> dict[str, Any]:
    """Queue depths per lane, counts per state, oldest unconfirmed instance age (seconds)."""
    by_state = dict(
        conn.execute(
            "SELECT state, count(*) FROM ingest_instance WHERE node = %s GROUP BY state", (node,)
        ).fetchall()
    )
    lanes = dict(
        conn.execute(
            """SELECT CASE f.lane_rank WHEN 0 THEN 'critical' WHEN 1 THEN 'urgent'
                      ELSE 'routine' END, count(*)
               FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
               WHERE i.node = %s AND f.state = 'pending' GROUP BY 1""",
            (node,),
        ).fetchall()
    )
    forward = dict(
        conn.execute("SELECT state, count(*) FROM forward_item GROUP BY state").fetchall()
    )
    oldest = conn.execute(
        """SELECT extract(epoch FROM clock_timestamp() - min(received_at)) FROM ingest_instance
           WHERE node = %s AND state IN ('received', 'routed', 'forwarded')""",
        (node,),
    ).fetchone()
    studies = dict(conn.execute("SELECT state, count(*) FROM study GROUP BY state").fetchall())
    return {
        "node": node,
        "instances": by_state,
        "forward_items": forward,
        "queue_depth_by_lane": {
            lane: lanes.get(lane, 0) for lane in ("critical", "urgent", "routine")
        },
        "oldest_unconfirmed_seconds": float(oldest[0]) if oldest and oldest[0] is not None else 0.0,
        "studies": studies,
    }
