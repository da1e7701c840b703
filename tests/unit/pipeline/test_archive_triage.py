"""Reading an archived series for triage, against a fake archive behind the same Protocol:
every readable instance is scored by the model whose card applies, headers are kept without
pixel data, an unreadable file is left out."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.triage import DEFAULT_CARD, load_model
from dicom_nodes.archive import SeriesInfo
from dicom_nodes.pipeline.archive_triage import is_image, read_series
from dicom_nodes.pipeline.triage import Triage
from dicom_nodes.state import Lane
from tests.support.data import extract_ct


class FakeArchive:
    def __init__(self, files: dict[str, list[bytes]]) -> None:
        self.files = files
        self.stored: list[bytes] = []

    def series_files(self, series_uid: str) -> list[bytes]:
        return self.files.get(series_uid, [])

    def study_series(self, study_uid: str) -> list[SeriesInfo]:
        return []

    def store(self, data: bytes) -> str:
        self.stored.append(data)
        return str(len(self.stored))

    def delete_series(self, series_uid: str) -> bool:
        return False


@pytest.fixture(scope="module")
def slices(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return extract_ct(tmp_path_factory.mktemp("ct"))[:4]


def test_read_series_scores_each_readable_instance(slices: list[Path]) -> None:
    triage = Triage(models=[load_model(DEFAULT_CARD)])
    archive = FakeArchive({"1.2.3": [p.read_bytes() for p in slices] + [b"not dicom"]})
    read = read_series(triage, archive, "1.2.3", Lane.URGENT)
    assert read.rule_lane is Lane.URGENT and len(read.captured) == len(slices)
    assert all(c.score is not None and 0.0 <= c.score <= 1.0 for _u, c in read.captured)
    assert [u for u, _c in read.captured] == [str(h.SOPInstanceUID) for h in read.headers]
    assert not any("PixelData" in h for h in read.headers)
    assert read.model is not None and read.model["name"] == triage.models[0].identity.name
    assert archive.stored == []  # reading stores nothing


def test_a_series_without_a_model_is_read_unscored(slices: list[Path]) -> None:
    read = read_series(Triage(), FakeArchive({"1.2.3": [slices[0].read_bytes()]}), "1.2.3",
                       Lane.ROUTINE)  # fmt: skip
    assert [c.score for _u, c in read.captured] == [None] and read.model is None
    assert read_series(Triage(), FakeArchive({}), "9.9", Lane.ROUTINE).captured == ()


def test_only_images_are_triaged() -> None:
    assert is_image("CT") and is_image("mr")
    assert not any(is_image(m) for m in ("SR", "KO", "SEG", "PR"))
