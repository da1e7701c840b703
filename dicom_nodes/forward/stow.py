"""DICOMweb destination: STOW-RS to store (PS3.18 10.5), QIDO-RS to confirm (PS3.18 10.6).

A batch is one ``POST {root}/studies`` with a ``multipart/related; type="application/dicom"``
body (PS3.18 8.6.1.2), each part a whole Part 10 file as it is on disk (no transcoding: a
DICOMweb origin server converts if it must). The body is streamed from the files with a
precomputed Content-Length, so memory does not grow with the batch.

The response (PS3.18 10.5.3, Table 10.5.3-1) lists instances in Referenced SOP Sequence
(0008,1199) — stored, possibly with a Warning Reason (0008,1196) — or Failed SOP Sequence
(0008,1198) with a Failure Reason (0008,1197), which uses the C-STORE status codes and is
classified the same way (:func:`~dicom_nodes.forward.status.classify_store_status`).
HTTP-level outcomes:

    connection error, timeout, 408, 429, 5xx  -> every instance retryable (status None)
    other 4xx (400, 401, 403, 404, 413, 415)   -> every instance permanent (status None)
    200 / 202 / 409                            -> per instance from the response body
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dicom_nodes.forward.model import ConfirmationUnavailable, InstanceRef, OutgoingFile, SendResult
from dicom_nodes.forward.settings import StowSettings
from dicom_nodes.forward.status import Outcome, StoreStatus, classify_store_status, describe_status

__all__ = ["StowRsDestination", "multipart_body"]

LOGGER = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_UIDS_PER_QIDO = 50
_RETRYABLE_HTTP = frozenset({408, 425, 429})
# DICOM JSON keywords (PS3.18 F.2): tags as 8 hex digits
_REFERENCED_SOP_SEQ = "00081199"
_FAILED_SOP_SEQ = "00081198"
_REF_SOP_INSTANCE = "00081155"
_FAILURE_REASON = "00081197"
_WARNING_REASON = "00081196"
_SOP_INSTANCE = "00080018"
_SOP_CLASS = "00080016"


def multipart_body(files: Sequence[OutgoingFile], boundary: str) -> tuple[int, Iterator[bytes]]:
    """(Content-Length, chunks) of a multipart/related body of *files* (RFC 2387, PS3.18 8.6)."""
    heads = [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() for _ in files]
    tail = f"--{boundary}--\r\n".encode()
    length = sum(len(h) + f.path.stat().st_size + 2 for h, f in zip(heads, files, strict=True))
    length += len(tail)

    def chunks() -> Iterator[bytes]:
        for head, file in zip(heads, files, strict=True):
            yield head
            with file.path.open("rb") as fh:
                while block := fh.read(_CHUNK):
                    yield block
            yield b"\r\n"
        yield tail

    return length, chunks()


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


class StowRsDestination:
    """A DICOMweb origin server; see the module docstring."""

    def __init__(self, settings: StowSettings) -> None:
        self.settings = settings
        self.name = settings.name
        parts = urllib.parse.urlsplit(settings.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._root = parts.path.rstrip("/")
        self._ssl: ssl.SSLContext | None = None
        if self._https:
            self._ssl = (
                settings.tls.client_context()
                if settings.tls.enabled
                else ssl.create_default_context()
            )

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self.settings.timeout, context=self._ssl
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self.settings.timeout)

    # -- sending -----------------------------------------------------------------------

    def _batches(self, files: Sequence[OutgoingFile]) -> list[list[int]]:
        batches: list[list[int]] = []
        current: list[int] = []
        size = 0
        for index, file in enumerate(files):
            try:
                file_size = file.path.stat().st_size
            except OSError:
                file_size = 0  # reported by the request that reads it
            full = len(current) >= self.settings.max_instances_per_request
            if current and (full or size + file_size > self.settings.max_bytes_per_request):
                batches.append(current)
                current, size = [], 0
            current.append(index)
            size += file_size
        if current:
            batches.append(current)
        return batches

    def send(self, files: Sequence[OutgoingFile]) -> list[SendResult]:
        """STOW-RS *files* in batches, ``parallel`` requests at a time; results in order."""
        results: list[SendResult | None] = [None] * len(files)
        batches = self._batches(files)
        with ThreadPoolExecutor(max_workers=self.settings.parallel) as pool:
            for batch, batch_results in zip(
                batches, pool.map(lambda b: self._post([files[i] for i in b]), batches), strict=True
            ):
                for index, result in zip(batch, batch_results, strict=True):
                    results[index] = result
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    def _post(self, files: list[OutgoingFile]) -> list[SendResult]:
        boundary = f"radiogate-{uuid.uuid4().hex}"
        try:
            length, body = multipart_body(files, boundary)
        except OSError as exc:
            return [
                SendResult(f.sop_instance_uid, None, False, False, note=f"cannot read: {exc}")
                for f in files
            ]
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Content-Length": str(length),
            "Accept": "application/dicom+json",
            **dict(self.settings.headers),
        }
        conn = self._connection()
        try:
            conn.request("POST", f"{self._root}/studies", body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            LOGGER.warning("%s: STOW-RS request failed: %s", self.name, exc)
            return [
                SendResult(f.sop_instance_uid, None, False, True, note=f"STOW-RS failed: {exc}")
                for f in files
            ]
        finally:
            conn.close()
        return self._results(files, response.status, payload)

    def _results(
        self, files: list[OutgoingFile], http_status: int, payload: bytes
    ) -> list[SendResult]:
        if http_status not in (200, 202, 409):
            retryable = http_status >= 500 or http_status in _RETRYABLE_HTTP
            note = f"STOW-RS answered HTTP {http_status}"
            return [
                SendResult(f.sop_instance_uid, None, False, retryable, note=note) for f in files
            ]
        stored: dict[str, int] = {}
        failed: dict[str, int] = {}
        try:
            doc = json.loads(payload) if payload.strip() else {}
            for item in doc.get(_REFERENCED_SOP_SEQ, {}).get("Value") or []:
                warning = _value(item, _WARNING_REASON)
                stored[str(_value(item, _REF_SOP_INSTANCE))] = int(warning or 0)
            for item in doc.get(_FAILED_SOP_SEQ, {}).get("Value") or []:
                reason = _value(item, _FAILURE_REASON)
                failed[str(_value(item, _REF_SOP_INSTANCE))] = int(
                    reason if reason is not None else StoreStatus.CANNOT_UNDERSTAND
                )
        except (ValueError, AttributeError, TypeError) as exc:
            LOGGER.warning("%s: unreadable STOW-RS response: %s", self.name, exc)
        results = []
        for file in files:
            uid = file.sop_instance_uid
            if uid in failed:
                status = failed[uid]
                outcome = classify_store_status(status)
                results.append(
                    SendResult(
                        uid,
                        status,
                        ok=outcome is Outcome.OK,
                        retryable=outcome is Outcome.RETRYABLE,
                        note=f"STOW-RS failure reason {describe_status(status)}",
                    )
                )
            elif uid in stored or http_status == 200:
                status = stored.get(uid, StoreStatus.SUCCESS)
                note = "" if uid in stored else "HTTP 200 but not listed in the response"
                if status:
                    note = f"warning {describe_status(status)}"
                results.append(SendResult(uid, status, True, False, file.transfer_syntax_uid, note))
            else:
                results.append(
                    SendResult(
                        uid,
                        None,
                        False,
                        True,
                        note=f"HTTP {http_status}: instance not listed in the STOW-RS response",
                    )
                )
        return results

    # -- confirming --------------------------------------------------------------------

    def confirm(self, instances: Sequence[InstanceRef]) -> dict[str, bool]:
        """QIDO-RS ``GET {root}/instances?SOPInstanceUID=a,b,...`` (PS3.18 10.6.1, UID list
        matching 8.3.4.1); confirmed when found under the same SOP class."""
        found: dict[str, str] = {}
        uids = [i.sop_instance_uid for i in instances]
        for start in range(0, len(uids), _UIDS_PER_QIDO):
            chunk = uids[start : start + _UIDS_PER_QIDO]
            query = urllib.parse.urlencode(
                {"SOPInstanceUID": ",".join(chunk), "includefield": _SOP_CLASS}
            )
            conn = self._connection()
            try:
                conn.request(
                    "GET",
                    f"{self._root}/instances?{query}",
                    headers={"Accept": "application/dicom+json", **dict(self.settings.headers)},
                )
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                raise ConfirmationUnavailable(f"QIDO-RS failed: {exc}") from exc
            finally:
                conn.close()
            if response.status == 204:
                continue
            if response.status != 200:
                raise ConfirmationUnavailable(f"QIDO-RS answered HTTP {response.status}")
            try:
                for item in json.loads(payload):
                    found[str(_value(item, _SOP_INSTANCE))] = str(_value(item, _SOP_CLASS) or "")
            except (ValueError, TypeError, AttributeError) as exc:
                raise ConfirmationUnavailable(f"unreadable QIDO-RS response: {exc}") from exc
        return {
            i.sop_instance_uid: found.get(i.sop_instance_uid) in ("", i.sop_class_uid)
            for i in instances
        }
