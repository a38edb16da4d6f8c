"""Stages, trainable counts, weight decay, loss bookkeeping across re-compiles, NaN stop."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from bookseg.mrcnn.config import LOSS_NAMES, MrcnnConfig
from bookseg.mrcnn.lr_schedule import LrSchedule
from bookseg.mrcnn.model import MaskRCNN, named_weight_layers
from bookseg.mrcnn.training import (
    NonFiniteLossError,
    OptimizerSpec,
    Stage,
    make_optimizer,
    set_trainable,
    train_stages,
)

from .conftest import make_batch, mask_aps, shelf_scene, tiny_config

# Trainable tensors (kernels + biases, BN gamma + beta) counted from the architecture:
# heads = FPN 8 convs (16) + rpn_model 3 convs (6) + classifier conv1, bn1, conv2, bn2, 2 dense (12)
#         + mask 4 convs, 4 BNs, deconv, conv (20) = 54.
# R50: each backbone conv or BN adds 2; stage 5 = 10 convs + 10 BNs, stage 4 = 19 + 19, stage 3 = 13 + 13,
#      conv1/bn_conv1 + stage 2 = 11 + 11.
# tiny: each stage has 2 convs + 2 BNs = 8 tensors.
R50_COUNTS = {"heads": 54, "5+": 54 + 40, "4+": 54 + 40 + 76, "3+": 54 + 40 + 76 + 52, "all": 54 + 212}
TINY_COUNTS = {"heads": 54, "5+": 62, "4+": 70, "3+": 78, "all": 94}


def test_trainable_counts_per_stage_resnet50():
    model = MaskRCNN(MrcnnConfig(backbone="resnet50"))
    counts = {layers: set_trainable(model, layers) for layers in R50_COUNTS}
    assert counts == R50_COUNTS
    assert counts["heads"] < counts["4+"] < counts["all"]
    named = named_weight_layers(model)
    set_trainable(model, "4+")
    assert named["res4a_branch2a"].trainable and named["bn5c_branch2c"].trainable
    assert not named["res3d_branch2c"].trainable and not named["conv1"].trainable
    assert named["rpn_model"].trainable and named["mrcnn_mask"].trainable


def test_trainable_counts_tiny_and_custom_regex():
    model = MaskRCNN(tiny_config())
    assert {layers: set_trainable(model, layers) for layers in TINY_COUNTS} == TINY_COUNTS
    assert set_trainable(model, r"mrcnn\_mask.*") == 20
    assert set_trainable(model, r"rpn_model") == 6
    with pytest.raises(ValueError, match="matches no weighted layer"):
        set_trainable(model, "res9.*")
    with pytest.raises(ValueError, match="valid regex"):
        set_trainable(model, "(unclosed")


def test_l2_loss_follows_the_trainable_set_and_mode():
    config = tiny_config(weight_decay=0.01)
    model = MaskRCNN(config)
    bn_scales = {v.path for v in model.norm_scales()}

    def by_hand(reduce):
        return 0.01 * sum(
            reduce(np.square(v.numpy())) for v in model.trainable_weights if v.path not in bn_scales
        )

    set_trainable(model, "heads")
    heads = float(model.l2_loss())
    assert heads == pytest.approx(by_hand(np.mean), rel=1e-5)
    set_trainable(model, "all")
    assert float(model.l2_loss()) == pytest.approx(by_hand(np.mean), rel=1e-5)
    assert float(model.l2_loss()) > heads
    l2_model = MaskRCNN(config.replace(weight_decay_mode="l2"))
    l2_model.set_weights(model.get_weights())
    set_trainable(l2_model, "all")
    assert float(l2_model.l2_loss()) == pytest.approx(
        0.01 * sum(np.square(v.numpy()).sum() for v in l2_model.trainable_weights if v.path not in bn_scales),
        rel=1e-5,
    )


def test_make_optimizer_global_clipnorm_and_adamw():
    sgd = make_optimizer(OptimizerSpec(), 0.01)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.global_clipnorm == 5.0 and sgd.clipnorm is None
    assert sgd.momentum == pytest.approx(0.9)
    adamw = make_optimizer(OptimizerSpec(name="adamw", clipnorm=None, adamw_weight_decay=0.05), 0.001)
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == pytest.approx(0.05)
    assert adamw.global_clipnorm is None
    with pytest.raises(ValueError, match="unknown optimizer"):
        OptimizerSpec(name="rmsprop")
    with pytest.raises(ValueError, match="epochs"):
        Stage("heads", -1, 0.01)


def _dataset(config, with_empty=True):
    """Repeating dataset alternating a batch with books and (optionally) a batch without any."""
    image, masks = shelf_scene()
    full = make_batch(config, [image, image[:, ::-1].copy()], [masks, masks[:, ::-1]])
    batches = [full]
    if with_empty:
        blank = np.full_like(image, 30)
        none = np.zeros((64, 64, 0), bool)
        batches.append(make_batch(config, [blank, blank], [none, none]))
    stacked = {k: np.stack([b[k] for b in batches]) for k in full}
    return full, tf.data.Dataset.from_tensor_slices(stacked).repeat()


class _TrainableCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.counts = []

    def on_epoch_begin(self, epoch, logs=None):
        self.counts.append((epoch, len(self.model.trainable_weights)))


def test_train_stages_numbers_epochs_globally_and_logs_all_losses():
    config = tiny_config()
    model = MaskRCNN(config)
    _, data = _dataset(config)
    counter = _TrainableCounter()
    bn_before = named_weight_layers(model)["tiny_c3_bn1"].moving_mean.numpy().copy()
    logs = train_stages(
        model,
        data,
        data.take(2),
        [Stage("heads", 1, 0.01), Stage("all", 2, 0.001)],
        OptimizerSpec(),
        steps_per_epoch=2,
        validation_steps=2,
        callbacks=[counter],
        verbose=0,
    )
    assert [row["epoch"] for row in logs] == [1, 2, 3]
    assert [row["stage"] for row in logs] == [0, 1, 1]
    assert [row["learning_rate"] for row in logs] == pytest.approx([0.01, 0.001, 0.001])
    assert counter.counts == [(0, TINY_COUNTS["heads"]), (1, TINY_COUNTS["all"]), (2, TINY_COUNTS["all"])]
    for row in logs:
        for name in ("loss", "l2_loss", *LOSS_NAMES):
            assert math.isfinite(row[name]) and math.isfinite(row["val_" + name]), name
        # Means of sums are sums of means: the total is counted once, never twice.
        assert row["loss"] == pytest.approx(sum(row[n] for n in LOSS_NAMES) + row["l2_loss"], rel=1e-4)
        assert row["val_loss"] == pytest.approx(
            sum(row["val_" + n] for n in LOSS_NAMES) + row["val_l2_loss"], rel=1e-4
        )
    # Frozen BN (norm frozen_bn): moving statistics untouched by training.
    np.testing.assert_array_equal(named_weight_layers(model)["tiny_c3_bn1"].moving_mean.numpy(), bn_before)


def test_training_and_detection_trace_their_graphs_once():
    """Every training step, validation step and detect call reuses one compiled graph (retracing
    would re-build the graph each time: seconds per step on ResNet-50)."""
    config = tiny_config()
    model = MaskRCNN(config)
    _, data = _dataset(config)
    # Python bodies of compiled steps run only while tracing: count those runs.
    runs = {"train_step": 0, "test_step": 0, "inference_outputs": 0}

    def counting(name, original):
        def counted(*args, **kwargs):
            runs[name] += 1
            return original(*args, **kwargs)

        return counted

    for name in runs:
        setattr(model, name, counting(name, getattr(model, name)))
    train_stages(
        model,
        data,
        data.take(2),
        [Stage("all", 3, 0.001)],
        OptimizerSpec(),
        steps_per_epoch=4,
        validation_steps=2,
        verbose=0,
    )
    image, _ = shelf_scene()
    for photo in (image, image[:40], image[:, :50], image[:, ::-1]):  # any size molds to one shape
        model.detect([photo])
    assert runs == {"train_step": 1, "test_step": 1, "inference_outputs": 1}, (
        "12 steps, 6 validation steps, 4 detects"
    )


def test_recompiling_for_a_new_stage_does_not_duplicate_losses():
    config = tiny_config()
    model = MaskRCNN(config)
    full, _ = _dataset(config, with_empty=False)
    batch = tf.data.Dataset.from_tensors(full)
    set_trainable(model, "heads")
    model.compile(optimizer=make_optimizer(OptimizerSpec(), 0.01), jit_compile=False)
    before = model.evaluate(batch, verbose=0, return_dict=True)
    set_trainable(model, "heads")
    model.compile(optimizer=make_optimizer(OptimizerSpec(), 0.001), jit_compile=False)
    after = model.evaluate(batch, verbose=0, return_dict=True)
    assert before == after
    assert before["loss"] == pytest.approx(sum(before[n] for n in LOSS_NAMES) + before["l2_loss"], rel=1e-5)


def test_resume_skips_finished_stages_and_epochs():
    config = tiny_config()
    model = MaskRCNN(config)
    _, data = _dataset(config, with_empty=False)
    counter = _TrainableCounter()
    logs = train_stages(
        model,
        data,
        None,
        [Stage("heads", 2, 0.01), Stage("4+", 2, 0.001)],
        OptimizerSpec(),
        steps_per_epoch=1,
        validation_steps=None,
        callbacks=[counter],
        initial_epoch=3,
        verbose=0,
    )
    assert [row["epoch"] for row in logs] == [4]
    assert [row["stage"] for row in logs] == [1]
    assert counter.counts == [(3, TINY_COUNTS["4+"])]
    assert "val_loss" not in logs[0]


def test_non_finite_loss_stops_training_without_touching_weights(tmp_path):
    config = tiny_config()
    model = MaskRCNN(config)
    full, _ = _dataset(config, with_empty=False)
    poisoned = dict(full)
    poisoned["input_image"] = full["input_image"].copy()
    poisoned["input_image"][1, 10:20, 10:20] = np.nan
    data = tf.data.Dataset.from_tensors(poisoned).repeat()
    weights_before = [w.copy() for w in model.get_weights()]
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "ckpt_{epoch:04d}.weights.h5"), save_weights_only=True
    )
    with pytest.raises(NonFiniteLossError, match=r"training step 1 \(epoch 1\)"):
        train_stages(
            model,
            data,
            None,
            [Stage("all", 2, 0.01)],
            OptimizerSpec(),
            steps_per_epoch=2,
            validation_steps=None,
            callbacks=[checkpoint],
            verbose=0,
        )
    for before, after in zip(weights_before, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------- overfit
def test_overfit_tiny_model_on_synthetic_shelves(overfit_run):
    """The whole model learns: input pipeline, targets, five losses, AdamW, detect, unmolding.

    The photos are non-square (96 x 128), molded to 128 x 128 with padding: AP is computed in
    original pixels, so this also checks that `detect` maps boxes and masks back through the window.
    """
    logs = overfit_run.logs
    assert logs[-1]["loss"] < 0.5 * logs[0]["loss"]
    results = overfit_run.model.detect(overfit_run.images)
    assert all(result["masks"].shape[:2] == (96, 128) for result in results)
    aps = mask_aps(results, overfit_run.gt_masks)
    assert np.mean(aps) >= 0.9, f"mask AP@0.5 per image {np.round(aps, 3)}, last losses {logs[-1]}"


def test_learning_rate_schedule_warms_up_decays_and_resumes_where_it_was():
    """Warm-up then cosine within the stage, as the optimizer applies it step by step; a stage resumed
    mid-way continues the same curve."""
    config = tiny_config()
    _, data = _dataset(config, with_empty=False)
    schedule = LrSchedule(warmup_steps=2, decay="cosine", min_lr_ratio=0.1)

    class Applied(keras.callbacks.Callback):
        rates: list

        def on_train_batch_begin(self, batch, logs=None):
            self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    def rates(initial_epoch):
        applied = Applied()
        applied.rates = []
        logs = train_stages(
            MaskRCNN(config),
            data,
            None,
            [Stage("all", 3, 0.01)],
            OptimizerSpec(),
            steps_per_epoch=2,
            validation_steps=None,
            verbose=0,
            lr_schedule=schedule,
            initial_epoch=initial_epoch,
            callbacks=[applied],
        )
        return applied.rates, [row["learning_rate"] for row in logs]

    def expected(step):
        cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / 6))
        return 0.01 * cosine * (0.001 + 0.999 * min(step / 2, 1.0))

    full, logged = rates(0)
    assert full == pytest.approx([expected(step) for step in range(6)], rel=1e-5)
    assert logged == pytest.approx([full[1], full[3], full[5]])  # each epoch's last step
    resumed, _ = rates(1)
    assert resumed == pytest.approx(full[2:], rel=1e-5)
