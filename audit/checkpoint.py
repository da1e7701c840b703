"""Signed checkpoints of the audit chain, kept in the database and published outside it.

A checkpoint states "chain *chain_id* had hash *H* at sequence number *N* at time *T*", signed
with Ed25519. The signed message is fixed-width::

    b"radiogate-audit-checkpoint/1\\n" ‖ chain_id (16 bytes) ‖ seq (u64 BE)
    ‖ time (i64 BE, microseconds since 1970-01-01 UTC) ‖ hash (32 bytes)

A :class:`Checkpointer` signs one every ``audit.checkpoint_every`` events or
``audit.checkpoint_seconds`` seconds (whichever comes first, only when there are new events):
it inserts the row in ``audit_checkpoint`` and commits, then appends a JSON line to the
append-only checkpoint file (fsynced) and optionally sends it as RFC 5424 syslog. Because the
row commits first, every checkpoint outside the database refers to committed events. Deleting
the newest events, or rewriting the chain without the private key, then contradicts a signed
checkpoint; only events after the newest checkpoint are not yet covered.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import struct
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg

from audit.keys import Keyring, Signer
from audit.store import Head, read_head
from audit.syslog import SyslogSender, format_rfc5424

__all__ = [
    "Checkpoint",
    "CheckpointFileError",
    "CheckpointSink",
    "Checkpointer",
    "FileSink",
    "SyslogSink",
    "load_checkpoints",
    "read_checkpoint_file",
    "sign_checkpoint",
]

LOGGER = logging.getLogger(__name__)
_PREFIX = b"radiogate-audit-checkpoint/1\n"
_FIELDS = struct.Struct(">Qq")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class CheckpointFileError(ValueError):
    """A line of the checkpoint file cannot be parsed."""


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement of the chain's head."""

    chain_id: str
    seq: int
    hash: bytes
    signed_at: dt.datetime
    key_id: str
    signature: bytes

    @staticmethod
    def message_for(chain_id: str, seq: int, hash_: bytes, signed_at: dt.datetime) -> bytes:
        micros = (signed_at - _EPOCH) // dt.timedelta(microseconds=1)
        return _PREFIX + uuid.UUID(chain_id).bytes + _FIELDS.pack(seq, micros) + hash_

    def message(self) -> bytes:
        return self.message_for(self.chain_id, self.seq, self.hash, self.signed_at)

    def signature_ok(self, keyring: Keyring) -> bool:
        return keyring.verify(self.key_id, self.message(), self.signature)

    def to_json_line(self) -> str:
        return json.dumps(
            {
                "chain": self.chain_id,
                "seq": self.seq,
                "hash": self.hash.hex(),
                "time": self.signed_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
                "key_id": self.key_id,
                "sig": base64.b64encode(self.signature).decode(),
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json_line(cls, line: str) -> Checkpoint:
        try:
            doc = json.loads(line)
            return cls(
                str(doc["chain"]),
                int(doc["seq"]),
                bytes.fromhex(doc["hash"]),
                dt.datetime.fromisoformat(doc["time"]),
                str(doc["key_id"]),
                base64.b64decode(doc["sig"], validate=True),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointFileError(f"not a checkpoint: {exc}") from None


def sign_checkpoint(signer: Signer, head: Head, signed_at: dt.datetime | None = None) -> Checkpoint:
    """Sign *head* (microsecond time resolution, UTC)."""
    at = (signed_at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    msg = Checkpoint.message_for(head.chain_id, head.seq, head.hash, at)
    return Checkpoint(head.chain_id, head.seq, head.hash, at, signer.key_id, signer.sign(msg))


def load_checkpoints(conn: psycopg.Connection[Any]) -> list[Checkpoint]:
    """All checkpoints in the database, oldest first."""
    rows = conn.execute(
        "SELECT chain_id::text, seq, hash, signed_at, key_id, signature"
        " FROM audit_checkpoint ORDER BY id"
    ).fetchall()
    return [
        Checkpoint(str(r[0]), int(r[1]), bytes(r[2]), r[3], str(r[4]), bytes(r[5])) for r in rows
    ]


def read_checkpoint_file(path: Path) -> list[Checkpoint]:
    """Checkpoints in an external file (missing file: none); bad lines raise with their number."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(Checkpoint.from_json_line(line))
            except CheckpointFileError as exc:
                raise CheckpointFileError(f"{path}:{number}: {exc}") from None
    return out


class CheckpointSink(Protocol):
    """Somewhere outside the database that receives every checkpoint."""

    def publish(self, checkpoint: Checkpoint) -> None: ...


class FileSink:
    """Appends one JSON line per checkpoint (O_APPEND, fsync). Consider ``chattr +a`` on it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def publish(self, checkpoint: Checkpoint) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, (checkpoint.to_json_line() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)


class SyslogSink:
    """Sends each checkpoint as an RFC 5424 message (MSGID ``RG-AUDIT-CHECKPOINT``)."""

    def __init__(self, sender: SyslogSender, app_name: str = "radiogate") -> None:
        self.sender = sender
        self.app_name = app_name

    def publish(self, checkpoint: Checkpoint) -> None:
        frame = format_rfc5424(
            checkpoint.to_json_line().encode(), app_name=self.app_name, msgid="RG-AUDIT-CHECKPOINT"
        )
        self.sender.send(frame)


class Checkpointer:
    """Signs a checkpoint every *every* events or *seconds* seconds (0 disables a limit)."""

    def __init__(
        self,
        signer: Signer,
        sinks: Sequence[CheckpointSink],
        *,
        every: int = 1000,
        seconds: float = 60.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.signer = signer
        self.sinks = list(sinks)
        self.every = every
        self.seconds = seconds
        self.clock = clock

    def due(self, conn: psycopg.Connection[Any]) -> Head | None:
        """The committed head if a checkpoint is due for it, else None."""
        head = read_head(conn)
        last = conn.execute(
            "SELECT seq, signed_at FROM audit_checkpoint ORDER BY id DESC LIMIT 1"
        ).fetchone()
        last_seq, last_at = (int(last[0]), last[1]) if last else (0, _EPOCH)
        new = head.seq - last_seq
        if new <= 0:
            return None
        by_count = self.every > 0 and new >= self.every
        by_time = self.seconds > 0 and (self.clock() - last_at).total_seconds() >= self.seconds
        return head if by_count or by_time else None

    def maybe_checkpoint(
        self, conn: psycopg.Connection[Any], force: bool = False
    ) -> Checkpoint | None:
        """Sign, store and publish a checkpoint if one is due (or *force* and events exist).

        Runs its own transaction on *conn*, which must not be inside one: the row must be
        committed before the checkpoint is published outside the database.
        """
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise ValueError("maybe_checkpoint needs a connection outside a transaction")
        with conn.transaction():
            head = self.due(conn) if not force else read_head(conn)
            if head is None or head.seq == 0:
                return None
            cp = sign_checkpoint(self.signer, head, self.clock())
            conn.execute(
                "INSERT INTO audit_checkpoint (chain_id, seq, hash, signed_at, key_id, signature)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (cp.chain_id, cp.seq, cp.hash, cp.signed_at, cp.key_id, cp.signature),
            )
        for sink in self.sinks:
            try:
                sink.publish(cp)
            except OSError:
                LOGGER.exception("publishing audit checkpoint %d to %r failed", cp.seq, sink)
        LOGGER.info("audit checkpoint at seq %d signed with key %s", cp.seq, cp.key_id)
        return cp

    def run(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        stop: threading.Event,
        poll: float = 1.0,
        *,
        seal_pending: bool = True,
    ) -> None:
        """Until *stop* is set, every *poll* seconds: seal pending events, then checkpoint if due.

        Reconnects after database errors.
        """
        from audit.sealer import seal

        conn: psycopg.Connection[Any] | None = None
        while not stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = connect()
                if seal_pending:
                    while seal(conn) and not stop.is_set():
                        self.maybe_checkpoint(conn)
                self.maybe_checkpoint(conn)
            except psycopg.Error:
                LOGGER.warning("audit checkpointer: database error; retrying", exc_info=True)
                if conn is not None:
                    conn.close()
                conn = None
            stop.wait(poll)
        if conn is not None:
            conn.close()
