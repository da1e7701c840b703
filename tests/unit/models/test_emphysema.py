"""The emphysema model as the pipeline calls it: onnxruntime reproduces the training script's
scikit-learn predictions, missing inputs are imputed and flagged, required ones are not, the
report values are valid, and a real chest CT goes through end to end."""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from analysis.models import MissingInput, TabularModel, imputed_measurements, lung_inputs
from analysis.models.emphysema import WrongParameters
from analysis.radiomics import (
    LungLabel,
    Segment,
    build_volume,
    extract,
    load_parameters,
    lung_measures,
    segment_lungs,
)
from analysis.radiomics.volume import slice_input
from analysis.results import ModelOutput, build_measurement_report
from tests.support.data import extract_ct
from tests.support.sr import measurement_report
from tests.unit.models.conftest import vector
from tests.unit.results.roundtrip import write_and_read
from tests.unit.results.synthetic import EXTRACTOR, PROVENANCE


def _features(model: TabularModel, values: np.ndarray) -> dict[str, float | None]:
    return {
        n: (None if math.isnan(v) else float(v))
        for n, v in zip(model.card.input_names, values, strict=True)
    }


def test_onnxruntime_reproduces_the_training_predictions(
    model: TabularModel, fixture: dict[str, Any]
) -> None:
    assert tuple(fixture["inputs"]) == model.card.input_names
    for values, expected in zip(fixture["vectors"], fixture["predictions"], strict=True):
        prediction = model.predict(_features(model, vector(values)))
        # float32 inference of float64 training: a thousandth of a percentage point
        assert prediction.raw_value == pytest.approx(expected, abs=1e-3)
        assert prediction.value == pytest.approx(min(max(expected, 0.0), 100.0), abs=1e-3)
        assert prediction.grade == model.card.grade(prediction.value)
        assert prediction.imputed == ()


def test_missing_features_are_imputed_and_flagged(
    model: TabularModel, fixture: dict[str, Any]
) -> None:
    for holed, imputed in zip(fixture["holed"], fixture["imputed"], strict=True):
        given = vector(holed)
        prediction = model.predict(_features(model, given))
        names = model.card.input_names
        missing = {n for n, v in zip(names, given, strict=True) if math.isnan(v)}
        assert set(prediction.imputed) == missing
        for name, value, expected in zip(names, given, imputed, strict=True):
            if name in missing:
                assert prediction.inputs[name] == pytest.approx(expected, rel=1e-9)
            else:
                assert prediction.inputs[name] == value  # observed values are untouched


def test_absent_none_nan_and_infinite_all_count_as_missing(model: TabularModel) -> None:
    names = model.card.input_names
    features: dict[str, float | None] = dict(zip(names, model.baseline.tolist(), strict=True))
    features.pop(names[5])
    features[names[6]] = None
    features[names[7]] = math.nan
    features[names[8]] = math.inf
    prediction = model.predict(features)
    assert set(prediction.imputed) == set(names[5:9])


def test_required_lung_measures_are_never_imputed(model: TabularModel) -> None:
    features = dict(zip(model.card.input_names, model.baseline.tolist(), strict=True))
    del features["lung_laa950_percent"]
    with pytest.raises(MissingInput, match="lung_laa950_percent"):
        model.predict(features)


