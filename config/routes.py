"""Settings of the pipeline: routes, destinations, lanes and study completion.

A route matches received instances (on calling/called AE title, modality, SOP class or any
header attribute) and lists the ordered steps applied to them; the first matching route wins,
and a route without conditions matches everything. Example (TOML)::

    [[routes]]
    name = "emergency-ct"
    steps = ["triage", "forward:archive"]
    lane = "critical"
    [routes.match]
    calling_ae = ["ER_CT*"]
    modality = ["CT"]
    tags = { RequestedProcedurePriority = ["STAT"] }

Steps: ``triage``, ``deidentify:<profile>``, ``forward:<destination>``, ``analyse:<pipeline>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DestinationSettings",
    "LaneRule",
    "MatchSettings",
    "PipelineSettings",
    "RouteSettings",
    "WorkerSettings",
]


@dataclass(frozen=True)
class MatchSettings:
    """Conditions, all of which must hold; each list matches if any pattern matches
    (``*`` and ``?`` wildcards as in DICOM matching, PS3.4 C.2.2.2.4); empty lists match all."""

    calling_ae: list[str] = field(default_factory=list)
    called_ae: list[str] = field(default_factory=list)
    modality: list[str] = field(default_factory=list)
    sop_class_uid: list[str] = field(default_factory=list)
    tags: dict[str, list[str]] = field(default_factory=dict)
    """Attribute keyword (or ``gggg,eeee``) -> patterns, matched against the header value."""


@dataclass(frozen=True)
class RouteSettings:
    name: str = "default"
    match: MatchSettings = field(default_factory=MatchSettings)
    steps: list[str] = field(default_factory=lambda: ["deidentify:basic", "forward:archive"])
    """Ordered steps; ``forward`` steps after a ``deidentify:<profile>`` step send that
    profile's de-identified copy. Default: de-identify (profile ``basic``), then archive."""
    lane: str = ""
    """Fixed lane for this route (critical, urgent, routine); empty: decided by lane_rules."""
    complete_immediately: bool = False
    """Consider the study complete as soon as an instance arrives (e.g. single-image CR/DX)."""


@dataclass(frozen=True)
class LaneRule:
    """Instances matching *match* go to *lane* (the most urgent matching rule wins)."""

    lane: str = "routine"
    match: MatchSettings = field(default_factory=MatchSettings)


@dataclass(frozen=True)
class DestinationSettings:
    """Where ``forward:<name>`` sends instances."""

    name: str = "archive"
    kind: str = "dimse"
    """dimse (C-STORE SCU), stowrs (DICOMweb STOW-RS) or directory (dry runs)."""
    ae_title: str = "ORTHANC"
    host: str = "127.0.0.1"
    port: int = 4242
    url: str = ""
    """STOW-RS base URL, or the directory for kind = directory."""
    calling_ae: str = "RADIOGATE"
    """Our AE title on associations to this destination. With storage commitment it is also
    where the destination sends its reports: its AE entry for this title must name the host
    and port of ``radiogate scp``, so it must equal ``scp.ae_title``."""
    parallel: int = 4
    """Concurrent associations / requests."""
    confirm: str = "query"
    """query (C-FIND at IMAGE level), commitment (Storage Commitment, PS3.4 J; retried until
    the report comes), commitment-or-query (a C-FIND when no report comes in time) or none."""
    timeout: float = 30.0
    commitment_timeout: float = 60.0
    """Seconds to wait for the storage commitment report after the N-ACTION."""
    keep_open: float = 5.0
    """dimse: seconds an idle association stays open for the next batch (0: released after
    each batch)."""
    confirm_class: bool = True
    """dimse, confirming by C-FIND: ask for each match's SOP Class UID, so that an instance
    the destination holds under another class (a reused UID) does not count. To answer it,
    Orthanc reads every matched file from its storage (it does not index the class)."""
    credentials_file: str = ""
    """stowrs: file with ``user:password`` for HTTP Basic authentication (mode 0600; relative to
    ``node.data_dir``), e.g. ``orthanc/http-credentials`` for the archive ``radiogate run``
    starts. Empty: no authentication."""


@dataclass(frozen=True)
class PipelineSettings:
    quiet_period: float = 30.0
    """Seconds without a new instance after which a series/study is complete."""
    batch_size: int = 100
    """Instances a worker takes per routing or forwarding round."""
    fill_wait: float = 0.25
    """Longest a routing round that found less than a full batch waits for more while a
    modality is still sending (instances keep arriving): the next round starts once a batch
    is waiting, the stream pauses for 20 ms, or this many seconds have passed. Fewer, fuller
    rounds cost less per instance, and forwarding and confirmation follow in the same batches;
    0: never wait."""
    resend_wait: float = 3600.0
    """Seconds a recorded instance whose spool file the machine lost before it was answered
    (the last receipt of an association that never ended) waits for its sender to send it
    again; then it is ``missing`` (reason ``never-resent``) and counted, so that an operator
    sees it. A re-send after that still brings it back."""
    confirm_batches: int = 4
    """Routine forwarding rounds confirmed by one query (C-FIND or commitment request) while
    more wait; critical and urgent rounds, and the last round of a backlog, are confirmed at
    once (1: every round at once)."""
    retry_initial: float = 2.0
    """First retry delay after a failed forward, seconds (doubles, see retry_max)."""
    retry_max: float = 300.0
    wait_ceiling: float = 900.0
    """Seconds after which a waiting forward of any lane is served before fresher, more urgent
    ones: priority lanes never starve the routine backlog (0: strict priority)."""
    stall_after: float = 300.0
    """A destination with waiting items and no send or confirmation for this many seconds (or
    an item overdue this long) makes the worker's ``/health`` unhealthy."""
    retention_days: float = 30.0
    """Days an instance that waits for nobody (cancelled, unroutable, quarantined or failed
    and not decided on) keeps its spool copies before they are purged (0: keep forever)."""


@dataclass(frozen=True)
class WorkerSettings:
    concurrency: int = 4
    """Jobs a worker process runs at once."""
    metrics_port: int = 9464
    """Prometheus metrics and health of the worker (0: off)."""
    nice: int = 0
    """Scheduling niceness the worker process takes at start (0-19; its de-identification
    processes inherit it): above 0, the receiver's work comes before the pipeline's when both
    want the CPU, and the pipeline catches up in the receiver's pauses."""
    idle: bool = False
    """The worker runs in the idle scheduling class (Linux ``SCHED_IDLE``): the receiver
    preempts it at once; the pipeline only uses CPU the receiver leaves (under a receive that
    saturates the CPU, forwarding and triage wait)."""
