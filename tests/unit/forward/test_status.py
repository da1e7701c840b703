"""Retry policy of DIMSE statuses (PS3.4 B.2.3, PS3.7 C)."""

from __future__ import annotations

import pytest

from dicom_nodes.forward import Outcome, StoreStatus
from dicom_nodes.forward.status import classify_store_status, describe_status


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (0x0000, Outcome.OK),
        (0xB000, Outcome.OK),
        (0xB006, Outcome.OK),
        (0xB007, Outcome.OK),
        (0xA700, Outcome.RETRYABLE),
        (0xA7FF, Outcome.RETRYABLE),
        (0x0210, Outcome.RETRYABLE),
        (0xC211, Outcome.RETRYABLE),
        (0xA900, Outcome.PERMANENT),
        (0xA9FF, Outcome.PERMANENT),
        (0xC000, Outcome.PERMANENT),
        (0xCFFF, Outcome.PERMANENT),
        (0x0122, Outcome.PERMANENT),
        (0x0124, Outcome.PERMANENT),
        (0x0110, Outcome.PERMANENT),
        (0xFE00, Outcome.PERMANENT),
    ],
)
def test_classification(status: int, outcome: Outcome) -> None:
    assert classify_store_status(status) is outcome


def test_peer_specific_transient_status() -> None:
    assert classify_store_status(0xC001) is Outcome.PERMANENT
    assert classify_store_status(0xC001, extra_retryable={0xC001}) is Outcome.RETRYABLE


def test_descriptions_name_the_status() -> None:
    assert describe_status(StoreStatus.OUT_OF_RESOURCES) == "0xA700 out of resources"
    assert describe_status(0xA7FE) == "0xA7FE out of resources"
    assert describe_status(0xC123) == "0xC123 cannot understand"
    assert describe_status(0x1234) == "0x1234"
