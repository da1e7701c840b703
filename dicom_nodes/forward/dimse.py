"""Forwarding over DIMSE: C-STORE SCU (PS3.4 B, PS3.7 9.1.1) with confirmation.

How a batch is sent:

1. Presentation contexts are planned per (SOP class, transfer syntax) pair: one context with
   only the file's own syntax, one fallback context per SOP class with Explicit then Implicit
   VR Little Endian (:func:`~dicom_nodes.forward._association.store_contexts`).
2. ``parallel`` threads each take an association and take files from a shared queue until it
   is empty, so one slow association does not hold back the others. Associations stay open
   between batches for ``keep_open`` seconds (:mod:`.pool`), and the C-FIND that confirms a
   batch runs on one of them.
3. A file whose own syntax was accepted is sent **as its bytes are**: with the accelerator on,
   read once and its C-STORE-RQ packed directly (:mod:`._store`); otherwise pynetdicom streams
   the dataset that follows the file meta from disk (``STORE_SEND_CHUNKED_DATASET``, see
   :func:`_raw_send_mode`) — no decoding, no re-encoding either way. Only when the peer refused the
   file's syntax is it transcoded to the accepted fallback syntax, and the result says so.
4. An association that breaks (timeout, abort, connection lost) costs the instance in flight
   a retryable result — unless it was the first message on an association kept from an earlier
   batch (the peer may have closed it while it was idle): that instance is sent again on a new
   association. The thread re-associates and goes on. After ``max_reassociations``
   consecutive failures to associate, the thread stops; instances nobody could send are
   reported retryable with the reason.

Confirmation (``confirm``) by Storage Commitment (:mod:`.commitment_scu`), by C-FIND
(:mod:`.query`), or commitment with the query as fallback when the peer refuses storage
commitment or its report does not come in time, as the settings say.
"""

from __future__ import annotations

import collections
import logging
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom.uid import UID
from pynetdicom import _config

from dicom_nodes.forward import query
from dicom_nodes.forward._association import (
    FALLBACK_SYNTAXES,
    MAX_CONTEXTS,
    AssociationFailed,
    StoreContexts,
    accelerated,
    store_contexts,
)
from dicom_nodes.forward._store import send_file
from dicom_nodes.forward.commitment import CommitmentSink
from dicom_nodes.forward.commitment_scu import request_commitment
from dicom_nodes.forward.model import (
    ConfirmationUnavailable,
    InstanceRef,
    OutgoingFile,
    SendResult,
    TranscodeImpossible,
)
from dicom_nodes.forward.pool import AssociationPool, Lease
from dicom_nodes.forward.settings import ConfirmMethod, DimseSettings
from dicom_nodes.forward.status import Outcome, classify_store_status, describe_status
from dicom_nodes.forward.transcode import transcode

__all__ = ["DimseDestination"]

LOGGER = logging.getLogger(__name__)


def _raw_send_mode() -> None:
    """Make ``send_c_store(path)`` stream the file's dataset bytes instead of decoding it.

    pynetdicom reads ``_config.STORE_SEND_CHUNKED_DATASET`` (process-global) at each call. It
    only changes ``send_c_store`` given a *path*: with it the dataset after the file meta is
    sent verbatim in the file's transfer syntax, without it the file is decoded by pydicom
    and re-encoded — which this module must never do behind the caller's back. It is set
    before every call rather than once at import, so nothing else in the process (tests
    toggle it) can switch us to re-encoding. Radiogate has no other C-STORE SCU; a future one
    in the same process would also send raw bytes, which is the only behaviour we want."""
    _config.STORE_SEND_CHUNKED_DATASET = True


def _same_class(found: dict[str, str], instance: InstanceRef) -> bool:
    """Found, and under the same SOP class (a peer that returns no class gets the benefit)."""
    sop_class = found.get(instance.sop_instance_uid)
    return sop_class is not None and sop_class in ("", instance.sop_class_uid)


class _Plan:
    """Which syntax to send each file in, from what the peer accepted."""

    def __init__(self, assoc: Any) -> None:
        self.accepted: dict[str, set[str]] = collections.defaultdict(set)
        for cx in assoc.accepted_contexts:
            if cx.as_scu:
                self.accepted[str(cx.abstract_syntax)].add(str(cx.transfer_syntax[0]))

    def syntax_for(self, file: OutgoingFile) -> str | None:
        syntaxes = self.accepted.get(file.sop_class_uid, set())
        if file.transfer_syntax_uid in syntaxes:
            return file.transfer_syntax_uid
        return next((ts for ts in FALLBACK_SYNTAXES if ts in syntaxes), None)


