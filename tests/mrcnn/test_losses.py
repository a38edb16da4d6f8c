"""The five losses and the weight decay on hand-made cases, checked against hand computations."""

import math

import numpy as np
import pytest
import tensorflow as tf

from bookseg.mrcnn import losses as L


def _ce(logits, label):
    """Softmax cross-entropy of one row, computed by hand."""
    logits = np.asarray(logits, np.float64)
    return float(np.log(np.exp(logits).sum()) - logits[label])


def test_smooth_l1_values():
    diff = tf.constant([-3.0, -1.0, -0.5, 0.0, 0.5, 0.99, 2.0])
    expected = [2.5, 0.5, 0.125, 0.0, 0.125, 0.5 * 0.99**2, 1.5]
    np.testing.assert_allclose(L.smooth_l1(diff).numpy(), expected, rtol=1e-6)


def test_rpn_class_loss_is_mean_cross_entropy_over_non_neutral_anchors():
    rpn_match = np.array([[1, -1, 0], [0, -1, 1]], np.int32)
    logits = np.array(
        [[[0.0, 2.0], [1.0, -1.0], [50.0, -50.0]], [[3.0, 3.0], [0.5, 0.0], [-1.0, 1.5]]], np.float32
    )
    expected = np.mean(
        [_ce(logits[0, 0], 1), _ce(logits[0, 1], 0), _ce(logits[1, 1], 0), _ce(logits[1, 2], 1)]
    )
    got = L.rpn_class_loss(tf.constant(rpn_match), tf.constant(logits)).numpy()
    assert got == pytest.approx(expected, rel=1e-5)
    # matterport's [B, A, 1] layout gives the same value.
    got3 = L.rpn_class_loss(tf.constant(rpn_match[..., None]), tf.constant(logits)).numpy()
    assert got3 == pytest.approx(expected, rel=1e-5)


def test_rpn_class_loss_without_selected_anchors_is_zero():
    got = L.rpn_class_loss(tf.zeros([2, 4], tf.int32), tf.random.normal([2, 4, 2]))
    assert float(got) == 0.0


def test_rpn_bbox_loss_pairs_kth_positive_with_kth_target_row():
    # Image 0: positives at anchors 1 and 3; image 1: positive at anchor 0.
    rpn_match = np.array([[0, 1, -1, 1], [1, 0, 0, -1]], np.int32)
    targets = np.zeros((2, 3, 4), np.float32)
    targets[0, 0] = [0.1, 0.2, 0.3, 0.4]
    targets[0, 1] = [2.0, 0.0, 0.0, 0.0]
    targets[1, 0] = [0.0, 0.0, -0.5, 0.0]
    pred = np.zeros((2, 4, 4), np.float32)
    pred[0, 1] = [0.1, 0.2, 0.3, 0.4]  # exact -> 0
    pred[0, 3] = [0.0, 0.0, 0.0, 0.0]  # diff 2.0 -> 1.5
    pred[0, 2] = [9.0, 9.0, 9.0, 9.0]  # negative anchor: ignored
    pred[1, 0] = [0.0, 0.0, 0.5, 0.0]  # diff -1.0 -> 0.5
    expected = (1.5 + 0.5) / (3 * 4)
    got = L.rpn_bbox_loss(tf.constant(targets), tf.constant(rpn_match), tf.constant(pred)).numpy()
    assert got == pytest.approx(expected, rel=1e-6)


def test_rpn_bbox_loss_without_positives_is_zero():
    got = L.rpn_bbox_loss(tf.zeros([1, 4, 4]), tf.constant([[-1, -1, 0, 0]]), tf.ones([1, 4, 4]))
    assert float(got) == 0.0


