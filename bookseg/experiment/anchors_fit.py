"""`anchors.auto`: anchor scales and ratios fitted to one fold's training boxes before it trains.

The fit is the suggestion of `bookseg anchors` (`bookseg.analysis.anchor_suggest.suggest_anchors`, a
deterministic coordinate ascent on best-anchor coverage), run on the boxes of the fold's training images
as the network sees them (`bookseg.analysis.anchors.model_boxes`: resized and padded to the model's input;
boxes y1, x1, y2, x2 in those pixels), started from the config's listed scales and ratios. Validation images
never reach it, so a fold's validation score is not helped by its anchors.

A fold stores its fit in `<fold_dir>/anchors.json` before training; a resumed fold reads it back, so its
checkpoints always run with the anchors they were trained with.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow

from bookseg.analysis.anchor_geometry import AnchorGrid
from bookseg.analysis.anchor_suggest import RATIO_CANDIDATES, suggest_anchors
from bookseg.analysis.anchors import match_anchors, model_boxes
from bookseg.data.records import ImageRecord
from bookseg.mrcnn.config import MrcnnConfig

FIT_FILE = "anchors.json"


@dataclass(frozen=True)
class AnchorFit:
    """Anchors fitted to a set of boxes, and how well the listed and the fitted anchors cover them.

    Attributes:
        scales: anchor side (sqrt of area) in px per pyramid level P2..P6, integers, strictly increasing.
        ratios: width / height, sorted; as many as asked for.
        boxes: number of ground-truth boxes fitted to (boxes that vanish at the input size are left out).
        iou50_listed, iou70_listed: share of those boxes whose best listed (config) anchor reaches IoU 0.5 / 0.7.
        iou50_fitted, iou70_fitted: the same for the fitted anchors.
    """

    scales: tuple[int, ...]
    ratios: tuple[float, ...]
    boxes: int
    iou50_listed: float
    iou70_listed: float
    iou50_fitted: float
    iou70_fitted: float

    def describe(self) -> str:
        """One line: the fitted anchors and the coverage change."""
        return (
            f"anchors fitted to {self.boxes} training boxes: scales {list(self.scales)}, ratios w/h "
            f"{list(self.ratios)}; boxes with an anchor at IoU >= 0.5 / 0.7: "
            f"{100 * self.iou50_listed:.1f}% / {100 * self.iou70_listed:.1f}% listed -> "
            f"{100 * self.iou50_fitted:.1f}% / {100 * self.iou70_fitted:.1f}% fitted"
        )


def ratio_count(anchors_cfg) -> int:
    """Ratios to fit for a config's `anchors` section: `auto_ratios`, else as many as `ratios` lists."""
    return int(anchors_cfg.auto_ratios or len(anchors_cfg.ratios))


def fit_anchors(records: list[ImageRecord], config: MrcnnConfig, n_ratios: int) -> AnchorFit:
    """Fit anchor scales and `n_ratios` ratios to the boxes of `records` at `config`'s input size.

    Args:
        records: the images to fit to (a fold's training images only).
        config: model config giving the input size, pyramid strides, anchor stride and the listed anchors
            (the starting point of the fit and the "listed" coverage).
        n_ratios: ratios to fit; the same for every fold, since it sets the RPN head's output width.

    Raises:
        ValueError: no box survives the resize, or more ratios than there are candidates.
    """
    if not 1 <= n_ratios <= len(RATIO_CANDIDATES):
        raise ValueError(f"anchors.auto_ratios={n_ratios}: fit between 1 and {len(RATIO_CANDIDATES)} ratios")
    boxes = model_boxes(records, config)
    if len(boxes.boxes) == 0:
        raise ValueError("anchors.auto: the training images have no boxes to fit anchors to")
    grids = [AnchorGrid.for_config(config, shape) for shape in boxes.shapes]
    scales, ratios = suggest_anchors(
        boxes.boxes, boxes.shape_index, grids, n_ratios, config.rpn_anchor_scales, config.rpn_anchor_ratios
    )
    listed = match_anchors(boxes, config).overall
    fitted = match_anchors(boxes, config, scales, ratios).overall
    return AnchorFit(
        scales=tuple(int(s) for s in scales),
        ratios=tuple(float(r) for r in ratios),
        boxes=len(boxes.boxes),
        iou50_listed=listed.iou50,
        iou70_listed=listed.iou70,
        iou50_fitted=fitted.iou50,
        iou70_fitted=fitted.iou70,
    )


def save_fit(fit: AnchorFit, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(fit), indent=2))


def load_fit(path: Path) -> AnchorFit:
    data = json.loads(path.read_text())
    return AnchorFit(**{**data, "scales": tuple(data["scales"]), "ratios": tuple(data["ratios"])})


def with_fitted_anchors(config: MrcnnConfig, fit: AnchorFit) -> MrcnnConfig:
    """`config` with the fitted scales and ratios in place of the listed ones."""
    return config.replace(
        rpn_anchor_scales=tuple(float(s) for s in fit.scales),
        rpn_anchor_ratios=tuple(float(r) for r in fit.ratios),
    )


def log_fit(fit: AnchorFit) -> None:
    """Log the fit on the active (fold) run: anchors as JSON params, coverage as metrics.

    Safe to call again on a resumed run: the params repeat their values and the metrics are only
    logged once.
    """
    mlflow.log_params(
        {
            "anchors/fitted_scales": json.dumps(list(fit.scales)),
            "anchors/fitted_ratios": json.dumps(list(fit.ratios)),
            "anchors/fit_boxes": fit.boxes,
        }
    )
    metrics = {
        f"anchors/{name}": getattr(fit, name)
        for name in ("iou50_listed", "iou70_listed", "iou50_fitted", "iou70_fitted")
    }
    logged = mlflow.get_run(mlflow.active_run().info.run_id).data.metrics
    if not set(metrics) <= set(logged):
        mlflow.log_metrics(metrics)


def fold_anchor_config(
    config: MrcnnConfig, train: list[ImageRecord], n_ratios: int, fold_dir: Path, name: str
) -> MrcnnConfig:
    """The fold's model config with anchors fitted to its training records; logged, printed, stored.

    The first start of a fold fits and writes `<fold_dir>/anchors.json`; a resumed fold reads it.
    """
    path = Path(fold_dir) / FIT_FILE
    if path.exists():
        fit, how = load_fit(path), f"read from {path}"
    else:
        start = time.perf_counter()
        fit = fit_anchors(train, config, n_ratios)
        how = f"{time.perf_counter() - start:.1f} s"
        save_fit(fit, path)
    log_fit(fit)
    print(f"{name}: {fit.describe()} ({how})", flush=True)
    return with_fitted_anchors(config, fit)
