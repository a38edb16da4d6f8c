"""Staged training (matterport `train(layers=...)`): trainable-layer selection, optimizers, NaN guard.

A stage trains the layers selected by a matterport regex for some epochs at one learning rate.
`train_stages` runs several in a row with epochs numbered globally (stage 2 starts where stage 1
ended, so callbacks and checkpoints see one continuous run), and can resume from any epoch.
Each stage re-compiles the model with a fresh optimizer; the losses are computed in
`MaskRCNN.train_step`, so re-compiling never adds them twice (matterport TF2 ports did).

Layer selection (matterport's, `re.fullmatch` on matterport layer names; `rpn_model` is one
layer). The tiny backbone's stages `tiny_c3*` .. `tiny_c5*` join "3+", "4+", "5+" like `res3*` ..
`res5*`; its stem and stage 2 (`tiny_c1*`, `tiny_c2*`) train only with "all", like conv1/res2.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import keras

from bookseg.mrcnn.lr_schedule import LrSchedule
from bookseg.mrcnn.model import named_weight_layers

_HEADS = r"(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)"
STAGE_REGEXES = {
    "heads": _HEADS,
    "3+": r"(res3.*)|(bn3.*)|(tiny_c3.*)|(res4.*)|(bn4.*)|(tiny_c4.*)|(res5.*)|(bn5.*)|(tiny_c5.*)|" + _HEADS,
    "4+": r"(res4.*)|(bn4.*)|(tiny_c4.*)|(res5.*)|(bn5.*)|(tiny_c5.*)|" + _HEADS,
    "5+": r"(res5.*)|(bn5.*)|(tiny_c5.*)|" + _HEADS,
    "all": ".*",
}


@dataclass(frozen=True)
class Stage:
    """One training stage.

    Attributes:
        layers: "heads" | "3+" | "4+" | "5+" | "all" | a custom regex over layer names.
        epochs: number of epochs of this stage (>= 0).
        learning_rate: learning rate of this stage (> 0).
    """

    layers: str
    epochs: int
    learning_rate: float

    def __post_init__(self):
        if not self.layers:
            raise ValueError("Stage.layers is empty: use heads, 3+, 4+, 5+, all or a regex")
        if self.epochs < 0:
            raise ValueError(f"Stage {self.layers!r}: epochs must be >= 0, got {self.epochs}")
        if not self.learning_rate > 0:
            raise ValueError(f"Stage {self.layers!r}: learning_rate must be > 0, got {self.learning_rate}")


@dataclass(frozen=True)
class OptimizerSpec:
    """Optimizer choice.

    Attributes:
        name: "sgd" (momentum SGD, matterport) or "adamw" (Keras AdamW, decoupled weight decay).
        momentum: SGD momentum.
        clipnorm: clip the *global* gradient norm to this (matterport's Keras 2.0.8 semantics);
            None = no clipping.
        adamw_weight_decay: AdamW's decoupled decay (BatchNorm gamma/beta excluded). It comes on
            top of the in-loss L2 of `config.weight_decay`; set that to 0 for pure AdamW.
        beta_1, beta_2: Adam moment decay rates.
    """

    name: str = "sgd"
    momentum: float = 0.9
    clipnorm: float | None = 5.0
    adamw_weight_decay: float = 1e-4
    beta_1: float = 0.9
    beta_2: float = 0.999

    def __post_init__(self):
        if self.name not in ("sgd", "adamw"):
            raise ValueError(f"unknown optimizer {self.name!r}: use sgd or adamw")
        if self.clipnorm is not None and not self.clipnorm > 0:
            raise ValueError(f"clipnorm must be > 0 or None, got {self.clipnorm}")


class StageLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """A stage's `LrSchedule` as a Keras schedule of the optimizer's step counter.

    The optimizer of a stage starts at step 0; `first_step` is the stage step it starts at (> 0
    when a stage is resumed mid-way), `steps_before_stage` the training steps of earlier stages.
    """

    def __init__(
        self,
        schedule: LrSchedule,
        base_rate: float,
        stage_steps: int,
        first_step: int = 0,
        steps_before_stage: int = 0,
    ):
        self.schedule, self.base_rate = schedule, float(base_rate)
        self.stage_steps, self.first_step, self.steps_before_stage = (
            stage_steps,
            first_step,
            steps_before_stage,
        )

    def __call__(self, step):
        return self.schedule.rate(
            self.base_rate, step + self.first_step, self.stage_steps, self.steps_before_stage
        )

    def get_config(self):
        return {
            "schedule": dataclasses.asdict(self.schedule),
            "base_rate": self.base_rate,
            "stage_steps": self.stage_steps,
            "first_step": self.first_step,
            "steps_before_stage": self.steps_before_stage,
        }

    @classmethod
    def from_config(cls, config):
        return cls(LrSchedule(**config.pop("schedule")), **config)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; no update was applied for that step."""


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Raise `NonFiniteLossError` at the first non-finite loss (training step or validation).

    `MaskRCNN.train_step` already skips the update of a non-finite step, so the weights stay
    finite; this callback stops the run before any later callback (checkpoints) sees the epoch.
    It must come first in the callback list (`train_stages` puts it there).
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.last_finite: dict | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def _check(self, logs, where: str):
        values = {name: float(value) for name, value in (logs or {}).items()}
        bad = {name: value for name, value in values.items() if not math.isfinite(value)}
        if bad:
            raise NonFiniteLossError(
                f"non-finite loss {where} (epoch {self.epoch + 1}): {bad}; the step's update was skipped. "
                f"Last finite losses (epoch means so far): {self.last_finite}. Usual causes: too high a "
                "learning rate, a corrupt image (NaN pixels) or degenerate boxes."
            )
        return values

    def on_train_batch_end(self, batch, logs=None):
        self.last_finite = self._check(logs, f"at training step {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, "at the end of the epoch (validation included)")


def stage_regex(layers: str) -> str:
    """The regex of a stage name ("heads" ...), or `layers` itself as a custom regex."""
    return STAGE_REGEXES.get(layers, layers)


def set_trainable(model, layers: str) -> int:
    """Make exactly the weighted layers whose name fully matches the stage regex trainable.

    Re-compile the model afterwards (Keras traces the trainable set into the train function;
    `train_stages` does this).

    Args:
        model: a `MaskRCNN`.
        layers: "heads" | "3+" | "4+" | "5+" | "all" | custom regex (re.fullmatch on names).

    Returns:
        Number of trainable weight tensors (kernels, biases, BN gamma/beta) afterwards.
    """
    regex = stage_regex(layers)
    try:
        pattern = re.compile(regex)
    except re.error as error:
        raise ValueError(
            f"layers={layers!r} is neither a stage name {sorted(STAGE_REGEXES)} nor a valid regex: {error}"
        ) from error
    named = named_weight_layers(model)
    matched = 0
    for name, layer in named.items():
        layer.trainable = bool(pattern.fullmatch(name))
        matched += layer.trainable
    if not matched:
        raise ValueError(
            f"layers={layers!r} (regex {regex!r}) matches no weighted layer; names look like "
            f"{list(named)[:3]} ... {list(named)[-3:]}"
        )
    return len(model.trainable_weights)


def make_optimizer(spec: OptimizerSpec, learning_rate, no_decay_variables=()):
    """Keras optimizer for `spec` at `learning_rate` (a float or a Keras schedule; global-norm
    clipping when spec.clipnorm)."""
    if spec.name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=spec.momentum, global_clipnorm=spec.clipnorm)
    optimizer = keras.optimizers.AdamW(
        learning_rate,
        weight_decay=spec.adamw_weight_decay,
        beta_1=spec.beta_1,
        beta_2=spec.beta_2,
        global_clipnorm=spec.clipnorm,
    )
    if no_decay_variables:
        optimizer.exclude_from_weight_decay(var_list=list(no_decay_variables))
    return optimizer


def train_stages(
    model,
    train_data,
    val_data,
    stages,
    optimizer: OptimizerSpec,
    *,
    steps_per_epoch: int,
    validation_steps: int | None,
    callbacks=(),
    initial_epoch: int = 0,
    verbose=1,
    lr_schedule: LrSchedule | None = None,
) -> list[dict]:
    """Train `model` through `stages` in order.

    Args:
        model: a `MaskRCNN`.
        train_data: dataset of training batches (infinite, e.g. `inputs.make_dataset(repeat=True)`).
        val_data: dataset of validation batches or None.
        stages: sequence of `Stage`.
        optimizer: `OptimizerSpec`; a fresh optimizer is built per stage.
        steps_per_epoch, validation_steps: batches per epoch / per validation.
        callbacks: Keras callbacks; they see global epoch numbers.
        initial_epoch: epochs already done (resume): finished stages are skipped, a stage in
            progress continues at this epoch.
        verbose: passed to `fit`.
        lr_schedule: warm-up and decay within each stage (default: constant rates, matterport).

    Returns:
        One dict per epoch trained: {"epoch": global 1-based epoch, "stage": stage index,
        "learning_rate": rate at the epoch's last step, "loss": ..., "rpn_class_loss": ..., ...,
        "val_loss": ...}.

    Raises:
        NonFiniteLossError: a loss became NaN/inf (the offending update was not applied).
    """
    lr_schedule = lr_schedule or LrSchedule()
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    if initial_epoch < 0:
        raise ValueError(f"initial_epoch must be >= 0, got {initial_epoch}")
    epoch_logs: list[dict] = []
    stage_start = 0
    for index, stage in enumerate(stages):
        stage_end = stage_start + stage.epochs
        first_epoch = max(stage_start, initial_epoch)
        if first_epoch < stage_end:
            set_trainable(model, stage.layers)
            rate = StageLearningRate(
                lr_schedule,
                stage.learning_rate,
                stage.epochs * steps_per_epoch,
                (first_epoch - stage_start) * steps_per_epoch,
                stage_start * steps_per_epoch,
            )
            with model.distribute_strategy.scope():  # the optimizer's variables mirror the weights
                model.compile(
                    optimizer=make_optimizer(optimizer, rate, model.norm_scales()), jit_compile=False
                )
            history = model.fit(
                train_data,
                validation_data=val_data,
                epochs=stage_end,
                initial_epoch=first_epoch,
                steps_per_epoch=steps_per_epoch,
                validation_steps=validation_steps if val_data is not None else None,
                callbacks=[NonFiniteLossGuard(), *callbacks],
                shuffle=False,  # datasets come shuffled from the input pipeline
                verbose=verbose,
            )
            for row, epoch in enumerate(history.epoch):
                logs = {name: float(values[row]) for name, values in history.history.items()}
                learning_rate = float(rate((epoch + 1 - first_epoch) * steps_per_epoch - 1))
                epoch_logs.append(
                    {"epoch": epoch + 1, "stage": index, "learning_rate": learning_rate, **logs}
                )
        stage_start = stage_end
    return epoch_logs