def test_mrcnn_class_loss_ignores_padding_rows():
    target = np.array([[1, 0, 0]], np.int32)
    logits = np.array([[[0.0, 1.0], [2.0, 0.0], [-7.0, 7.0]]], np.float32)
    valid = np.array([[1.0, 1.0, 0.0]], np.float32)
    active = np.ones((1, 2), np.float32)
    expected = (_ce(logits[0, 0], 1) + _ce(logits[0, 1], 0)) / 2
    got = L.mrcnn_class_loss(
        tf.constant(target), tf.constant(logits), tf.constant(active), tf.constant(valid)
    )
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_mrcnn_class_loss_skips_rois_predicted_as_inactive_class():
    target = np.array([[1, 0]], np.int32)
    logits = np.array([[[0.0, 0.0, 5.0], [3.0, 0.0, 0.0]]], np.float32)  # ROI 0 predicted class 2
    active = np.array([[1.0, 1.0, 0.0]], np.float32)
    got = L.mrcnn_class_loss(tf.constant(target), tf.constant(logits), tf.constant(active), tf.ones([1, 2]))
    assert float(got) == pytest.approx(_ce(logits[0, 1], 0), rel=1e-5)


def test_mrcnn_class_loss_with_nothing_counted_is_zero_not_nan():
    got = L.mrcnn_class_loss(
        tf.zeros([1, 3], tf.int32), tf.zeros([1, 3, 2]), tf.ones([1, 2]), tf.zeros([1, 3])
    )
    assert float(got) == 0.0


def test_mrcnn_bbox_loss_uses_the_gt_class_deltas_of_positive_rois():
    target_ids = np.array([[2, 0, 1]], np.int32)
    target_bbox = np.array([[[1.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.2]]], np.float32)
    pred = np.zeros((1, 3, 3, 4), np.float32)
    pred[0, 0, 2] = [1.0, 0.0, 0.0, 0.0]  # class 2 row exact
    pred[0, 0, 1] = [9.0, 9.0, 9.0, 9.0]  # other class: ignored
    pred[0, 2, 1] = [0.0, 0.0, 0.0, -2.8]  # diff 3.0 -> 2.5
    expected = 2.5 / (2 * 4)
    got = L.mrcnn_bbox_loss(tf.constant(target_bbox), tf.constant(target_ids), tf.constant(pred))
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_mrcnn_mask_loss_perfect_prediction_is_about_zero_and_wrong_is_large():
    rng = np.random.default_rng(0)
    masks = (rng.random((1, 2, 28, 28)) > 0.5).astype(np.float32)
    ids = np.array([[1, 0]], np.int32)
    logits = np.zeros((1, 2, 28, 28, 2), np.float32)
    logits[0, 0, :, :, 1] = np.where(masks[0, 0] > 0, 20.0, -20.0)
    logits[0, 0, :, :, 0] = np.where(masks[0, 0] > 0, -20.0, 20.0)  # background channel is ignored
    perfect = L.mrcnn_mask_loss(tf.constant(masks), tf.constant(ids), tf.constant(logits))
    assert 0.0 <= float(perfect) < 1e-8
    wrong = L.mrcnn_mask_loss(tf.constant(masks), tf.constant(ids), tf.constant(-logits))
    assert float(wrong) == pytest.approx(20.0, rel=1e-4)
    # Zero logits: BCE = log 2 everywhere.
    half = L.mrcnn_mask_loss(tf.constant(masks), tf.constant(ids), tf.zeros_like(logits))
    assert float(half) == pytest.approx(math.log(2.0), rel=1e-6)


def test_mrcnn_mask_loss_without_positives_is_zero():
    got = L.mrcnn_mask_loss(tf.ones([1, 2, 4, 4]), tf.zeros([1, 2], tf.int32), tf.ones([1, 2, 4, 4, 2]))
    assert float(got) == 0.0


def test_weight_decay_matterport_vs_l2():
    a = tf.Variable(np.array([[1.0, 2.0], [3.0, 4.0]], np.float32))  # sum 30, mean 7.5
    b = tf.Variable(np.array([2.0], np.float32))  # sum 4, mean 4
    assert float(L.weight_decay_loss([a, b], 0.01, "matterport")) == pytest.approx(0.01 * (7.5 + 4.0))
    assert float(L.weight_decay_loss([a, b], 0.01, "l2")) == pytest.approx(0.01 * (30.0 + 4.0))
    assert float(L.weight_decay_loss([], 0.01, "l2")) == 0.0
    with pytest.raises(ValueError, match="weight_decay_mode"):
        L.weight_decay_loss([a], 0.01, "l1")
