"""`bookseg anchors DATA`: read a data set, match a model's anchors against its boxes, print the result.

The model and anchor settings come from the same Hydra config groups training uses
(`conf/model/<name>.yaml`, `conf/anchors/<name>.yaml`), through `bookseg.config.factory.mrcnn_config`, so the
analysis sees exactly the image size and anchors a run with `model=<name> anchors=<name>` trains with.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from bookseg.analysis.anchors import AnchorAnalysis, AnchorMatch, analyze_anchors
from bookseg.config.compose import CONF_DIR

PERCENTILES = (0, 5, 25, 50, 75, 95, 100)
NMS_CHECKS = (0.3, 0.5, 0.7)  # neighbour-overlap shares printed against detection NMS thresholds


def config_options(group: str) -> list[str]:
    """Option names of a config group (`conf/<group>/*.yaml`), e.g. ["cpu", "resnet101", ...]."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def preset_config(model: str = "cpu", anchors: str = "default", overrides=()):
    """The composed Hydra config of `model=<model> anchors=<anchors>` (plus `overrides`)."""
    from bookseg.config.compose import compose_config

    return compose_config([f"model={model}", f"anchors={anchors}", *overrides])


def model_config(
    model: str = "cpu", anchors: str = "default", scales=None, ratios=None, num_classes: int = 2
):
    """`MrcnnConfig` of a model and anchors preset, with `scales` / `ratios` replacing the preset's."""
    from bookseg.config.factory import mrcnn_config

    config = mrcnn_config(preset_config(model, anchors), num_classes)
    if scales is not None:
        config = config.replace(rpn_anchor_scales=tuple(float(s) for s in scales))
    if ratios is not None:
        config = config.replace(rpn_anchor_ratios=tuple(float(r) for r in ratios))
    config.validate()
    return config


def synthetic_path() -> Path:
    """The default config's synthetic shelves (generated into the cache on first use)."""
    from bookseg.data.synthetic import synthetic_dataset_path

    s = preset_config().data.synthetic
    cache = os.environ.get("BOOKSEG_CACHE") or str(Path.cwd() / ".cache" / "bookseg")
    return synthetic_dataset_path(Path(cache), s.n_images, s.seed, (s.height, s.width))


def _pct(values: np.ndarray, fmt: str) -> str:
    if values.size == 0:
        return "(no boxes)"
    return "".join(format(v, fmt).rjust(8) for v in np.percentile(values, PERCENTILES))


def _row(label: str, c) -> str:
    return (
        f"  {label:<16}{c.boxes:>7}{100 * c.iou50:>9.1f}%{100 * c.iou70:>9.1f}%"
        f"{c.mean_iou:>10.3f}{c.mean_positives:>11.2f}"
    )


def _coverage_table(match: AnchorMatch) -> list[str]:
    lines = [
        f"  {'boxes':<16}{'n':>7}{'IoU>=0.5':>10}{'IoU>=0.7':>10}{'mean IoU':>10}{'pos/box':>11}",
        _row("all", match.overall),
    ]
    lines += [_row(f"size {label}", c) for label, c in match.by_size]
    lines += [_row(f"h/w {label}", c) for label, c in match.by_aspect]
    return lines


