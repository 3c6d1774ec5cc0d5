"""One predictor interface over the model back-ends (``runtime/``).

``load_predictor(task, weights)`` returns a :class:`~fetal_detect.runtime.base.Predictor` with
``predict(image) -> Prediction``; the measuring pipeline, evaluation, the service and the batch runner
only ever see :class:`Prediction`. Back-ends, one module each, all subclasses of ``Predictor``:
``.pt`` -> :mod:`.torch_predictor` (Ultralytics/torch, imported lazily); ``.onnx`` ->
:mod:`.onnx_predictor` (onnxruntime, torch-free); ``.xml`` -> :mod:`.openvino_predictor` (OpenVINO IR). A new back-end is one module and one line in
:data:`BACKENDS`.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from fetal_detect.errors import FetalDetectError
from fetal_detect.runtime.base import Instance, Prediction, Predictor, read_sidecar, to_bgr
from fetal_detect.runtime.pool import PredictorPool, sharing_pool
from fetal_detect.settings import WEIGHTS_DIR
from fetal_detect.tasks import Task, get_task

__all__ = ["Instance", "Prediction", "Predictor", "read_sidecar", "to_bgr", "load_predictor", "optional_predictor",
           "resolve_weights", "predictor_class", "BACKENDS", "BACKEND_CHOICES", "default_weights", "verified_export",
           "weights_sha256", "PredictorPool", "TorchPredictor", "OnnxPredictor", "OpenVinoPredictor"]


def _torch():
    from fetal_detect.runtime.torch_predictor import TorchPredictor

    return TorchPredictor


def _onnx():
    from fetal_detect.runtime.onnx_predictor import OnnxPredictor

    return OnnxPredictor


def _openvino():
    from fetal_detect.runtime.openvino_predictor import OpenVinoPredictor

    return OpenVinoPredictor


BACKEND_CHOICES = ("auto", "torch", "onnx")  # --backend of analyze/batch/serve; auto = the fastest verified model
# weights suffix -> the Predictor subclass (imported only when used: a torch-free install never imports torch)
BACKENDS = {".pt": _torch, ".onnx": _onnx, ".xml": _openvino}  # ".xml": an OpenVINO IR (or its *_openvino_model folder)


def predictor_class(weights: Path) -> type[Predictor]:
    """The back-end class for a weights file, by its suffix; a one-line error for an unknown format."""
    suffix = ".xml" if Path(weights).is_dir() else Path(weights).suffix
    loader = BACKENDS.get(suffix)
    if loader is None:
        raise FetalDetectError(f"{weights}: unsupported model format '{suffix}' (use .pt, .onnx or an OpenVINO .xml)")
    return loader()


def __getattr__(name: str):  # ``from fetal_detect.runtime import TorchPredictor`` without importing torch eagerly
    if name == "TorchPredictor":
        return _torch()
    if name == "OnnxPredictor":
        return _onnx()
    if name == "OpenVinoPredictor":
        return _openvino()
    raise AttributeError(name)


def resolve_weights(task: Task, weights: str | Path | None) -> Path:
    """``weights`` if given, else the shipped ``weights/<task>.pt`` (or ``.onnx``, first when torch is not
    installed); a clear error if absent."""
    if weights:
        p = Path(weights)
        if not p.exists():
            raise FetalDetectError(f"{p}: weights file not found")
        return p
    cands = (task.weights, task.weights.with_suffix(".onnx"))
    if importlib.util.find_spec("torch") is None:  # a torch-free deployment runs the ONNX export
        cands = cands[::-1]
    for cand in cands:
        if cand.exists():
            return cand
    raise FetalDetectError(f"no shipped model for {task.name} ({task.weights} is missing); "
                           f"train one with `python train.py --task {task.name}` or pass --weights")


def optional_predictor(task: str, weights: str | Path | None = None, conf: float = 0.25):
    """``load_predictor`` for a model a pipeline can do without: None when no weights were named and
    none are shipped (``resolve_weights``: ``.pt`` or ``.onnx``) or the shipped ones do not load; named
    weights that fail still raise."""
    try:
        return load_predictor(task, weights, conf=conf)
    except FetalDetectError:
        if weights:
            raise
        return None


def load_predictor(task: str | Task, weights: str | Path | None = None, conf: float = 0.25) -> Predictor:
    """A predictor for ``task``: the back-end is chosen by the weights' suffix (:data:`BACKENDS`). Inside a
    :class:`~fetal_detect.runtime.pool.PredictorPool`'s ``sharing()`` block: that pool's one predictor for
    these weights, back-end and ``conf``."""
    t = get_task(task) if isinstance(task, str) else task
    w = resolve_weights(t, weights)
    cls = predictor_class(w)
    pool = sharing_pool()
    if pool is None:
        return cls(t, w, conf=conf)
    return pool.get((t.name, str(w.resolve()), cls.backend, conf), lambda: cls(t, w, conf=conf))


def verified_export(task: Task) -> Path | None:
    """A parity-checked INT8 ONNX of the shipped ``.pt``: ``weights/<task>-int8.onnx`` or the export cache
    ``runs/export/<task>/<task>-int8.onnx``, whose sidecar says the parity check passed and whose
    ``source_sha256`` is the shipped checkpoint's (a stale export of other weights is never used)."""
    from fetal_detect import settings

    src_sha = weights_sha256(task.weights)
    for cand in (WEIGHTS_DIR / f"{task.name}-int8.onnx", settings.RUNS_DIR / "export" / task.name / f"{task.name}-int8.onnx"):
        meta = read_sidecar(cand) if cand.exists() else {}
        passed = (meta.get("metrics") or {}).get("passed") is True
        if passed and (src_sha is None or meta.get("source_sha256") == src_sha):
            return cand
    return None


def weights_sha256(path: str | Path) -> str | None:
    """Hex SHA-256 of a weights file (None when it is missing or unreadable), hashed once per version of the
    file: cached by (path, size, mtime_ns), so loading a model does not re-read a checkpoint every time."""
    p = Path(path)
    try:
        st = p.stat()
        return _file_sha256(str(p.resolve()), st.st_size, st.st_mtime_ns)
    except OSError:
        return None


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    from fetal_detect.io import regular_file_sha256

    sha = regular_file_sha256(path)
    if sha is None:  # raised, so a file that cannot be read now is not remembered as unreadable
        raise OSError(f"{path}: cannot be read")
    return sha


def default_weights(task: str | Task, backend: str = "auto") -> Path | None:
    """The file to load for ``task`` when none was named, by back-end policy (``--backend``):

    ``auto`` (default): a verified INT8 ONNX when there is one (:func:`verified_export`), else the shipped
    model (None: :func:`resolve_weights` decides); ``torch``: the shipped ``.pt``; ``onnx``: a verified
    export or the shipped ``.onnx``. The choice shows in every result's ``models``.
    """
    t = get_task(task) if isinstance(task, str) else task
    if backend not in BACKEND_CHOICES:
        raise FetalDetectError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got '{backend}'")
    if backend == "torch":
        return t.weights
    fast = verified_export(t)
    if fast is not None:
        return fast
    if backend == "onnx":
        onnx = t.weights.with_suffix(".onnx")
        if not onnx.exists():
            raise FetalDetectError(f"--backend onnx: no verified ONNX model for {t.name}; run "
                                   f"`python export.py --task {t.name} --format onnx --int8 --verify`")
        return onnx
    return None
