"""The search space of an Optuna sweep, written as Hydra sweep overrides, as Optuna distributions.

    lr_scale: interval(0.25, 2.0)                       -> FloatDistribution(0.25, 2.0)
    optimizer.weight_decay: tag(log, interval(1e-5, 1e-3)) -> FloatDistribution(1e-5, 1e-3, log=True)
    model.train_rois_per_image: tag(int, interval(32, 256)) -> IntDistribution(32, 256)
    stages.epochs: range(2, 10, 2)                      -> IntDistribution(2, 8, step=2)  (stop excluded)
    optimizer.momentum: choice(0.8, 0.9, 0.95)          -> CategoricalDistribution
    anchors: default,small,spines                       -> CategoricalDistribution (config group options)

Overrides that are not sweeps (`+experiment=smoke`, `cv.k=5`) are passed unchanged to every trial.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep


class SearchSpaceError(ValueError):
    """A search-space entry Optuna cannot sample (names the override)."""


@dataclass
class SearchSpace:
    distributions: dict = field(
        default_factory=dict
    )  # override key (as written, e.g. "+foo") -> distribution
    fixed: list[str] = field(default_factory=list)  # overrides every trial gets as they are

    def overrides(self, params: dict) -> list[str]:
        """The overrides of one trial: the fixed ones, then `key=value` for each sampled parameter."""
        return self.fixed + [f"{key}={format_value(params[key])}" for key in self.distributions]


def _distribution(override: Override):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    sweep = override.value()
    tags = set(sweep.tags)
    log = "log" in tags
    if isinstance(sweep, ChoiceSweep):
        choices = list(sweep.list)
        if any(isinstance(c, (dict, list)) for c in choices):
            raise SearchSpaceError(f"{override.input_line}: choices must be plain values, not lists or dicts")
        return CategoricalDistribution(choices)
    if isinstance(sweep, RangeSweep):
        values = list(_range_values(sweep))
        if not values:
            raise SearchSpaceError(f"{override.input_line}: the range is empty")
        if all(isinstance(v, int) for v in values):
            return IntDistribution(values[0], values[-1], step=1 if log else sweep.step, log=log)
        return FloatDistribution(values[0], values[-1], step=None if log else sweep.step, log=log)
    if isinstance(sweep, IntervalSweep):
        if "int" in tags:
            return IntDistribution(int(sweep.start), int(sweep.end), log=log)
        return FloatDistribution(sweep.start, sweep.end, log=log)
    raise SearchSpaceError(f"{override.input_line}: unsupported sweep {type(sweep).__name__}")


def _range_values(sweep: RangeSweep):
    value, stop, step = sweep.start, sweep.stop, sweep.step
    if step == 0:
        return
    while (value < stop) if step > 0 else (value > stop):
        yield value
        value = value + step


def search_space(params: dict | None, arguments: list[str]) -> SearchSpace:
    """`params` (the sweeper's `params:` mapping) and the command line's overrides as one search space.

    A key given on the command line replaces the same key of `params`, sweep or fixed value alike.
    """
    parser = OverridesParser.create()
    by_key: dict[str, Override] = {}
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    for override in parser.parse_overrides(lines):
        by_key.pop(override.get_key_element(), None)  # a later one replaces it, in its own place
        by_key[override.get_key_element()] = override
    space = SearchSpace()
    for key, override in by_key.items():
        if override.is_sweep_override():
            if override.is_delete():
                raise SearchSpaceError(f"{override.input_line}: a deletion cannot be swept")
            space.distributions[key] = _distribution(override)
        else:
            space.fixed.append(override.input_line)
    return space


_PLAIN = re.compile(r"[A-Za-z_/][\w./:@+-]*")
_LITERALS = {"true", "false", "null", "nan", "inf", "-inf"}


def format_value(value) -> str:
    """A sampled value as the right-hand side of a Hydra override (floats round-trip exactly)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _LITERALS:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
