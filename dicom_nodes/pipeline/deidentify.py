"""Stage 2, de-identify: the copies a routing batch's plans need, and what routing records.

Every (file, profile) copy of the batch is made at once by
:meth:`dicom_nodes.deid.step.DeidStep.apply_many` (in parallel when ``deid.processes`` allows),
one copy per profile however many destinations get it, durable in the spool before the routing
transaction records it (``deid_output``) with its vault entries and audit events. A destination
whose profile was held back (burned-in text without a mask, a failure, a profile this node
does not have) gets a ``quarantined`` forward item: nothing identified is ever sent in its
place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from audit import Step
from dicom_nodes.pipeline.context import PipelineContext
from dicom_nodes.pipeline.metrics import observe
from dicom_nodes.state.repository import AuditEntry, NewForwardItem

if TYPE_CHECKING:
    from dicom_nodes.pipeline.claims import ReceivedInstance
    from dicom_nodes.pipeline.route import RoutePlan

__all__ = ["BatchCopies", "DeidOutput", "make_copies", "record_outputs"]

LOGGER = logging.getLogger(__name__)

UNAVAILABLE = "deid-unavailable"
"""Hold reason of a profile this node cannot apply."""


@dataclass(frozen=True)
class DeidOutput:
    """A de-identified copy written to the spool for (instance, profile)."""

    sop_instance_uid: str
    profile: str
    spool_path: Path
    transfer_syntax_uid: str
    size: int
    note: str = ""


@dataclass
class BatchCopies:
    """What a routing batch records besides the routing itself."""

    items: list[NewForwardItem] = field(default_factory=list)
    outputs: list[DeidOutput] = field(default_factory=list)
    vault: list[Any] = field(default_factory=list)
    events: list[AuditEntry] = field(default_factory=list)

    def record(self, conn: psycopg.Connection[Any], ctx: PipelineContext) -> None:
        """The copies and vault entries, in the routing transaction."""
        record_outputs(conn, self.outputs)
        if self.vault and ctx.vault is not None:
            ctx.vault.record(conn, self.vault)


def make_copies(
    ctx: PipelineContext, planned: Sequence[tuple[ReceivedInstance, RoutePlan]]
) -> BatchCopies:
    """Make the batch's copies and turn each plan's deliveries into forward items."""
    from dicom_nodes.deid.step import Quarantine

    pairs: dict[tuple[Path, str], None] = {}
    for inst, plan in planned:
        for profile in plan.profiles:
            pairs[(inst.spool_path, profile)] = None
    started = time.perf_counter()
    copies = ctx.deid.apply_many(list(pairs)) if ctx.deid is not None and pairs else {}
    observe("deidentify", started, len(copies), ctx.node)
    out = BatchCopies()
    for inst, plan in planned:
        details = {
            "sop_instance_uid": inst.sop_instance_uid,
            "sop_class_uid": inst.sop_class_uid,
            "study_instance_uid": inst.study_instance_uid,
        }
        if inst.patient_pseudonym:
            details["patient"] = inst.patient_pseudonym
        held: dict[str, str] = dict.fromkeys(plan.unavailable, UNAVAILABLE)
        for profile in plan.profiles:
            outcome = copies[(inst.spool_path, profile)]
            out.vault.extend(outcome.vault)
            if isinstance(outcome, Quarantine):
                held[profile] = outcome.reason
                continue
            out.outputs.append(
                DeidOutput(
                    inst.sop_instance_uid, profile, outcome.spool_path,
                    outcome.transfer_syntax_uid, outcome.size, outcome.note,
                )
            )  # fmt: skip
            out.events.append(AuditEntry(Step.DEIDENTIFIED, {**details, "profile": profile}))
        for profile, reason in sorted(held.items()):
            if not any(d.profile == profile for d in plan.deliveries):
                continue
            out.events.append(
                AuditEntry(Step.QUARANTINED, {**details, "profile": profile, "reason": reason})
            )
            LOGGER.warning(
                "instance %s quarantined under profile %s: %s",
                inst.sop_instance_uid, profile, reason,
            )  # fmt: skip
        for delivery in plan.deliveries:
            out.items.append(
                NewForwardItem(
                    inst.sop_instance_uid,
                    delivery.destination,
                    plan.lane.rank,
                    delivery.profile,
                    held.get(delivery.profile, "") if delivery.profile else "",
                )
            )
    return out


def record_outputs(conn: psycopg.Connection[Any], outputs: Sequence[DeidOutput]) -> None:
    """Record de-identified copies already durable in the spool (a new copy replaces one)."""
    if not outputs:
        return
    # One statement for the batch; a later copy of the same key replaces an earlier one, as
    # one upsert per row would (one statement may not update a row twice).
    rows = list({(o.sop_instance_uid, o.profile): o for o in outputs}.values())
    conn.execute(
        """INSERT INTO deid_output
               (sop_instance_uid, profile, spool_path, transfer_syntax_uid, size, note)
           SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[],
                                %s::text[])
           ON CONFLICT (sop_instance_uid, profile) DO UPDATE
               SET spool_path = EXCLUDED.spool_path, size = EXCLUDED.size,
                   transfer_syntax_uid = EXCLUDED.transfer_syntax_uid, note = EXCLUDED.note""",
        (
            [o.sop_instance_uid for o in rows], [o.profile for o in rows],
            [str(o.spool_path) for o in rows], [o.transfer_syntax_uid for o in rows],
            [o.size for o in rows], [o.note for o in rows],
        ),
    )  # fmt: skip
