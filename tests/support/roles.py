"""Admins as PostgreSQL login roles of their own (the private test cluster trusts loopback, so
a DSN naming the role stands for the admin's authenticated session)."""

from __future__ import annotations

import re

import psycopg
from psycopg import sql

GROUPS = ("radiogate_admin", "radiogate_privacy")


def admin_role(dsn: str, name: str, *groups: str) -> str:
    """Make *name* a login role in exactly *groups* (of :data:`GROUPS`) with the table
    privileges a site grants its admins (docs/operations.md); return its DSN."""
    role = sql.Identifier(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
        conn.execute(sql.SQL("GRANT radiogate_app TO {}").format(role))
        for group in GROUPS:
            verb = "GRANT {} TO {}" if group in groups else "REVOKE {} FROM {}"
            conn.execute(sql.SQL(verb).format(sql.Identifier(group), role))
        conn.execute(
            sql.SQL(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}"
            ).format(role)
        )
        conn.execute(
            sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(role)
        )
    quoted = "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return re.sub(r"\buser=\S+", lambda _m: f"user={quoted}", dsn)
