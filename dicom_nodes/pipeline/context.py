"""What every pipeline stage is given: the node, its database pool, routes, destinations,
settings, the audit sink, and the de-identification step and vault when routes need them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from psycopg_pool import ConnectionPool

from config.routes import LaneRule, PipelineSettings, RouteSettings
from dicom_nodes.forward.model import Destination
from dicom_nodes.state.repository import AuditSink, no_audit

if TYPE_CHECKING:
    from dicom_nodes.deid.step import DeidStep
    from dicom_nodes.deid.vault import Vault
    from dicom_nodes.pipeline.analyse import Analysis
    from dicom_nodes.pipeline.triage import Triage
    from dicom_nodes.spool.store import Spool

__all__ = ["PipelineContext"]

LOGGER = logging.getLogger(__name__)


@dataclass
class PipelineContext:
    node: str
    pool: ConnectionPool
    routes: Sequence[RouteSettings]
    lane_rules: Sequence[LaneRule]
    destinations: Mapping[str, Destination]
    settings: PipelineSettings = field(default_factory=PipelineSettings)
    audit: AuditSink = no_audit
    deid: DeidStep | None = None
    """Runs ``deidentify:<profile>`` steps; without it such routes quarantine everything."""
    vault: Vault | None = None
    """Keeps the encrypted pseudonym → original map of de-identified instances."""
    triage: Triage | None = None
    """Runs ``triage`` steps (models, policy); without it such steps only track series."""
    analysis: Analysis | None = None
    """Runs ``analyse:<pipeline>`` steps; without it their analyses wait."""
    spool: Spool | None = None
    """The node's spool, swept by housekeeping for files no row names; None: not swept."""
    _warned: set[str] = field(default_factory=set)

    def warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            LOGGER.warning("%s", message)

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt *attempts* + 1 (doubling from retry_initial to retry_max)."""
        s = self.settings
        return float(min(s.retry_max, s.retry_initial * (2 ** max(0, attempts - 1))))
