"""Who is running a privileged admin command, from an authenticated source.

The user recorded in the audit trail for re-identification, quarantine release, cancel, retry,
re-route, study completion and analysis requests is the **PostgreSQL role of the admin's own
session** (``session_user``): each admin connects as themselves (``database.admin_dsn``), and
the server authenticates them (password, certificate, peer or GSS, as the site's
``pg_hba.conf`` says). No flag can change it.

Authorisation is role membership, checked by the server (``pg_has_role``):

=====================  ==============================================================
role                   may
=====================  ==============================================================
``radiogate_privacy``  re-identify (``radiogate reidentify``)
``radiogate_admin``    release from quarantine, cancel, retry, re-route, complete a
                       study, request an analysis
=====================  ==============================================================

Superusers hold every role. A refusal is itself audited: DICOM PS3.15 A.5.3.11 Security Alert
(110113), event type 110132 Use of Restricted Function, outcome 4, the step that was refused,
reason ``not-authorised``, the refused role as requestor. It is written through the node's own
connection, so it is recorded even when the admin's role may not write to the audit trail.

The private development cluster (no ``database.dsn``) trusts loopback connections: there the
identity is only as strong as that (its superuser is the default); production sites use
``database.dsn`` with real authentication.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import psycopg

import audit
from audit import (
    ActiveParticipant,
    AuditEvent,
    AuditEventError,
    AuditSource,
    EventAction,
    EventID,
    EventOutcome,
    Step,
)
from audit.identifiers import check_network_address, check_user_id
from config import Settings

__all__ = [
    "Identity",
    "NotAuthorised",
    "Privilege",
    "admin_dsn",
    "identify",
    "record_refusal",
    "refusal_event",
]


class Privilege(StrEnum):
    """The PostgreSQL group roles that authorise admin actions."""

    ADMIN = "radiogate_admin"
    PRIVACY = "radiogate_privacy"


@dataclass(frozen=True)
class Identity:
    """The admin's authenticated role and whether it holds the privilege asked for."""

    user: str
    privilege: Privilege
    authorised: bool


class NotAuthorised(Exception):
    """The session's role lacks the privilege (the message names both)."""

    def __init__(self, identity: Identity) -> None:
        super().__init__(
            f"role {identity.user!r} is not a member of {identity.privilege.value}; refused "
            "(ask your database administrator: GRANT "
            f"{identity.privilege.value} TO {identity.user})"
        )
        self.identity = identity


def admin_dsn(settings: Settings) -> str:
    """The connection string admin commands use (``database.admin_dsn`` or the node's)."""
    if settings.database.admin_dsn:
        return settings.database.admin_dsn
    from dicom_nodes.services.stack import database_dsn

    return database_dsn(settings)


def identify(conn: psycopg.Connection[Any], privilege: Privilege) -> Identity:
    """The session's role and its membership in *privilege*, as the server sees them.

    Raises :class:`AuditEventError` when the role name cannot be a user ID in the audit trail
    (PS3.15 A.5.2: UserID)."""
    row = conn.execute(
        """SELECT session_user::text,
                  coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = session_user), false)
                  OR CASE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = %s)
                          THEN pg_has_role(session_user, %s, 'MEMBER') ELSE false END""",
        (privilege.value, privilege.value),
    ).fetchone()
    assert row is not None
    return Identity(check_user_id(str(row[0]), "database role"), privilege, bool(row[1]))


def _host() -> str | None:
    try:
        return check_network_address(socket.gethostname())
    except AuditEventError:
        return None


def refusal_event(
    settings: Settings, identity: Identity, step: Step, objects: Sequence[Any] = ()
) -> AuditEvent:
    """The Security Alert of a refused admin action (see the module docstring)."""
    return AuditEvent(
        event_id=EventID.SECURITY_ALERT,
        action=EventAction.EXECUTE,
        step=step,
        participants=(
            ActiveParticipant(identity.user, True, None, _host()),
            ActiveParticipant.application(settings.scp.ae_title, requestor=False),
        ),
        source=AuditSource(settings.node.name, settings.audit.site_id or None),
        objects=tuple(objects),
        outcome=EventOutcome.MINOR_FAILURE,
        event_types=(audit.EventTypeCode.USE_OF_RESTRICTED_FUNCTION,),
        reason="not-authorised",
    )


def record_refusal(
    node_dsn: str,
    settings: Settings,
    identity: Identity,
    step: Step,
    objects: Sequence[Any] = (),
) -> int:
    """Append the refusal through the node's connection; returns its sequence number."""
    with psycopg.connect(node_dsn, connect_timeout=5) as conn, conn.transaction():
        return audit.append(conn, refusal_event(settings, identity, step, objects)).seq