def _fmt_list(values) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def format_analysis(analysis: AnchorAnalysis, config, title: str = "") -> str:
    """The text `bookseg anchors` prints."""
    a, m = analysis, analysis.current
    shapes = ", ".join(f"{h}x{w}" for h, w in a.boxes.shapes) or "-"
    lines = [
        f"Anchor analysis of {a.source}" + (f" ({title})" if title else ""),
        (
            f"  {a.num_images} images ({a.num_groups} fold groups), {len(a.boxes.boxes)} boxes; network input "
            f"{shapes} ({config.image_resize_mode}, image_min_dim {config.image_min_dim}, "
            f"image_max_dim {config.image_max_dim}); {', '.join(map(str, a.num_anchors))} anchors per image"
        ),
    ]
    if a.boxes.skipped:
        lines.append(
            "  left out: "
            + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(a.boxes.skipped.items()))
        )
    if a.boxes.images_over_max_gt:
        lines.append(
            f"  {a.boxes.images_over_max_gt} images have more than max_gt_instances="
            f"{config.max_gt_instances} boxes (training keeps a random subset)"
        )
    lines += [
        "",
        "Boxes in network-input pixels " + "".join(f"{p}%".rjust(8) for p in PERCENTILES),
        "  size sqrt(h*w)             " + _pct(a.size, ".1f"),
        "  aspect h/w                 " + _pct(a.aspect, ".2f"),
        "  (anchor ratios are w/h)    " + _pct(1 / a.aspect if a.aspect.size else a.aspect, ".2f"),
        "",
        (
            f"Anchors: scales {_fmt_list(m.scales)} (P2..P6), ratios w/h {_fmt_list(m.ratios)}, "
            f"stride {config.rpn_anchor_stride}"
        ),
        "Best-anchor IoU per ground-truth box, and RPN positive anchors per box (IoU >= 0.7 plus each box's best):",
        *_coverage_table(m),
    ]
    pos, per_image = m.positives, m.positives_per_image
    if pos.size:
        only_best = np.mean(m.best_iou < 0.7)
        lines.append(
            f"  positives per box: median {np.median(pos):g}, 95% {np.percentile(pos, 95):g}, max {pos.max()}; "
            f"{100 * only_best:.1f}% of boxes have no anchor at IoU >= 0.7 (only their best anchor is positive)"
        )
        lines.append(
            f"  positives per image: mean {per_image.mean():.1f}, max {per_image.max()}; "
            f"{int(np.sum(per_image > a.positive_cap))} images exceed the {a.positive_cap} positives training "
            "keeps (rpn_train_anchors_per_image / 2), which are then subsampled"
        )
    if a.neighbour_iou.size:
        threshold = config.detection_nms_threshold
        shares = ", ".join(f"> {t:g}: {100 * np.mean(a.neighbour_iou > t):.0f}%" for t in NMS_CHECKS)
        lines += [
            "",
            f"Boxes overlapping a neighbour's box in their image (IoU {shares})",
            (
                f"  detection NMS keeps the better of two detections overlapping more than "
                f"model.detection_nms_threshold={threshold:g}: {100 * np.mean(a.neighbour_iou > threshold):.0f}% of "
                "these books can lose theirs to a neighbour's"
            ),
        ]
    s = a.suggested
    if s is not None:
        lines += [
            "",
            (
                "Suggested anchors (coordinate ascent over quarter-octave candidates, maximising the share of "
                "boxes at IoU >= 0.5 plus the share at >= 0.7):"
            ),
            f"  scales {_fmt_list(s.scales)}  ratios w/h {_fmt_list(s.ratios)}",
            *_coverage_table(s),
            f"  positives per image: mean {s.positives_per_image.mean():.1f}, max {s.positives_per_image.max()}",
            "  use: python -m bookseg.run 'anchors.scales="
            + _fmt_list(s.scales)
            + "' 'anchors.ratios="
            + _fmt_list(s.ratios)
            + "'",
            "",
            "Suggestions by number of ratios (more ratios: more anchors per position, better coverage):",
            f"  {'ratios':>6}  {'IoU>=0.5':>9}{'IoU>=0.7':>10}{'mean IoU':>10}{'pos/box':>9}  scales / ratios w/h",
        ]
        for alt in a.alternatives:
            c = alt.overall
            lines.append(
                f"  {len(alt.ratios):>6}  {100 * c.iou50:>8.1f}%{100 * c.iou70:>9.1f}%{c.mean_iou:>10.3f}"
                f"{c.mean_positives:>9.2f}  {_fmt_list(alt.scales)} / {_fmt_list(alt.ratios)}"
            )
    return "\n".join(lines)


def run_anchors(
    data: str,
    *,
    model: str = "cpu",
    anchors: str = "default",
    scales=None,
    ratios=None,
    format: str = "auto",
    images_dir: str | None = None,
    class_attribute: str | None = None,
    group_regex: str | None = None,
    suggest: bool = True,
    n_ratios: int | None = None,
    out: TextIO | None = None,
) -> AnchorAnalysis:
    """Load `data` ("synthetic" or an annotation path), analyse it and print the report to `out`.

    The arguments mirror `bookseg anchors` (see `bookseg anchors --help`); `out` defaults to stdout.
    """
    out = sys.stdout if out is None else out
    from bookseg.data.folds import assign_groups
    from bookseg.data.readers import load_dataset

    # Anchors do not depend on the classes: build (and validate) the config before reading any data.
    config = model_config(model, anchors, scales, ratios)
    path = synthetic_path() if data == "synthetic" else Path(data).expanduser()
    dataset = load_dataset(path, format=format, images_dir=images_dir, class_attribute=class_attribute)
    if dataset.report and (dataset.report.warnings or dataset.report.notes):
        print(dataset.report.summary(), file=out)
    assign_groups(dataset.records, regex=group_regex)
    source = f"synthetic shelves ({path})" if data == "synthetic" else str(path)
    analysis = analyze_anchors(dataset.records, config, source=source, suggest=suggest, n_ratios=n_ratios)
    custom = " with custom scales/ratios" if scales is not None or ratios is not None else ""
    print(format_analysis(analysis, config, title=f"model={model} anchors={anchors}{custom}"), file=out)
    return analysis
