"""`data.test`: a held-out test set scored by every fold model, logged per fold and as mean ± std."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from bookseg.data.readers import load_dataset
from bookseg.data.synthetic import synthetic_dataset_path
from bookseg.experiment.cv import aggregate, results_table, train_final
from bookseg.experiment.data import load_test_data
from bookseg.inference.trained_model import load_from_run
from bookseg.tracking import FINAL
from bookseg.tracking.mlflow_runs import RunState
from tests.integration.test_run_cli import FOLD_METRICS, _artifact_paths


def _sets(root):
    train = synthetic_dataset_path(root / "cache", 8, seed=0, image_size=(128, 128))
    test = synthetic_dataset_path(root / "cache", 3, seed=1, image_size=(128, 128))
    return train, test


def _cfg(train, test_path, kind=None):
    return OmegaConf.create(
        {
            "data": {
                "kind": "via",
                "class_attribute": None,
                "default_class": "book",
                "test": {"path": test_path and str(test_path), "kind": kind, "images_dir": None},
            }
        }
    )


def test_every_fold_model_and_the_final_model_score_the_test_set(cli):
    train, test = _sets(cli.root)
    proc = cli.run(
        "+experiment=smoke", "data=via", f"data.path={train}", f"data.test.path={test}", "cv.final=true"
    )
    assert "test set: 3 images" in proc.stdout
    assert "held-out test set, scored by each fold's model and the final model:" in proc.stdout
    assert "final model: 8 training images" in proc.stdout
    (parent,), children = cli.runs()
    for name in FOLD_METRICS:
        assert 0.0 <= parent.data.metrics[f"test/{name}_mean"] <= 1.0
        assert parent.data.metrics[f"test/{name}_std"] >= 0.0
    assert parent.data.metrics["cv/n_folds"] == 2
    assert sorted(c.info.run_name for c in children) == ["final", "fold0", "fold1"]
    client = cli.client()
    (final,) = [c for c in children if c.info.run_name == "final"]
    assert final.data.params["n_train"] == "8" and final.data.params["n_val"] == "0"
    for name in FOLD_METRICS:
        assert parent.data.metrics[f"final/test/{name}"] == final.data.metrics[f"test/{name}"]
        assert name not in final.data.metrics  # no validation images, no validation metrics
    assert "weights/mask_rcnn_final.weights.h5" in _artifact_paths(client, final.info.run_id)

    # predict and export take the final model by default, and say so; a fold on request.
    trained = load_from_run(parent.info.run_id, tracking_uri=f"sqlite:///{cli.db}")
    assert trained.source.startswith(f"MLflow run {parent.info.run_id} final model, trained on all 8")
    assert "fold 1" in load_from_run(parent.info.run_id, fold=1, tracking_uri=f"sqlite:///{cli.db}").source

    for child in [c for c in children if c.info.run_name != "final"]:
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


def test_a_finished_final_model_is_not_trained_again(tmp_path, capsys):
    """Resuming a job whose final model finished (even one without a test set, so without metrics)
    keeps it: the job only re-aggregates."""
    state = RunState(tmp_path)
    state.fold(FINAL).update({"run_id": "abc", "metrics": {}})
    state.save()
    cfg = OmegaConf.create({"cv": {"final": True}})
    assert (
        train_final(cfg, dataset=None, job_dir=tmp_path, state=RunState(tmp_path), test=None, progress=None)
        == {}
    )
    assert "final model: already trained in this run" in capsys.readouterr().out


def test_a_job_of_the_final_model_only_reports_its_test_scores():
    """`cv.folds=[] cv.final=true`: no fold, so no cross-validation figures, only the final model's."""
    results = {FINAL: {"test/mask_ap50": 0.7, "test/box_ap50": 0.8}}
    summary = aggregate(results)
    assert summary == {"cv/n_folds": 0.0, "final/test/mask_ap50": 0.7, "final/test/box_ap50": 0.8}
    assert results_table(results, summary).splitlines() == [
        "final model, held-out test set:",
        "  mask_ap50: 0.700",
        "  box_ap50: 0.800",
    ]
