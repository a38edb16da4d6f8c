"""`data.test`: a held-out test set scored by every fold model, logged per fold and as mean ± std."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from bookseg.data.readers import load_dataset
from bookseg.data.synthetic import synthetic_dataset_path
from bookseg.experiment.data import load_test_data
from tests.integration.test_run_cli import FOLD_METRICS, _artifact_paths


def _sets(root):
    train = synthetic_dataset_path(root / "cache", 8, seed=0, image_size=(128, 128))
    test = synthetic_dataset_path(root / "cache", 3, seed=1, image_size=(128, 128))
    return train, test


def _cfg(train, test_path, kind=None):
    return OmegaConf.create({"data": {"kind": "via", "class_attribute": None, "default_class": "book",
                                      "test": {"path": test_path and str(test_path), "kind": kind, "images_dir": None}}})


def test_every_fold_model_scores_the_test_set(cli):
    train, test = _sets(cli.root)
    proc = cli.run("+experiment=smoke", "data=via", f"data.path={train}", f"data.test.path={test}")
    assert "test set: 3 images" in proc.stdout
    assert "held-out test set, scored by each fold's model:" in proc.stdout
    (parent,), children = cli.runs()
    for name in FOLD_METRICS:
        assert 0.0 <= parent.data.metrics[f"test/{name}_mean"] <= 1.0
        assert parent.data.metrics[f"test/{name}_std"] >= 0.0
    assert len(children) == 2
    client = cli.client()
    for child in children:
        assert child.data.params["n_test"] == "3"
        for name in FOLD_METRICS:
            assert 0.0 <= child.data.metrics[f"test/{name}"] <= 1.0
        overlays = [a for a in _artifact_paths(client, child.info.run_id) if a.startswith("overlays/")]
        assert any(a.startswith("overlays/test_") for a in overlays), overlays
    assert parent.data.tags["bookseg.data_fingerprint"].count("+test:") == 1


def test_a_training_image_in_the_test_set_is_an_error_naming_both(tmp_path):
    train, _ = _sets(tmp_path)
    dataset = load_dataset(train)
    with pytest.raises(ValueError, match=r"test image .*\.png .* is the same file as training image .*\.png"):
        load_test_data(_cfg(train, train), dataset)


def test_no_test_set_by_default(tmp_path):
    train, _ = _sets(tmp_path)
    assert load_test_data(_cfg(train, None), load_dataset(train)) is None
