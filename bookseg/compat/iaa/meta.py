"""imgaug's meta augmenters (`Sequential`, `Sometimes`, `OneOf`, `SomeOf`) as albumentations composes.

Probability semantics are imgaug's: a child keeps its own probability after being chosen (so
`OneOf([Fliplr(0.5), ...])` picks `Fliplr` with 1/n and then flips half of those times). albumentations'
`OneOf` would weight the choice by the children's `p` and then force them, so every child is wrapped in
a `Sequential(p=1)`: uniform weights, and the child's own `p` still applies inside.
"""

from __future__ import annotations

import albumentations as A

from bookseg.compat.iaa.base import (
    Augmenter,
    UnsupportedParameterError,
    as_transform,
    children_list,
    probability,
)


def _wrapped(children) -> list:
    """Each child as `Sequential([child], p=1)` (see the module docstring)."""
    return [A.Sequential([as_transform(child)], p=1.0) for child in children]


def _no_random_order(random_order, what: str) -> None:
    if random_order:
        raise UnsupportedParameterError(
            f"{what}(random_order=True) is not supported: albumentations applies children in list order"
        )


class Sequential(Augmenter):
    """Apply all children in order."""

    def __init__(self, children=None, random_order=False, **kwargs):
        super().__init__(**kwargs)
        _no_random_order(random_order, "Sequential")
        self.children = children_list(children)

    def to_albumentations(self):
        return A.Sequential([as_transform(child) for child in self.children], p=1.0)


class Sometimes(Augmenter):
    """With probability `p` apply `then_list` (in order), else `else_list` (if given)."""

    def __init__(self, p=0.5, then_list=None, else_list=None, **kwargs):
        super().__init__(**kwargs)
        self.p = probability(p, "Sometimes(p)")
        self.then_list, self.else_list = children_list(then_list), children_list(else_list)

    def to_albumentations(self):
        then = A.Sequential([as_transform(child) for child in self.then_list], p=self.p)
        if not self.else_list:
            return then
        otherwise = A.Sequential([as_transform(child) for child in self.else_list], p=1.0 - self.p)
        # OneOf chooses by the children's p (normalised): then with p, else with 1 - p.
        return A.OneOf([then, otherwise], p=1.0)


class OneOf(Augmenter):
    """Apply exactly one child, chosen uniformly."""

    def __init__(self, children, **kwargs):
        super().__init__(**kwargs)
        self.children = children_list(children)
        if not self.children:
            raise ValueError("OneOf needs at least one child")

    def to_albumentations(self):
        return A.OneOf(_wrapped(self.children), p=1.0)


class SomeOf(Augmenter):
    """Apply `n` children chosen uniformly without replacement, in list order.

    `n`: an int; a tuple (a, b) = a count drawn uniformly from a..b (b None = all children); None = all.
    """

    def __init__(self, n=None, children=None, random_order=False, **kwargs):
        super().__init__(**kwargs)
        _no_random_order(random_order, "SomeOf")
        self.children = children_list(children)
        self.counts = self._counts(n, len(self.children))

    @staticmethod
    def _counts(n, n_children: int) -> list[int]:
        if n is None:
            return [n_children]
        if isinstance(n, int) and not isinstance(n, bool):
            return [min(n, n_children)]
        if isinstance(n, tuple) and len(n) == 2:
            low, high = n[0], n_children if n[1] is None else min(n[1], n_children)
            if isinstance(low, int) and isinstance(high, int) and 0 <= low <= high:
                return list(range(low, high + 1))
        raise UnsupportedParameterError(
            f"SomeOf(n={n!r}): use an int, a (min, max) tuple of ints (max may be None) or None"
        )

    def to_albumentations(self):
        def some(count):
            # p=1 on every option: the outer OneOf then picks the count uniformly.
            return A.SomeOf(_wrapped(self.children), n=count, replace=False, p=1.0)

        if len(self.counts) == 1:
            return some(self.counts[0])
        return A.OneOf([some(count) for count in self.counts], p=1.0)
