"""Pure parts: the SR walk that finds model attributions, the facts of an archive arrival."""

from __future__ import annotations

from typing import Any

from dicom_nodes.pacs.arrivals import _facts, _key
from pacs_plugin.sr import model_outputs


def _code(value: str, scheme: str, meaning: str) -> list[dict[str, str]]:
    return [{"CodeValue": value, "CodingSchemeDesignator": scheme, "CodeMeaning": meaning}]


def _num(
    code: list[dict[str, str]], value: float, children: list[Any] | None = None
) -> dict[str, Any]:
    item: dict[str, Any] = {"ValueType": "NUM", "ConceptNameCodeSequence": code,
                            "MeasuredValueSequence": [{"NumericValue": str(value)}]}  # fmt: skip
    if children:
        item["ContentSequence"] = children
    return item


def _text(code: list[dict[str, str]], value: str) -> dict[str, Any]:
    return {"ValueType": "TEXT", "ConceptNameCodeSequence": code, "TextValue": value}


def test_model_outputs_and_attributions_by_segment() -> None:
    attribution = _code("FEATURE-ATTRIB", "99RADIOGATE", "Feature attribution")
    name = _code("FEATURE-NAME", "99RADIOGATE", "Feature name")
    group = {
        "ValueType": "CONTAINER",
        "ConceptNameCodeSequence": _code("125007", "DCM", "Measurement Group"),
        "ContentSequence": [
            _text(_code("112039", "DCM", "Tracking Identifier"), "Left lung"),
            _num(_code("112031", "DCM", "Attenuation Coefficient"), -850.0),  # a measurement
            _num(_code("EMPH", "99RADIOGATE", "Emphysema extent"), 12.5, [
                _num(attribution, 3.25, [_text(name, "laa950")]),
                _num(attribution, -0.5, [_text(name, "perc15")]),
            ]),
        ],
    }  # fmt: skip
    tags = {"ContentSequence": [{"ValueType": "CONTAINER", "ContentSequence": [group]}]}
    assert model_outputs(tags) == [{
        "segment": "Left lung", "output": "Emphysema extent",
        "code": {"value": "EMPH", "scheme": "99RADIOGATE"}, "value": 12.5,
        "attributions": [{"feature": "laa950", "contribution": 3.25},
                         {"feature": "perc15", "contribution": -0.5}],
    }]  # fmt: skip
    assert model_outputs({}) == [] and model_outputs({"ContentSequence": "junk"}) == []


def test_arrival_facts_from_orthanc_short_tags() -> None:
    assert _key("BodyPartExamined") == "0018,0015"
    assert _key("(0008,0070)") == "0008,0070" and _key("00080070") == "0008,0070"
    assert _key("NotAKeyword") == ""
    tags = {"0008,0060": "CT", "0008,0016": "1.2.840.10008.5.1.4.1.1.2",
            "0018,0015": "CHEST", "0008,0008": ["ORIGINAL", "PRIMARY"],
            "0040,0275": [{"0040,1001": "x"}]}  # fmt: skip
    facts = _facts(
        tags, ["BodyPartExamined", "ImageType", "RequestAttributesSequence", "0010,0010"]
    )
    assert facts.modality == "CT" and facts.sop_class_uid.endswith(".2")
    assert facts.tags == {"BodyPartExamined": "CHEST", "ImageType": "ORIGINAL\\PRIMARY"}
    assert facts.calling_ae == ""
