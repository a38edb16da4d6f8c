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


def build_parser() -> argparse.ArgumentParser:
    """The `bookseg` argument parser with every command group."""
    parser = argparse.ArgumentParser(
        prog="bookseg", description="Mask R-CNN that outlines every book in a photo."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `bookseg` command line; returns the exit code (also used by `python -m bookseg`)."""
    args = build_parser().parse_args(argv)
    return args.handler(args)
