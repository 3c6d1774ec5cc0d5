"""The one command line: ``fetal-detect`` / ``python -m fetal_detect``.

Subcommands live in ``fetal_detect/commands/<name>.py``, each with ``register(subparsers)`` that
adds its parser and sets ``func(args) -> int``. They are discovered, so adding a command touches no
other file. User errors (:class:`FetalDetectError`) print one line and exit 2: never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from fetal_detect import __version__
from fetal_detect.errors import FetalDetectError

EPILOG = """examples:
  fetal-detect demo                                   phantoms (+ HC18 samples) -> overlays and a report
  fetal-detect train --task hc-seg --data hc18        train from scratch (see datasets.yaml)
  fetal-detect evaluate --task hc-seg --data DIR      metrics.json, per-image CSV, plots
  fetal-detect measure hc IMAGE --pixel-size 0.12     HC/BPD/OFD in mm as JSON
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fetal-detect", description="Find and measure fetal anatomy in 2-D ultrasound (YOLOv8).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fetal-detect {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import fetal_detect.commands as pkg

    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            importlib.import_module(f"fetal_detect.commands.{mod.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FetalDetectError as e:
        print(f"fetal-detect: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fetal-detect: interrupted", file=sys.stderr)
        return 130


def run_as(command: str) -> None:
    """Entry point of the thin top-level scripts (train.py, evaluate.py, export.py)."""
    sys.exit(main([command, *sys.argv[1:]]))
