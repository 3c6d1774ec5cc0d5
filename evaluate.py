#!/usr/bin/env python
"""Thin wrapper: `python evaluate.py ...` == `fetal-detect evaluate ...` (see --help)."""
from fetal_detect.cli import run_as

if __name__ == "__main__":
    run_as("evaluate")
