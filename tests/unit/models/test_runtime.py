"""onnxruntime sessions: one per model file per process, built only from verified bytes, with
the thread count asked for."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis.models import ModelFileError, TabularModel, read_card
from analysis.models.emphysema import CARD, load_emphysema_model
from analysis.models.runtime import clear_sessions, session


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "model.onnx"
    shutil.copyfile(read_card(CARD).model_file, target)
    return target


def test_one_session_per_model_per_process(model: TabularModel) -> None:
    card = model.card
    assert session(card.model_file, card.blake3) is model.session
    assert load_emphysema_model() is model
    assert model.session.threads == 1


def test_the_thread_count_is_set_and_kept(tmp_path: Path) -> None:
    card = read_card(CARD)
    path = _copy(tmp_path)
    two = session(path, card.blake3, threads=2)
    assert two.threads == 2
    assert two.inference.get_session_options().intra_op_num_threads == 2
    assert session(path, card.blake3) is two
    with pytest.raises(ValueError, match="already runs with 2 thread"):
        session(path, card.blake3, threads=1)
    rows = np.zeros((3, len(card.inputs)), dtype=np.float32)
    assert two.run(rows)["extent"].shape == (3, 1)


def test_a_changed_model_file_is_refused_before_it_runs(tmp_path: Path) -> None:
    card = read_card(CARD)
    path = _copy(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="card says"):
        session(path, card.blake3)
    with pytest.raises(ModelFileError, match="cannot be read"):
        session(tmp_path / "absent.onnx", card.blake3)


def test_clear_sessions_builds_anew(tmp_path: Path) -> None:
    card = read_card(CARD)
    path = _copy(tmp_path)
    first = session(path, card.blake3)
    clear_sessions(path)
    assert session(path, card.blake3) is not first
    kept = read_card(CARD)
    assert session(kept.model_file, kept.blake3) is load_emphysema_model().session
