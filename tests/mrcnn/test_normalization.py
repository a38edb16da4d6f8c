"""config.norm: frozen BatchNorm (matterport), batch statistics, GroupNorm in backbone, FPN and heads."""

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from bookseg.mrcnn.model import MaskRCNN, named_weight_layers
from bookseg.mrcnn.normalization import BatchNorm, group_count, is_norm_layer
from bookseg.mrcnn.training import OptimizerSpec, Stage, train_stages
from bookseg.mrcnn.weights import WeightLoadError, load_weights, save_checkpoint, save_legacy_weights

from .conftest import make_batch, shelf_scene, tiny_config

FPN_CONVS = ("fpn_c5p5", "fpn_c4p4", "fpn_c3p3", "fpn_c2p2", "fpn_p2", "fpn_p3", "fpn_p4", "fpn_p5")


def _bn_after_batches(train_bn, training):
    layer = BatchNorm(train_bn=train_bn)
    x = tf.constant(np.random.default_rng(0).normal(5.0, 2.0, (8, 4, 4, 3)), tf.float32)
    out = layer(x, training=training)
    return layer, x, out


def test_frozen_batchnorm_ignores_training_flag():
    layer, x, out = _bn_after_batches(False, True)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.0)  # not updated
    np.testing.assert_allclose(out.numpy(), x.numpy() / np.sqrt(1 + 1e-3), rtol=1e-5)  # inference mode


def test_training_batchnorm_uses_batch_statistics_even_in_inference_calls():
    layer, _x, out = _bn_after_batches(True, False)
    assert np.all(layer.moving_mean.numpy() > 0.01)  # updated towards 5
    assert abs(float(tf.reduce_mean(out))) < 1e-3  # normalised with batch statistics


def test_batchnorm_none_follows_the_call_flag():
    layer, _, _ = _bn_after_batches(None, False)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.0)
    layer, _, _ = _bn_after_batches(None, True)
    assert np.all(layer.moving_mean.numpy() > 0.01)


@pytest.mark.parametrize(
    "channels, groups", [(8, 2), (16, 4), (64, 16), (128, 32), (256, 32), (48, 12), (3, 1)]
)
def test_group_count_keeps_four_channels_per_group_and_at_most_32_groups(channels, groups):
    assert group_count(channels) == groups
    assert channels % group_count(channels) == 0


@pytest.mark.parametrize("norm", ["frozen_bn", "batch_norm", "group_norm"])
def test_every_norm_layer_of_the_model_follows_config_norm(norm):
    named = named_weight_layers(MaskRCNN(tiny_config(norm=norm)))
    norms = {name: layer for name, layer in named.items() if is_norm_layer(layer)}
    matterport = [n for n in norms if not n.endswith("_norm")]
    assert len(matterport) == 10 + 2 + 4  # tiny backbone, classifier head, mask head: matterport's names
    fpn = sorted(n for n in norms if n.endswith("_norm"))
    assert fpn == ([] if norm == "frozen_bn" else sorted(f"{conv}_norm" for conv in FPN_CONVS))
    for layer in norms.values():
        if norm == "group_norm":
            assert isinstance(layer, keras.layers.GroupNormalization)
        else:
            assert (
                isinstance(layer, BatchNorm)
                and layer.train_bn is {"frozen_bn": False, "batch_norm": None}[norm]
            )


def test_group_norm_model_treats_each_image_alone():
    """GroupNorm statistics are per image: an image's features do not depend on its batch mates, and
    training and inference calls agree (what makes it usable with 1-4 images per batch)."""
    model = MaskRCNN(tiny_config(norm="group_norm"))
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(0, 50, (2, 64, 64, 3)), tf.float32)
    alone = model.backbone_fpn(images[:1], training=True)
    together = model.backbone_fpn(images, training=False)
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a.numpy()[0], b.numpy()[0], rtol=1e-4, atol=1e-4)


def test_batch_norm_learns_statistics_in_fit_and_uses_them_in_detect():
    config = tiny_config(norm="batch_norm")
    image, masks = shelf_scene()
    batch = make_batch(config, [image, image[:, ::-1].copy()], [masks, masks[:, ::-1]])
    data = tf.data.Dataset.from_tensors(batch).repeat()
    model = MaskRCNN(config)
    layer = named_weight_layers(model)["tiny_c3_bn1"]
    before = layer.moving_variance.numpy().copy()
    train_stages(
        model,
        data,
        None,
        [Stage("all", 1, 0.01)],
        OptimizerSpec(),
        steps_per_epoch=2,
        validation_steps=None,
        verbose=0,
    )
    assert not np.allclose(layer.moving_variance.numpy(), before)  # statistics learned
    frozen = layer.moving_variance.numpy().copy()
    model.detect([np.zeros((64, 64, 3), np.uint8)])
    np.testing.assert_array_equal(layer.moving_variance.numpy(), frozen)  # not touched by inference


@pytest.mark.parametrize("norm", ["batch_norm", "group_norm"])
def test_norm_gamma_and_beta_take_no_weight_decay(norm):
    model = MaskRCNN(tiny_config(norm=norm))
    scales = {v.path for v in model.norm_scales()}
    assert len(scales) == 2 * (16 + len(FPN_CONVS))
    assert not scales & {v.path for v in model.weight_decay_variables()}


def test_frozen_bn_weights_do_not_load_into_group_norm_layers(tmp_path):
    path = save_legacy_weights(MaskRCNN(tiny_config()), tmp_path / "frozen.h5")
    with pytest.raises(WeightLoadError, match="tiny_c1_bn1"):
        load_weights(MaskRCNN(tiny_config(norm="group_norm")), path)


def test_fold_weights_of_a_pretraining_run_load_as_model_weights(tmp_path):
    """Pre-train, then fine-tune: a Keras 3 .weights.h5 (what a fold logs) is a valid `model.weights`
    for the same architecture, and a clear error for another one."""
    pretrained = MaskRCNN(tiny_config(norm="batch_norm"))
    path = tmp_path / "mask_rcnn_fold0.weights.h5"
    pretrained.save_weights(str(path))
    model = MaskRCNN(tiny_config(norm="batch_norm"))
    report = load_weights(model, path)
    assert "tiny_c1_bn1" in report.loaded and "rpn_model" in report.loaded
    for ours, theirs in zip(model.get_weights(), pretrained.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(WeightLoadError, match="fits only the architecture it was saved from"):
        load_weights(MaskRCNN(tiny_config(norm="group_norm")), path)
    with pytest.raises(WeightLoadError, match="arrays, the model"):  # fewer layers: Keras alone would not say
        load_weights(MaskRCNN(tiny_config(norm="frozen_bn")), path)
    with pytest.raises(WeightLoadError, match="restored whole"):
        load_weights(model, path, exclude=["mrcnn_mask"])


def test_a_training_checkpoint_with_optimizer_state_loads_as_model_weights(tmp_path):
    """A fold's checkpoint also holds the optimizer's slots; fine-tuning takes the model's arrays only."""
    trained = MaskRCNN(tiny_config(norm="batch_norm"))
    trained.compile(optimizer=keras.optimizers.SGD(momentum=0.9))
    trained.optimizer.build(trained.trainable_variables)
    path = save_checkpoint(trained, tmp_path, epoch=3)
    with h5py.File(path) as f:
        assert "optimizer" in f
    model = MaskRCNN(tiny_config(norm="batch_norm"))
    load_weights(model, path)
    for ours, theirs in zip(model.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
