"""Suggest anchor scales and ratios from ground-truth boxes by maximising best-anchor coverage.

Ratios start from k-means of the boxes' log(width / height) and scales from box-size quantiles (and,
as a second start, from the current config); a coordinate ascent then changes one scale or one ratio
at a time to a candidate that improves coverage, until nothing improves. Coverage is ranked by the
share of boxes whose best anchor reaches IoU >= 0.5 plus the share reaching 0.7 (the RPN positive
threshold), so a box counts once for a usable anchor and once more for a positive one; ties go to
the higher mean best IoU. Scales stay strictly increasing from P2 to P6.
"""

from __future__ import annotations

import numpy as np

from bookseg.analysis.anchor_geometry import AnchorGrid, best_iou_one_shape

# Candidate anchor sides: quarter-octave steps from 4 to 2048 px (integers).
SCALE_CANDIDATES = tuple(sorted({round(2 ** (k / 4)) for k in range(8, 45)}))
# Candidate ratios (width / height): quarter-octave steps from 1/16 to 16, 3 significant digits.
RATIO_CANDIDATES = tuple(float(f"{2 ** (k / 4):.3g}") for k in range(-16, 17))
_MAX_ROUNDS = 20


def coverage_key(best_iou: np.ndarray) -> tuple[float, float]:
    """Ranking of a coverage vector: (share >= 0.5 + share >= 0.7, mean best IoU); larger is better."""
    if best_iou.size == 0:
        return (0.0, 0.0)
    return (float(np.mean(best_iou >= 0.5) + np.mean(best_iou >= 0.7)), float(best_iou.mean()))


def kmeans_log_ratios(ratios: np.ndarray, k: int, iterations: int = 100) -> list[float]:
    """k centres of 1-D k-means on log(ratios), started at quantiles; returned as sorted ratios.

    Deterministic. When the boxes have fewer than k distinct shapes, the missing ratios are the
    candidates closest to 1 (a coverage search then moves them).
    """
    values = np.log(np.asarray(ratios, np.float64))
    if values.size == 0:
        raise ValueError("kmeans_log_ratios: no boxes")
    centres = np.unique(np.quantile(values, (np.arange(k) + 0.5) / k))
    for _ in range(iterations):
        nearest = np.abs(values[:, None] - centres[None, :]).argmin(axis=1)
        updated = np.array(
            [values[nearest == i].mean() if np.any(nearest == i) else centres[i] for i in range(len(centres))]
        )
        if np.allclose(updated, centres):
            break
        centres = updated
    found = sorted({_round_ratio(np.exp(c)) for c in centres})
    # Identical boxes (or rounding) can merge centres: fill up with the candidates nearest ratio 1.
    for candidate in sorted(RATIO_CANDIDATES, key=lambda r: abs(np.log(r))):
        if len(found) >= k:
            break
        if candidate not in found:
            found.append(candidate)
    return sorted(found)


def _round_ratio(ratio: float) -> float:
    return float(f"{ratio:.3g}")


def _increasing(scales) -> list[int]:
    """Round to integers and push up where needed so every scale exceeds the previous one."""
    out: list[int] = []
    for s in scales:
        s = max(round(s), 1)
        out.append(s if not out or s > out[-1] else out[-1] + 1)
    return out