class _Batch:
    """Shared state of one ``send`` call: the work queue and the results."""

    def __init__(self, files: Sequence[OutgoingFile], indices: list[int]) -> None:
        self.files = files
        self._todo = collections.deque(indices)
        self._lock = threading.Lock()
        self.results: dict[int, SendResult] = {}
        self.last_error = ""

    def take(self) -> int | None:
        with self._lock:
            return self._todo.popleft() if self._todo else None

    def again(self, index: int) -> None:
        """Put *index* back at the head of the queue (its association died before it)."""
        with self._lock:
            self._todo.appendleft(index)

    def pending(self) -> bool:
        with self._lock:
            return bool(self._todo)

    def put(self, index: int, result: SendResult) -> None:
        with self._lock:
            self.results[index] = result


class DimseDestination:
    """A DICOM peer reached by C-STORE; see the module docstring.

    *commitment_sink* records our storage commitment requests and receives the reports sent
    to our ``calling_ae``: in production the PostgreSQL sink that ``radiogate scp`` writes
    (:class:`~dicom_nodes.db.commitment.PostgresCommitmentSink`), in tests also a
    :class:`~dicom_nodes.forward.listener.CommitmentListener`'s.
    *workdir* holds transcoded copies while they are sent (default: the system temp dir).
    """

    def __init__(
        self,
        settings: DimseSettings,
        commitment_sink: CommitmentSink | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.commitment_sink = commitment_sink
        self.workdir = workdir
        self.pool = AssociationPool(settings, settings.keep_open)

    def close(self) -> None:
        """Release the associations kept open between batches."""
        self.pool.close()

    # -- sending -----------------------------------------------------------------------

    def send(self, files: Sequence[OutgoingFile]) -> list[SendResult]:
        """C-STORE every file; one result per file, in order (PS3.4 B.2.3 statuses)."""
        if not files:
            return []
        results: dict[int, SendResult] = {}
        pairs = [(f.sop_class_uid, f.transfer_syntax_uid) for f in files]
        with tempfile.TemporaryDirectory(prefix="radiogate-fwd-", dir=self.workdir) as tmp:
            for group in store_contexts(pairs, room=MAX_CONTEXTS - 1):  # + the C-FIND context
                wanted = group.pairs
                indices = [i for i, pair in enumerate(pairs) if pair in wanted]
                results.update(self._send_group(files, indices, group, Path(tmp)))
        return [results[i] for i in range(len(files))]

    def _send_group(
        self, files: Sequence[OutgoingFile], indices: list[int], group: StoreContexts, tmp: Path
    ) -> dict[int, SendResult]:
        batch = _Batch(files, indices)
        n_threads = min(self.settings.parallel, len(indices))
        threads = [
            threading.Thread(
                target=self._sender,
                args=(batch, group, tmp),
                name=f"forward-{self.name}-{n}",
                daemon=True,
            )
            for n in range(n_threads)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for index in indices:
            if index not in batch.results:
                batch.results[index] = SendResult(
                    files[index].sop_instance_uid,
                    None,
                    ok=False,
                    retryable=True,
                    note=f"not sent: {batch.last_error or 'no association'}",
                )
        return batch.results

    def _sender(self, batch: _Batch, group: StoreContexts, tmp: Path) -> None:
        """One association thread: associate, send until the queue is empty, re-associate
        after a failure (at most ``max_reassociations`` failures in a row)."""
        failures = 0
        while batch.pending():
            try:
                lease = self.pool.acquire(group.pairs, group.contexts)
            except AssociationFailed as exc:
                failures += 1
                batch.last_error = str(exc)
                LOGGER.warning("%s: %s (attempt %d)", self.name, exc, failures)
                if failures >= self.settings.max_reassociations:
                    return
                time.sleep(min(0.5 * failures, 5.0))
                continue
            failures = 0
            try:
                self._send_on(lease, batch, tmp)
            finally:
                self.pool.give_back(lease)

    def _send_on(self, lease: Lease, batch: _Batch, tmp: Path) -> None:
        assoc = lease.assoc
        plan = _Plan(assoc)
        first = lease.reused
        while assoc.is_established:
            index = batch.take()
            if index is None:
                return
            file = batch.files[index]
            result = self._store(assoc, file, plan, next(lease.message_ids), tmp)
            if result.status is None and result.retryable:
                batch.last_error = result.note
                if first:
                    batch.again(index)  # the kept association had died: send it on a new one
                else:
                    batch.put(index, result)
                return  # the association is gone; the caller re-associates
            batch.put(index, result)
            first = False
        if first:
            return  # found closed before its first message: the caller re-associates

    def _store(
        self, assoc: Any, file: OutgoingFile, plan: _Plan, msg_id: int, tmp: Path
    ) -> SendResult:
        uid = file.sop_instance_uid
        syntax = plan.syntax_for(file)
        own = UID(file.transfer_syntax_uid)
        if syntax is None:
            return SendResult(
                uid,
                None,
                ok=False,
                retryable=False,
                note=f"{self.name} accepts SOP class {UID(file.sop_class_uid).name} in neither "
                f"{own.name} nor an uncompressed syntax",
            )
        path = file.path
        note = ""
        transcoded_from = None
        if syntax != file.transfer_syntax_uid:
            try:
                path = transcode(file.path, syntax, tmp)
            except TranscodeImpossible as exc:
                return SendResult(
                    uid,
                    None,
                    ok=False,
                    retryable=False,
                    note=f"{self.name} refused {own.name} and transcoding is impossible: {exc}",
                )
            transcoded_from = file.transfer_syntax_uid
            note = (
                f"transcoded from {own.name} to {UID(syntax).name}: {self.name} refused {own.name}"
            )
        try:
            rsp = None
            if transcoded_from is None and accelerated():
                rsp = send_file(assoc, file, msg_id)  # None: the direct path does not apply
            if rsp is None:
                _raw_send_mode()
                rsp = assoc.send_c_store(path, msg_id=msg_id)
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            assoc.abort()  # a partly sent message leaves the association unusable
            return SendResult(
                uid, None, ok=False, retryable=False, note=f"cannot read file: {exc.strerror}"
            )
        except (OSError, RuntimeError) as exc:  # association gone while sending
            assoc.abort()
            return SendResult(uid, None, ok=False, retryable=True, note=f"send failed: {exc}")
        except (ValueError, AttributeError) as exc:  # no context / no file meta: our bug
            return SendResult(uid, None, ok=False, retryable=False, note=f"not sendable: {exc}")
        finally:
            if transcoded_from is not None:
                path.unlink(missing_ok=True)
        if "Status" not in rsp:
            return SendResult(
                uid,
                None,
                ok=False,
                retryable=True,
                note="no C-STORE response (timeout, abort or connection lost)",
            )
        status = int(rsp.Status)
        outcome = classify_store_status(status, self.settings.extra_retryable_statuses)
        if outcome is not Outcome.OK or status != 0:
            note = "; ".join(x for x in (note, describe_status(status)) if x)
        return SendResult(
            uid,
            status,
            ok=outcome is Outcome.OK,
            retryable=outcome is Outcome.RETRYABLE,
            sent_transfer_syntax=syntax,
            note=note,
            transcoded_from=transcoded_from,
        )

    # -- confirming --------------------------------------------------------------------

    def confirm(self, instances: Sequence[InstanceRef]) -> dict[str, bool]:
        """Which *instances* the peer holds, by the configured :class:`ConfirmMethod`."""
        if not instances:
            return {}
        method = self.settings.confirm
        if method is ConfirmMethod.NONE:
            return {i.sop_instance_uid: True for i in instances}
        if method is not ConfirmMethod.QUERY:
            try:
                return self.confirm_by_commitment(instances)
            except ConfirmationUnavailable as exc:
                if method is ConfirmMethod.STORAGE_COMMITMENT:
                    LOGGER.warning(
                        "%s: storage commitment failed (%s); unconfirmed until the next attempt",
                        self.name,
                        exc,
                    )
                    raise
                LOGGER.warning(
                    "%s: storage commitment failed (%s); falling back to C-FIND", self.name, exc
                )
        return self.confirm_by_query(instances)

    def confirm_by_query(self, instances: Sequence[InstanceRef]) -> dict[str, bool]:
        """C-FIND the instances (PS3.4 C.6); confirmed when found with the same SOP class
        (found at all when ``confirm_class`` is off)."""
        found = self._find([i.sop_instance_uid for i in instances])
        confirmed = {i.sop_instance_uid: _same_class(found, i) for i in instances}
        LOGGER.info(
            "%s: %d of %d instances confirmed by C-FIND",
            self.name,
            sum(confirmed.values()),
            len(confirmed),
        )
        return confirmed

    def _find(self, uids: list[str]) -> dict[str, str]:
        """:func:`.query.find_on` on a pooled association; once more on a new association when
        a kept one fails (the peer may have closed it while it was idle)."""
        for attempt in (0, 1):
            try:
                lease = self.pool.acquire_find()
            except AssociationFailed as exc:
                raise ConfirmationUnavailable(str(exc)) from exc
            try:
                if not lease.can_find:
                    raise ConfirmationUnavailable(
                        f"{self.settings.name} does not accept Study Root C-FIND"
                    )
                return query.find_on(
                    lease.assoc, uids, lease.message_ids, with_class=self.settings.confirm_class
                )
            except ConfirmationUnavailable:
                if not (lease.reused and attempt == 0 and not lease.assoc.is_established):
                    raise
            finally:
                self.pool.give_back(lease)
        raise AssertionError("unreachable")  # pragma: no cover

    def confirm_by_commitment(self, instances: Sequence[InstanceRef]) -> dict[str, bool]:
        """Storage Commitment Push Model (PS3.4 J.3), see :mod:`.commitment_scu`.

        Raises :class:`ConfirmationUnavailable`."""
        if self.commitment_sink is None:
            raise ConfirmationUnavailable("no commitment sink to receive the report")
        return request_commitment(self.settings, self.commitment_sink, instances)
