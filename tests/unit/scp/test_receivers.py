"""How many receiver processes ``scp.processes = 0`` starts."""

from __future__ import annotations

from dicom_nodes.scp.runner import AUTO_MIN_RECEIVERS, receivers_for


def test_one_receiver_per_core_but_at_least_the_minimum() -> None:
    assert AUTO_MIN_RECEIVERS == 4
    assert [receivers_for(n) for n in (1, 2, 4, 6, 16)] == [4, 4, 4, 6, 16]
