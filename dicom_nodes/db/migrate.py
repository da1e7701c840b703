"""Versioned schema migrations.

Migrations are SQL files named ``NNNN_description.sql`` in a package's ``migrations`` folder,
applied in order, each in its own transaction together with its row in ``schema_migration``.
A PostgreSQL advisory lock serialises concurrent starters (several SCPs and workers may start
at once on different machines). Applied migrations are never edited: their checksum is stored
and a mismatch stops start-up.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

__all__ = ["MIGRATION_SOURCES", "Migration", "MigrationError", "available", "migrate"]

LOGGER = logging.getLogger(__name__)
_LOCK_KEY = 0x52474D47  # "RGMG"
_NAME_RE = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")

MIGRATION_SOURCES: tuple[tuple[str, str], ...] = (
    ("procrastinate", "procrastinate"),
    ("ingest", "dicom_nodes.db"),
    ("audit", "audit"),
)
"""(component, package) pairs whose ``migrations`` folders are applied, in this order."""


class MigrationError(RuntimeError):
    """The database schema does not match the migrations shipped with this version."""


@dataclass(frozen=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def _procrastinate_schema() -> Migration:
    """The job queue's schema as shipped by the pinned procrastinate release.

    A later procrastinate release changes this text, so the checksum check stops start-up
    until its own migrations (``procrastinate/sql/migrations``) are applied and recorded.
    """
    import procrastinate

    sql = (resources.files("procrastinate") / "sql" / "schema.sql").read_text()
    return Migration("procrastinate", 1, f"schema-{procrastinate.__version__}.sql", sql)


def available(sources: tuple[tuple[str, str], ...] = MIGRATION_SOURCES) -> list[Migration]:
    """All shipped migrations in application order."""
    found: list[Migration] = []
    for component, package in sources:
        if component == "procrastinate":
            found.append(_procrastinate_schema())
            continue
        folder = resources.files(package) / "migrations"
        items = []
        for entry in folder.iterdir():
            match = _NAME_RE.fullmatch(entry.name)
            if match:
                items.append(
                    Migration(component, int(match.group(1)), entry.name, entry.read_text())
                )
        found.extend(sorted(items, key=lambda m: m.version))
    return found


def migrate(
    conn: psycopg.Connection[Any], sources: tuple[tuple[str, str], ...] = MIGRATION_SOURCES
) -> list[str]:
    """Apply pending migrations on *conn* (autocommit off); return the names applied."""
    applied_now: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migration (
                   component text NOT NULL, version integer NOT NULL, name text NOT NULL,
                   checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (component, version))"""
        )
        rows = conn.execute("SELECT component, version, checksum FROM schema_migration").fetchall()
        done = {(str(r[0]), int(r[1])): str(r[2]) for r in rows}
        for mig in available(sources):
            key = (mig.component, mig.version)
            if key in done:
                if done[key] != mig.checksum:
                    raise MigrationError(
                        f"migration {mig.component}/{mig.name} was changed after it was applied"
                    )
                continue
            LOGGER.info("applying migration %s/%s", mig.component, mig.name)
            conn.execute(mig.sql.encode())
            conn.execute(
                "INSERT INTO schema_migration (component, version, name, checksum)"
                " VALUES (%s, %s, %s, %s)",
                (mig.component, mig.version, mig.name, mig.checksum),
            )
            applied_now.append(f"{mig.component}/{mig.name}")
    return applied_now
