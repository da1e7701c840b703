"""Pipeline commands: ``radiogate worker|status|route|job|quarantine|study``.

Admin commands issue state-model events (:mod:`dicom_nodes.pipeline.admin`), never SQL of their
own. Exit codes: 0 done (for ``route test``: a route matches); 1 something asked for was not
done (unknown UIDs, rows in another state, no route matches); 2 usage or unreadable input;
3 the database cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import psycopg

from audit import AuditEventError, Step, Study
from audit.identifiers import check_uid
from config import Settings
from dicom_nodes.pipeline.pools import Jobs

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("worker", "study", "route", "job", "status", "quarantine", "spool", "analyse")
EXIT_NOT_DONE, EXIT_USAGE, EXIT_DATABASE, EXIT_NOT_AUTHORISED = 1, 2, 3, 8


def _user(p: argparse.ArgumentParser) -> None:
    """Privileged: run as the admin's own PostgreSQL role (``database.admin_dsn``), which must be
    a member of ``radiogate_admin``; that role is the user in the audit trail."""
    p.epilog = (
        "Runs as your own PostgreSQL role (database.admin_dsn), which must be a member of "
        "radiogate_admin; the audit trail records that role."
    )


_STEPS = {
    ("study", None): Step.STUDY_COMPLETED,
    ("route", None): Step.REROUTED,
    ("job", "retry"): Step.RETRIED,
    ("job", "cancel"): Step.CANCELLED,
    ("quarantine", None): Step.QUARANTINE_RELEASED,
    ("analyse", None): Step.ANALYSIS_REQUESTED,
}
"""The step each privileged command performs (named in the audit event of a refusal)."""


def _as_admin(
    args: argparse.Namespace, settings: Settings, dsn: str
) -> tuple[psycopg.Connection[Any] | None, str, int]:
    """The admin's own authenticated connection and role, or (None, "", exit status) after a
    refusal (audited through the node's connection *dsn*)."""
    from dicom_nodes.admin_identity import (
        NotAuthorised,
        Privilege,
        admin_dsn,
        identify,
        record_refusal,
    )

    try:
        conn = psycopg.connect(admin_dsn(settings), connect_timeout=5)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        print(f"radiogate: cannot connect as you (database.admin_dsn): {reason}", file=sys.stderr)
        return None, "", EXIT_DATABASE
    try:
        identity = identify(conn, Privilege.ADMIN)
    except AuditEventError as exc:
        conn.close()
        print(f"radiogate: {exc}", file=sys.stderr)
        return None, "", EXIT_USAGE
    if identity.authorised:
        conn.commit()
        return conn, identity.user, 0
    conn.close()
    step = _STEPS.get((args.command, getattr(args, "job_command", None)), Step.CANCELLED)
    uid = getattr(args, "uid", None)
    objects = [Study(uid)] if uid and _is_uid(uid) else []
    seq = record_refusal(dsn, settings, identity, step, objects)
    print(f"radiogate: {NotAuthorised(identity)} (audit event {seq})", file=sys.stderr)
    return None, "", EXIT_NOT_AUTHORISED


def _is_uid(value: str) -> bool:
    try:
        check_uid(value)
    except AuditEventError:
        return False
    return True


def add_parsers(sub: Any) -> None:
    worker = sub.add_parser(
        "worker", help="run pipeline workers for this node (routing, forwarding)"
    )
    worker.add_argument(
        "--jobs",
        choices=[j.value for j in Jobs],
        default=Jobs.ALL.value,
        help="which jobs: all (default), pipeline (all but analysis) or analysis (only analysis, "
        "in the idle class on analysis.cpus CPUs: what radiogate run starts by default)",
    )
    study = sub.add_parser("study", help="study administration")
    ssub = study.add_subparsers(dest="study_command", required=True)
    complete = ssub.add_parser("complete", help="mark a study complete now (audited)")
    complete.add_argument("uid", help="Study Instance UID")
    _user(complete)
    show = ssub.add_parser(
        "show", help="a study's stages: received, series complete, triaged, alerts (JSON)"
    )
    show.add_argument("uid", help="Study Instance UID (as received)")
    route = sub.add_parser("route", help="routes")
    rsub = route.add_subparsers(dest="route_command", required=True)
    rtest = rsub.add_parser(
        "test", help="which route, lane and destinations a file would get, and why"
    )
    rtest.add_argument("file", type=Path)
    rtest.add_argument("--calling-ae", default="", help="calling AE title to assume")
    rtest.add_argument("--called-ae", default="", help="called AE title to assume")
    rretry = rsub.add_parser(
        "retry", help="route unroutable instances again (after fixing the routes)"
    )
    rretry.add_argument("uids", nargs="*", help="SOP Instance UIDs (default: every unroutable)")
    _user(rretry)
    job = sub.add_parser("job", help="forwarding queue administration")
    jsub = job.add_subparsers(dest="job_command", required=True)
    jlist = jsub.add_parser("list", help="list forward items that are failing or dead")
    jlist.add_argument("--all", action="store_true", help="also pending and sent items")
    for name, text in (
        ("retry", "re-queue dead items (named ones: dead or cancelled) now"),
        ("cancel", "give up on items (named ones: waiting, dead or quarantined)"),
    ):
        p = jsub.add_parser(name, help=text)
        p.add_argument("uids", nargs="*", help="SOP Instance UIDs (default: every dead item)")
        p.add_argument("--destination", default=None)
        _user(p)
        if name == "cancel":
            p.add_argument(
                "--waiting",
                action="store_true",
                help="with --destination and no UIDs: also its pending and sent items "
                "(give up on a destination)",
            )
    sub.add_parser("status", help="summary of queues, lanes and the oldest waiting instance")
    analyse = sub.add_parser(
        "analyse", help="run a study's analyses again (or start one on its CT series)"
    )
    analyse.add_argument("uid", help="Study Instance UID (as received)")
    analyse.add_argument("--pipeline", default="chest-ct", help="when none ran yet (chest-ct)")
    _user(analyse)
    spool = sub.add_parser("spool", help="spool administration")
    spsub = spool.add_subparsers(dest="spool_command", required=True)
    purge = spsub.add_parser(
        "purge",
        help="delete the spool copies of instances that waited for nobody longer than the "
        "retention (held, cancelled, unroutable; audited)",
    )
    purge.add_argument(
        "--older-than", type=float, default=None, metavar="DAYS",
        help="instead of pipeline.retention_days",
    )  # fmt: skip
    purge.add_argument("--dry-run", action="store_true", help="only count them")
    quarantine = sub.add_parser(
        "quarantine", help="instances held back (de-identification, re-sends over archived copies)"
    )
    qsub = quarantine.add_subparsers(dest="quarantine_command", required=True)
    qsub.add_parser("list", help="list quarantined items (UID, destination, profile, reason)")
    qshow = qsub.add_parser(
        "show", help="write a PNG of a held image (every frame) and print why it is held"
    )
    qshow.add_argument("uid", help="SOP Instance UID")
    qshow.add_argument(
        "--output", type=Path, default=None, help="PNG file to write (default: ./<UID>.png)"
    )
    release = qsub.add_parser(
        "release",
        help="after reviewing the pixels: de-identify and forward them anyway (audited)",
    )
    release.add_argument("uids", nargs="+", help="SOP Instance UIDs")
    _user(release)


def run(args: argparse.Namespace, settings: Settings, dsn: str) -> int:
    if args.command == "worker":
        from dicom_nodes.pipeline.runner import run_worker

        return run_worker(settings, dsn, jobs=Jobs(args.jobs))
    if args.command == "route" and args.route_command == "test":
        return _route_test(args, settings)
    try:
        conn = psycopg.connect(dsn, connect_timeout=5)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        print(f"radiogate: cannot reach the database: {reason}", file=sys.stderr)
        return EXIT_DATABASE
    with conn:
        if args.command == "status":
            from dicom_nodes.pipeline.status import status

            print(json.dumps(status(conn, settings.node.name), indent=2, default=str))
            return 0
        if args.command == "job" and args.job_command == "list":
            return _job_list(conn, args.all)
        if args.command == "quarantine" and args.quarantine_command == "list":
            return _quarantine_list(conn)
        if args.command == "quarantine" and args.quarantine_command == "show":
            return _quarantine_show(conn, args.uid, args.output)
        if args.command == "analyse":
            from dicom_nodes.audit_events import pipeline_sink
            from dicom_nodes.pipeline.analyse import request_analysis

            admin_conn, user, refused = _as_admin(args, settings, dsn)
            if admin_conn is None:
                return refused
            with admin_conn:
                count = request_analysis(
                    admin_conn, pipeline_sink(settings.node.name, settings.scp.ae_title),
                    args.uid, pipeline=args.pipeline, node=settings.node.name, user=user,
                )  # fmt: skip
            print(f"{count} analyses requested")
            return 0 if count else EXIT_NOT_DONE
        if args.command == "spool":
            return _spool_purge(conn, args, settings, dsn)
        if args.command == "study" and args.study_command == "show":
            from dicom_nodes.pipeline.timeline import study_timeline

            timeline = study_timeline(conn, args.uid)
            if timeline is None:
                print(f"{args.uid}: unknown study", file=sys.stderr)
                return EXIT_NOT_DONE
            print(json.dumps(timeline, indent=2))
            return 0
    admin_conn, user, refused = _as_admin(args, settings, dsn)
    if admin_conn is None:
        return refused
    with admin_conn:
        return _admin(admin_conn, args, settings, user)


def _admin(
    conn: psycopg.Connection[Any], args: argparse.Namespace, settings: Settings, user: str
) -> int:
    from dicom_nodes.audit_events import pipeline_sink
    from dicom_nodes.pipeline import admin

    sink = pipeline_sink(settings.node.name, settings.scp.ae_title)
    if args.command == "study":
        outcome = admin.complete_study(conn, sink, args.uid, user)
    elif args.command == "route":
        outcome = admin.reroute(conn, sink, args.uids, user)
    elif args.command == "job" and args.job_command == "retry":
        outcome = admin.retry(conn, sink, args.uids, args.destination, user)
    elif args.command == "job":
        if args.waiting and (args.uids or not args.destination):
            print("radiogate: --waiting needs --destination and no UIDs", file=sys.stderr)
            return EXIT_USAGE
        outcome = admin.cancel(conn, sink, args.uids, args.destination, user, waiting=args.waiting)
    else:
        from dicom_nodes.deid.secrets import load_vault_key
        from dicom_nodes.deid.step import DeidStep
        from dicom_nodes.deid.vault import Vault

        outcome = admin.release_quarantine(
            conn, sink, args.uids, user,
            step=DeidStep.from_settings(settings), vault=Vault(load_vault_key(settings)),
        )  # fmt: skip
    done = ", ".join(f"{count} {what}" for what, count in outcome.changed.items())
    print(done or "nothing changed")
    for uid, why in outcome.skipped:
        print(f"{uid}: not changed ({why})", file=sys.stderr)
    for uid in outcome.unknown:
        print(f"{uid}: unknown", file=sys.stderr)
    asked = bool(getattr(args, "uids", None) or getattr(args, "uid", None))
    if outcome.skipped or outcome.unknown or (asked and outcome.total == 0):
        return EXIT_NOT_DONE
    return 0


def _route_test(args: argparse.Namespace, settings: Settings) -> int:
    from pydicom.errors import InvalidDicomError

    from dicom_nodes.pipeline.route import plan_route
    from dicom_nodes.pipeline.routes import explain, facts_from_file, select_route, tags_needed

    needed = tags_needed(settings.routes, settings.lane_rules)
    try:
        facts = facts_from_file(args.file, args.calling_ae, args.called_ae, needed)
    except (OSError, ValueError, InvalidDicomError) as exc:
        print(f"radiogate: cannot read {args.file} as DICOM: {type(exc).__name__}: {exc}",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    route = select_route(settings.routes, facts)
    print(f"facts: calling={facts.calling_ae or '-'} called={facts.called_ae or '-'} "
          f"modality={facts.modality or '-'} sop_class={facts.sop_class_uid or '-'}")  # fmt: skip
    for candidate in settings.routes:
        why = explain(candidate.match, facts)
        print(f"  route {candidate.name}: {'matches' if why is None else why}")
        if candidate is route:
            break
    if route is None:
        print("no route matches: the instance would be kept as unroutable")
        return EXIT_NOT_DONE
    profiles = {p.name for p in settings.deid.profiles}
    plan = plan_route(
        facts, route, settings.lane_rules,
        destinations={d.name for d in settings.destinations}, profiles=profiles,
    )  # fmt: skip
    print(f"route: {plan.route}\nlane: {plan.lane.value}\nsteps: {', '.join(route.steps)}")
    for delivery in plan.deliveries:
        version = f"de-identified ({delivery.profile})" if delivery.profile else "as received"
        held = " - held: profile not available" if delivery.profile in plan.unavailable else ""
        print(f"  -> {delivery.destination}: {version}{held}")
    for warning in plan.warnings:
        print(f"warning: {warning}")
    if plan.complete_study:
        print("the study is complete as soon as this instance arrives")
    return 0


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    print("\t".join(header))
    for row in rows:
        print("\t".join("-" if v is None or v == "" else str(v) for v in row))


def _job_list(conn: psycopg.Connection[Any], everything: bool) -> int:
    states = ["dead", "pending", "sent"] if everything else ["dead"]
    rows = conn.execute(
        """SELECT sop_instance_uid, destination, state, attempts,
                  CASE WHEN last_status IS NULL THEN NULL
                       ELSE '0x' || upper(lpad(to_hex(last_status), 4, '0')) END,
                  nullif(hold_reason, ''), left(last_error, 120), next_attempt_at
           FROM forward_item WHERE state = ANY(%s) ORDER BY created_at LIMIT 1000""",
        (states,),
    ).fetchall()
    _table(("SOP Instance UID", "destination", "state", "attempts", "last status", "reason",
            "last error", "next attempt"), rows)  # fmt: skip
    print(f"{len(rows)} items", file=sys.stderr)
    return 0


def _spool_purge(
    conn: psycopg.Connection[Any], args: argparse.Namespace, settings: Settings, dsn: str
) -> int:
    """``radiogate spool purge``: what the worker's housekeeping does after the retention."""
    import dataclasses

    from psycopg_pool import ConnectionPool

    from dicom_nodes.audit_events import pipeline_sink
    from dicom_nodes.pipeline.context import PipelineContext
    from dicom_nodes.pipeline.release import purge_expired

    days = settings.pipeline.retention_days if args.older_than is None else args.older_than
    if days <= 0:
        print("radiogate: retention is 0 (keep forever): give --older-than DAYS", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        (count,) = conn.execute(
            """SELECT count(*) FROM ingest_instance
               WHERE node = %s AND state IN ('held', 'cancelled', 'unroutable')
                 AND state_changed_at < clock_timestamp() - make_interval(secs => %s)""",
            (settings.node.name, days * 86400.0),
        ).fetchone() or (0,)
        print(f"{count} instances would be purged")
        return 0
    with ConnectionPool(dsn, min_size=1, max_size=1, open=True) as pool:
        ctx = PipelineContext(
            node=settings.node.name, pool=pool, routes=[], lane_rules=[], destinations={},
            settings=dataclasses.replace(settings.pipeline, retention_days=days),
            audit=pipeline_sink(settings.node.name, settings.scp.ae_title),
        )  # fmt: skip
        total = 0
        while purged := purge_expired(ctx):
            total += purged
    print(f"{total} instances purged")
    return 0


def _quarantine_show(conn: psycopg.Connection[Any], uid: str, output: Path | None) -> int:
    """The held image as a PNG for review, the reasons it is held, and its header fields."""
    from dicom_nodes.deid.preview import write_preview

    rows = conn.execute(
        """SELECT f.destination, f.profile, f.hold_reason, i.spool_path
           FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
           WHERE f.sop_instance_uid = %s AND f.state = 'quarantined'
           ORDER BY f.destination""",
        (uid,),
    ).fetchall()
    if not rows:
        print(f"{uid}: not quarantined (see `radiogate quarantine list`)", file=sys.stderr)
        return EXIT_NOT_DONE
    target = output or Path(f"{uid}.png")
    try:
        frames, fields = write_preview(Path(rows[0][3]), target)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"radiogate: cannot show {uid}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_NOT_DONE
    for destination, profile, reason, _path in rows:
        print(f"held for {destination} (profile {profile or '-'}): {reason or '-'}")
    for name, value in fields.items():
        print(f"{name}: {value}")
    print(f"{frames} frame(s) written to {target}")
    return 0


def _quarantine_list(conn: psycopg.Connection[Any]) -> int:
    rows = conn.execute(
        """SELECT f.sop_instance_uid, f.destination, nullif(f.profile, ''), f.hold_reason,
                  i.sop_class_uid, i.study_instance_uid, f.state_changed_at
           FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
           WHERE f.state = 'quarantined' ORDER BY f.created_at LIMIT 1000"""
    ).fetchall()
    _table(("SOP Instance UID", "destination", "profile", "reason", "SOP Class UID",
            "Study Instance UID", "since"), rows)  # fmt: skip
    print(f"{len(rows)} quarantined items", file=sys.stderr)
    return 0
