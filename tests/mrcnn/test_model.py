"""MaskRCNN graphs: output shapes, images without books, and `detect` in original pixel coordinates."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bookseg.mrcnn import losses as L
from bookseg.mrcnn.anchors import anchors_for
from bookseg.mrcnn.boxes import norm_boxes
from bookseg.mrcnn.detection_targets import max_positive_rois
from bookseg.mrcnn.images import parse_image_meta
from bookseg.mrcnn.model import TRAINING_INPUTS, MaskRCNN

from .conftest import make_batch, shelf_scene, tiny_config


@pytest.fixture(scope="module")
def tiny_model():
    return MaskRCNN(tiny_config())


def _batch(config, empty_second=False):
    image, masks = shelf_scene()
    images, masks_list = [image, image[:, ::-1].copy()], [masks, masks[:, ::-1]]
    if empty_second:
        images[1], masks_list[1] = np.full_like(image, 30), np.zeros((64, 64, 0), bool)
    return {k: tf.constant(v) for k, v in make_batch(config, images, masks_list).items()}


def test_training_graph_output_shapes(tiny_model):
    config = tiny_model.config
    batch = _batch(config)
    assert set(batch) == set(TRAINING_INPUTS)
    out = tiny_model.training_outputs(batch)
    n_anchors = len(anchors_for(config, (64, 64)))
    t, c = config.train_rois_per_image, config.num_classes
    m = max_positive_rois(config)
    expected = {
        "rpn_class_logits": (2, n_anchors, 2),
        "rpn_bbox": (2, n_anchors, 4),
        "rpn_rois": (2, config.post_nms_rois_training, 4),
        "rois": (2, t, 4),
        "target_class_ids": (2, t),
        "target_bbox": (2, t, 4),
        "target_mask": (2, m, 28, 28),
        "mask_class_ids": (2, m),
        "roi_valid": (2, t),
        "mrcnn_class_logits": (2, t, c),
        "mrcnn_bbox": (2, t, c, 4),
        "mrcnn_mask_logits": (2, m, 28, 28, c),
    }
    assert out.pop("cascade") == []  # no cascade stages by default (tests/mrcnn/test_cascade.py)
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    # Targets are well formed whatever the (untrained) RPN proposes: class ids in {0, 1}, binary masks.
    ids = out["target_class_ids"].numpy()
    assert set(np.unique(ids)) <= {0, 1}
    assert set(np.unique(out["target_mask"].numpy())) <= {0.0, 1.0}


def test_inference_graph_output_shapes(tiny_model):
    config = tiny_model.config
    batch = _batch(config)
    out = tiny_model({"input_image": batch["input_image"], "input_image_meta": batch["input_image_meta"]})
    m, p, c = config.detection_max_instances, config.post_nms_rois_inference, config.num_classes
    assert tuple(out["detections"].shape) == (2, m, 6)
    assert tuple(out["mrcnn_mask"].shape) == (2, m, 28, 28, c)
    assert tuple(out["rpn_rois"].shape) == (2, p, 4)
    assert tuple(out["mrcnn_class"].shape) == (2, p, c)
    assert tuple(out["mrcnn_bbox"].shape) == (2, p, c, 4)
    masks = out["mrcnn_mask"].numpy()
    assert masks.min() >= 0.0 and masks.max() <= 1.0


def test_a_finer_mask_head_trains_and_detects_at_its_resolution():
    config = tiny_config(mask_pool_size=21, mask_shape=(42, 42))
    model = MaskRCNN(config)
    batch = _batch(config)
    assert tuple(model.training_outputs(batch)["mrcnn_mask_logits"].shape[2:4]) == (42, 42)
    assert np.isfinite(float(model.mrcnn_losses(batch)["mrcnn_mask_loss"]))
    out = model({"input_image": batch["input_image"], "input_image_meta": batch["input_image_meta"]})
    assert tuple(out["mrcnn_mask"].shape[2:4]) == (42, 42)


def test_mask_head_on_positive_slots_gives_matterports_mask_loss():
    """The mask head runs on the first M ROI slots only; matterport runs it on all T. Same loss and
    same gradients, because every positive ROI sits in those slots."""
    config = tiny_config(train_rois_per_image=30)
    model = MaskRCNN(config)
    batch = _batch(config)
    m = max_positive_rois(config)
    # Proposals: every GT box shifted a little 4 ways (all positive, more than M), then random boxes.
    gt = norm_boxes(batch["input_gt_boxes"].numpy(), (64, 64))
    rng = np.random.default_rng(0)
    proposals = np.zeros((2, config.post_nms_rois_training, 4), np.float32)
    for row in range(2):
        real = gt[row][batch["input_gt_class_ids"].numpy()[row] > 0]
        shifted = np.concatenate([real + d for d in (0.0, 0.01, -0.01, 0.02)])
        corners = np.sort(rng.uniform(0, 1, (40, 2, 2)), axis=1).reshape(40, 4)[:, [0, 2, 1, 3]]
        boxes = np.concatenate([shifted, corners])
        proposals[row, : len(boxes)] = boxes
    model.proposal_layer = lambda *args, **kwargs: tf.constant(proposals)

    def losses_both_ways():
        out = model.training_outputs(batch, deterministic=True)
        sliced = L.mrcnn_mask_loss(out["target_mask"], out["mask_class_ids"], out["mrcnn_mask_logits"])
        rois, ids, _, target_mask, _ = model.detection_target_layer(
            out["rpn_rois"],
            batch["input_gt_class_ids"],
            tf.constant(norm_boxes(batch["input_gt_boxes"].numpy(), (64, 64))),
            tf.cast(batch["input_gt_masks"], tf.float32),
            deterministic=True,
        )
        features = model._features(tf.cast(batch["input_image"], tf.float32), False)
        full = L.mrcnn_mask_loss(
            target_mask, ids, model._mask_logits(rois, tf.constant([64.0, 64.0]), features, False)
        )
        return sliced, full, ids.numpy()

    with tf.GradientTape(persistent=True) as tape:
        sliced, full, ids = losses_both_ways()
    assert ((ids > 0).sum(axis=1) == m).all(), "more positives than M were offered: the cap is full"
    assert (ids[:, m:] == 0).all()
    np.testing.assert_allclose(float(sliced), float(full), rtol=1e-5)
    weights = model.mask_head.trainable_weights
    for g_sliced, g_full in zip(tape.gradient(sliced, weights), tape.gradient(full, weights)):
        np.testing.assert_allclose(g_sliced.numpy(), g_full.numpy(), rtol=1e-4, atol=1e-7)


def test_image_without_books_trains_as_negative(tiny_model):
    config = tiny_model.config
    image = np.full((64, 64, 3), 30, np.uint8)
    none = np.zeros((64, 64, 0), bool)
    batch = {k: tf.constant(v) for k, v in make_batch(config, [image, image], [none, none]).items()}
    assert (batch["input_rpn_match"].numpy() == 1).sum() == 0
    losses = {k: float(v) for k, v in tiny_model.mrcnn_losses(batch).items()}
    assert all(np.isfinite(v) for v in losses.values())
    assert losses["rpn_class_loss"] > 0
    assert losses["mrcnn_class_loss"] > 0  # sampled negative ROIs train the classifier
    assert losses["rpn_bbox_loss"] == 0 and losses["mrcnn_bbox_loss"] == 0 and losses["mrcnn_mask_loss"] == 0
    out = tiny_model.training_outputs(batch)
    valid = out["roi_valid"].numpy()
    expected_negatives = config.train_rois_per_image - int(
        config.train_rois_per_image * config.roi_positive_ratio
    )
    np.testing.assert_array_equal(valid.sum(axis=1), [expected_negatives] * 2)


def test_training_batch_with_dynamic_or_bad_image_size_is_a_clear_error(tiny_model):
    batch = _batch(tiny_model.config)
    bad = dict(batch, input_image=tf.zeros([2, 96, 64, 3]))
    with pytest.raises(ValueError, match="multiple of 64"):
        tiny_model.training_outputs(bad)
    with pytest.raises(KeyError, match="input_gt_masks"):
        tiny_model.training_outputs({k: v for k, v in batch.items() if k != "input_gt_masks"})


def _fake_inference(detections_px):
    """Inference function returning fixed detections given in each image's *original* pixels.

    It converts them to normalised molded coordinates from the meta (scale, window), so `detect`'s
    job of mapping them back is what the test checks.
    """

    def run(images, metas, anchors, min_confidence):
        metas = parse_image_meta(metas.numpy())
        batch, height, width = images.shape[0], images.shape[1], images.shape[2]
        assert anchors.shape[0] == len(anchors_for(tiny_config(), (height, width)))
        detections = np.zeros((batch, 3, 6), np.float32)
        masks = np.zeros((batch, 3, 28, 28, 2), np.float32)
        for i in range(batch):
            scale, (wy1, wx1, _, _) = metas["scale"][i], metas["window"][i]
            box = np.asarray(detections_px, np.float64) * scale + [wy1, wx1, wy1, wx1]
            detections[i, 0, :4] = norm_boxes(box[None], (height, width))[0]
            detections[i, 0, 4:] = [1, 0.9]
            masks[i, 0, :, :, 1] = 1.0
        return tf.constant(detections), tf.constant(masks)

    return run


@pytest.mark.parametrize("mode", ["square", "pad64"])
def test_detect_returns_boxes_and_masks_in_original_pixels(tiny_model, monkeypatch, mode):
    model = MaskRCNN(tiny_config(image_resize_mode=mode)) if mode != "square" else tiny_model
    monkeypatch.setattr(model, "inference_function", lambda max_instances: _fake_inference([10, 20, 30, 60]))
    images = [
        np.zeros((50, 90, 3), np.uint8),
        np.zeros((70, 64, 3), np.uint8),
        np.zeros((50, 90, 3), np.uint8),
    ]
    results = model.detect(images)
    assert len(results) == 3
    for image, result in zip(images, results):
        assert result["masks"].shape == (*image.shape[:2], 1)
        np.testing.assert_allclose(result["rois"][0], [10, 20, 30, 60], atol=1)
        np.testing.assert_array_equal(result["class_ids"], [1])
        y1, x1, y2, x2 = result["rois"][0]
        assert result["masks"][y1:y2, x1:x2, 0].all() and result["masks"][..., 0].sum() == (y2 - y1) * (
            x2 - x1
        )


def test_detect_real_graph_any_size_pad64_and_chunks():
    keras.utils.set_random_seed(1)  # an untrained model whose argmax is a book for some ROIs
    config = tiny_config(image_resize_mode="pad64", images_per_batch=2)
    model = MaskRCNN(config)
    image, _ = shelf_scene()
    # Molded shapes: 64x64 (images 0, 3, 4), 128x64, 128x128; the 64x64 group runs as chunks [0, 3], [4].
    images = [image, image[:50, :40], np.zeros((100, 70, 3), np.uint8), image, image]
    results = model.detect(images, min_confidence=0.0, max_instances=5)
    assert len(results) == 5
    for source, result in zip(images, results):
        n = len(result["scores"])
        assert n <= 5
        assert result["masks"].shape == (*source.shape[:2], n) and result["masks"].dtype == bool
        assert result["rois"].shape == (n, 4) and result["class_ids"].shape == (n,)
        if n:
            assert np.all(result["rois"][:, 2] <= source.shape[0]) and np.all(
                result["rois"][:, 3] <= source.shape[1]
            )
            assert np.all(np.diff(result["scores"]) <= 1e-6)
    # The same image gives the same detections in a batch of 2 and in a batch of 1.
    assert len(results[0]["scores"]) > 0
    assert len(results[0]["scores"]) == len(results[4]["scores"])
    np.testing.assert_allclose(results[0]["rois"], results[4]["rois"], atol=1)
    np.testing.assert_allclose(results[0]["scores"], results[4]["scores"], atol=1e-4)


def test_detect_rejects_non_rgb_images(tiny_model):
    with pytest.raises(ValueError, match="image 1 has shape"):
        tiny_model.detect([np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8)])
