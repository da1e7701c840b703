"""docs/architecture.md shows the state diagrams generated from the transition tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_nodes.state.model import MACHINES, Machine, mermaid

DOC = (Path(__file__).resolve().parents[3] / "docs" / "architecture.md").read_text()


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)
def test_diagram_in_the_architecture_doc_matches_the_table(machine: Machine) -> None:  # type: ignore[type-arg]
    assert f"```mermaid\n{mermaid(machine)}\n```" in DOC
