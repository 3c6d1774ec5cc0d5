"""Evaluation per task: metrics, plots and reports written under an output folder."""
