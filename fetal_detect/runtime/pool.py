"""Models shared by the measurers of one :class:`~fetal_detect.pipeline.analyze.Analyzer`.

Several measurers may need the same model (``cns`` and ``tv`` both read ``cns-seg``). A :class:`PredictorPool`
makes that one loaded predictor and one model pass per image:

- inside ``with pool.sharing():`` every :func:`~fetal_detect.runtime.load_predictor` call (the measurers'
  constructors make them) returns the pool's predictor for that (task, weights file, back-end, score
  threshold), built on first use; a predictor with other settings is a different model here.
- inside ``with pool.one_image():`` (one ``analyze`` call) a pooled predictor's ``predict(image)`` runs the
  model once per input array and hands the same :class:`~fetal_detect.runtime.base.Prediction` to every
  later caller (measurers only read predictions). The outputs are dropped when the block ends.

Outside those blocks nothing is shared or remembered: a measurer built on its own loads its own models.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

_SHARING: ContextVar["PredictorPool | None"] = ContextVar("fetal_detect_predictor_pool", default=None)


def sharing_pool() -> "PredictorPool | None":
    """The pool whose ``sharing()`` block is open here (``load_predictor`` asks it), or None."""
    return _SHARING.get()


class PredictorPool:
    """One predictor per model, one output per model and image (see the module doc)."""

    def __init__(self):
        self._predictors: dict[tuple, object] = {}
        self._lock = threading.RLock()
        self._local = threading.local()  # this thread's outputs of the image being analysed (or None)

    @contextmanager
    def sharing(self) -> Iterator["PredictorPool"]:
        """Predictors loaded inside the block come from (and go into) this pool."""
        token = _SHARING.set(self)
        try:
            yield self
        finally:
            _SHARING.reset(token)

    def get(self, key: tuple, build: Callable[[], object]):
        """The predictor for ``key`` (task, weights file, back-end, score threshold), built once."""
        with self._lock:
            if key not in self._predictors:
                p = build()  # raises (a missing or broken model): nothing is kept, the next caller tries again
                p.pool = self
                self._predictors[key] = p
            return self._predictors[key]

    @contextmanager
    def one_image(self) -> Iterator[None]:
        """Model outputs are remembered per input array until the block ends (one ``analyze`` call)."""
        outer = getattr(self._local, "outputs", None)
        self._local.outputs = {}
        try:
            yield
        finally:
            self._local.outputs = outer

    def predict(self, predictor, image):
        """``predictor``'s prediction for ``image``: from this image's outputs when it already ran on it."""
        outputs = getattr(self._local, "outputs", None)
        if outputs is None:
            return predictor.predict_batch([image])[0]
        key = (id(predictor), id(image))  # both kept alive below, so neither id is reused within the block
        if key not in outputs:
            outputs[key] = (predictor, image, predictor.predict_batch([image])[0])
        return outputs[key][2]
