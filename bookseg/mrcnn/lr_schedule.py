"""Learning-rate warm-up and decay within training stages (the `stages` config group).

Kept free of TensorFlow at import, so config validation can check a schedule quickly;
`training.StageLearningRate` turns it into the optimizer's Keras schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DECAYS = ("constant", "step", "cosine")


@dataclass(frozen=True)
class LrSchedule:
    """Learning-rate warm-up and decay, applied within every stage to that stage's learning rate.

    Attributes:
        warmup_steps: linear warm-up over the first steps of training (counted across stages),
            from `warmup_factor` x the stage's rate up to the rate; 0 = none.
        warmup_factor: starting fraction of the warm-up (Detectron: 0.001).
        decay: "constant" (matterport), "step" (x `step_gamma` at each of `step_at`, fractions of
            the stage), or "cosine" (half a cosine from the rate to `min_lr_ratio` x the rate over
            the stage).
        step_at: fractions of the stage's steps where a "step" decay multiplies by `step_gamma`.
        step_gamma: factor of each step.
        min_lr_ratio: where "cosine" ends, as a fraction of the stage's rate.
    """

    warmup_steps: int = 0
    warmup_factor: float = 0.001
    decay: str = "constant"
    step_at: tuple[float, ...] = (0.67, 0.89)
    step_gamma: float = 0.1
    min_lr_ratio: float = 0.0

    def __post_init__(self):
        if self.decay not in DECAYS:
            raise ValueError(f"unknown learning-rate decay {self.decay!r}: use {', '.join(DECAYS)}")
        if self.warmup_steps < 0 or not 0 < self.warmup_factor <= 1:
            raise ValueError("warmup_steps must be >= 0 and warmup_factor in (0, 1]")
        if any(not 0 < f < 1 for f in self.step_at) or not 0 < self.step_gamma <= 1:
            raise ValueError("step_at must be fractions in (0, 1) and step_gamma in (0, 1]")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("min_lr_ratio must be in [0, 1]")

    def rate(self, base_rate, stage_step, stage_steps: int, steps_before_stage: int):
        """Learning rate at step `stage_step` (0-based, a float tensor or number) of a stage of
        `stage_steps` steps that starts after `steps_before_stage` steps of training."""
        from keras import ops  # here, so that config validation can build an LrSchedule without TensorFlow

        step = ops.cast(stage_step, "float32")
        if self.decay == "cosine":
            progress = ops.minimum(step / max(stage_steps, 1), 1.0)
            factor = self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + ops.cos(math.pi * progress))
        elif self.decay == "step":
            factor = 1.0
            for fraction in self.step_at:
                factor = factor * ops.where(step >= round(fraction * stage_steps), self.step_gamma, 1.0)
        else:
            factor = 1.0
        if self.warmup_steps:
            warm = ops.minimum((step + steps_before_stage) / self.warmup_steps, 1.0)
            factor = factor * (self.warmup_factor + (1 - self.warmup_factor) * warm)
        return base_rate * factor
