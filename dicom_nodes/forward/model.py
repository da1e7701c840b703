"""What a destination is given, what it answers, and the Protocol every destination follows.

A forwarding job hands a :class:`Destination` a batch of spooled Part 10 files
(:class:`OutgoingFile`) and gets one :class:`SendResult` per file, in the same order. It later
asks :meth:`Destination.confirm` which SOP Instance UIDs the destination holds before it
releases the spool copies (ARCHITECTURE.md, pipeline step 5). Nothing here raises for a
per-instance failure: a failure is a result that says whether a retry can help.

Exceptions (all from :mod:`dicom_nodes.errors`' tree):

    RetryableError
    └── ConfirmationUnavailable   the destination could not be asked (down, no report in time)
    PermanentError
    └── TranscodeImpossible       the file cannot be decoded into a syntax the peer accepts
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydicom.filereader import read_file_meta_info

from dicom_nodes.dimse.codec import read_part10_meta
from dicom_nodes.errors import PermanentError, RetryableError

__all__ = [
    "ConfirmationUnavailable",
    "Destination",
    "Instance",
    "InstanceRef",
    "OutgoingFile",
    "SendResult",
    "TranscodeImpossible",
]


_HEAD = 4096
"""Bytes read for the File Meta Information (a longer group is left to pydicom)."""


class ConfirmationUnavailable(RetryableError):
    """The destination could not answer a confirmation request (ask again later)."""


class TranscodeImpossible(PermanentError):
    """The file's transfer syntax is refused and the file cannot be decoded to another one."""


_UID_CHARACTERS = re.compile(r"[0-9.]{1,64}")
"""What a UID may hold: digits and periods, 64 characters at most (PS3.5 9.1)."""


def _check_uid(name: str, value: str) -> None:
    if not isinstance(value, str) or not _UID_CHARACTERS.fullmatch(value):
        raise ValueError(f"{name} is not a valid UID: {value!r}")


class InstanceRef(Protocol):
    """Anything naming an instance by SOP Class and SOP Instance UID (an :class:`Instance`,
    an :class:`OutgoingFile`, an ingest row). Confirmation needs both: storage commitment
    references instances by class and instance (PS3.4 Table J.3-1)."""

    @property
    def sop_class_uid(self) -> str: ...

    @property
    def sop_instance_uid(self) -> str: ...


@dataclass(frozen=True)
class Instance:
    """A SOP instance reference (SOP Class UID, SOP Instance UID)."""

    sop_class_uid: str
    sop_instance_uid: str

    def __post_init__(self) -> None:
        _check_uid("sop_class_uid", self.sop_class_uid)
        _check_uid("sop_instance_uid", self.sop_instance_uid)


@dataclass(frozen=True)
class OutgoingFile:
    """A spooled DICOM Part 10 file (PS3.10 7.1) to forward, with its identifying UIDs."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        _check_uid("sop_class_uid", self.sop_class_uid)
        _check_uid("sop_instance_uid", self.sop_instance_uid)
        _check_uid("transfer_syntax_uid", self.transfer_syntax_uid)

    @classmethod
    def from_path(cls, path: str | Path) -> OutgoingFile:
        """Build from the file's own File Meta Information (0002,0002/0003/0010): read
        directly when plainly encoded (:func:`~dicom_nodes.dimse.codec.read_part10_meta`),
        else by pydicom."""
        with open(path, "rb") as fp:
            head = fp.read(_HEAD)
        fast = read_part10_meta(head)
        if fast is not None:
            return cls(
                Path(path), fast.sop_class_uid, fast.sop_instance_uid, fast.transfer_syntax_uid
            )
        meta = read_file_meta_info(path)
        return cls(
            Path(path),
            str(meta.MediaStorageSOPClassUID),
            str(meta.MediaStorageSOPInstanceUID),
            str(meta.TransferSyntaxUID),
        )


@dataclass(frozen=True)
class SendResult:
    """The outcome of sending one instance.

    ``status`` is the DICOM status the destination answered for this instance (C-STORE-RSP
    Status, or the STOW-RS Failure Reason / 0x0000), ``None`` when there was no answer:
    either nothing could be sent for a local reason (the peer accepts neither the file's
    syntax nor one we can transcode to: permanent), or the answer never came (connection
    refused or lost, timeout, association refused or aborted): then the outcome is unknown and
    the result is retryable — sending an instance twice is harmless (destinations are
    idempotent by SOP Instance UID), losing one is not.
    ``sent_transfer_syntax`` is the syntax that went over the wire (``None`` if nothing was
    sent); it differs from the file's only when the destination refused the file's own syntax
    and the file was transcoded, which ``note`` then says.
    """

    sop_instance_uid: str
    status: int | None
    ok: bool
    retryable: bool
    sent_transfer_syntax: str | None = None
    note: str = ""
    transcoded_from: str | None = None
    """The file's own transfer syntax when the instance was sent transcoded, else ``None``."""

    def __post_init__(self) -> None:
        if self.ok and self.retryable:
            raise ValueError("a result cannot be both ok and retryable")
        if self.status is None and self.ok:
            raise ValueError("a result without a status cannot be ok")


@runtime_checkable
class Destination(Protocol):
    """A place instances are forwarded to (DIMSE peer, STOW-RS service, directory)."""

    name: str

    def send(self, files: Sequence[OutgoingFile]) -> list[SendResult]:
        """Send *files*; one result per file, in order. Never raises for a single file."""
        ...

    def confirm(self, instances: Sequence[InstanceRef]) -> dict[str, bool]:
        """Which of *instances* the destination confirms it holds, keyed by SOP Instance UID
        (every one is a key; ``False`` means "asked, and not confirmed").

        Raises :class:`ConfirmationUnavailable` when the destination cannot be asked."""
        ...
