"""Every coded concept Radiogate writes into its results, in one place (PS3.16).

Standard concepts come from pydicom's copy of PS3.16 where it has them, so a typo cannot slip
in. Two project choices are written out here and in ``docs/results.md``:

* the triage priority is a CODE qualitative evaluation whose concept name is
  ``(260870009, SCT, "Priority")`` (a SNOMED CT attribute in the DICOM dictionary that no CID
  names) and whose value comes from CID 7035 "Actionable Finding Classification";
* concepts that PS3.16 does not define live in the private coding scheme ``99RADIOGATE``
  (PS3.3 8.2: a designator starting with ``99`` is private), declared in every object that uses
  it through the Coding Scheme Identification Sequence (0008,0110), PS3.3 C.12.1.1.5.
"""

from __future__ import annotations

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from analysis.results.model import ActionableCategory, Lane, in_cid

__all__ = [
    "ACR_CATEGORY",
    "CERTAINTY_OF_FINDING",
    "FEATURE_ATTRIBUTION",
    "FEATURE_NAME",
    "IMAGE_REGION",
    "IMPUTED",
    "LANE",
    "OF_INTEREST",
    "PERCENT",
    "PRIORITY",
    "PRIVATE_SCHEME",
    "PRIVATE_SCHEME_NAME",
    "PRIVATE_SCHEME_ORGANIZATION",
    "PROCEDURE_BY_MODALITY",
    "TRIAGE_LANE",
    "in_cid",
]

PRIVATE_SCHEME = "99RADIOGATE"
PRIVATE_SCHEME_NAME = "Radiogate private concepts"
PRIVATE_SCHEME_ORGANIZATION = "Radiogate project"

# -- triage (TID 1501 qualitative evaluations and measurement) ----------------------------------
PRIORITY = Code("260870009", "SCT", "Priority")
ACR_CATEGORY: dict[ActionableCategory, Code] = {  # CID 7035
    ActionableCategory.CATEGORY_1: codes.RADLEX.ACRCategory1ActionableFinding,
    ActionableCategory.CATEGORY_2: codes.RADLEX.ACRCategory2ActionableFinding,
    ActionableCategory.CATEGORY_3: codes.RADLEX.ACRCategory3ActionableFinding,
}
CERTAINTY_OF_FINDING: Code = codes.DCM.CertaintyOfFinding  # (111012, DCM)
PERCENT: Code = codes.UCUM.Percent  # ("%", UCUM)
TRIAGE_LANE = Code("TRIAGE-LANE", PRIVATE_SCHEME, "Triage lane")
LANE: dict[Lane, Code] = {
    Lane.CRITICAL: Code("LANE-CRITICAL", PRIVATE_SCHEME, "Critical lane"),
    Lane.URGENT: Code("LANE-URGENT", PRIVATE_SCHEME, "Urgent lane"),
    Lane.ROUTINE: Code("LANE-ROUTINE", PRIVATE_SCHEME, "Routine lane"),
}

# -- key object selection (CID 7010) ----------------------------------------------------------
OF_INTEREST: Code = codes.DCM.OfInterest  # (113000, DCM)

# -- measurement report --------------------------------------------------------------------------
IMAGE_REGION: Code = codes.DCM.ImageRegion  # (111030, DCM)
# Measurement Method (370129005, SCT) value of a measurement whose value was imputed for a model
IMPUTED = Code("IMPUTED", PRIVATE_SCHEME, "Imputed value")
# a NUM under a model output (HAS PROPERTIES): the contribution of one input feature ...
FEATURE_ATTRIBUTION = Code("FEATURE-ATTRIB", PRIVATE_SCHEME, "Feature attribution")
# ... whose feature is named by a TEXT concept modifier (HAS CONCEPT MOD)
FEATURE_NAME = Code("FEATURE-NAME", PRIVATE_SCHEME, "Feature name")

# Procedure Reported of TID 1500 (CID 100 is baseline: LOINC "unspecified body region" codes)
PROCEDURE_BY_MODALITY: dict[str, Code] = {
    "CT": codes.LN.CTUnspecifiedBodyRegion,
    "MR": codes.LN.MRIUnspecifiedBodyRegion,
    "PT": codes.LN.PETUnspecifiedBodyRegion,
    "NM": codes.LN.NMUnspecifiedBodyRegion,
    "CR": codes.LN.XRUnspecifiedBodyRegion,
    "DX": codes.LN.XRUnspecifiedBodyRegion,
}
