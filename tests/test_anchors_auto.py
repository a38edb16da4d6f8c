"""`anchors=auto`: anchors fitted per fold to its training boxes, logged to the fold's MLflow run.

What a user relies on: the fit covers book spines far better than the listed anchors, it never sees a fold's
validation boxes, it is deterministic and a resumed fold keeps its anchors, the number of ratios (the RPN
head's width) is what the config says, and a run logs the fitted anchors and coverage.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from bookseg.analysis.anchor_command import model_config, preset_config
from bookseg.config.validate import ConfigError, validate
from bookseg.data.folds import assign_groups, load_folds, split
from bookseg.data.readers import load_dataset
from bookseg.data.records import ImageRecord, Instance
from bookseg.experiment.anchors_fit import FIT_FILE, fit_anchors, fold_anchor_config, ratio_count
from bookseg.inference.trained_model import ModelSourceError, load_from_run, load_from_weights
from tests.data._fixtures_readers import polygon, via2_entry, write_via2_dataset
from tests.integration.conftest import CliRunner


def _spine_boxes(rng, n: int, size: int, wide: bool = False) -> list[tuple[float, float, float, float]]:
    """`n` boxes (y1, x1, y2, x2) px in a `size` x `size` image, 5-7 times as tall as wide (or as wide as tall)."""
    boxes = []
    for _ in range(n):
        short = rng.uniform(size / 32, size / 16)
        long = short * rng.uniform(5, 7)
        height, width = (short, long) if wide else (long, short)
        y, x = rng.uniform(0, size - height), rng.uniform(0, size - width)
        boxes.append((y, x, y + height, x + width))
    return boxes


def _record(name: str, size: int, boxes) -> ImageRecord:
    """A record whose instances are the axis-aligned rectangles `boxes` (y1, x1, y2, x2), as polygons."""
    instances = [
        Instance(
            "book", polygon=np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64), region=str(k)
        )
        for k, (y1, x1, y2, x2) in enumerate(boxes)
    ]
    return ImageRecord(name, Path(f"/nonexistent/{name}.png"), size, size, instances)


def _shelves(seed: int, n_images: int = 12, size: int = 256, wide: bool = False) -> list[ImageRecord]:
    rng = np.random.default_rng(seed)
    return [_record(f"shelf{seed}_{i}", size, _spine_boxes(rng, 8, size, wide)) for i in range(n_images)]


def test_fitted_anchors_cover_spines_far_better_than_the_listed_default():
    config = model_config("cpu", "auto")  # listed: matterport's 32..512 / 0.5, 1, 2 at 256 px
    fit = fit_anchors(_shelves(0), config, n_ratios=3)
    assert fit.boxes == 96
    assert fit.iou50_listed < 0.4 and fit.iou70_listed < 0.1
    assert fit.iou50_fitted > 0.95 and fit.iou70_fitted > 0.6
    assert len(fit.ratios) == 3 and max(fit.ratios) < 0.5  # all tall: w/h 1/7 .. 1/5
    assert len(fit.scales) == 5 and all(a < b for a, b in itertools.pairwise(fit.scales))


def test_fit_is_deterministic():
    config = model_config("cpu", "auto")
    assert fit_anchors(_shelves(1), config, 3) == fit_anchors(_shelves(1), config, 3)


@pytest.mark.parametrize("n_ratios", [3, 5])
def test_every_fold_gets_the_configured_number_of_ratios(n_ratios):
    config = model_config("cpu", "auto")
    identical = [_record(f"same{i}", 256, [(10, 10, 110, 30)] * 4) for i in range(3)]  # one shape only
    for records in (_shelves(3), _shelves(4, wide=True), identical):
        fit = fit_anchors(records, config, n_ratios)
        assert len(fit.ratios) == len(set(fit.ratios)) == n_ratios


def test_images_without_boxes_are_a_clear_error():
    with pytest.raises(ValueError, match="no boxes to fit anchors to"):
        fit_anchors([_record("empty", 256, [])], model_config("cpu", "auto"), 3)


def test_auto_preset_composes_and_validates():
    cfg = preset_config("cpu", "auto")
    validate(cfg)
    assert cfg.anchors.auto is True and ratio_count(cfg.anchors) == 3
    assert not preset_config("cpu", "default").anchors.auto
    # Without auto_ratios, auto fits as many ratios as the preset lists (spines: 5).
    assert ratio_count(preset_config("cpu", "spines", ["anchors.auto=true"]).anchors) == 5
    with pytest.raises(ConfigError, match="anchors.auto_ratios=0"):
        validate(preset_config("cpu", "auto", ["anchors.auto_ratios=0"]))


def test_a_resumed_fold_gets_the_anchors_it_started_with(tmp_path, monkeypatch):
    config = model_config("cpu", "auto")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run() as run:
        first = fold_anchor_config(config, _shelves(5), 3, tmp_path / "fold0", "fold 0")
    assert (tmp_path / "fold0" / FIT_FILE).is_file()
    with mlflow.start_run(run_id=run.info.run_id):  # the resumed process reopens the fold's run
        again = fold_anchor_config(config, _shelves(5), 3, tmp_path / "fold0", "fold 0")
    assert again == first and again.rpn_anchor_scales != config.rpn_anchor_scales
    client = mlflow.MlflowClient()
    assert len(client.get_metric_history(run.info.run_id, "anchors/iou70_fitted")) == 1
    assert json.loads(client.get_run(run.info.run_id).data.params["anchors/fitted_ratios"]) == list(
        first.rpn_anchor_ratios
    )


def _two_shelf_kinds(root: Path) -> Path:
    """VIA project of 8 blank 128 px images: 4 with standing books (group "tall"), 4 with lying ones ("wide")."""
    rng = np.random.default_rng(0)
    entries = []
    for kind, i in itertools.product(("tall", "wide"), range(4)):
        regions = [
            polygon([x1, x2, x2, x1], [y1, y1, y2, y2])
            for y1, x1, y2, x2 in np.round(_spine_boxes(rng, 5, 128, wide=kind == "wide"), 1)
        ]
        entries.append(via2_entry(f"{kind}{i}.png", regions, shelf=kind))
    return write_via2_dataset(root / "data", entries, size=(128, 128))


def test_a_fold_run_logs_anchors_fitted_to_its_training_images_only(tmp_path):
    project = _two_shelf_kinds(tmp_path)
    cli = CliRunner(tmp_path)
    # Two groups and k=2: fold 0 trains on one kind of shelf and validates on the other.
    proc = cli.run(
        "+experiment=smoke",
        "anchors=auto",
        "data=via",
        f"data.path={project}",
        "data.group_attribute=shelf",
        "cv.folds=[0]",
        "stages.steps_per_epoch=1",
        "stages.schedule=[{layers: all, epochs: 1, learning_rate: 0.01}]",
        "tracking.tensorboard=false",
        "tracking.overlays=0",
    )
    _, (child,) = cli.runs()
    params, metrics = child.data.params, child.data.metrics
    scales = json.loads(params["anchors/fitted_scales"])
    ratios = json.loads(params["anchors/fitted_ratios"])
    assert "fold 0: anchors fitted to" in proc.stdout

    records = load_dataset(project).records
    assign_groups(records, attribute="shelf")
    (folds_file,) = (tmp_path / "outputs" / "runs").glob("*/attempt0/folds.json")
    train, _ = split(records, load_folds(folds_file)["folds"], 0)
    config = model_config("tiny", "auto")
    expected = fit_anchors(train, config, 3)
    assert (scales, ratios) == (list(expected.scales), list(expected.ratios))
    assert int(params["anchors/fit_boxes"]) == expected.boxes == 20
    # The validation shelves hold the other kind of book: fitted to them too, the anchors would differ.
    everything = fit_anchors(records, config, 3)
    assert (everything.scales, everything.ratios) != (expected.scales, expected.ratios)
    train_is_tall = train[0].group == "tall"
    assert all((r < 1) == train_is_tall for r in ratios)  # not one ratio for the validation shelves
    assert metrics["anchors/iou70_fitted"] == pytest.approx(expected.iou70_fitted)
    assert metrics["anchors/iou50_fitted"] > metrics["anchors/iou50_listed"]
    # `bookseg predict --run` rebuilds the fold's model with the anchors it trained with, not the listed ones.
    trained = load_from_run(child.info.run_id, tracking_uri=f"sqlite:///{cli.db}")
    assert trained.model.config.rpn_anchor_scales == tuple(float(s) for s in scales)
    assert trained.model.config.rpn_anchor_ratios == tuple(ratios)
    (config_file,) = (tmp_path / "outputs" / "runs").glob("*/attempt0/config.yaml")
    (weights,) = (tmp_path / "outputs" / "runs").glob("*/attempt0/fold0/checkpoints/*.weights.h5")
    with pytest.raises(ModelSourceError, match="fits its anchors per fold"):
        load_from_weights(weights, config_path=config_file)
