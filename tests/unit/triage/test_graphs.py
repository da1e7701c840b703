"""The runtime against graphs other than the shipped one: a site's model may fix its batch size,
leave the image size open, or not match its card at all.

The graphs (``onnx_graphs.max_model``) score a slice with the largest value of its input, so
every score here is checked against a value the test computes itself.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analysis.training.cardfile import to_toml
from analysis.triage import DEFAULT_CARD, ModelCardError, TriageModel, load_model
from tests.unit.triage.onnx_graphs import Dim, max_model, write_model


def _card(tmp_path: Path, graph: bytes, **preprocessing: Any) -> Path:
    content = tomllib.loads(DEFAULT_CARD.read_text())
    content["model"]["file"] = "max.onnx"
    content["model"]["blake3"] = write_model(str(tmp_path / "max.onnx"), graph)
    content["preprocessing"].update(preprocessing)
    path = tmp_path / "max.toml"
    path.write_text(to_toml(content))
    return path


def _slices(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(4)
    return [rng.normal(-300, 400, size=(200, 180)) for _ in range(count)]


def _expected(model: TriageModel, slices: list[np.ndarray]) -> np.ndarray:
    return np.array([model.preprocess(s, (1.5, 1.5)).max() for s in slices])


@pytest.mark.parametrize("fixed", [1, 4])
def test_a_graph_with_a_fixed_batch_size_gets_batches_of_that_size(
    tmp_path: Path, fixed: int
) -> None:
    shape: list[Dim] = [fixed, *read_shape()]
    model = load_model(_card(tmp_path, max_model([shape], [fixed, 1])))
    slices = _slices(5)  # not a multiple of 4: the last batch is padded
    batch = np.stack([model.preprocess(s, (1.5, 1.5)) for s in slices])
    assert np.allclose(model.score(batch), _expected(model, slices), atol=1e-6)
    series = model.score_series(slices, [(1.5, 1.5)] * 5, batch_size=3)
    assert np.allclose(series.slice_scores, _expected(model, slices), atol=1e-6)


def test_a_graph_that_takes_any_image_size_is_accepted(tmp_path: Path) -> None:
    channels = read_shape()[0]
    model = load_model(
        _card(tmp_path, max_model([["batch", channels, "h", "w"]], ["batch", 1]), size=[40, 50])
    )
    slices = _slices(2)
    batch = np.stack([model.preprocess(s, (1.5, 1.5)) for s in slices])
    assert batch.shape == (2, channels, 40, 50)
    assert np.allclose(model.score(batch), _expected(model, slices), atol=1e-6)


def test_a_half_precision_graph_with_a_half_precision_card(tmp_path: Path) -> None:
    graph = max_model([["batch", *read_shape()]], ["batch", 1], elem_type=10)
    model = load_model(_card(tmp_path, graph, dtype="float16"))
    slices = _slices(2)
    batch = np.stack([model.preprocess(s, (1.5, 1.5)) for s in slices])
    assert batch.dtype == np.float16
    assert np.allclose(model.score(batch), _expected(model, slices), atol=1e-3)


def test_a_half_precision_graph_with_a_single_precision_card(tmp_path: Path) -> None:
    graph = max_model([["batch", *read_shape()]], ["batch", 1], elem_type=10)
    with pytest.raises(ModelCardError, match=r"key 'preprocessing.dtype'.*tensor\(float16\)"):
        load_model(_card(tmp_path, graph))


def test_a_graph_with_two_inputs_is_refused(tmp_path: Path) -> None:
    graph = max_model([["batch", *read_shape()], ["batch", 1]], ["batch", 1])
    with pytest.raises(ModelCardError, match=r"key 'model\.file' .* 2 inputs and 1 outputs"):
        load_model(_card(tmp_path, graph))


def test_a_graph_whose_input_is_not_an_image_batch_is_refused(tmp_path: Path) -> None:
    graph = max_model([["batch", 96 * 96]], ["batch", 1])
    with pytest.raises(ModelCardError, match=r"key 'preprocessing\.layout'"):
        load_model(_card(tmp_path, graph))


def test_a_graph_with_more_outputs_than_labels_is_refused(tmp_path: Path) -> None:
    graph = max_model([["batch", *read_shape()]], ["batch", 2], columns=2)
    with pytest.raises(ModelCardError, match=r"key 'outputs\.labels' names 1 label"):
        load_model(_card(tmp_path, graph))


def read_shape() -> list[int]:
    """The shipped card's sample shape (channels, rows, columns)."""
    pre = tomllib.loads(DEFAULT_CARD.read_text())["preprocessing"]
    return [len(pre["windows"]), *pre["size"]]
