"""The `bookseg` command: a dispatcher over subcommands (`bookseg data check PATH`, ...).

Each command group is added by one `_add_<group>_commands(subparsers)` function that registers
its subparsers with `set_defaults(handler=...)`; a handler takes the parsed arguments and returns
the exit code. Handlers import their modules lazily, so `bookseg --help` and light commands do not
import TensorFlow.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def _run_data_check(args: argparse.Namespace) -> int:
    from bookseg.data.check import run_check

    return run_check(
        args.path,
        format=args.format,
        class_attribute=args.class_attribute,
        images_dir=args.images_dir,
        default_class=args.default_class,
    )


def _add_data_commands(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="inspect annotated data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    check = data_commands.add_parser(
        "check",
        help="read a data set, print statistics and every problem (exit 1 on errors)",
        description="Read VIA 1/2/3, COCO or LabelMe annotations, validate them and print statistics "
        "(instances per image, classes, box sizes and aspect ratios) and every problem found.",
    )
    check.add_argument("path", help="annotation JSON file, or a folder holding it (or LabelMe files)")
    check.add_argument("--class-attribute", metavar="NAME", help="region attribute holding the class")
    check.add_argument("--images-dir", metavar="DIR", help="folder image file names are relative to")
    check.add_argument(
        "--format", default="auto", help="auto (default), via, via1, via2, via2_project, via3, coco, labelme"
    )
    check.add_argument(
        "--default-class", default="book", help="class of every region without --class-attribute"
    )
    check.set_defaults(handler=_run_data_check)


def _run_predict(args: argparse.Namespace) -> int:
    from bookseg.predict import run_predict_command

    return run_predict_command(args)


def _run_export(args: argparse.Namespace) -> int:
    from bookseg.export import run_export_command

    return run_export_command(args)


def _add_predict_commands(commands: argparse._SubParsersAction) -> None:
    from bookseg.predict import add_export_arguments, add_predict_arguments

    predict = commands.add_parser(
        "predict",
        help="outline the books in photos with a trained model (overlays, COCO JSON, counts CSV, VIA project)",
        description="Run a trained model (an MLflow run, or a weights file and its config.yaml) on image "
        "files and folders; write overlays/, predictions_coco.json + images.json, counts.csv and "
        "via_project.json into --out.",
    )
    add_predict_arguments(predict)
    predict.set_defaults(handler=_run_predict)
    export = commands.add_parser(
        "export",
        help="export a trained model as a TensorFlow SavedModel (one image in; boxes, scores, masks out)",
        description="Write a SavedModel whose serving_default signature takes a uint8 [H, W, 3] image and "
        "returns boxes, class_ids, scores, full-size masks and num_detections.",
    )
    add_export_arguments(export)
    export.set_defaults(handler=_run_export)


def _run_anchors(args: argparse.Namespace) -> int:
    import sys

    from bookseg.analysis.anchor_command import run_anchors

    try:
        run_anchors(
            args.data,
            model=args.model,
            anchors=args.anchors,
            scales=args.scales,
            ratios=args.ratios,
            format=args.format,
            images_dir=args.images_dir,
            class_attribute=args.class_attribute,
            group_regex=args.group_regex,
            suggest=not args.no_suggest,
            n_ratios=args.n_ratios,
        )
    except (ValueError, OSError) as error:  # bad data (DatasetError), bad anchors, missing file
        print(f"bookseg anchors: error: {error}", file=sys.stderr)
        return 2
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from bookseg.analysis.report import run_report_command

    return run_report_command(args)


def _config_names(group: str) -> list[str]:
    from pathlib import Path

    return sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / group).glob("*.yaml"))


def _add_analysis_commands(commands: argparse._SubParsersAction) -> None:
    anchors = commands.add_parser(
        "anchors",
        help="how well a model's anchors fit a data set's boxes, and a suggested anchor config",
        description="Resize every ground-truth box to the model's input as training does and print box "
        "size / aspect statistics, the share of boxes whose best anchor reaches IoU >= 0.5 and >= 0.7 "
        "(overall and per size / aspect bucket), RPN positive anchors per box and per image, and "
        "suggested anchor scales and ratios with the coverage they reach.",
    )
    anchors.add_argument("data", help="annotation file or folder (as `bookseg data check`), or 'synthetic'")
    anchors.add_argument(
        "--model",
        default="cpu",
        choices=_config_names("model"),
        help="model preset (conf/model/), which sets the input size (default: cpu)",
    )
    anchors.add_argument(
        "--anchors",
        default="default",
        choices=_config_names("anchors"),
        help="anchors preset (conf/anchors/) (default: default)",
    )
    anchors.add_argument(
        "--scales",
        type=float,
        nargs="+",
        metavar="PX",
        help="anchor sides per pyramid level P2..P6, replacing the preset's",
    )
    anchors.add_argument(
        "--ratios",
        type=float,
        nargs="+",
        metavar="W/H",
        help="anchor width / height ratios, replacing the preset's",
    )
    anchors.add_argument("--format", default="auto", help="annotation format (auto, via, coco, ...)")
    anchors.add_argument("--images-dir", metavar="DIR", help="folder image file names are relative to")
    anchors.add_argument("--class-attribute", metavar="NAME", help="region attribute holding the class")
    anchors.add_argument(
        "--group-regex",
        metavar="REGEX",
        help="file-name regex whose first group names the source photo (counts fold groups)",
    )
    anchors.add_argument("--n-ratios", type=int, metavar="K", help="ratios in the suggestion (default 3..5)")
    anchors.add_argument("--no-suggest", action="store_true", help="skip the suggested config search")
    anchors.set_defaults(handler=_run_anchors)

    report = commands.add_parser(
        "report",
        help="markdown table and plots comparing the runs of an MLflow experiment",
        description="Read the parent runs of an MLflow experiment (or the given runs) and write report.md "
        "(config differences, mean ± std across folds of each metric, best run) and plots (metric per "
        "run with each fold, loss curves averaged over folds).",
    )
    which = report.add_mutually_exclusive_group()
    which.add_argument("--experiment", metavar="NAME", help="MLflow experiment (default: bookseg/default)")
    which.add_argument("--runs", nargs="+", metavar="RUN_ID", help="parent run ids to compare")
    report.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    report.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (default: experiments/<experiment name without 'bookseg/'>)",
    )
    report.add_argument("--overwrite", action="store_true", help="replace an existing report in --out")
    report.set_defaults(handler=_run_report)


def build_parser() -> argparse.ArgumentParser:
    """The `bookseg` argument parser with every command group."""
    parser = argparse.ArgumentParser(
        prog="bookseg", description="Mask R-CNN that outlines every book in a photo."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_commands(commands)
    _add_analysis_commands(commands)
    _add_predict_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `bookseg` command line; returns the exit code (also used by `python -m bookseg`)."""
    args = build_parser().parse_args(argv)
    return args.handler(args)
