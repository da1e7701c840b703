"""Audit events for tests (no PHI: UIDs, pseudonyms, AE titles only)."""

from __future__ import annotations

import datetime as dt

from audit import (
    ActiveParticipant,
    AuditEvent,
    AuditSource,
    EventAction,
    EventID,
    Instance,
    Patient,
    RoleID,
    Step,
    Study,
)

CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"


def received(
    n: int = 0, *, ae: str = "CT1", study: str = "1.2.826.0.1.3680043.2.1125.1"
) -> AuditEvent:
    """A 110104 'received' event for instance *n* of *study*."""
    return AuditEvent(
        event_id=EventID("110104"),
        action=EventAction("C"),
        step=Step("received"),
        participants=(
            ActiveParticipant.application(
                ae, address="10.1.2.3", requestor=True, role=RoleID.SOURCE
            ),
            ActiveParticipant.application("RADIOGATE", role="destination"),
        ),
        source=AuditSource("node1"),
        objects=(
            Patient("PSN-7c1e90b24a"),
            Study(study, (f"{study}.1",), (Instance(f"{study}.1.{n + 1}", CT_CLASS),)),
        ),
        time=dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC) + dt.timedelta(seconds=n),
    )
