"""The numpy imputer: the shipped one replays scikit-learn's fitted IterativeImputer exactly,
the KNN and mean forms match scikit-learn too, and every imputed entry is flagged."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import pytest
from sklearn.impute import KNNImputer  # type: ignore[import-untyped]

from analysis.models import TabularModel
from analysis.models.imputer import Imputer, ImputerError, read_imputer
from tests.unit.models.conftest import vector


def _data(path: Path, names: tuple[str, ...]) -> np.ndarray:
    with path.open(newline="") as f:
        return np.array([[float(r[n]) for n in names] for r in csv.DictReader(f)])


def test_the_shipped_imputer_replays_scikit_learn(
    model: TabularModel, fixture: dict[str, Any]
) -> None:
    """fixture.json holds scikit-learn's IterativeImputer.transform of the holed vectors."""
    for holed, expected in zip(fixture["holed"], fixture["imputed"], strict=True):
        given = vector(holed)
        filled, mask = model.imputer.impute(given)
        assert np.array_equal(mask, np.isnan(given))
        assert mask.sum() >= 2
        np.testing.assert_allclose(filled, vector(expected), rtol=1e-10, atol=1e-9)
        assert np.array_equal(filled[~mask], given[~mask])


def test_a_complete_vector_is_returned_unchanged(model: TabularModel) -> None:
    x = model.baseline + 1.0
    filled, mask = model.imputer.impute(x)
    assert not mask.any() and np.array_equal(filled, x) and filled is not x


def test_vectors_that_cannot_be_imputed(model: TabularModel) -> None:
    n = len(model.card.inputs)
    with pytest.raises(ValueError, match="every input is missing"):
        model.imputer.impute(np.full(n, np.nan))
    with pytest.raises(ValueError, match="infinite"):
        model.imputer.impute(np.where(np.arange(n) == 3, np.inf, model.baseline))
    with pytest.raises(ValueError, match=f"{n} values"):
        model.imputer.impute(np.zeros(n - 1))


def _knn_imputer(train: np.ndarray, names: tuple[str, ...], k: int) -> Imputer:
    mean, sd = train.mean(axis=0), train.std(axis=0, ddof=1)
    return Imputer(
        "knn", names, mean, sd, np.zeros(len(names)), neighbours=k, donors=(train - mean) / sd
    )


def test_knn_matches_scikit_learn(model: TabularModel, features_csv: Path) -> None:
    names = model.card.input_names
    data = _data(features_csv, names)
    train, test = data[:150], data[150:]
    ours = _knn_imputer(train, names, 5)
    theirs = KNNImputer(n_neighbors=5).fit(ours.donors)
    rng = np.random.default_rng(3)
    for row in test[:20]:
        holed = np.where(rng.uniform(size=row.size) < 0.3, np.nan, row)
        holed[0] = row[0]
        filled, mask = ours.impute(holed)
        expected = theirs.transform(((holed - ours.mean) / ours.sd)[None, :])[0]
        np.testing.assert_allclose(filled, expected * ours.sd + ours.mean, rtol=1e-9)
        assert np.array_equal(mask, np.isnan(holed))


def _write(tmp_path: Path, content: dict[str, Any]) -> tuple[Path, str]:
    data = json.dumps(content).encode()
    path = tmp_path / "imputer.json"
    path.write_bytes(data)
    return path, blake3.blake3(data).hexdigest()


def test_imputer_files_are_checked(model: TabularModel, tmp_path: Path) -> None:
    card = model.card
    content = json.loads(card.imputer.file.read_text())
    names = card.input_names
    with pytest.raises(ImputerError, match="the card says"):
        read_imputer(card.imputer.file, "0" * 64, names)
    with pytest.raises(ImputerError, match="other inputs"):
        read_imputer(card.imputer.file, card.imputer.blake3, names[::-1])
    broken = dict(content, steps=[dict(content["steps"][0], target=len(names))])
    with pytest.raises(ImputerError, match="out of range"):
        read_imputer(*_write(tmp_path, broken), names)
    with pytest.raises(ImputerError, match="unknown imputation method"):
        read_imputer(*_write(tmp_path, dict(content, method="gain")), names)
    mean = read_imputer(*_write(tmp_path, dict(content, method="mean")), names)
    holed = model.baseline + 2.0
    holed[[4, 9]] = np.nan
    filled, _ = mean.impute(holed)
    np.testing.assert_allclose(filled[[4, 9]], np.asarray(content["mean"])[[4, 9]])
