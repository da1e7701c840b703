"""Model cards are validated at load, and every problem names the card and the key."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import blake3
import pytest

from analysis.training.cardfile import to_toml
from analysis.triage import (
    DEFAULT_CARD,
    Lane,
    Layout,
    ModelCardError,
    Resample,
    TriageModel,
    load_model,
    read_card,
)


def _content(card_dir: Path) -> dict[str, Any]:
    return tomllib.loads((card_dir / DEFAULT_CARD.name).read_text())


def _write(card_dir: Path, content: dict[str, Any], name: str = DEFAULT_CARD.name) -> Path:
    path = card_dir / name
    path.write_text(to_toml(content))
    return path


def _fails(path: Path, key: str, words: str) -> ModelCardError:
    with pytest.raises(ModelCardError) as caught:
        load_model(path)
    err = caught.value
    assert err.key == key, str(err)
    assert str(path) in str(err)
    assert f"key '{key}'" in str(err) if key else True
    assert re.search(words, str(err)), str(err)
    return err


def test_the_shipped_card_reads_as_written() -> None:
    raw = tomllib.loads(DEFAULT_CARD.read_text())
    card = read_card(DEFAULT_CARD)
    assert card.demonstration is True and raw["model"]["demonstration"] is True
    assert card.model_file == DEFAULT_CARD.with_suffix(".onnx")
    assert (card.name, card.version, card.blake3) == tuple(
        raw["model"][k] for k in ("name", "version", "blake3")
    )
    assert card.modalities == ("CT",)
    pre, raw_pre = card.preprocessing, raw["preprocessing"]
    assert pre.resample is Resample(raw_pre["resample"])
    assert pre.pixel_spacing_mm == raw_pre["pixel_spacing_mm"]
    assert list(pre.size) == raw_pre["size"] and pre.pad_hu == raw_pre["pad_hu"]
    assert [(w.center, w.width) for w in pre.windows] == [
        (w["center"], w["width"]) for w in raw_pre["windows"]
    ]
    assert pre.layout is Layout.NCHW and pre.dtype == "float32"
    assert pre.sample_shape == (len(pre.windows), *pre.size)
    assert card.thresholds.by_lane == {Lane(k): v for k, v in raw["thresholds"].items()}
    assert card.license and card.intended_use and "clinical" in card.intended_use
    assert card.evaluation.roc_auc == raw["evaluation"]["roc_auc"]
    assert len(card.evaluation.operating_points) == len(raw["evaluation"]["operating_points"])
    assert {d.role.value for d in card.data} == {"train", "test"}


def test_a_json_card_is_read_like_a_toml_card(card_dir: Path) -> None:
    path = card_dir / "card.json"
    path.write_text(json.dumps(_content(card_dir)))
    model = load_model(path)
    assert model.identity == read_card(DEFAULT_CARD).identity


def test_unknown_key(card_dir: Path) -> None:
    content = _content(card_dir)
    content["preprocessing"]["sizes"] = content["preprocessing"]["size"]
    err = _fails(_write(card_dir, content), "preprocessing.sizes", "is unknown")
    assert "size" in str(err).split("allowed here:")[1]


def test_unknown_top_level_table(card_dir: Path) -> None:
    content = _content(card_dir)
    content["thresholdz"] = {"critical": 0.9}
    _fails(_write(card_dir, content), "thresholdz", "is unknown")


def test_missing_key(card_dir: Path) -> None:
    content = _content(card_dir)
    del content["model"]["blake3"]
    _fails(_write(card_dir, content), "model.blake3", "is missing")


@pytest.mark.parametrize(
    ("table", "key", "value", "words"),
    [
        ("preprocessing", "size", [128], r"\[rows, columns\]"),
        ("preprocessing", "size", ["128", "128"], "positive integers"),
        ("preprocessing", "pad_hu", "air", "must be a number"),
        ("preprocessing", "pixel_spacing_mm", True, "must be a number"),
        ("preprocessing", "layout", "CHW", "one of 'NCHW', 'NHWC'"),
        ("preprocessing", "dtype", "float64", "one of float32, float16"),
        ("preprocessing", "clip_hu", [100, -100], "low < high"),
        ("model", "demonstration", "yes", "true or false"),
        ("model", "blake3", "abc", "must match"),
        ("model", "file", "/abs/model.onnx", "relative to the card"),
        ("thresholds", "critical", 1.5, r"in \[0, 1\]"),
        ("outputs", "score_label", "other", "one of labels"),
        ("applies_to", "modality", "CT", "list of strings"),
    ],
)
def test_wrong_type_or_value(
    card_dir: Path, table: str, key: str, value: object, words: str
) -> None:
    content = _content(card_dir)
    content[table][key] = value
    _fails(_write(card_dir, content), f"{table}.{key}", words)


def test_window_width_must_be_positive(card_dir: Path) -> None:
    content = _content(card_dir)
    content["preprocessing"]["windows"][1]["width"] = 0
    _fails(_write(card_dir, content), "preprocessing.windows[1].width", "must be > 0")


def test_a_calmer_lane_cannot_need_more_than_a_more_urgent_one(card_dir: Path) -> None:
    content = _content(card_dir)
    content["thresholds"] = {"critical": 0.4, "urgent": 0.6}
    _fails(_write(card_dir, content), "thresholds", "'critical' .* below that of 'urgent'")


def test_spacing_is_required_when_resampling(card_dir: Path) -> None:
    content = _content(card_dir)
    del content["preprocessing"]["pixel_spacing_mm"]
    _fails(_write(card_dir, content), "preprocessing.pixel_spacing_mm", "is missing")


def test_input_size_that_does_not_match_the_graph(card_dir: Path) -> None:
    content = _content(card_dir)
    rows, cols = content["preprocessing"]["size"]
    channels = len(content["preprocessing"]["windows"])
    content["preprocessing"]["size"] = [rows // 2, cols // 2]
    err = _fails(_write(card_dir, content), "preprocessing.size", "ONNX graph's input")
    assert f"['N', {channels}, {rows // 2}, {cols // 2}]" in str(err)
    assert f"{channels}, {rows}, {cols}]" in str(err)


def test_channel_count_that_does_not_match_the_graph(card_dir: Path) -> None:
    content = _content(card_dir)
    content["preprocessing"]["windows"].append({"center": 400, "width": 1800})
    _fails(_write(card_dir, content), "preprocessing.windows", "ONNX graph's input")


def test_layout_that_does_not_match_the_graph(card_dir: Path) -> None:
    content = _content(card_dir)
    content["preprocessing"]["layout"] = "NHWC"
    _fails(_write(card_dir, content), "preprocessing.layout", "ONNX graph's input")


def test_dtype_that_does_not_match_the_graph(card_dir: Path) -> None:
    content = _content(card_dir)
    content["preprocessing"]["dtype"] = "float16"
    _fails(_write(card_dir, content), "preprocessing.dtype", r"tensor\(float\)")


def test_labels_that_do_not_match_the_graph(card_dir: Path) -> None:
    content = _content(card_dir)
    content["outputs"]["labels"] = ["critical_finding", "other"]
    _fails(_write(card_dir, content), "outputs.labels", "output 'probability'")


def test_hash_mismatch(card_dir: Path) -> None:
    content = _content(card_dir)
    content["model"]["blake3"] = "0" * 64
    err = _fails(_write(card_dir, content), "model.blake3", "hashes to")
    actual = blake3.blake3((card_dir / content["model"]["file"]).read_bytes()).hexdigest()
    assert actual in str(err)


def test_a_changed_model_file_is_refused(card_dir: Path) -> None:
    onnx = card_dir / DEFAULT_CARD.with_suffix(".onnx").name
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0x01
    onnx.write_bytes(bytes(data))
    _fails(card_dir / DEFAULT_CARD.name, "model.blake3", "hashes to")


def test_missing_model_file(card_dir: Path) -> None:
    (card_dir / DEFAULT_CARD.with_suffix(".onnx").name).unlink()
    _fails(card_dir / DEFAULT_CARD.name, "model.file", "does not exist")


def test_missing_card(tmp_path: Path) -> None:
    _fails(tmp_path / "absent.toml", "", "cannot be read")


def test_not_toml(card_dir: Path) -> None:
    path = card_dir / "broken.toml"
    path.write_text("[model\nname = 1\n")
    _fails(path, "", "not valid TOML")


def test_card_format_version(card_dir: Path) -> None:
    content = _content(card_dir)
    content["card_format"] = 2
    _fails(_write(card_dir, content), "card_format", "must be 1")


def test_two_cards_for_one_file_share_one_session(card_dir: Path, shipped: TriageModel) -> None:
    """One onnxruntime session per model per process, whatever the card's other settings."""
    content = _content(card_dir)
    content["thresholds"] = {"critical": 0.95, "urgent": 0.7}
    other = load_model(_write(card_dir, content, "stricter.toml"))
    assert other._session is shipped._session
    assert other.lane_for(0.9) is Lane.URGENT and shipped.lane_for(0.9) is Lane.CRITICAL


def test_a_second_thread_count_for_a_loaded_model_is_refused(shipped: TriageModel) -> None:
    with pytest.raises(ValueError, match="already loaded in this process with 1 intra-op"):
        load_model(DEFAULT_CARD, threads=2)
