from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from config.routes import LaneRule, MatchSettings, RouteSettings
from dicom_nodes.pipeline.routes import (
    Facts,
    Step,
    StepKind,
    facts_from_file,
    lane_for,
    parse_step,
    select_route,
    tags_needed,
)
from dicom_nodes.state.lanes import Lane

ER = RouteSettings(
    name="er",
    match=MatchSettings(calling_ae=["ER_*"], modality=["CT"]),
    steps=["forward:archive"],
    lane="critical",
)
STAT = LaneRule(lane="critical", match=MatchSettings(tags={"RequestedProcedurePriority": ["STAT"]}))
HIGH = LaneRule(lane="urgent", match=MatchSettings(tags={"RequestedProcedurePriority": ["HIGH"]}))
DEFAULT = RouteSettings()


def test_first_matching_route_wins() -> None:
    routes = [ER, DEFAULT]
    assert select_route(routes, Facts(calling_ae="ER_CT1", modality="CT")) is ER
    assert select_route(routes, Facts(calling_ae="ER_CT1", modality="MR")) is DEFAULT
    assert select_route(routes, Facts(calling_ae="WARD", modality="CT")) is DEFAULT
    assert select_route([ER], Facts(calling_ae="WARD")) is None


def test_lanes() -> None:
    routine = RouteSettings(name="r")
    assert lane_for(ER, [], Facts()) is Lane.CRITICAL
    facts = Facts(tags={"RequestedProcedurePriority": "STAT"})
    assert lane_for(routine, [HIGH, STAT], facts) is Lane.CRITICAL
    assert (
        lane_for(routine, [HIGH, STAT], Facts(tags={"RequestedProcedurePriority": "HIGH"}))
        is Lane.URGENT
    )
    assert lane_for(routine, [HIGH, STAT], Facts()) is Lane.ROUTINE
    assert Lane.CRITICAL.priority > Lane.URGENT.priority > Lane.ROUTINE.priority


def test_tag_conditions_multi_valued_and_hex(tmp_path: Path) -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.BodyPartExamined = "CHEST"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    route = RouteSettings(
        name="chest", match=MatchSettings(tags={"ImageType": ["PRIMARY"], "0018,0015": ["CH*"]})
    )
    needed = tags_needed([route], [STAT])
    facts = facts_from_file(path, "CR1", "RADIOGATE", needed)
    assert facts.modality == "DX" and facts.tags["ImageType"] == "ORIGINAL\\PRIMARY"
    assert select_route([route], facts) is route
    assert "RequestedProcedurePriority" not in facts.tags
    assert lane_for(route, [STAT], facts) is Lane.ROUTINE


def test_steps() -> None:
    assert parse_step("forward:archive") == Step(StepKind.FORWARD, "archive")
    assert parse_step("triage") == Step(StepKind.TRIAGE)
    with pytest.raises(ValueError):
        parse_step("forward")
    with pytest.raises(ValueError):
        parse_step("teleport:mars")
