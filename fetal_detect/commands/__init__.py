"""CLI subcommands, one module each; see :mod:`fetal_detect.cli`."""
import contextlib
import json
import os
import sys


@contextlib.contextmanager
def stdout_to_stderr():
    """Send everything written to stdout meanwhile (Python objects and file descriptor 1: Ultralytics' logger,
    the exporters, progress bars) to stderr, so that stdout carries the JSON result alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def print_json(obj) -> None:
    """Results go to stdout as JSON (logs and progress go to stderr)."""
    from fetal_detect.report import _json_default

    json.dump(obj, sys.stdout, indent=2, default=_json_default)
    sys.stdout.write("\n")
