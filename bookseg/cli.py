"""The `bookseg` command: a dispatcher over subcommands (`bookseg data check PATH`, `bookseg predict`,
`bookseg export`, `bookseg anchors`, `bookseg report`).

All argparse wiring of the package lives here: each command group is added by one
`_add_<group>_commands(subparsers)` function that registers its subparsers with
`set_defaults(handler=...)`; a handler turns the parsed arguments into plain Python arguments of a
library function, prints its result and returns the exit code. Handlers import their modules lazily,
so `bookseg --help` and light commands do not import TensorFlow.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bookseg.mrcnn.config import PRECISIONS
from bookseg.tracking import FINAL


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


def _fold_argument(text: str) -> int | str:
    if text == FINAL:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a fold number or 'final'") from None


def _add_model_source_arguments(parser: argparse.ArgumentParser) -> None:
    """--run / --weights (one required), --config, --fold, --tracking-uri, --class-names, --precision."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--run",
        metavar="RUN_ID",
        help="MLflow run id: an experiment job (parent run) or one of its fold runs",
    )
    source.add_argument("--weights", metavar="FILE", help="weights file (.weights.h5 as the runner logs it)")
    parser.add_argument(
        "--config",
        metavar="CONFIG_YAML",
        help="with --weights: the config.yaml the run logged (default: the cpu model)",
    )
    parser.add_argument(
        "--fold",
        type=_fold_argument,
        metavar="K",
        help="with a parent --run: fold whose weights to use, or 'final' (default: the final model when the "
        "job trained one with cv.final=true, else the best fold by mask_ap50)",
    )
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    parser.add_argument(
        "--class-names", metavar="A,B", help="comma-separated class names (default: from the run / config)"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="compute precision (default: the run's model.precision); mixed_bfloat16 is about 1.7x faster "
        "on CPUs with AVX512_BF16 or AMX, see docs/performance.md",
    )


def _load_trained(args: argparse.Namespace):
    """`TrainedModel` from the --run / --weights / --config / --fold / --class-names / --precision arguments."""
    from bookseg.inference.trained_model import load_from_run, load_from_weights

    class_names = [n.strip() for n in args.class_names.split(",") if n.strip()] if args.class_names else None
    if args.run:
        if args.config:
            raise ValueError("--config goes with --weights; a run brings its own config")
        return load_from_run(
            args.run,
            fold=args.fold,
            tracking_uri=args.tracking_uri,
            class_names=class_names,
            precision=args.precision,
        )
    if args.fold is not None:
        raise ValueError("--fold goes with --run")
    return load_from_weights(
        args.weights, config_path=args.config, class_names=class_names, precision=args.precision
    )


def _with_trained_model(args: argparse.Namespace, command: str, work) -> int:
    """Shared body of the model-using handlers: load the model named by the model-source arguments, print
    which it is, run `work(trained)` and print the text it returns. A bad model source, existing outputs,
    a missing file or a bad value print `bookseg <command>: error: ...` and give exit code 2."""
    from bookseg.inference.trained_model import ModelSourceError

    try:
        trained = _load_trained(args)
        print(f"model: {trained.source}; classes {trained.class_names}", flush=True)
        message = work(trained)
    except (ModelSourceError, FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"bookseg {command}: error: {error}", file=sys.stderr)
        return 2
    print(message)
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    from bookseg.inference.predict import predict_paths

    def predict(trained) -> str:
        return predict_paths(
            trained.model,
            trained.class_names,
            args.paths,
            args.out,
            min_confidence=args.min_confidence,
            max_instances=args.max_instances,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        ).text()

    return _with_trained_model(args, "predict", predict)


def _run_export(args: argparse.Namespace) -> int:
    from bookseg.inference.export import METADATA_FILE, export_saved_model

    def export(trained) -> str:
        out = export_saved_model(
            trained.model,
            args.out,
            class_names=trained.class_names,
            min_confidence=args.min_confidence,
            max_instances=args.max_instances,
            source=trained.source,
            cfg=trained.cfg,
            overwrite=args.overwrite,
        )
        return f"SavedModel written to {out} (signature serving_default; see {out / METADATA_FILE})"

    return _with_trained_model(args, "export", export)


def _add_predict_commands(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict",
        help="outline the books in photos with a trained model (overlays, COCO JSON, counts CSV, VIA project)",
        description="Run a trained model (an MLflow run, or a weights file and its config.yaml) on image "
        "files and folders; write overlays/, predictions_coco.json + images.json, counts.csv and "
        "via_project.json into --out.",
    )
    predict.add_argument(
        "paths", nargs="+", metavar="PATH", help="image files and folders (searched recursively)"
    )
    _add_model_source_arguments(predict)
    predict.add_argument("--out", required=True, metavar="DIR", help="output folder")
    predict.add_argument(
        "--min-confidence", type=float, default=0.5, metavar="P", help="minimum detection score (default 0.5)"
    )
    predict.add_argument(
        "--max-instances",
        type=int,
        metavar="N",
        help="maximum books per image (default: the model's detection_max_instances)",
    )
    predict.add_argument(
        "--batch-size", type=int, metavar="N", help="images per detect call (default: model's)"
    )
    predict.add_argument("--overwrite", action="store_true", help="replace existing output files")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    predict.set_defaults(handler=_run_predict)

    export = commands.add_parser(
        "export",
        help="export a trained model as a TensorFlow SavedModel (one image in; boxes, scores, masks out)",
        description="Write a SavedModel whose serving_default signature takes a uint8 [H, W, 3] image and "
        "returns boxes, class_ids, scores, full-size masks and num_detections.",
    )
    _add_model_source_arguments(export)
    export.add_argument("--out", required=True, metavar="DIR", help="SavedModel folder")
    export.add_argument(
        "--min-confidence",
        type=float,
        default=0.5,
        metavar="P",
        help="minimum detection score baked into the model (default 0.5)",
    )
    export.add_argument(
        "--max-instances",
        type=int,
        metavar="N",
        help="maximum detections (default: the model's detection_max_instances)",
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace an existing, non-empty --out folder"
    )
    export.set_defaults(handler=_run_export)


def _run_anchors(args: argparse.Namespace) -> int:
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
    from bookseg.analysis.report import build_report

    try:
        report = build_report(
            experiment=args.experiment,
            runs=args.runs,
            tracking_uri=args.tracking_uri,
            out=args.out,
            overwrite=args.overwrite,
        )
    except ValueError as error:
        print(f"bookseg report: error: {error}", file=sys.stderr)
        return 2
    print(report.markdown)
    if report.note:
        print(f"note: {report.note}")
    print(
        f"report written to {report.folder / 'report.md'} (plots: {', '.join(p.name for p in report.plots)})"
    )
    return 0


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
