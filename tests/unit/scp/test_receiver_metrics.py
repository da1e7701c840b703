"""Receiver counters: each forked receiver writes its own values, the metrics process sums them
(nothing lost, nothing counted twice), and a fresh start begins from zero."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dicom_nodes.scp import metrics


def _receiver(directory: Path, stores: list[int], associations: list[tuple[str, str]]) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            metrics.enable(directory, "n1")
            for status in stores:
                metrics.store(status, 0.002, 100 if status == 0 else 0)
            for result, reason in associations:
                metrics.association(result, reason)
        finally:
            os._exit(0)
    _, code = os.waitpid(pid, 0)
    assert code == 0


def _samples(directory: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry()
    metrics.register(registry, directory)
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(text) for s in f.samples
    }  # fmt: skip


def test_counts_of_two_receivers_are_summed(tmp_path: Path) -> None:
    directory = metrics.prepare_directory(tmp_path / "m")
    _receiver(directory, [0x0000, 0x0000, 0xA700], [("accepted", "")])
    _receiver(directory, [0x0000, 0xC000, 0xB000], [("rejected", "called-ae-not-recognised"),
                                                    ("accepted", "")])  # fmt: skip
    got = _samples(directory)

    def value(name: str, **labels: str) -> float:
        return got[(name, frozenset({"node": "n1", **labels}.items()))]

    assert value("radiogate_store_responses_total", status="0000", outcome="success") == 3
    assert value("radiogate_store_responses_total", status="A700", outcome="failure") == 1
    assert value("radiogate_store_responses_total", status="C000", outcome="failure") == 1
    assert value("radiogate_store_responses_total", status="B000", outcome="warning") == 1
    assert value("radiogate_associations_total", result="accepted", reason="") == 2
    assert (
        value("radiogate_associations_total", result="rejected", reason="called-ae-not-recognised")
        == 1
    )
    assert value("radiogate_receive_seconds_count") == 6
    assert value("radiogate_received_bytes_total") == 300
    # A new start of the SCP empties the directory: counters restart from zero.
    metrics.prepare_directory(directory)
    assert not any(name.startswith("radiogate_store") for name, _ in _samples(directory))


def test_without_enable_nothing_is_counted(tmp_path: Path) -> None:
    metrics.store(0, 0.1)  # the handlers call these in every SCP, e.g. one run in-process
    metrics.association("accepted")
