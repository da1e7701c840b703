"""Pipeline stages called directly against a real PostgreSQL: a node without processes.

:class:`Stage` receives CT slices the way the SCP does (spool + the ingest transaction) and runs
the stages' rounds in the test's thread; :class:`FlakyDestination` is a
:class:`~dicom_nodes.forward.model.Destination` that fails on demand.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg_pool import ConnectionPool

from config.routes import PipelineSettings, RouteSettings
from dicom_nodes.audit_events import pipeline_sink
from dicom_nodes.db.ingest import PostgresIngest, Receipt
from dicom_nodes.forward.model import (
    ConfirmationUnavailable,
    InstanceRef,
    OutgoingFile,
    SendResult,
)
from dicom_nodes.pipeline.context import PipelineContext
from dicom_nodes.pipeline.forward import forward_round
from dicom_nodes.pipeline.route import route_round
from dicom_nodes.spool.inspect import inspect_file
from dicom_nodes.spool.store import Spool
from tests.support.data import extract_ct

__all__ = ["FlakyDestination", "Stage", "staged"]


@dataclass
class FlakyDestination:
    """A :class:`~dicom_nodes.forward.model.Destination` that does what the test says:
    refuse some UIDs for good, fail some retryably, forget some, or be unreachable."""

    name: str
    permanent: set[str] = field(default_factory=set)
    retryable: set[str] = field(default_factory=set)
    unconfirmed: set[str] = field(default_factory=set)
    confirm_down: bool = False
    held: set[str] = field(default_factory=set)
    sent: list[str] = field(default_factory=list)
    asked: list[int] = field(default_factory=list)
    """How many instances each confirmation asked about."""

    def send(self, files: Sequence[OutgoingFile]) -> list[SendResult]:
        out = []
        for f in files:
            uid = f.sop_instance_uid
            self.sent.append(uid)
            if uid in self.permanent:
                out.append(SendResult(uid, 0xA900, ok=False, retryable=False, note="refused"))
            elif uid in self.retryable:
                out.append(SendResult(uid, None, ok=False, retryable=True, note="no answer"))
            else:
                self.held.add(uid)
                out.append(SendResult(uid, 0, ok=True, retryable=False,
                                      sent_transfer_syntax=f.transfer_syntax_uid))  # fmt: skip
        return out

    def confirm(self, instances: Sequence[InstanceRef]) -> dict[str, bool]:
        self.asked.append(len(instances))
        if self.confirm_down:
            raise ConfirmationUnavailable("down")
        return {
            i.sop_instance_uid: i.sop_instance_uid in self.held
            and i.sop_instance_uid not in self.unconfirmed
            for i in instances
        }


@dataclass
class Stage:
    ctx: PipelineContext
    spool: Spool
    files: list[Path]
    dest: FlakyDestination
    other: FlakyDestination

    def receive(self, count: int, **receipt: Any) -> list[str]:
        """What the receiver does: spool and record *count* CT slices; returns their UIDs."""
        paths = self.files[:count]
        del self.files[:count]
        return self.receive_paths(paths, **receipt)

    def receive_paths(
        self, paths: Sequence[Path], *, calling: str = "CT1", association: uuid.UUID | None = None
    ) -> list[str]:
        """Spool and record *paths* as received over one association (new unless given)."""
        recorder = PostgresIngest(self.ctx.pool, timeout=5)
        assoc = association or uuid.uuid4()
        uids = []
        for path in paths:
            identity = inspect_file(path)
            temp = self.spool.incoming / uuid.uuid4().hex
            shutil.copyfile(path, temp)
            spooled = self.spool.commit(temp)
            recorder.record(identity, spooled, Receipt(calling, "RADIOGATE", "127.0.0.1", 104,
                                                       "node1", assoc))  # fmt: skip
            uids.append(identity.sop_instance_uid)
        return uids

    @property
    def conninfo(self) -> str:
        """The pool's connection string, for a connection of its own."""
        conninfo = self.ctx.pool.conninfo
        assert isinstance(conninfo, str)
        return conninfo

    def q(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.ctx.pool.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def states(self, uids: Sequence[str]) -> list[str]:
        rows = dict(self.q("SELECT sop_instance_uid, state FROM ingest_instance"))
        return [rows[u] for u in uids]

    def items(self, uid: str) -> dict[str, str]:
        return dict(
            self.q("SELECT destination, state FROM forward_item WHERE sop_instance_uid = %s", uid)
        )

    def steps(self, uid: str) -> list[str]:
        rows = self.q("SELECT step, body FROM audit_pending ORDER BY id")
        return [step for step, body in rows if uid.encode() in bytes(body)]

    def drain(self) -> None:
        """Run every stage until nothing is ready (what the worker's jobs do)."""
        while route_round(self.ctx):
            pass
        for name in self.ctx.destinations:
            while forward_round(self.ctx, name):
                pass

    def make_due(self) -> None:
        self.q_exec("UPDATE forward_item SET next_attempt_at = clock_timestamp()")

    def q_exec(self, sql: str, *params: Any) -> None:
        with self.ctx.pool.connection() as conn:
            conn.execute(sql, params)


@contextlib.contextmanager
def staged(dsn: str, tmp_path: Path, *targets: str) -> Iterator[Stage]:
    """A stage of node ``node1`` whose one route forwards to *targets* (the first is the
    stage's ``dest``, the second, if any, its ``other``); batches of 4, retries a minute
    apart, an unsynced spool under *tmp_path*."""
    spool = Spool(tmp_path / "spool", fsync=False)
    spool.prepare()
    dests = {name: FlakyDestination(name) for name in targets}
    pool = ConnectionPool(dsn, min_size=1, max_size=4, open=True)
    ctx = PipelineContext(
        node="node1", pool=pool,
        routes=[RouteSettings(name="all", steps=[f"forward:{t}" for t in targets])],
        lane_rules=[], destinations=dict(dests),
        settings=PipelineSettings(batch_size=4, retry_initial=60.0, retry_max=600.0),
        audit=pipeline_sink("node1", "RADIOGATE"),
    )  # fmt: skip
    first, *rest = dests.values()
    other = rest[0] if rest else FlakyDestination("unused")
    try:
        yield Stage(ctx, spool, extract_ct(tmp_path / "ct"), first, other)
    finally:
        pool.close()
