"""``radiogate audit ...``: key management, checkpoints, verification, search and ATNA export.

Commands (exit status 0 on success; ``verify`` exits 1 when the trail is damaged, 4 when the
keyring, the checkpoint file or the signing key is missing — never "damaged" for a file that
is simply not where the configuration says; see ``docs/cli.md``)::

    radiogate audit keygen                 create the checkpoint signing key and keyring entry
    radiogate audit rotate-key             replace it (old key endorses the new; old kept retired)
    radiogate audit checkpoint [--watch]   sign a checkpoint now (or keep sealing and signing)
    radiogate audit seal                   chain events enqueued by high-rate writers now
    radiogate audit verify                 recompute the chain, check signed checkpoints
    radiogate audit query [filters]        search (itself recorded as a 110112 Query event)
    radiogate audit export --atna          DICOM PS3.15 A.5 XML, to stdout/a file or syslog
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import getpass
import json
import os
import socket
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import psycopg

import config
from audit import (
    ActiveParticipant,
    AuditEvent,
    AuditEventError,
    AuditQuery,
    AuditSource,
    Checkpointer,
    EventAction,
    EventID,
    FileSink,
    Keyring,
    SigningKeyError,
    SigningKeyMissingError,
    Step,
    StoredEvent,
    SyslogSender,
    SyslogSink,
    append,
    audited_search,
    enqueue,
    generate_key,
    read_checkpoint_file,
    rotate_key,
    seal,
    search,
    to_atna_syslog,
    to_atna_xml,
    verify,
)
from audit.checkpoint import CheckpointFileError, CheckpointSink, load_checkpoints
from audit.identifiers import check_network_address
from audit.keys import Signer
from dicom_nodes.audit_events import audit_verified, key_rotated
from dicom_nodes.exitcodes import database_unavailable

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Add ``audit`` and its subcommands to the ``radiogate`` parser."""
    audit = subparsers.add_parser("audit", help="tamper-evident audit trail (DICOM PS3.15 A.5)")
    sub = audit.add_subparsers(dest="audit_command", required=True)
    sub.add_parser("keygen", help="create the checkpoint signing key (audit.signing_key)")
    sub.add_parser("rotate-key", help="replace the signing key; old public key stays in keyring")
    cp = sub.add_parser("checkpoint", help="sign a checkpoint of the chain's head now")
    cp.add_argument(
        "--watch",
        action="store_true",
        help="keep sealing enqueued events and signing every N events/T seconds",
    )
    sub.add_parser("seal", help="chain all enqueued (pending) events now")
    ver = sub.add_parser("verify", help="recompute the chain and check the signed checkpoints")
    ver.add_argument("--keyring", help="keyring file (default: audit.keyring)")
    ver.add_argument(
        "--checkpoint-file",
        action="append",
        help="external checkpoint file to check (repeatable; default: audit.checkpoint_file)",
    )
    ver.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="processes recomputing long chains (default: CPU cores, at most 4)",
    )
    q = sub.add_parser("query", help="search events (recorded as a 110112 Query event)")
    _filters(q)
    q.add_argument("--format", choices=("table", "jsonl", "csv"), default="table")
    exp = sub.add_parser("export", help="export events as DICOM PS3.15 A.5 (ATNA) XML messages")
    exp.add_argument("--atna", action="store_true", required=True, help="ATNA XML (required)")
    _filters(exp)
    exp.add_argument("--output", help="write to this file instead of stdout (one message a line)")
    exp.add_argument(
        "--syslog", action="store_true", help="send as RFC 5424 syslog to audit.syslog_host"
    )


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", help="Study Instance UID")
    p.add_argument("--series", help="Series Instance UID")
    p.add_argument("--sop", help="SOP Instance UID")
    p.add_argument("--patient", help="pseudonymous patient ID")
    p.add_argument("--ae", help="AE title of a participant")
    p.add_argument("--user", help="user ID of a participant")
    p.add_argument("--event", help="event ID code or name, e.g. 110104 or query")
    p.add_argument("--step", help="Radiogate step, e.g. received, forwarded")
    p.add_argument("--since", help="from this time (ISO 8601; no zone = UTC)")
    p.add_argument("--until", help="before this time (ISO 8601; no zone = UTC)")
    p.add_argument("--limit", type=int, help="at most this many events")
    p.add_argument("--as-user", help="your user ID recorded in the audit event (default: login)")


