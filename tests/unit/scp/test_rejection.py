"""The reason of a rejected association, from the A-ASSOCIATE-RJ that was sent (PS3.8 9.3.4)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dicom_nodes.scp.rejection import rejection


def _assoc(called: str, source: int | None, diagnostic: int | None) -> SimpleNamespace:
    reply = None if source is None else SimpleNamespace(result=1, result_source=source,
                                                         diagnostic=diagnostic)  # fmt: skip
    return SimpleNamespace(
        requestor=SimpleNamespace(primitive=SimpleNamespace(called_ae_title=called)),
        acceptor=SimpleNamespace(ae_title="RADIOGATE", primitive=reply),
    )


@pytest.mark.parametrize(
    ("source", "diagnostic", "reason"),
    [
        (1, 3, "calling-ae-not-recognised"),
        (1, 7, "called-ae-not-recognised"),
        (1, 2, "application-context-not-supported"),
        (2, 1, "user-identity-not-accepted"),
        (3, 2, "local-limit-exceeded"),
        (3, 9, "rejected-1-3-9"),
    ],
)
def test_reason_codes(source: int, diagnostic: int, reason: str) -> None:
    assert rejection(_assoc("ORTHANC  ", source, diagnostic)) == ("ORTHANC", reason)


def test_called_ae_asked_for_not_our_own() -> None:
    assert rejection(_assoc("WRONG_AE", 1, 7))[0] == "WRONG_AE"
    assert rejection(_assoc("", 1, 7))[0] == "RADIOGATE"  # nothing asked for: our own
    assert rejection(_assoc("X", None, None)) == ("X", "association-rejected")
