"""What every result object shares: identity, provenance, dates and the private coding scheme.

* **Identity** - UIDs are name-based UUIDs under the ``2.25`` root (PS3.5 B.2, ITU-T X.667
  version 5): the same source series, algorithm and inputs give the same Series and SOP
  Instance UIDs, so a re-run stores the same instance again instead of a near-duplicate.
  Series Numbers are fixed per kind of object and Series Descriptions name the kind, with
  "(not for clinical use)" when a demonstration model contributed.
* **Provenance** - General Equipment (PS3.3 C.7.5.1) is Radiogate; each algorithm is a
  Contributing Equipment item (PS3.3 C.12.1.1.7, purpose Processing Equipment) whose model
  name is the algorithm and whose software version is the algorithm's.
* **Private codes** - Coding Scheme Identification Sequence (0008,0110), PS3.3 C.12.1.1.5,
  lists ``99RADIOGATE`` whenever a code of it occurs anywhere in the object.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import threading
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import highdicom as hd
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import DA, DT, TM

from analysis.results.codes import (
    PRIVATE_SCHEME,
    PRIVATE_SCHEME_NAME,
    PRIVATE_SCHEME_ORGANIZATION,
    PROCEDURE_BY_MODALITY,
)
from analysis.results.model import Algorithm, Provenance, TriageFinding

__all__ = [
    "NOT_FOR_CLINICAL_USE",
    "SERIES_NUMBER",
    "Identity",
    "ResultKind",
    "adopt_content",
    "algorithm_identification",
    "algorithm_sequence",
    "check_one_series",
    "contributing_equipment",
    "declare_private_schemes",
    "derived_uid",
    "device_observer",
    "device_observer_context",
    "flagged_datasets",
    "procedure_reported",
    "single_component_names",
    "stamp",
]

# Namespace of Radiogate's name-based UIDs (a fixed random UUID: never change it, or re-runs
# produce new UIDs for the same results).
_NAMESPACE = uuid.UUID("6f0c2a4e-3b7d-4c61-9a55-2d8e1f7b0c93")
NOT_FOR_CLINICAL_USE = " (not for clinical use)"


class ResultKind(StrEnum):
    """The kinds of object Radiogate writes back; the value names the series."""

    TRIAGE = "triage"
    KEY_IMAGES = "key images"
    SEGMENTATION = "segmentation"
    MEASUREMENTS = "measurements"


SERIES_NUMBER: dict[ResultKind, int] = {
    ResultKind.TRIAGE: 9901,
    ResultKind.KEY_IMAGES: 9902,
    ResultKind.SEGMENTATION: 9903,
    ResultKind.MEASUREMENTS: 9904,
}


def derived_uid(*parts: str) -> str:
    """A ``2.25`` UID from a version 5 (SHA-1 name-based) UUID of *parts* (at most 44 chars)."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, chr(31).join(parts)).int}"


@dataclass(frozen=True)
class Identity:
    """Series and instance identity of one result object."""

    series_instance_uid: str
    sop_instance_uid: str
    series_number: int
    series_description: str

    @classmethod
    def of(
        cls, kind: ResultKind, source_series: str, algorithms: Sequence[Algorithm], *inputs: str
    ) -> Identity:
        """The identity of the *kind* object derived from *source_series* by *algorithms*
        (name, version and hashes) from *inputs* (the results' ``repr``, a digest of the masks,
        the SEG a report refers to): a re-run with the same inputs gets the same UIDs, a
        changed result new ones."""
        names = [
            f"{a.name}|{a.version}|{a.model_hash}|{a.parameter_hash}"
            for a in sorted(algorithms, key=lambda a: (a.name, a.version))
        ]
        digest = hashlib.sha256(chr(31).join(inputs).encode()).hexdigest()
        description = f"Radiogate {kind}"
        if any(a.demonstration for a in algorithms):
            description += NOT_FOR_CLINICAL_USE
        return cls(
            series_instance_uid=derived_uid("series", kind, source_series, *names),
            sop_instance_uid=derived_uid("instance", kind, source_series, *names, digest),
            series_number=SERIES_NUMBER[kind],
            series_description=description,
        )


