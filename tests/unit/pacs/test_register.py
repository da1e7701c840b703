"""Registration against a stub ``orthanc`` module: what is registered, what the callbacks do."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from pacs_plugin.journal import read_records, segments
from pacs_plugin.plugin import register

OID = "0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d"


class _ChangeType:
    STABLE_STUDY = 9


class StubOrthanc:
    ChangeType = _ChangeType

    def __init__(self) -> None:
        self.registered: dict[str, Any] = {}
        self.logs: list[str] = []

    def CheckVersionAdvanced(self, major: int, minor: int, revision: int) -> bool:  # noqa: N802
        return (major, minor, revision) <= (1, 10, 1)

    def RegisterIncomingHttpRequestFilter(self, cb: Any) -> None:  # noqa: N802
        self.registered["filter"] = cb

    def RegisterRestCallback(self, uri: str, cb: Any) -> None:  # noqa: N802
        self.registered[uri] = cb

    def RegisterOnChangeCallback(self, cb: Any) -> None:  # noqa: N802
        self.registered["change"] = cb

    def ExtendOrthancExplorer(self, js: str) -> None:  # noqa: N802
        self.registered["explorer"] = js

    def LogInfo(self, text: str) -> None:  # noqa: N802
        self.logs.append(text)

    LogWarning = LogError = LogInfo

    def LookupStudy(self, uid: str) -> str:  # noqa: N802
        raise ValueError("unknown")

    def RestApiGet(self, uri: str) -> bytes:  # noqa: N802
        raise ValueError("unknown")


class Output:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def AnswerBuffer(self, body: bytes, mime: str) -> None:  # noqa: N802
        self.sent.append((200, body, mime))

    def SetHttpHeader(self, name: str, value: str) -> None:  # noqa: N802
        self.sent.append(("header", name, value))

    def SendHttpStatus(self, status: int, body: str, size: int) -> None:  # noqa: N802
        assert len(body) == size
        self.sent.append((status, body))


def _headers(user: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:pw".encode()).decode()}


def _plugin(tmp_path: Path) -> tuple[StubOrthanc, Any]:
    cfg = tmp_path / "r.toml"
    cfg.write_text(f'[node]\ndata_dir = "{tmp_path}"\n[[pacs.user]]\nname = "alice"\n'
                   'role = "radiologist"\n')  # fmt: skip
    stub = StubOrthanc()
    plugin = register(stub, {"ConfigFile": str(cfg), "Dsn": "host=127.0.0.1 port=1",
                             "ServiceUser": "radiogate"})  # fmt: skip
    return stub, plugin


def _journal(tmp_path: Path) -> list[dict[str, Any]]:
    return [r for s in segments(tmp_path / "pacs/journal") for _e, r in read_records(s, 0) if r]


def test_registration_and_filter(tmp_path: Path) -> None:
    stub, plugin = _plugin(tmp_path)
    assert set(stub.registered) == {"filter", "/radiogate/(.*)", "change", "explorer"}
    assert "radiogate-lane-badge" in stub.registered["explorer"]
    allow = stub.registered["filter"]
    get = {"method": 1, "ip": "127.0.0.1", "get": {}}
    assert allow(f"/studies/{OID}/archive", headers=_headers("alice"), **get) is True
    assert allow(f"/studies/{OID}/archive", headers=_headers("radiogate"), **get) is True
    assert allow(f"/studies/{OID}", headers=_headers("mallory"), **get) is False
    assert allow(f"/studies/{OID}", method=4, ip="127.0.0.1", get={},
                 headers=_headers("alice")) is False  # fmt: skip
    assert allow("/system", headers=_headers("alice"), **get) is True
    plugin.journal.close()
    got = [(r["k"], r["u"], r.get("why"), r.get("id")) for r in _journal(tmp_path)]
    assert got == [("read", "alice", None, OID), ("refused", "mallory", "no-role", OID),
                   ("refused", "alice", "write-not-allowed", OID)]  # fmt: skip


def test_rest_answers_json_and_change_hint(tmp_path: Path) -> None:
    stub, plugin = _plugin(tmp_path)
    out = Output()
    stub.registered["/radiogate/(.*)"](out, "/radiogate/audit", method="GET", groups=("audit",),
                                       headers=_headers("alice"), get={})  # fmt: skip
    assert out.sent[0] == ("header", "Content-Type", "application/json")
    assert out.sent[1][0] == 403
    assert json.loads(out.sent[1][1]) == {"error": "role-required", "detail": "admin"}
    out = Output()
    stub.registered["/radiogate/(.*)"](out, "/radiogate/status", method="GET", groups=("status",),
                                       headers=_headers("alice"), get={})  # fmt: skip
    assert json.loads(out.sent[0][1])["labels"] is False
    out = Output()
    stub.registered["/radiogate/(.*)"](out, "/radiogate/worklist", method="GET",
                                       groups=("worklist",), headers=_headers("alice"), get={})  # fmt: skip
    assert out.sent[1][0] == 503  # nothing listens on port 1
    stub.registered["change"](9, 2, OID)
    stub.registered["change"](3, 2, OID)  # another change: nothing
    plugin.journal.close()
    kinds = [(r["k"], r.get("id")) for r in _journal(tmp_path)]
    assert kinds == [("refused", None), ("stable-study", OID)]
