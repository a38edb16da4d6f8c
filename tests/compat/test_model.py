"""modellib: MaskRCNN train / checkpoints / find_last / load_weights / detect, load_image_gt and mold_image.

Training happens once per session in the `sample_run` fixture (the sample script: heads for epoch 1,
then all layers up to epoch 2); these tests read its log directory.
"""

from __future__ import annotations

import datetime
import re

import numpy as np
import pytest

from bookseg.compat import iaa
from bookseg.compat import model as modellib
from bookseg.compat.checkpoints import log_dir_for
from bookseg.mrcnn.weights import save_legacy_weights
from tests.compat.conftest import TinyConfig


def _run_dir(sample_run):
    (run,) = [p for p in sample_run.logs.iterdir() if p.name.startswith("book")]
    return run


def test_training_continues_epoch_numbering_and_checkpoints_as_matterport(sample_run):
    assert sample_run.train_rc == 0
    run = _run_dir(sample_run)
    assert re.fullmatch(r"book\d{8}T\d{4}", run.name)
    names = sorted(p.name for p in run.glob("mask_rcnn_*"))
    assert names == ["mask_rcnn_book_0001.weights.h5", "mask_rcnn_book_0002.weights.h5"]
    assert "Starting at epoch 0. LR=0.001" in sample_run.output
    assert "Starting at epoch 1. LR=0.0001" in sample_run.output
    assert list((run / "train").glob("events.out.tfevents.*")), "no TensorBoard events"
    assert list((run / "validation").glob("events.out.tfevents.*"))


def test_training_is_logged_to_mlflow_as_one_run(sample_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sample_run.tracking_uri)
    experiment = client.get_experiment_by_name("bookseg.compat/book")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["NAME"] == "book" and run.data.params["STEPS_PER_EPOCH"] == "2"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/mrcnn_mask_loss")] == [1, 2]
    assert run.data.tags["log_dir"] == str(_run_dir(sample_run))


def test_find_last_and_resume_point(sample_run):
    config = sample_run.module.TinyBookConfig()
    before = datetime.datetime.now()
    model = modellib.MaskRCNN("training", config, sample_run.logs)
    after = datetime.datetime.now()
    last = model.find_last()
    assert last == str(_run_dir(sample_run) / "mask_rcnn_book_0002.weights.h5")
    # A new model gets a directory stamped now (the sample run's own when created in the same minute).
    assert model.epoch == 0
    assert model.log_dir in {str(log_dir_for(sample_run.logs, "book", when)) for when in (before, after)}
    report = model.load_weights(last, by_name=True)
    assert model.epoch == 2  # the next train() starts at epoch 3
    assert model.log_dir == str(_run_dir(sample_run))  # and writes into the same run directory
    assert report.loaded and not report.skipped
    assert model.checkpoint_path.endswith("mask_rcnn_book_{epoch:04d}.weights.h5")


def test_find_last_errors(tmp_path, sample_run):
    model = modellib.MaskRCNN("inference", sample_run.module.TinyBookConfig(), tmp_path)
    with pytest.raises(FileNotFoundError, match="Could not find model directory"):
        model.find_last()
    (tmp_path / "book20260101T0000").mkdir()
    with pytest.raises(FileNotFoundError, match="Could not find weight files"):
        model.find_last()


def test_detect_returns_matterports_dicts(sample_run):
    assert sample_run.detect_rc == 0
    assert sample_run.figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    class Inference(sample_run.module.TinyBookConfig):
        IMAGES_PER_GPU = 1
        DETECTION_MIN_CONFIDENCE = 0.0

    model = modellib.MaskRCNN("inference", Inference(), sample_run.logs)
    model.load_weights(model.find_last(), by_name=True)
    images = [np.full((64, 96, 3), 120, np.uint8), np.zeros((50, 40, 3), np.uint8)]
    results = model.detect(images, verbose=0)
    assert len(results) == 2
    for image, r in zip(images, results):
        n = len(r["class_ids"])
        assert set(r) == {"rois", "class_ids", "scores", "masks"}
        assert r["rois"].shape == (n, 4) and r["rois"].dtype == np.int32
        assert r["class_ids"].dtype == np.int32 and r["scores"].shape == (n,)
        assert r["masks"].shape == (*image.shape[:2], n) and r["masks"].dtype == bool
        assert np.all(np.diff(r["scores"]) <= 0)
        assert np.all(r["rois"][:, 2:] <= image.shape[:2]) and np.all(r["rois"] >= 0)