def check_one_series(datasets: Sequence[Dataset]) -> str:
    """The Series Instance UID shared by *datasets*; ValueError if they span several series
    or none is given."""
    if not datasets:
        raise ValueError("no source datasets")
    series = {str(ds.SeriesInstanceUID) for ds in datasets}
    if len(series) != 1:
        raise ValueError(f"source datasets span {len(series)} series")
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    if len(set(uids)) != len(uids):
        raise ValueError("a source SOP instance is given twice")
    return series.pop()


def flagged_datasets(source: Sequence[Dataset], finding: TriageFinding) -> list[Dataset]:
    """The datasets of the images *finding* flags, in its order; ValueError when *source* is
    not the finding's series or lacks one of them."""
    if check_one_series(source) != finding.series_instance_uid:
        raise ValueError("the finding is about another series than the source datasets")
    by_uid = {str(ds.SOPInstanceUID): ds for ds in source}
    missing = [uid for uid in finding.flagged if uid not in by_uid]
    if missing:
        raise ValueError(f"{len(missing)} flagged images are not among the source datasets")
    return [by_uid[uid] for uid in finding.flagged]


def contributing_equipment(
    provenance: Provenance, algorithm: Algorithm
) -> hd.ContributingEquipment:
    """One Contributing Equipment item for *algorithm* (PS3.3 C.12.1.1.7)."""
    description = f"{algorithm.name} {algorithm.version}"
    if algorithm.demonstration:
        description += NOT_FOR_CLINICAL_USE
    return hd.ContributingEquipment(
        manufacturer=provenance.manufacturer,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version,
        contribution_description=description,
    )


def algorithm_identification(algorithm: Algorithm) -> hd.sr.AlgorithmIdentification:
    """TID 4019 Algorithm Identification: name, version, one parameter per hash, family."""
    return hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=[f"{k}={v}" for k, v in algorithm.parameters.items()],
        family=algorithm.family,
    )


def algorithm_sequence(
    algorithm: Algorithm, provenance: Provenance
) -> hd.AlgorithmIdentificationSequence:
    """Segmentation Algorithm Identification Sequence (PS3.3 C.8.20.2, Table 10-19)."""
    return hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=algorithm.family,
        version=algorithm.version,
        source=provenance.manufacturer,
        parameters=algorithm.parameters,
    )


def device_observer(provenance: Provenance) -> hd.sr.ObserverContext:
    """Observer Type = Device with Radiogate's identifying attributes (TID 1002, TID 1004)."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=derived_uid("device", provenance.manufacturer, provenance.device_serial_number),
        name=provenance.model_name,
        manufacturer_name=provenance.manufacturer,
        model_name=provenance.model_name,
        serial_number=provenance.device_serial_number,
    )
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device
    )


def device_observer_context(provenance: Provenance) -> hd.sr.ObservationContext:
    """TID 1001 observation context with Radiogate as the device observer."""
    return hd.sr.ObservationContext(observer_device_context=device_observer(provenance))


@contextlib.contextmanager
def single_component_names() -> Iterator[None]:
    """Silence highdicom's warning about one-component Person Names: de-identified patients
    are named by a one-component pseudonym (``RG...``) on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=".*unlikely to represent the intended person name",
            category=UserWarning,
        )
        yield


_ADOPTING = threading.Lock()


@contextlib.contextmanager
def adopt_content(content: Dataset) -> Iterator[None]:
    """Let highdicom's SR constructor take *content* (a tree built for this one report) as it
    is instead of deep-copying it first: ``highdicom.sr.sop`` copies the content tree so the
    caller's stays intact, then converts the copy's items to its own classes in place. The
    items are highdicom's already, the conversion gives the same elements and nothing else
    holds the tree, so the document is the same and the copy (about a third of the report's
    time) is saved. Any other object is still copied; one report at a time per process.

    The constructor's evidence check is made by a plain walk of the tree as well
    (:func:`_collect_evidence`): the same references, error and evidence items."""
    from highdicom.sr import sop

    with _ADOPTING:
        original = sop.deepcopy  # type: ignore[attr-defined]
        original_collect = sop.collect_evidence  # type: ignore[attr-defined]

        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value if value is content else original(value, memo)

        def collect(
            evidence: Sequence[Dataset], content: Dataset, study_instance_uid: str | None = None
        ) -> tuple[list[Dataset], list[Dataset]]:
            return _collect_evidence(original_collect, evidence, content, study_instance_uid)

        sop.deepcopy = deepcopy  # type: ignore[assignment,attr-defined]
        sop.collect_evidence = collect  # type: ignore[attr-defined]
        try:
            yield
        finally:
            sop.deepcopy = original  # type: ignore[attr-defined]
            sop.collect_evidence = original_collect  # type: ignore[attr-defined]