class _Search:
    """Coverage of anchor settings on fixed boxes (grouped by molded image shape)."""

    def __init__(self, boxes: np.ndarray, shape_index: np.ndarray, grids: list[AnchorGrid]):
        self.groups = [(np.flatnonzero(shape_index == i), grid) for i, grid in enumerate(grids)]
        self.boxes = boxes
        self.levels = len(grids[0].steps)

    def level_ratio_iou(self, level: int, scale: float, ratio: float) -> np.ndarray:
        """Best IoU of every box with the anchors of one level, one scale and one ratio."""
        out = np.zeros(len(self.boxes), np.float64)
        for rows, grid in self.groups:
            height, width = grid.anchor_size(scale, ratio)
            out[rows] = best_iou_one_shape(
                self.boxes[rows], height, width, grid.steps[level], grid.shapes[level]
            )
        return out

    def level_iou(self, level: int, scale: float, ratios) -> np.ndarray:
        return np.max([self.level_ratio_iou(level, scale, r) for r in ratios], axis=0)

    def best(self, scales, ratios) -> np.ndarray:
        return np.max([self.level_iou(level, s, ratios) for level, s in enumerate(scales)], axis=0)

    def ascend(self, scales: list[int], ratios: list[float]) -> tuple[list[int], list[float], tuple]:
        """Coordinate ascent from (scales, ratios); returns the local optimum and its coverage key."""
        scales, ratios = list(scales), list(ratios)
        per_level = [self.level_iou(level, s, ratios) for level, s in enumerate(scales)]
        key = coverage_key(np.max(per_level, axis=0))
        for _ in range(_MAX_ROUNDS):
            improved = False
            for level in range(self.levels):
                others = np.max(
                    [v for i, v in enumerate(per_level) if i != level] or [np.zeros(len(self.boxes))], axis=0
                )
                low = scales[level - 1] if level > 0 else 0
                high = scales[level + 1] if level + 1 < self.levels else np.inf
                for s in SCALE_CANDIDATES:
                    if not low < s < high or s == scales[level]:
                        continue
                    candidate = self.level_iou(level, s, ratios)
                    candidate_key = coverage_key(np.maximum(others, candidate))
                    if candidate_key > key:
                        key, scales[level], per_level[level], improved = candidate_key, s, candidate, True
            for slot in range(len(ratios)):
                rest = [r for i, r in enumerate(ratios) if i != slot]
                rest_iou = [
                    self.level_iou(level, s, rest) if rest else np.zeros(len(self.boxes))
                    for level, s in enumerate(scales)
                ]
                for r in RATIO_CANDIDATES:
                    if r in ratios:
                        continue
                    candidate = [
                        np.maximum(rest_iou[level], self.level_ratio_iou(level, s, r))
                        for level, s in enumerate(scales)
                    ]
                    candidate_key = coverage_key(np.max(candidate, axis=0))
                    if candidate_key > key:
                        key, ratios[slot], per_level, improved = candidate_key, r, candidate, True
            if not improved:
                break
        return scales, sorted(ratios), key


def suggest_anchors(
    boxes: np.ndarray,
    shape_index: np.ndarray,
    grids: list[AnchorGrid],
    n_ratios: int,
    current_scales=None,
    current_ratios=None,
) -> tuple[list[int], list[float]]:
    """Anchor scales (one per level) and `n_ratios` ratios that maximise coverage of `boxes`.

    Args:
        boxes: float [M, 4] (y1, x1, y2, x2) molded pixels, M > 0.
        shape_index: int [M], index into `grids` of each box's molded image shape.
        grids: anchor grid per molded image shape (only their steps and shapes are used).
        n_ratios: number of ratios to suggest (3 to 5 is usual).
        current_scales, current_ratios: the config being analysed; used as extra starting points,
            so the suggestion never covers worse than it (when it has `n_ratios` ratios).

    Returns:
        (scales, ratios): int scales strictly increasing P2 first; ratios as width / height, sorted.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        raise ValueError("suggest_anchors: no boxes to fit anchors to")
    search = _Search(boxes, np.asarray(shape_index), grids)
    heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ratios = kmeans_log_ratios(widths / heights, n_ratios)
    sizes = np.sqrt(heights * widths)
    starts = [(_increasing(np.quantile(sizes, (np.arange(search.levels) + 0.5) / search.levels)), ratios)]
    if current_scales is not None:
        starts.append((_increasing(current_scales), ratios))
        if current_ratios is not None and len(current_ratios) == n_ratios:
            starts.append((_increasing(current_scales), [float(r) for r in current_ratios]))
    best = None
    for start_scales, start_ratios in starts:
        result = search.ascend(start_scales, start_ratios)
        if best is None or result[2] > best[2]:
            best = result
    return best[0], best[1]
