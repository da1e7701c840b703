"""A few Orthanc REST calls the forwarding tests use to look at what arrived."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from dicom_nodes.services.credentials import HttpCredentials

__all__ = ["OrthancRest"]


class OrthancRest:
    def __init__(self, url: str, credentials: HttpCredentials) -> None:
        self.url = url.rstrip("/")
        self.credentials = credentials

    def _call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        req = urllib.request.Request(f"{self.url}{path}", data=body, method=method)
        req.add_header("Authorization", self.credentials.authorization)
        with urllib.request.urlopen(req, timeout=60) as rsp:
            return bytes(rsp.read())

    def get_json(self, path: str) -> Any:
        return json.loads(self._call("GET", path))

    def instance_id(self, sop_instance_uid: str) -> str | None:
        """Orthanc's id of the instance with *sop_instance_uid*, or None."""
        found = json.loads(self._call("POST", "/tools/lookup", sop_instance_uid.encode()))
        ids = [f["ID"] for f in found if f["Type"] == "Instance"]
        return ids[0] if ids else None

    def file(self, instance_id: str) -> bytes:
        return self._call("GET", f"/instances/{instance_id}/file")

    def transfer_syntax(self, instance_id: str) -> str:
        return self._call("GET", f"/instances/{instance_id}/metadata/TransferSyntax").decode()

    def delete(self, instance_id: str) -> None:
        self._call("DELETE", f"/instances/{instance_id}")

    def count_instances(self) -> int:
        return int(self.get_json("/statistics")["CountInstances"])

    def clear(self) -> None:
        for patient in self.get_json("/patients"):
            self._call("DELETE", f"/patients/{patient}")
