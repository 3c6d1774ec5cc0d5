#!/usr/bin/env python
"""Thin wrapper: `python train.py ...` == `fetal-detect train ...` (see --help)."""
from fetal_detect.cli import run_as

if __name__ == "__main__":
    run_as("train")
