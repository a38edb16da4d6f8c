"""Cascade box heads (`cascade_iou_thresholds`): refinement, relabelled targets, the model graphs, weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bookseg.mrcnn.cascade import refine_rois, refinement_class_ids, stage_targets
from bookseg.mrcnn.config import MrcnnConfigError
from bookseg.mrcnn.model import MaskRCNN, named_weight_layers
from bookseg.mrcnn.weights import load_weights, save_checkpoint, save_legacy_weights

from .conftest import make_batch, shelf_scene, tiny_config

STD = (0.1, 0.1, 0.2, 0.2)


def test_refine_rois_moves_by_the_chosen_class_clips_and_keeps_padding():
    rois = tf.constant([[[0.2, 0.2, 0.4, 0.4], [0.8, 0.8, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]])
    deltas = np.zeros((1, 3, 3, 4), np.float32)  # [B, R, C, 4], 3 classes
    deltas[0, 0, 2] = [1.0, 0.0, 0.0, 0.0]  # class 2: down by 0.1 of the height (1.0 * std 0.1)
    deltas[0, 0, 1] = [-5.0, 0.0, 0.0, 0.0]  # class 1: must not be used for ROI 0
    deltas[0, 1, 1] = [0.0, 0.0, 5.0, 5.0]  # grows 2.7 times, clipped to the image
    deltas[0, 2, 1] = [1.0, 1.0, 1.0, 1.0]  # padding row
    class_ids = tf.constant([[2, 1, 1]])
    refined = refine_rois(rois, tf.constant(deltas), class_ids, STD).numpy()
    np.testing.assert_allclose(refined[0, 0], [0.22, 0.2, 0.42, 0.4], atol=1e-6)
    assert refined[0, 1].max() == 1.0 and refined[0, 1, 0] < 0.8
    np.testing.assert_array_equal(refined[0, 2], 0)


def test_refinement_class_is_the_gt_class_for_positives_else_the_best_foreground():
    logits = tf.constant([[[5.0, 1.0, 2.0], [5.0, 3.0, 2.0], [0.0, 0.0, 9.0]]])
    np.testing.assert_array_equal(refinement_class_ids(logits).numpy(), [[2, 1, 2]])
    np.testing.assert_array_equal(refinement_class_ids(logits, tf.constant([[1, 0, 0]])).numpy(), [[1, 1, 2]])


def _stage_inputs():
    """One GT book [0.1, 0.1, 0.5, 0.5] whose mini mask is its left half, and refined ROIs at IoU 1,
    0.65, 0.55 and 0 with it, then padding."""
    ids = np.array([[1, 0, 0]], np.int32)
    boxes = np.zeros((1, 3, 4), np.float32)
    boxes[0, 0] = [0.1, 0.1, 0.5, 0.5]
    masks = np.zeros((1, 28, 28, 3), np.float32)
    masks[0, :, :14, 0] = 1.0
    rois = np.zeros((1, 10, 4), np.float32)
    rois[0, :4] = [
        [0.1, 0.1, 0.5, 0.5],  # IoU 1
        [0.185, 0.1, 0.585, 0.5],  # IoU 0.315 / 0.485 = 0.65
        [0.216, 0.1, 0.616, 0.5],  # IoU 0.284 / 0.516 = 0.55
        [0.7, 0.7, 0.8, 0.8],  # IoU 0
    ]
    valid = np.zeros((1, 10), np.float32)
    valid[0, :4] = 1
    return rois, valid, ids, boxes, masks


def _targets(threshold, with_masks=True, ids=None, boxes=None):
    """`stage_targets` of `_stage_inputs`, optionally with other GT ids and boxes, as NumPy arrays."""
    rois, valid, default_ids, default_boxes, masks = _stage_inputs()
    ids = default_ids if ids is None else ids
    boxes = default_boxes if boxes is None else boxes
    config = tiny_config(train_rois_per_image=10, roi_positive_ratio=0.33, mini_mask_shape=(28, 28))
    arrays = [tf.constant(a) for a in (rois, valid, ids, boxes, masks)]
    return [t.numpy() for t in stage_targets(*arrays, config, threshold, with_masks, image_hw=(64, 64))]


def test_stage_targets_relabel_the_refined_rois_at_the_stage_threshold():
    class_ids, deltas, valid, mask_class_ids, masks = _targets(0.6)
    np.testing.assert_array_equal(class_ids[0], [1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(valid[0], [1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(deltas[0, 0], 0, atol=1e-6)
    np.testing.assert_allclose(deltas[0, 1], [-0.085 / 0.4 / 0.1, 0, 0, 0], atol=1e-4)
    np.testing.assert_array_equal(deltas[0, 2:], 0)
    # Masks: the first M = int(10 * 0.33) = 3 rows, counted from IoU 0.5 whatever the box threshold.
    np.testing.assert_array_equal(mask_class_ids[0], [1, 1, 1])
    assert masks.shape == (1, 3, 28, 28)
    np.testing.assert_array_equal(masks[0, 0, :, :14], 1)
    np.testing.assert_array_equal(masks[0, 0, :, 14:], 0)
    assert masks[0, 1, -3:, :14].max() == 0  # the lower ROI reaches below the book
    np.testing.assert_array_equal(_targets(0.7, with_masks=False)[0][0], [1] + [0] * 9)


def test_stage_targets_without_gt_and_with_a_crowd_region():
    _, valid, ids, boxes, _ = _stage_inputs()
    class_ids, deltas, stage_valid, mask_class_ids, masks = _targets(
        0.6, ids=np.zeros_like(ids), boxes=np.zeros_like(boxes)
    )
    assert class_ids.sum() == 0 and mask_class_ids.sum() == 0 and masks.sum() == 0
    assert np.isfinite(deltas).all()
    np.testing.assert_array_equal(stage_valid, valid)
    ids[0, 1], boxes[0, 1] = -1, [0.65, 0.65, 0.9, 0.9]  # a crowd region over the far ROI
    class_ids, _, stage_valid, _, _ = _targets(0.6, ids=ids, boxes=boxes)
    np.testing.assert_array_equal(class_ids[0, :4], [1, 1, 0, 0])
    np.testing.assert_array_equal(stage_valid[0, :4], [1, 1, 1, 0])  # never a negative


def _batch(config):
    image, masks = shelf_scene()
    return {
        k: tf.constant(v)
        for k, v in make_batch(config, [image, image[:, ::-1].copy()], [masks, masks[:, ::-1]]).items()
    }


def _copy_weights(source, target):
    layers = named_weight_layers(target)
    for name, layer in named_weight_layers(source).items():
        layers[name].set_weights(layer.get_weights())


def _zero_box_deltas(model):
    layer = model.classifier_head.get_layer("mrcnn_bbox_fc")
    layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])


def test_cascade_training_graph_relabels_refined_rois_and_trains_every_head():
    config = tiny_config(cascade_iou_thresholds=(0.6, 0.7))
    keras.utils.set_random_seed(0)
    model = MaskRCNN(config)
    _zero_box_deltas(model)  # the first stage then hands its ROIs on unchanged
    batch = _batch(config)
    gt = batch["input_gt_boxes"].numpy() / 63.0
    proposals = np.zeros((2, config.post_nms_rois_training, 4), np.float32)
    for row in range(2):
        real = gt[row][batch["input_gt_class_ids"].numpy()[row] > 0]
        down = (real[:, 2:3] - real[:, 0:1]) * [1, 0, 1, 0]  # one box height down
        boxes = np.concatenate([real, real + 0.1 * down, real + 0.3 * down])  # IoU 1, 0.82, 0.54
        proposals[row, : len(boxes)] = np.clip(boxes, 0.0, 1.0)
    model.proposal_layer = lambda *args, **kwargs: tf.constant(proposals)

    with tf.GradientTape() as tape:
        out = model.training_outputs(batch, deterministic=True)
        losses = model.mrcnn_losses(batch, deterministic=True)
        total = model.total_loss(losses, model.l2_loss())
    assert [tuple(s["rois"].shape) for s in out["cascade"]] == [(2, 32, 4)] * 2
    first = out["cascade"][0]
    np.testing.assert_allclose(first["rois"].numpy(), out["rois"].numpy(), atol=1e-6)
    # Stage 2 keeps the first head's rows; its positives are those at IoU >= 0.6, a subset.
    np.testing.assert_array_equal(first["roi_valid"].numpy(), out["roi_valid"].numpy())
    stage1, stage2 = out["target_class_ids"].numpy() > 0, first["target_class_ids"].numpy() > 0
    assert stage1.sum(axis=1).tolist() == [9, 9] and stage2.sum(axis=1).tolist() == [6, 6]
    assert not (stage2 & ~stage1).any()
    assert (out["cascade"][1]["target_class_ids"].numpy() > 0).sum(axis=1).tolist() == [6, 6]
    assert all(np.isfinite(float(v)) for v in losses.values())
    gradients = tape.gradient(total, [w for head in model.cascade_heads for w in head.trainable_weights])
    assert all(g is not None for g in gradients) and any(
        float(tf.reduce_max(tf.abs(g))) > 0 for g in gradients
    )


def test_a_cascade_of_identical_heads_that_do_not_move_boxes_detects_as_one_head():
    config = tiny_config()
    keras.utils.set_random_seed(3)
    single = MaskRCNN(config)
    _zero_box_deltas(single)
    cascade = MaskRCNN(config.replace(cascade_iou_thresholds=(0.6,)))
    _copy_weights(single, cascade)
    stage2 = cascade.cascade_heads[0]
    for layer in single.classifier_head.layers:
        if layer.weights:
            stage2.get_layer(f"{layer.name}_stage2").set_weights(layer.get_weights())
    image, _ = shelf_scene()
    expected = single.detect([image], min_confidence=0.0)[0]
    got = cascade.detect([image], min_confidence=0.0)[0]
    assert len(expected["scores"]) > 0
    for key in ("rois", "class_ids", "masks"):
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    np.testing.assert_allclose(got["scores"], expected["scores"], rtol=1e-5)


@pytest.mark.parametrize("kind", ["keras3", "legacy"])
def test_weights_without_cascade_heads_seed_them_from_the_box_head(tmp_path, kind):
    config = tiny_config()
    keras.utils.set_random_seed(4)
    source = MaskRCNN(config)
    if kind == "keras3":
        path = save_checkpoint(source, tmp_path, 1)
    else:
        path = save_legacy_weights(source, tmp_path / "single.h5")
    target = MaskRCNN(config.replace(cascade_iou_thresholds=(0.6, 0.7)))
    report = load_weights(target, path)
    assert report.missing == []
    assert any("cascade-head layers" in note for note in report.notes)
    source_layers, target_layers = named_weight_layers(source), named_weight_layers(target)
    for stage in (2, 3):
        for name in ("mrcnn_class_conv1", "mrcnn_class_bn2", "mrcnn_bbox_fc"):
            for a, b in zip(
                source_layers[name].get_weights(), target_layers[f"{name}_stage{stage}"].get_weights()
            ):
                np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        source.backbone_fpn.weights[0].numpy(), target.backbone_fpn.weights[0].numpy()
    )


def test_cascade_thresholds_outside_zero_one_are_rejected():
    with pytest.raises(MrcnnConfigError, match="cascade_iou_thresholds"):
        MaskRCNN(tiny_config(cascade_iou_thresholds=(0.6, 1.2)))
