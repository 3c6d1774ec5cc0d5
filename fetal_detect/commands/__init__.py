"""CLI subcommands, one module each; see :mod:`fetal_detect.cli`."""
import json
import sys


def print_json(obj) -> None:
    """Results go to stdout as JSON (logs and progress go to stderr)."""
    from fetal_detect.report import _json_default

    json.dump(obj, sys.stdout, indent=2, default=_json_default)
    sys.stdout.write("\n")