def test_report_values(model: TabularModel, fixture: dict[str, Any]) -> None:
    features = _features(model, vector(fixture["vectors"][0]))
    features["original_glcm_Idm"] = None
    features["original_glszm_ZonePercentage"] = None
    prediction = model.predict(features)
    extent, grade = prediction.model_outputs()
    assert isinstance(extent, ModelOutput) and isinstance(grade, ModelOutput)
    assert (extent.concept.value, extent.concept.scheme_designator) == (
        "EMPHYSEMA-EXT",
        "99RADIOGATE",
    )
    assert extent.unit == codes.UCUM.Percent
    assert extent.value == prediction.value
    assert extent.algorithm.model_hash == model.card.blake3
    assert extent.algorithm.parameter_hash == model.card.parameters.blake3
    assert extent.algorithm.demonstration
    assert len(extent.attributions) == model.card.top_attributions == 5
    assert grade.value == prediction.grade.value and grade.attributions == ()
    measurements, without = imputed_measurements(prediction)
    assert without == []
    found = {m.concept.value: m for m in measurements}
    assert set(found) == {"WF0Z", "P30P"}  # IBSI codes of GLCM Idm, GLSZM zone percentage
    assert found["WF0Z"].value == prediction.inputs["original_glcm_Idm"]
    assert found["WF0Z"].imputed and found["P30P"].imputed


@pytest.fixture(scope="module")
def lung1(tmp_path_factory: pytest.TempPathFactory) -> Any:
    files = extract_ct(tmp_path_factory.mktemp("lung1-ct"))
    result = build_volume([slice_input(pydicom.dcmread(Path(f))) for f in files])
    assert result.volume is not None
    return result.volume


def test_a_real_chest_ct_end_to_end(model: TabularModel, lung1: Any) -> None:
    """lung1 (no simulated emphysema): segmented, measured and extracted under ct_ibsi as the
    pipeline does, then predicted: a small extent; its native %LAA-950 is 2.1 %."""
    lungs = segment_lungs(lung1)
    region = lung_measures(lung1, lungs).right
    params = load_parameters("ct_ibsi")
    (features,) = extract(lung1, [Segment("right", lungs.mask(LungLabel.RIGHT))], params)
    inputs = lung_inputs(features, region, model.card.parameters.blake3)
    assert set(model.card.input_names) <= set(inputs)
    prediction = model.predict(inputs)
    assert prediction.imputed == ()
    assert prediction.value < 5.0
    assert prediction.grade.label == "none"
    # a failed texture class: its features are absent, imputed, flagged
    partial = {k: v for k, v in inputs.items() if "_glcm_" not in k}
    flagged = model.predict(partial)
    assert flagged.imputed and all("_glcm_" in n for n in flagged.imputed)
    assert flagged.value == pytest.approx(prediction.value, abs=5.0)
    with pytest.raises(WrongParameters):
        lung_inputs(features, region, "0" * 64)


def test_prediction_goes_into_the_measurement_report(
    model: TabularModel, fixture: dict[str, Any], study: dict[str, Any]
) -> None:
    """The outputs, their attributions and the imputed inputs in a TID 1500 report, read back."""
    features = _features(model, vector(fixture["vectors"][2]))
    features["original_glcm_Idm"] = None
    prediction = model.predict(features)
    imputed, _ = imputed_measurements(prediction)
    right = dataclasses.replace(
        study["segments"][0],
        measurements=(*study["segments"][0].measurements, *imputed),
        model_outputs=prediction.model_outputs(),
    )
    segments = [right, *study["segments"][1:]]
    sr = build_measurement_report(
        study["source"], study["segmentation"], segments, EXTRACTOR, PROVENANCE
    )
    data, _ = write_and_read(sr)
    back = hd.sr.srread(io.BytesIO(data))
    assert "(not for clinical use)" in back.SeriesDescription
    (group,) = measurement_report(back.content).get_volumetric_roi_measurement_groups(
        tracking_uid=right.tracking_uid
    )
    found = {m.name.value: m for m in group.get_measurements()}
    extent = found["EMPHYSEMA-EXT"]
    assert extent.value == pytest.approx(prediction.value)
    assert found["EMPHYSEMA-GRADE"].value == prediction.grade.value
    method = found["WF0Z"].method
    assert method is not None and method.value == "IMPUTED"
    names = [
        item.ContentSequence[0].TextValue
        for item in extent[0].ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "FEATURE-ATTRIB"
    ]
    assert names == [a.feature for a in prediction.attributions]
