"""Associations kept open between batches (PS3.8 7.1: an association may carry any number of
DIMSE messages until it is released).

Opening an association costs a TCP connection, an A-ASSOCIATE-RQ with up to 128 presentation
contexts that the peer negotiates one by one, and a release handshake: against Orthanc on this
project's 2-core test machine that was a few milliseconds of both sides' CPU per batch, twice
per batch when a C-FIND confirmation opened its own association. The pool keeps an association
for the next batch instead:

* an association is handed to one thread at a time (:meth:`AssociationPool.acquire`) and given
  back (:meth:`AssociationPool.give_back`) when its batch is done; one that is no longer
  established is dropped;
* a store association proposes, next to its storage contexts, the Study Root C-FIND context
  (PS3.4 C.6.2) with relational queries asked for (C.5.1.1), so the confirmation of a batch runs
  on an association that is already open;
* an association can be reused for a batch whose (SOP class, transfer syntax) pairs it proposed
  (a superset is fine);
* idle associations are released after ``keep_open`` seconds by a daemon thread (the peer may
  also close them; an association found dead is dropped and the instance in flight is sent
  again on a new one, see :mod:`.dimse`), and all of them by :meth:`AssociationPool.close`.

``keep_open = 0`` releases every association when its batch is done, as before the pool.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
from pynetdicom.presentation import PresentationContext, build_context

from dicom_nodes.forward._association import open_association
from dicom_nodes.forward.settings import DimseSettings

__all__ = ["STUDY_ROOT_FIND", "AssociationPool", "Lease", "find_negotiation"]

LOGGER = logging.getLogger(__name__)

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
"""Study Root Query/Retrieve Information Model - FIND (PS3.4 C.6.2)."""
_RELATIONAL_QUERIES = b"\x01"
"""Extended negotiation byte 1: relational-queries supported (PS3.4 C.5.1.1)."""
_REAP_EVERY = 0.5


def find_negotiation() -> SOPClassExtendedNegotiation:
    """The SOP Class Extended Negotiation item asking for relational queries (PS3.4 C.5.1.1)."""
    ext = SOPClassExtendedNegotiation()
    ext.sop_class_uid = STUDY_ROOT_FIND
    ext.service_class_application_information = _RELATIONAL_QUERIES
    return ext


@dataclass
class Lease:
    """An association lent to one thread, with what it was proposed."""

    assoc: Any
    pairs: frozenset[tuple[str, str]]
    """(SOP class, transfer syntax) pairs proposed as single-syntax contexts."""
    reused: bool
    """Opened for an earlier batch: it may have died in the meantime."""
    message_ids: Iterator[int] = field(default_factory=lambda: itertools.cycle(range(1, 65536)))
    idle_since: float = 0.0

    @property
    def can_find(self) -> bool:
        """The peer accepted the Study Root C-FIND context on this association."""
        return any(
            cx.as_scu and str(cx.abstract_syntax) == STUDY_ROOT_FIND
            for cx in self.assoc.accepted_contexts
        )


class AssociationPool:
    """Idle associations to one destination; thread-safe. See the module docstring."""

    def __init__(self, settings: DimseSettings, keep_open: float) -> None:
        self.settings = settings
        self.keep_open = keep_open
        self._idle: list[Lease] = []
        self._lock = threading.Lock()
        self._reaper: threading.Thread | None = None
        self._closed = threading.Event()

    def acquire(
        self, pairs: frozenset[tuple[str, str]], contexts: Sequence[PresentationContext]
    ) -> Lease:
        """An established association that proposed *pairs*: an idle one, or one opened with
        *contexts* and the C-FIND context. Raises
        :class:`~dicom_nodes.forward._association.AssociationFailed`."""
        lease = self._take(lambda idle: pairs <= idle.pairs)
        if lease is not None:
            return lease
        requested = [*contexts, build_context(STUDY_ROOT_FIND)]
        assoc = open_association(self.settings, requested, ext_neg=[find_negotiation()])
        return Lease(assoc, pairs, reused=False)

    def acquire_find(self) -> Lease:
        """An established association on which C-FIND was accepted: an idle one, or one opened
        for the query alone. Raises :class:`~dicom_nodes.forward._association.AssociationFailed`."""
        lease = self._take(lambda idle: idle.can_find)
        if lease is not None:
            return lease
        assoc = open_association(
            self.settings, [build_context(STUDY_ROOT_FIND)], ext_neg=[find_negotiation()]
        )
        return Lease(assoc, frozenset(), reused=False)

    def give_back(self, lease: Lease) -> None:
        """Keep *lease* for a later batch (released at once when ``keep_open`` is 0, aborted
        when it is no longer established)."""
        if not lease.assoc.is_established:
            lease.assoc.abort()
            return
        if self.keep_open <= 0 or self._closed.is_set():
            _release(lease)
            return
        lease.idle_since = time.monotonic()
        lease.reused = True
        with self._lock:
            self._idle.append(lease)
            if self._reaper is None:
                self._reaper = threading.Thread(
                    target=self._reap, name=f"pool-{self.settings.name}", daemon=True
                )
                self._reaper.start()

    def close(self) -> None:
        """Release every idle association; later give-backs release theirs at once."""
        self._closed.set()
        with self._lock:
            idle, self._idle = self._idle, []
        for lease in idle:
            _release(lease)

    @property
    def idle(self) -> int:
        """How many associations wait for a batch."""
        with self._lock:
            return len(self._idle)

    def _take(self, fits: Any) -> Lease | None:
        dead: list[Lease] = []
        found = None
        with self._lock:
            for lease in list(self._idle):
                if not lease.assoc.is_established:
                    self._idle.remove(lease)
                    dead.append(lease)
                elif found is None and fits(lease):
                    self._idle.remove(lease)
                    found = lease
        for lease in dead:
            lease.assoc.abort()
        return found

    def _reap(self) -> None:
        while not self._closed.wait(_REAP_EVERY):
            cutoff = time.monotonic() - self.keep_open
            with self._lock:
                expired = [x for x in self._idle if x.idle_since < cutoff]
                self._idle = [x for x in self._idle if x.idle_since >= cutoff]
            for lease in expired:
                _release(lease)


def _release(lease: Lease) -> None:
    with contextlib.suppress(Exception):
        if lease.assoc.is_established:
            lease.assoc.release()
        else:
            lease.assoc.abort()
