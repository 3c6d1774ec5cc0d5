"""The measuring pipeline: image -> model -> measurement -> JSON-ready dict.

One module per measurement (``hc``: :class:`HCMeasurer`, ``nt``, ...) and ``analyze``, which
classifies the plane and routes to them. Shared by the CLI, evaluation, the service and batch runs,
so each number is computed one way only. Back-end agnostic: measurers see ``runtime.Prediction``.
"""
import numpy as np


def public(result: dict) -> dict:
    """Drop arrays (masks) from a result so it can be printed as JSON."""
    return {k: v for k, v in result.items() if not isinstance(v, np.ndarray)}
