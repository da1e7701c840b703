"""Forwarding I/O: send spooled DICOM files to destinations and confirm receipt.

Every destination follows :class:`Destination`::

    send(files: Sequence[OutgoingFile]) -> list[SendResult]      # one result per file, in order
    confirm(instances: Sequence[InstanceRef]) -> dict[str, bool]  # SOP Instance UID -> held?

Implementations: :class:`DimseDestination` (C-STORE SCU; storage commitment or C-FIND to
confirm), :class:`StowRsDestination` (DICOMweb STOW-RS / QIDO-RS) and
:class:`DirectoryDestination` (dry runs, tests). Each is built from its settings dataclass.
Storage commitment reports arrive through :func:`handle_commitment_report` bound in an SCP
(``radiogate scp``, or a :class:`CommitmentListener`) into a :class:`CommitmentSink`, where the
requesting destination finds them (:mod:`.commitment_scu`). :func:`use_accelerator` applies
``forward.accelerate`` to every association this process requests.
"""

from dicom_nodes.forward._association import use_accelerator
from dicom_nodes.forward.commitment import (
    CommitmentReport,
    CommitmentSink,
    EventReportStatus,
    InMemoryCommitmentSink,
    commitment_scp_context,
    handle_commitment_report,
)
from dicom_nodes.forward.dimse import DimseDestination
from dicom_nodes.forward.directory import DirectoryDestination
from dicom_nodes.forward.factory import (
    DestinationConfig,
    build_destination,
    make_destination,
)
from dicom_nodes.forward.listener import CommitmentListener
from dicom_nodes.forward.model import (
    ConfirmationUnavailable,
    Destination,
    Instance,
    InstanceRef,
    OutgoingFile,
    SendResult,
    TranscodeImpossible,
)
from dicom_nodes.forward.settings import (
    ConfirmMethod,
    DimseSettings,
    DirectorySettings,
    StowSettings,
    TlsSettings,
)
from dicom_nodes.forward.status import CommitmentFailureReason, Outcome, StoreStatus
from dicom_nodes.forward.stow import StowRsDestination

__all__ = [
    "CommitmentFailureReason",
    "CommitmentListener",
    "CommitmentReport",
    "CommitmentSink",
    "ConfirmMethod",
    "ConfirmationUnavailable",
    "Destination",
    "DestinationConfig",
    "DimseDestination",
    "DimseSettings",
    "DirectoryDestination",
    "DirectorySettings",
    "EventReportStatus",
    "InMemoryCommitmentSink",
    "Instance",
    "InstanceRef",
    "Outcome",
    "OutgoingFile",
    "SendResult",
    "StoreStatus",
    "StowRsDestination",
    "StowSettings",
    "TlsSettings",
    "TranscodeImpossible",
    "build_destination",
    "commitment_scp_context",
    "handle_commitment_report",
    "make_destination",
    "use_accelerator",
]