def _collect_evidence(
    collect: Any, evidence: Sequence[Dataset], tree: Dataset, study_instance_uid: str | None
) -> tuple[list[Dataset], list[Dataset]]:
    """``highdicom.sr.utils.collect_evidence`` (*collect*): the evidence items by study and
    series, and a ValueError when the tree refers to an instance (IMAGE or COMPOSITE content
    item, PS3.3 C.17.3) not among *evidence*. highdicom finds the references by making a
    ContentItem and a CodedConcept of every item of the tree, which costs more than the rest
    of its evidence work; here they are read off the tree, and highdicom groups the items."""
    no_references = Dataset()
    no_references.ContentSequence = []
    out: tuple[list[Dataset], list[Dataset]] = collect(
        evidence, no_references, study_instance_uid=study_instance_uid
    )
    missing = _references(tree) - {ds.SOPInstanceUID for ds in evidence}
    if missing:
        listed = '", "'.join(sorted(missing))
        raise ValueError(
            "No evidence was provided for the following SOP instances, which are referenced "
            f'in the document content: "{listed}"'
        )
    return out


def _references(node: Dataset) -> set[str]:
    """SOP Instance UIDs of the IMAGE and COMPOSITE content items under *node*."""
    out: set[str] = set()
    for item in node.get("ContentSequence", []):
        if item.get("ValueType") in ("IMAGE", "COMPOSITE"):
            out.add(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        if "ContentSequence" in item:
            out |= _references(item)
    return out


def procedure_reported(source: Dataset) -> hd.sr.CodedConcept:
    """TID 1500 Procedure Reported for the source's modality (CID 100, baseline)."""
    modality = str(source.get("Modality", ""))
    code = PROCEDURE_BY_MODALITY.get(modality)
    if code is None:
        raise ValueError(f"no procedure code for modality {modality!r}")
    return hd.sr.CodedConcept.from_code(code)


def _designators(items: Iterable[Dataset]) -> Iterator[str]:
    for item in items:
        for element in item:
            if element.keyword == "CodingSchemeDesignator":
                yield str(element.value)
            elif element.VR == "SQ":
                yield from _designators(element.value)


def declare_private_schemes(ds: Dataset) -> None:
    """Declare ``99RADIOGATE`` in (0008,0110) when one of its codes occurs in *ds*; refuse any
    other private designator, which Radiogate could not describe."""
    private = {d for d in _designators([ds]) if d.startswith("99")}
    unknown = private - {PRIVATE_SCHEME}
    if unknown:
        raise ValueError(f"codes of unknown private coding schemes: {sorted(unknown)}")
    if private:
        ds.CodingSchemeIdentificationSequence = [
            CodingSchemeIdentificationItem(
                designator=PRIVATE_SCHEME,
                name=PRIVATE_SCHEME_NAME,
                responsible_organization=PRIVATE_SCHEME_ORGANIZATION,
            )
        ]


def stamp(ds: Dataset, created: datetime.datetime | None) -> None:
    """Set creation, series, content and contribution date/time to *created* (the same inputs
    and time give the same bytes); leave highdicom's "now" when *created* is None."""
    if created is None:
        return
    date, time = DA(created.date()), TM(created.time())
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SeriesDate, ds.SeriesTime = date, time
    if "ContentDate" in ds:
        ds.ContentDate, ds.ContentTime = date, time
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = DT(created)
