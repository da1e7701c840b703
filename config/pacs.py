"""Settings of the PACS side: the Orthanc plugin (``pacs_plugin``), who may use its routes, the
access journal and its recorder, the worklist's wait ceilings, studies stored into the archive
directly. Example (TOML)::

    [pacs]
    routine_max_wait_minutes = 240.0   # an older routine study comes before a fresh urgent one
    archive_arrivals = "chest"         # analyse studies stored into Orthanc directly (a route)

    [[pacs.user]]
    name = "alice"
    role = "radiologist"               # worklist, findings, acknowledge alerts
    token_file = "pacs/alice.token"    # her password for Orthanc (0600; created on first start)

    [[pacs.user]]
    name = "audit-officer"
    role = "admin"                     # audit query and verify
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["PacsSettings", "PacsUserSettings", "Role"]


class Role(StrEnum):
    """What a user of the archive may do through Radiogate's routes."""

    RADIOLOGIST = "radiologist"
    """Read studies, the worklist and findings; acknowledge alerts."""
    ADMIN = "admin"
    """Query and verify the audit trail (and read studies)."""

    @classmethod
    def _missing_(cls, value: object) -> Role | None:
        text = str(value).strip().lower()
        return next((m for m in cls if m.value == text), None)


@dataclass(frozen=True)
class PacsUserSettings:
    """One user of the archive: an Orthanc user (HTTP Basic) with a Radiogate role."""

    name: str = ""
    role: Role = Role.RADIOLOGIST
    token_file: str = ""
    """File holding the user's secret (relative to ``node.data_dir``): with a managed Orthanc
    it is created (0600) on first start and registered as the user's password; empty: the user
    is defined in an Orthanc that is not managed, only the role comes from here."""


@dataclass(frozen=True)
class PacsSettings:
    plugin: bool = True
    """Load ``pacs_plugin`` into the managed Orthanc and run the access recorder."""
    user: list[PacsUserSettings] = field(default_factory=list)
    """Users and roles. The archive's own REST account (``orthanc.credentials_file``) has
    every role; its reads are Radiogate's pipeline and are not recorded as accesses."""
    journal_dir: str = "pacs/journal"
    """Local append-only journal of access events (relative to ``node.data_dir``)."""
    journal_sync_interval: float = 0.2
    """Seconds between fsyncs of the journal (an event is in the file at once and survives an
    Orthanc crash; a power loss can take at most this much)."""
    journal_segment_bytes: int = 64 * 1024 * 1024
    """A journal segment is closed and a new one started beyond this size."""
    record_interval: float = 0.5
    """Seconds between the recorder's passes over the journal."""
    routine_max_wait_minutes: float = 240.0
    """Wait ceiling of a routine study: past it, it comes before fresh urgent studies."""
    urgent_max_wait_minutes: float = 60.0
    """Wait ceiling of an urgent study (overdue urgent before overdue routine)."""
    worklist_limit: int = 500
    """Most rows the worklist answers."""
    archive_arrivals: str = ""
    """Name of a route whose ``triage`` / ``analyse:`` steps apply to studies stored into the
    archive directly (not through the SCP); empty: such studies get no jobs."""
