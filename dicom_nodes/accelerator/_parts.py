"""The parts of the accelerator, each of which can be selected on its own (benchmarks, tests)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Part"]


class Part(StrEnum):
    """One change the accelerator makes to how pynetdicom runs an association."""

    REACTORS = "reactors"
    """Event-driven DUL and association reactors instead of 1 ms polling; quick thread exit."""
    P_DATA = "p-data"
    """P-DATA-TF in Sta6 straight to DIMSE (received); written directly (requestor, sent)."""
    CONTEXTS = "contexts"
    """Supported presentation contexts shared, not deep-copied, per association (acceptor)."""
    STORE_RSP = "store-rsp"
    """C-STORE-RSP command set packed directly (acceptor)."""
    STORE_RQ = "store-rq"
    """C-STORE-RQ command set parsed directly (acceptor)."""
    FILE_META = "file-meta"
    """File Meta Information packed directly, one flush per message (acceptor)."""
    RESPONSES = "responses"
    """C-STORE-RSP and C-FIND-RSP command sets parsed directly (requestor)."""
