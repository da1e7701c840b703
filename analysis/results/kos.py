"""The flagged images of a triage finding as a Key Object Selection Document (PS3.3 A.35.4).

Content tree (PS3.16 TID 2010 Key Object Selection)::

    Of Interest (113000, DCM)            - document title, CID 7010 (it has no "urgent" title)
      Observer Type = Device (TID 1004: Radiogate)
      Key Object Description (113012, DCM): the finding, its lane and category, the certainty
          and the algorithm, e.g. "Nodule: urgent lane, ACR category 2, certainty 87.5 %
          (chest-ct-triage 1.2.0, not for clinical use)"
      IMAGE (260753009, SCT, "Source") for each flagged image

The Current Requested Procedure Evidence Sequence lists the same images (PS3.3 C.17.6.2).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset

from analysis.results._common import (
    Identity,
    ResultKind,
    contributing_equipment,
    declare_private_schemes,
    device_observer,
    flagged_datasets,
    single_component_names,
    stamp,
)
from analysis.results.codes import OF_INTEREST
from analysis.results.model import Algorithm, Provenance, TriageFinding

__all__ = ["build_key_objects", "key_object_description"]


def key_object_description(finding: TriageFinding, algorithm: Algorithm) -> str:
    """The Key Object Description text: finding, lane, category, certainty and algorithm."""
    category = "not actionable" if finding.category is None else f"ACR category {finding.category}"
    by = f"{algorithm.name} {algorithm.version}"
    if algorithm.demonstration:
        by += ", not for clinical use"
    return (
        f"{finding.reason.meaning}: {finding.lane} lane, {category}, "
        f"certainty {finding.certainty:g} % ({by})"
    )


def build_key_objects(
    source: Sequence[Dataset],
    finding: TriageFinding,
    algorithm: Algorithm,
    provenance: Provenance,
    *,
    created: datetime.datetime | None = None,
) -> hd.ko.KeyObjectSelectionDocument:
    """The KOS listing the images *finding* flags in the series *source*; ValueError when
    nothing is flagged (a KOS selects at least one object)."""
    if not finding.flagged:
        raise ValueError("a key object selection needs at least one flagged image")
    flagged = flagged_datasets(source, finding)
    series = finding.series_instance_uid
    observer = device_observer(provenance)
    content = hd.ko.KeyObjectSelection(
        document_title=OF_INTEREST,
        referenced_objects=flagged,
        observer_device_context=observer,
        description=key_object_description(finding, algorithm),
    )
    identity = Identity.of(ResultKind.KEY_IMAGES, series, [algorithm], repr(finding))
    with single_component_names():
        kos = hd.ko.KeyObjectSelectionDocument(
            evidence=flagged,
            content=content,
            series_instance_uid=identity.series_instance_uid,
            series_number=identity.series_number,
            sop_instance_uid=identity.sop_instance_uid,
            instance_number=1,
            manufacturer=provenance.manufacturer,
            contributing_equipment=[contributing_equipment(provenance, algorithm)],
            series_description=identity.series_description,
            manufacturer_model_name=provenance.model_name,
            software_versions=provenance.software_version,
            device_serial_number=provenance.device_serial_number,
        )
    kos.copy_patient_and_study_information(flagged[0])  # e.g. Patient Identity Removed
    declare_private_schemes(kos)
    stamp(kos, created)
    return kos
