"""Mixed bfloat16 (`MrcnnConfig.precision`): what stays float32, and that detections hold.

bfloat16 keeps float32's exponent but 8 bits of mantissa, so it is used for the convolutions only
(the bulk of the work); scores, deltas, ROI pooling, box maths and losses stay float32. The check
that matters to a user: a model trained in float32 detects the same books, with the same masks,
when run in mixed bfloat16.
"""

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from bookseg.evaluation.matterport_ap import mask_iou
from bookseg.mrcnn.boxes import iou_matrix
from bookseg.mrcnn.model import MaskRCNN
from bookseg.mrcnn.normalization import BatchNorm

from .conftest import make_batch, mask_aps, shelf_scene, tiny_config


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown precision 'float16'"):
        tiny_config(precision="float16").validate()


def test_mixed_bfloat16_computes_in_bf16_keeps_float32_weights_and_outputs():
    model = MaskRCNN(tiny_config(precision="mixed_bfloat16"))
    assert keras.config.dtype_policy().name == "float32"  # building does not leak the policy
    conv = model.backbone_fpn.get_layer("tiny_c2_conv1")
    assert conv.compute_dtype == "bfloat16" and conv.kernel.dtype == "float32"
    assert model.rpn_model.get_layer("rpn_conv_shared").compute_dtype == "bfloat16"
    for head, name in (
        (model.rpn_model, "rpn_class_raw"),
        (model.classifier_head, "mrcnn_class_logits"),
        (model.mask_head, "mrcnn_mask"),
    ):
        assert head.get_layer(name).compute_dtype == "float32"
    assert all(v.dtype == "float32" for v in model.weights)

    image, masks = shelf_scene()
    batch = {k: tf.constant(v) for k, v in make_batch(model.config, [image, image], [masks, masks]).items()}
    out = model.training_outputs(batch)
    for name in ("rpn_class_logits", "rpn_bbox", "mrcnn_class_logits", "mrcnn_bbox", "mrcnn_mask_logits"):
        assert out[name].dtype == tf.float32, name
    losses = model.mrcnn_losses(batch)
    assert all(np.isfinite(float(v)) for v in losses.values())


def test_frozen_batch_norm_matches_keras_batch_normalization():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (2, 5, 5, 6)).astype(np.float32)
    ours, keras_bn = BatchNorm(train_bn=False), keras.layers.BatchNormalization(epsilon=1e-3)
    for layer in (ours, keras_bn):
        layer.build(x.shape)
    stats = [rng.normal(size=6), rng.normal(size=6), rng.normal(size=6), rng.uniform(0.5, 4.0, 6)]
    for layer in (ours, keras_bn):
        layer.set_weights([s.astype(np.float32) for s in stats])  # gamma, beta, moving mean, variance
    expected = keras_bn(x, training=False).numpy()
    np.testing.assert_allclose(ours(x, training=True).numpy(), expected, rtol=1e-5, atol=1e-5)


def _within_one_pixel_of_the_edge(reference: np.ndarray, other: np.ndarray) -> bool:
    """True if bool [H, W] masks `reference` and `other` differ only in pixels at most 1 px from the
    edge of `reference` (inside or outside it)."""
    kernel = np.ones((3, 3), np.uint8)
    mask = reference.astype(np.uint8)
    edge_band = cv2.dilate(mask, kernel).astype(bool) & ~cv2.erode(mask, kernel).astype(bool)
    return not np.any((reference ^ other) & ~edge_band)


def test_bf16_detections_match_float32_detections_of_the_same_weights(overfit_run):
    """Same trained weights, run in float32 and in mixed bfloat16: same books found, each mask differs
    by at most a pixel at its edge, boxes agree to IoU 0.9, scores within 0.05, the AP within 0.05.

    Measured as a pixel band rather than an IoU: the overfit weights differ slightly from run to run
    (multi-threaded CPU kernels), and a book 10 px wide that gains or loses one column of pixels in bf16
    drops to mask IoU 0.84 while being outlined as well as in float32."""
    fp32_model = overfit_run.model
    bf16_model = MaskRCNN(fp32_model.config.replace(precision="mixed_bfloat16"))
    bf16_model.set_weights(fp32_model.get_weights())
    fp32_results = fp32_model.detect(overfit_run.images)
    bf16_results = bf16_model.detect(overfit_run.images)

    matched = 0
    for fp32, bf16 in zip(fp32_results, bf16_results):
        mask_ious = mask_iou(fp32["masks"], bf16["masks"])  # [fp32 detections, bf16 detections]
        box_ious = iou_matrix(fp32["rois"], bf16["rois"])
        for k, (box, score) in enumerate(zip(fp32["rois"], fp32["scores"])):
            if score < 0.8:  # near the 0.5 threshold a detection may fall either side
                continue
            best = int(np.argmax(mask_ious[k])) if bf16["scores"].size else None
            assert best is not None and mask_ious[k, best] >= 0.5, f"fp32 detection {box} has no bf16 twin"
            assert _within_one_pixel_of_the_edge(fp32["masks"][..., k], bf16["masks"][..., best]), box
            assert abs(bf16["scores"][best] - score) < 0.05
            assert box_ious[k, best] >= 0.9
            matched += 1
    assert matched >= 8, "the comparison needs confident detections"
    fp32_ap = np.mean(mask_aps(fp32_results, overfit_run.gt_masks))
    bf16_ap = np.mean(mask_aps(bf16_results, overfit_run.gt_masks))
    assert abs(bf16_ap - fp32_ap) <= 0.05, (fp32_ap, bf16_ap)
