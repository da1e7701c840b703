"""The findings route answers the model outputs with their attributions, read from the
measurement report (TID 1500 SR) in the archive, as the analysis wrote them."""

from __future__ import annotations

import pytest
from pydicom.filebase import DicomBytesIO

from analysis.results import build_measurement_report, build_segmentation
from tests.integration.pacs.conftest import Pacs, seed_study
from tests.unit.results.synthetic import (
    CREATED,
    EXTRACTOR,
    PROVENANCE,
    SEGMENTER,
    ct_series,
    masks_for,
    segment_results,
)

pytestmark = pytest.mark.integration


def test_model_outputs_with_attributions(pacs: Pacs) -> None:
    import psycopg

    source = ct_series()
    segments = segment_results(source)
    seg = build_segmentation(source, segments, masks_for(source), SEGMENTER, PROVENANCE,
                             created=CREATED)  # fmt: skip
    report = build_measurement_report(source, seg, segments, EXTRACTOR, PROVENANCE)
    buffer = DicomBytesIO()
    report.save_as(buffer, enforce_file_format=True)
    answer = pacs.call("service", "/instances", method="POST", body=buffer.getvalue())
    assert answer.status == 200, answer.body
    uid = str(report.StudyInstanceUID)
    received = seed_study(pacs.dsn, uid, lane="routine", age_minutes=2, received_uid="1.2.9.9")
    with psycopg.connect(pacs.dsn) as conn:
        conn.execute(
            """INSERT INTO series (series_instance_uid, study_instance_uid, node, modality,
                   state) VALUES ('9.9.2', %s, 'node1', 'CT', 'complete')""",
            (received,),
        )
        conn.execute(
            """INSERT INTO series_analysis (analysis_id, series_instance_uid, study_instance_uid,
                   node, pipeline, state, runs, sr_series_uid, sr_sop_instance_uid)
               VALUES ('9.9.2:chest-ct', '9.9.2', %s, 'node1', 'chest-ct', 'done', 1, %s, %s)""",
            (received, str(report.SeriesInstanceUID), str(report.SOPInstanceUID)),
        )
    answer = pacs.call("alice", f"/radiogate/studies/{uid}")
    assert answer.status == 200, answer.body
    body = answer.json()
    expected = [
        (o.concept.meaning, [(a.feature, a.contribution) for a in o.attributions])
        for s in segments for o in s.model_outputs if o.attributions
    ]  # fmt: skip
    assert expected, "the synthetic results carry attributions"
    got = [
        (o["output"], [(a["feature"], a["contribution"]) for a in o["attributions"]])
        for o in body["model_attributions"]
    ]
    assert [g[0] for g in got] == [e[0] for e in expected]
    for (_n, g), (_m, e) in zip(got, expected, strict=True):
        assert [f for f, _ in g] == [f for f, _ in e]
        assert [c for _, c in g] == pytest.approx([c for _, c in e], rel=1e-6)
    assert all(o["segment"] for o in body["model_attributions"])
    assert {"kind": "SR", "series_uid": str(report.SeriesInstanceUID),
            "sop_instance_uid": str(report.SOPInstanceUID)} in body["objects"]  # fmt: skip
