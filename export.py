#!/usr/bin/env python
"""Thin wrapper: `python export.py ...` == `fetal-detect export ...` (see --help)."""
from fetal_detect.cli import run_as

if __name__ == "__main__":
    run_as("export")
