"""Which requests read study data, who may send what (pure functions)."""

from __future__ import annotations

import base64

import pytest

from config.pacs import Role
from pacs_plugin.access import Api, classify_read
from pacs_plugin.roles import Roles, basic_user, refusal

OID = "0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d"


@pytest.mark.parametrize(
    ("method", "uri", "get", "expected"),
    [
        ("GET", f"/studies/{OID}", {}, (Api.REST, "study", OID, None)),
        ("GET", f"/studies/{OID}/archive", {}, (Api.REST, "study", OID, None)),
        ("GET", f"/instances/{OID}/file", {}, (Api.REST, "instance", OID, None)),
        ("GET", f"/series/{OID}/media", {}, (Api.REST, "series", OID, None)),
        ("GET", f"/patients/{OID}/archive", {}, (Api.REST, "patient", OID, None)),
        ("GET", "/dicom-web/studies/1.2.3/metadata", {}, (Api.DICOMWEB, "study", None, "1.2.3")),
        ("GET", "/dicom-web/studies/1.2.3/series/4.5/instances/6.7", {},
         (Api.DICOMWEB, "study", None, "1.2.3")),
        ("GET", "/wado", {"requestType": "WADO", "studyUID": "1.2.3"},
         (Api.WADO_URI, "study", None, "1.2.3")),
        ("GET", "/radiogate/studies/1.2.3", {}, (Api.FINDINGS, "study", None, "1.2.3")),
        ("GET", f"/radiogate/studies/{OID}", {}, (Api.FINDINGS, "study", OID, None)),
    ],
)  # fmt: skip
def test_reads(method: str, uri: str, get: dict[str, str], expected: tuple[object, ...]) -> None:
    read = classify_read(method, uri, get)
    assert read is not None
    assert (read.api, read.level, read.orthanc_id, read.study_uid) == expected


@pytest.mark.parametrize(
    ("method", "uri", "get"),
    [
        ("GET", "/studies", {}),  # a list of identifiers
        ("GET", "/system", {}),
        ("GET", "/app/explorer.html", {}),
        ("POST", "/tools/find", {}),
        ("DELETE", f"/studies/{OID}", {}),  # not a read (refused separately)
        ("GET", "/dicom-web/studies", {"PatientID": "x"}),  # a search, not one study
        ("GET", "/wado", {"studyUID": "1.2.3; DROP"}),
        ("GET", "/studies/not-an-id", {}),
        ("GET", "/radiogate/worklist", {}),
    ],
)
def test_not_reads(method: str, uri: str, get: dict[str, str]) -> None:
    assert classify_read(method, uri, get) is None


def _basic(user: str, password: str = "pw") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}


def test_basic_user() -> None:
    assert basic_user(_basic("alice")) == "alice"
    assert basic_user({"authorization": "Bearer abc"}) == "anonymous"
    assert basic_user({"authorization": "Basic %%%"}) == "anonymous"
    assert basic_user({}) == "anonymous"


def test_policy() -> None:
    roles = Roles([("alice", Role.RADIOLOGIST), ("olga", Role.ADMIN)], "radiogate")
    alice, olga = roles.identify(_basic("alice")), roles.identify(_basic("olga"))
    nobody, service = roles.identify(_basic("mallory")), roles.identify(_basic("radiogate"))
    assert alice.has(Role.RADIOLOGIST) and not alice.has(Role.ADMIN)
    assert service.service and service.has(Role.ADMIN) and service.has(Role.RADIOLOGIST)
    assert refusal(alice, "GET", f"/studies/{OID}") is None
    assert refusal(olga, "POST", "/tools/find") is None
    assert refusal(alice, "DELETE", f"/studies/{OID}") == "write-not-allowed"
    assert refusal(alice, "POST", "/instances") == "write-not-allowed"
    assert refusal(nobody, "GET", f"/studies/{OID}") == "no-role"
    assert refusal(nobody, "GET", "/radiogate/worklist") is None  # the route answers 403 JSON
    assert refusal(service, "DELETE", f"/studies/{OID}") is None
