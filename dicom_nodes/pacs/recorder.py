"""``radiogate pacs record``: chain the archive's access journal into the audit log.

The plugin's HTTP filter appends a line per study read or refused request to a local journal
(:mod:`pacs_plugin.journal`) and never waits for PostgreSQL. This process, supervised by
``radiogate run`` beside the sealer, reads each segment from the position committed in
``pacs_journal``, turns the lines into events (:mod:`pacs_plugin.events`: 110103 for reads,
110113 for refusals; Orthanc identifiers resolved to Study Instance UIDs through the archive's
REST API with its own account, whose requests are not journaled), and in one transaction
enqueues the events (chained by the sealer), defers the job of each stable study
(:mod:`dicom_nodes.pacs.arrivals`) and advances the position. While PostgreSQL or Orthanc is
down nothing advances and the journal keeps the events: they are recorded when both are back.
A segment the plugin no longer writes is deleted once recorded.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

import psycopg

import audit
from pacs_plugin import events
from pacs_plugin.journal import read_records, segments

__all__ = ["OrthancResolver", "Recorder", "Resolver", "ResolverUnavailable"]

LOGGER = logging.getLogger(__name__)
Conn = psycopg.Connection[Any]


class ResolverUnavailable(RuntimeError):
    """The archive did not answer: try again later (nothing is committed)."""


class Resolver(Protocol):
    def study_uids(self, level: str, orthanc_id: str) -> tuple[str, ...]:
        """Study Instance UIDs of an Orthanc resource (empty: the resource is gone)."""
        ...


_PATHS = {
    "study": "/studies/{}",
    "series": "/series/{}/study",
    "instance": "/instances/{}/study",
    "patient": "/patients/{}/studies",
}


@dataclass
class OrthancResolver:
    """Resolves through Orthanc's REST API (remembering the last 10,000 answers)."""

    url: str
    authorization: str | None
    cache: OrderedDict[tuple[str, str], tuple[str, ...]] = field(default_factory=OrderedDict)

    def study_uids(self, level: str, orthanc_id: str) -> tuple[str, ...]:
        key = (level, orthanc_id)
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        req = urllib.request.Request(self.url + _PATHS[level].format(orthanc_id))  # noqa: S310
        if self.authorization:
            req.add_header("Authorization", self.authorization)
        try:
            with urllib.request.urlopen(req, timeout=10) as rsp:  # noqa: S310 - our archive
                doc = json.loads(rsp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return ()
            raise ResolverUnavailable(f"archive answered {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ResolverUnavailable(type(exc).__name__) from None
        docs = doc if isinstance(doc, list) else [doc]
        uids = tuple(
            str(d["MainDicomTags"]["StudyInstanceUID"])
            for d in docs
            if d.get("MainDicomTags", {}).get("StudyInstanceUID")
        )
        self.cache[key] = uids
        if len(self.cache) > 10_000:
            self.cache.popitem(last=False)
        return uids


Deferrer = Callable[[Conn, str], None]
"""Defers the job of a stable study (by Orthanc ID) in the caller's transaction."""


@dataclass
class Recorder:
    dsn: str
    journal_dir: Path
    node: str
    archive_ae: str
    resolver: Resolver
    on_stable_study: Deferrer | None = None
    batch: int = 5000
    skipped: int = 0

    def record_once(self) -> int:
        """One pass over every segment; returns how many lines were recorded."""
        done = 0
        with psycopg.connect(self.dsn, connect_timeout=5) as conn:
            positions: dict[str, int] = {
                str(r[0]): int(r[1])
                for r in conn.execute("SELECT segment, position FROM pacs_journal").fetchall()
            }
            found = segments(self.journal_dir)
            for i, seg in enumerate(found):
                newest = i == len(found) - 1
                position = positions.get(seg.name, 0)
                while True:
                    records = list(islice(read_records(seg, position), self.batch))
                    if records:
                        position = self._commit(conn, seg.name, records)
                        done += len(records)
                    if len(records) < self.batch:
                        break
                if not newest:  # the plugin writes only the newest segment
                    with conn.transaction():
                        conn.execute("DELETE FROM pacs_journal WHERE segment = %s", (seg.name,))
                    seg.unlink(missing_ok=True)
        return done

    def _commit(self, conn: Conn, segment: str,
                records: Sequence[tuple[int, dict[str, Any] | None]]) -> int:  # fmt: skip
        built: list[audit.AuditEvent] = []
        stable: list[str] = []
        for _end, record in records:
            try:
                if record is not None and record.get("k") == "stable-study":
                    stable.append(str(record["id"]))
                    continue
                event = self._event(record) if record is not None else None
            except (audit.AuditEventError, KeyError, ValueError, TypeError):
                event = None
            if event is None:
                self.skipped += 1
                LOGGER.warning("access journal %s: a line that is not an event was skipped",
                               segment)  # fmt: skip
            else:
                built.append(event)
        end = records[-1][0]
        with conn.transaction():
            if built:
                audit.enqueue_many(conn, built)
            if self.on_stable_study is not None:
                for orthanc_id in stable:
                    self.on_stable_study(conn, orthanc_id)
            conn.execute(
                """INSERT INTO pacs_journal (segment, position) VALUES (%s, %s)
                   ON CONFLICT (segment) DO UPDATE SET position = excluded.position,
                       updated_at = clock_timestamp()""",
                (segment, end),
            )
        return end

    def _event(self, record: dict[str, Any]) -> audit.AuditEvent | None:
        when = dt.datetime.fromtimestamp(float(record["t"]), dt.UTC)
        uids: tuple[str, ...] = ()
        if record.get("study"):
            uids = (str(record["study"]),)
        elif record.get("id") and record.get("lvl") in _PATHS:
            uids = self.resolver.study_uids(str(record["lvl"]), str(record["id"]))
        user, address = str(record["u"]), record.get("ip")
        if record["k"] == "read":
            return events.accessed(self.node, self.archive_ae, user, address,
                                   study_uids=uids, api=str(record["api"]), time=when)  # fmt: skip
        if record["k"] == "refused":
            return events.refused(self.node, self.archive_ae, user, address,
                                  reason=str(record["why"]), study_uid=uids[0] if uids else None,
                                  time=when)  # fmt: skip
        return None

    def run(self, interval: float, stop: Callable[[], bool]) -> None:
        """Record until *stop*; a database or archive outage is retried every *interval*."""
        down = False
        while not stop():
            try:
                self.record_once()
                if down:
                    LOGGER.info("access journal: recording again")
                down = False
            except (psycopg.OperationalError, ResolverUnavailable) as exc:
                if not down:
                    LOGGER.warning("access journal: waiting for the database or archive (%s)",
                                   type(exc).__name__)  # fmt: skip
                down = True
            time.sleep(interval)