def test_train_requires_training_mode(sample_run, shapes):
    model = modellib.MaskRCNN("inference", TinyConfig(), sample_run.root / "other")
    with pytest.raises(ValueError, match="training mode"):
        model.train(shapes, None, learning_rate=0.001, epochs=1, layers="heads")
    with pytest.raises(ValueError, match="mode"):
        modellib.MaskRCNN("testing", TinyConfig(), sample_run.root)


def test_matterport_h5_loads_with_exclude(tmp_path):
    """A legacy h5 of a 5-class model loads into a 3-class one with matterport's usual exclude list."""

    class FiveClasses(TinyConfig):
        NUM_CLASSES = 5

    source = modellib.MaskRCNN("training", FiveClasses(), tmp_path)
    path = save_legacy_weights(source.keras_model, tmp_path / "mask_rcnn_other.h5")
    target = modellib.MaskRCNN("training", TinyConfig(), tmp_path)
    exclude = ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]
    before = target.keras_model.mask_head.get_layer("mrcnn_mask").get_weights()[0].copy()
    report = target.load_weights(str(path), by_name=True, exclude=exclude)

    assert {"mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_mask"} <= set(report.skipped)
    assert "rpn_model" in report.loaded and "fpn_c5p5" in report.loaded
    layer = target.keras_model.backbone_fpn.get_layer("fpn_c5p5")
    expected = source.keras_model.backbone_fpn.get_layer("fpn_c5p5").get_weights()
    for got, want in zip(layer.get_weights(), expected):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(
        target.keras_model.mask_head.get_layer("mrcnn_mask").get_weights()[0], before
    )
    assert target.epoch == 0  # not a training checkpoint: no epoch to resume from


def test_load_image_gt_matches_the_dataset(shapes):
    config = TinyConfig()
    image, meta, class_ids, bbox, mask = modellib.load_image_gt(shapes, config, 1, use_mini_mask=False)
    _, raw_ids = shapes.load_mask(1)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert meta.shape == (config.IMAGE_META_SIZE,) and meta[0] == 1
    np.testing.assert_array_equal(meta[1:4], [48, 80, 3])  # original shape
    np.testing.assert_array_equal(meta[12:], [1, 1, 1])  # active classes of the image's source
    np.testing.assert_array_equal(class_ids, raw_ids)
    assert mask.shape == (64, 64, len(raw_ids)) and mask.dtype == bool
    np.testing.assert_array_equal(bbox, modellib.load_image_gt(shapes, config, 1)[3])
    # scale 64 / 80 = 0.8; the photo sits in rows (64 - round(48 * 0.8)) // 2 = 13 .. 51
    np.testing.assert_array_equal(meta[7:11], [13, 0, 51, 64])
    _, y1, x1, _, _ = shapes.image_info[1]["shapes"][0]
    assert abs(bbox[0][0] - (13 + y1 * 0.8)) <= 1 and abs(bbox[0][1] - x1 * 0.8) <= 1
    _, _, _, _, mini = modellib.load_image_gt(shapes, config, 1, use_mini_mask=True)
    assert mini.shape == (28, 28, len(raw_ids))
    flipped_boxes = modellib.load_image_gt(shapes, config, 1, augmentation=iaa.Fliplr(1.0))[3]
    np.testing.assert_allclose(flipped_boxes[:, 1], 64 - bbox[:, 3], atol=1)
    np.testing.assert_array_equal(flipped_boxes[:, [0, 2]], bbox[:, [0, 2]])


def test_mold_image_subtracts_the_mean_pixel():
    config = TinyConfig()
    image = np.full((2, 2, 3), 200, np.uint8)
    molded = modellib.mold_image(image, config)
    assert molded.dtype == np.float32
    np.testing.assert_allclose(molded[0, 0], 200 - np.asarray(config.MEAN_PIXEL), rtol=1e-6)
    np.testing.assert_array_equal(modellib.unmold_image(molded, config), image)