def _time(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    t = dt.datetime.fromisoformat(value)
    return t if t.utcoffset() is not None else t.replace(tzinfo=dt.UTC)


def _query(args: argparse.Namespace) -> AuditQuery:
    return AuditQuery(
        study_uid=args.study,
        series_uid=args.series,
        sop_uid=args.sop,
        patient=args.patient,
        ae_title=args.ae,
        user=args.user,
        event_id=EventID(args.event) if args.event else None,
        step=Step(args.step) if args.step else None,
        since=_time(args.since),
        until=_time(args.until),
        limit=args.limit,
    )


def _requestor(args: argparse.Namespace) -> ActiveParticipant:
    address: str | None
    try:
        address = check_network_address(socket.gethostname())
    except AuditEventError:
        address = None
    return ActiveParticipant(args.as_user or getpass.getuser(), True, None, address)


def _user() -> str:
    return getpass.getuser()


def _record(settings: config.Settings, event: AuditEvent) -> None:
    """Append an event about the audit trail itself (security configuration, verification);
    a database that cannot take it is said, not hidden."""
    try:
        with psycopg.connect(_dsn(settings), connect_timeout=5) as conn:
            enqueue(conn, event)
    except psycopg.OperationalError as exc:
        print(f"warning: {event.step.value} not recorded in the audit trail: "
              f"{type(exc).__name__}", file=sys.stderr)  # fmt: skip


def _source(settings: config.Settings) -> AuditSource:
    return AuditSource(settings.node.name, settings.audit.site_id or None)


def _dsn(settings: config.Settings) -> str:
    from dicom_nodes.services.stack import database_dsn

    return database_dsn(settings)


def _sinks(settings: config.Settings) -> list[CheckpointSink]:
    a = settings.audit
    sinks: list[CheckpointSink] = [FileSink(config.data_path(settings, a.checkpoint_file))]
    if a.syslog_host:
        sender = SyslogSender(a.syslog_host, a.syslog_port, a.syslog_protocol.value)
        sinks.append(SyslogSink(sender))
    return sinks


def _checkpointer(settings: config.Settings, signer: Signer) -> Checkpointer:
    a = settings.audit
    return Checkpointer(
        signer, _sinks(settings), every=a.checkpoint_every, seconds=a.checkpoint_seconds
    )


class MissingFileError(RuntimeError):
    """A file ``audit`` needs does not exist (exit status 4; the message names its path)."""


def run(args: argparse.Namespace, settings: config.Settings) -> int:
    """Run ``radiogate audit <command>``; return the exit status."""
    try:
        return _run(args, settings)
    except (MissingFileError, SigningKeyMissingError) as exc:
        print(f"radiogate audit: {exc}", file=sys.stderr)
        return 4
    except (SigningKeyError, CheckpointFileError, AuditEventError) as exc:
        print(f"radiogate audit: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"radiogate audit: invalid argument: {exc}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        print(f"radiogate audit: {database_unavailable(exc)}", file=sys.stderr)
        return 3


def _run(args: argparse.Namespace, settings: config.Settings) -> int:
    a = settings.audit
    key_path = config.data_path(settings, a.signing_key)
    keyring_path = config.data_path(settings, a.keyring)
    cmd = args.audit_command
    if cmd == "keygen":
        signer = generate_key(key_path, keyring_path)
        print(f"signing key {signer.key_id} written to {key_path}; public key in {keyring_path}")
        return 0
    if cmd == "rotate-key":
        return _rotate(settings, key_path, keyring_path)
    if cmd == "checkpoint":
        checkpointer = _checkpointer(settings, Signer.load(key_path))
        if args.watch:
            from dicom_nodes.lifecycle import record_start, record_stop

            stop = threading.Event()
            record_start(_dsn(settings), settings, "sealer")
            try:
                checkpointer.run(
                    lambda: psycopg.connect(_dsn(settings)), stop, poll=a.seal_interval
                )
            except KeyboardInterrupt:
                stop.set()
            finally:
                record_stop(_dsn(settings), settings, "sealer")
            return 0
        with psycopg.connect(_dsn(settings)) as conn:
            cp = checkpointer.maybe_checkpoint(conn, force=True)
        print(f"checkpoint at seq {cp.seq} signed with key {cp.key_id}" if cp else "no events yet")
        return 0
    if cmd == "seal":
        total = 0
        with psycopg.connect(_dsn(settings)) as conn:
            while sealed := seal(conn):
                total += sealed
        print(f"{total} enqueued events sealed into the chain")
        return 0
    if cmd == "verify":
        return _verify(args, settings)
    if cmd == "query":
        return _query_cmd(args, settings)
    if cmd == "export":
        return _export(args, settings)
    return 2  # pragma: no cover - argparse enforces the choices


def _rotate(settings: config.Settings, key_path: Path, keyring_path: Path) -> int:
    old = Signer.load(key_path)
    try:
        with psycopg.connect(_dsn(settings), connect_timeout=5) as conn:
            cp = _checkpointer(settings, old).maybe_checkpoint(conn, force=True)
        if cp:
            print(f"final checkpoint of key {old.key_id} at seq {cp.seq}")
    except psycopg.OperationalError:
        print("database unavailable: no final checkpoint with the old key", file=sys.stderr)
    old, new = rotate_key(key_path, keyring_path)
    _record(settings, key_rotated(settings.node.name, _user(), old.key_id, new.key_id))
    print(
        f"signing key {old.key_id} retired (kept as {key_path.name}.{old.key_id}.retired: "
        f"destroy or lock it away); new key {new.key_id} in {key_path}, endorsed in keyring"
    )
    return 0


class _Progress:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.shown = False

    def __call__(self, seq: int, total: int) -> None:
        pct = 100.0 * seq / total if total else 100.0
        width = 30
        filled = int(width * pct / 100)
        self.out.write(f"\rverifying [{'#' * filled}{'.' * (width - filled)}] {seq:,}/{total:,}")
        self.out.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.out.write("\r" + " " * 72 + "\r")
            self.out.flush()


def _verify(args: argparse.Namespace, settings: config.Settings) -> int:
    """Verify the chain. A missing keyring or checkpoint file is reported as missing (exit 4),
    never as damage; only when nothing was signed yet may they be absent."""
    a = settings.audit
    keyring_path = Path(args.keyring) if args.keyring else config.data_path(settings, a.keyring)
    files = [Path(f) for f in args.checkpoint_file or []] or [
        config.data_path(settings, a.checkpoint_file)
    ]
    dsn = _dsn(settings)
    known: list[bool] = []

    def signed() -> bool:
        """Whether the database holds signed checkpoints (asked once, only if needed)."""
        if not known:
            known.append(_has_checkpoints(dsn))
        return known[0]

    if not keyring_path.exists() and (args.keyring or signed()):
        raise MissingFileError(
            f"keyring {keyring_path} does not exist: the signed checkpoints cannot be checked "
            "without the public keys (restore it from a backup, or point --keyring / "
            "audit.keyring at it)"
        )
    missing = [f for f in files if not f.exists()]
    if missing and (args.checkpoint_file or signed()):
        raise MissingFileError(
            f"checkpoint file {missing[0]} does not exist although checkpoints were signed "
            "(restore it from a backup, or point --checkpoint-file / audit.checkpoint_file "
            "at it)"
        )
    keyring = Keyring.load(keyring_path)
    external = [cp for f in files for cp in read_checkpoint_file(f)]
    progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
    with psycopg.connect(dsn) as conn:
        report = verify(conn, keyring, external, progress=progress, dsn=dsn, workers=args.workers)
    if progress is not None:
        progress.done()
    first = min(report.damages, key=lambda d: d.seq) if report.damages else None
    _record(
        settings,
        audit_verified(settings.node.name, _user(), None if first is None else first.kind.value),
    )
    print(report.summary())
    for warning in report.warnings:
        print(f"warning: {warning}")
    for damage in sorted(report.damages, key=lambda d: d.seq)[1:]:
        print(f"also: {damage.kind.value} at seq {damage.seq}: {damage.detail}")
    return 0 if report.ok else 1


def _has_checkpoints(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return bool(load_checkpoints(conn))


_COLUMNS = [
    "seq", "time", "event", "action", "outcome", "step", "reason", "participants", "objects"
]  # fmt: skip
"""Columns of ``audit query`` as a table and as CSV (``--format jsonl`` has every field)."""


def _rows(hits: Iterable[StoredEvent]) -> Iterable[dict[str, Any]]:
    for h in hits:
        e = h.event
        yield {
            "seq": h.seq,
            "time": e.time.isoformat(timespec="seconds"),
            "event": f"{e.event_id.code} {e.event_id.meaning}",
            "action": e.action.value,
            "outcome": int(e.outcome),
            "step": e.step.value,
            "participants": " ".join(
                (p.ae_title or p.user_id) + ("*" if p.requestor else "") for p in e.participants
            ),
            "objects": " ".join(k for k in e.index_keys() if not k.startswith(("ae:", "user:"))),
            "reason": e.reason or "",
        }


def _query_cmd(args: argparse.Namespace, settings: config.Settings) -> int:
    query = _query(args)
    with psycopg.connect(_dsn(settings)) as conn:
        position, hits = audited_search(conn, query, _requestor(args), _source(settings))
    out = sys.stdout
    if args.format == "jsonl":
        for h in hits:
            doc = {"seq": h.seq, "hash": h.hash.hex(), "event": json.loads(h.body)}
            out.write(json.dumps(doc, sort_keys=True) + "\n")
    elif args.format == "csv":
        writer = csv.DictWriter(
            out,
            _COLUMNS,
        )
        writer.writeheader()
        writer.writerows(_rows(hits))
    else:
        rows = list(_rows(hits))
        cols = _COLUMNS
        widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in cols}
        out.write("  ".join(c.ljust(widths[c]) for c in cols).rstrip() + "\n")
        for r in rows:
            out.write("  ".join(str(r[c]).ljust(widths[c]) for c in cols).rstrip() + "\n")
        print(
            f"{len(rows)} events (this query is recorded as event {position.seq})", file=sys.stderr
        )
    return 0


def _export(args: argparse.Namespace, settings: config.Settings) -> int:
    query = _query(args)
    a = settings.audit
    if args.syslog and not a.syslog_host:
        print("radiogate audit: --syslog needs audit.syslog_host", file=sys.stderr)
        return 2
    with psycopg.connect(_dsn(settings)) as conn, conn.transaction():
        hits = list(search(conn, query))
        append(
            conn,
            AuditEvent(
                event_id=EventID.AUDIT_LOG_USED,
                action=EventAction.READ,
                step=Step.AUDIT_EXPORTED,
                participants=(_requestor(args),),
                source=_source(settings),
                objects=(query.as_object(),),
            ),
        )
    if args.syslog:
        with SyslogSender(a.syslog_host, a.syslog_port, a.syslog_protocol.value) as sender:
            for h in hits:
                sender.send(to_atna_syslog(h.event, seq=h.seq))
        print(f"{len(hits)} ATNA messages sent to {a.syslog_host}:{a.syslog_port}", file=sys.stderr)
        return 0
    out: TextIO
    with open(args.output, "w") if args.output else _stdout() as out:
        for h in hits:
            out.write(to_atna_xml(h.event, seq=h.seq).decode() + "\n")
    return 0


class _stdout:  # noqa: N801 - a context manager that leaves stdout open
    def __enter__(self) -> TextIO:
        return sys.stdout

    def __exit__(self, *_exc: object) -> None:
        sys.stdout.flush()
