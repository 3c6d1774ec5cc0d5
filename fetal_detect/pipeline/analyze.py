"""``analyze``: one image in, one :class:`~fetal_detect.result.Result` out (plane, measurements, quality, models).

The single entry point the CLI (``analyze``, ``measure``), the web service and the batch runner call.
``task="auto"`` classifies the plane (when a plane classifier is available), asks the plane gate (a
hook: ``gate(image, plane_prediction) -> refusal | None``), then runs every measurer the measurer table
routes that plane to; a measurement name runs that measurer alone. Models load once per :class:`Analyzer`,
shared by every measurer that needs them (``cns`` and ``tv`` read one ``cns-seg``), and run at most once per
image (:class:`fetal_detect.runtime.PredictorPool`).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from fetal_detect import __version__, measurers
from fetal_detect.errors import FetalDetectError
from fetal_detect.pipeline import public
from fetal_detect.result import Caliper, Measurement, Overlay, Result

TASKS = measurers.choices()  # ("auto", "hc", "nt", "cns", ...): generated from the measurer table
PlaneGate = Callable[[np.ndarray, object], "str | None"]


def default_gate(classifier=None) -> PlaneGate | None:
    """The plane gate every :class:`Analyzer` consults unless given one: ``gate(image, plane_prediction)`` ->
    a refusal reason (the image is unlike what the models were trained on) or None; its ``review(image,
    result)`` checks the measurements' plausibility. Issue #19's abstain gate (docs/auto.md); ``classifier``:
    a callable returning the plane-cls predictor, whose features the gate's distance check uses."""
    from fetal_detect.pipeline.plane_gate import AbstainGate

    return AbstainGate(classifier)


def call_options(strict_plane: bool = False) -> dict:
    """Per-measurement call options from the flags every entry point shares (CLI, batch, API):
    ``--strict-plane`` -> ``{"nt": {"strict_plane": True}}`` (refuse instead of flag a doubtful NT plane)."""
    return {"nt": {"strict_plane": True}} if strict_plane else {}


class Analyzer:
    """Holds the loaded models; ``analyze(image, pixel_size_mm, task)`` returns a :class:`Result`.

    ``weights``: model task -> file (None: the default for ``backend``: a verified INT8 ONNX when
    there is one and ``backend`` is ``auto``, else the shipped model). ``gate``: the plane gate the
    auto router consults after classifying (default: :func:`default_gate`, the abstain gate of auto mode,
    which also reviews the measurements; pass ``lambda image, pred: None`` to accept every plane).
    """

    def __init__(self, weights: dict[str, str] | None = None, backend: str = "auto",
                 gate: PlaneGate | None = None):
        self.weights = dict(weights or {})
        self.backend = backend
        self.gate = gate if gate is not None else default_gate(self.plane_classifier)
        self._measurers: dict = {}
        from fetal_detect.runtime import PredictorPool

        self.predictors = PredictorPool()  # one predictor per model file; one output per model and image

    def weights_for(self, tasks: Iterable[str]) -> dict[str, str | None]:
        """Model task -> the file to load: named in ``weights``, else the back-end's default (None: shipped)."""
        from fetal_detect.runtime import default_weights

        out = {t: self.weights.get(t) or default_weights(t, self.backend) for t in tasks}
        return {k: (str(v) if v else None) for k, v in out.items()}

    def measurer(self, name: str, **options):
        """The measurer of table row ``name``, built once (``options``: extra constructor arguments)."""
        if name not in self._measurers:
            spec = measurers.get_measurer(name)
            kwargs = {arg: w for task, arg in {**spec.models, **spec.optional_models}.items()
                      for w in [self.weights_for([task])[task]]}
            with self.predictors.sharing():  # a model two measurers need is loaded once
                self._measurers[name] = spec.load_class()(**kwargs, **options)
        return self._measurers[name]

    def plane_classifier(self):
        """The plane-cls predictor (given in ``weights`` or shipped), or None when there is none."""
        if "plane-cls" not in self._measurers:
            from fetal_detect.runtime import optional_predictor

            self._measurers["plane-cls"] = optional_predictor("plane-cls", self.weights_for(["plane-cls"])["plane-cls"])
        return self._measurers["plane-cls"]

    def analyze(self, image: np.ndarray, pixel_size_mm: float | None = None, task: str = "auto",
                calibration=None, options: dict | None = None, strict: bool = False) -> Result:
        """Analyse one image. ``calibration`` (a :class:`fetal_detect.measure.calibration.Calibration`, from the
        one precedence function) replaces ``pixel_size_mm`` and records its source; ``options``: per-measurer
        call arguments (``{"nt": {"box": ...}}``); ``strict``: a measurer's "nothing found" raises (``measure``)
        instead of becoming its status."""
        if task not in TASKS:
            raise FetalDetectError(f"task must be one of {', '.join(TASKS)}, got '{task}'")
        with self.predictors.one_image():  # each model runs at most once on this image, whoever asks
            return self._analyze(image, pixel_size_mm, task, calibration, options, strict)

    def _analyze(self, image: np.ndarray, pixel_size_mm: float | None, task: str, calibration, options: dict | None,
                 strict: bool) -> Result:
        t0 = time.perf_counter()
        res = Result(status="ok", requested=task, pixel_size_mm=pixel_size_mm, version=__version__)
        if calibration is not None:
            pixel_size_mm = res.calibrate(calibration).pixel_size_mm
        names = [task] if task != measurers.AUTO else self.route(image, res)
        if task == measurers.AUTO and not names and res.status == "ok":
            res.status, res.reason = "no_standard_plane", f"plane '{res.plane}': no measurement serves it"
        self._run_all(names, image, pixel_size_mm, options, strict, task, res)
        if calibration is not None and "nt" in res.results:  # the anatomy checks (or picks) a ruler's scale
            from fetal_detect.measure.calibration import review_with_anatomy

            reviewed, changed = review_with_anatomy(calibration, res.results["nt"].details.get("detections"))
            res.calibrate(reviewed)
            if changed:  # measure again in the reviewed unit (nt-det's detections are memoised per image)
                self._run_all(names, image, reviewed.pixel_size_mm, options, strict, task, res)
        res.measurers = list(res.results)
        if res.results:
            statuses = [m.status for m in res.results.values()]
            if "ok" not in statuses:
                res.status = "refused" if "refused" in statuses else "no_finding"
                res.reason = "; ".join(f"{m.measurer}: {m.reason}" for m in res.results.values() if m.reason)
        if task == measurers.AUTO and hasattr(self.gate, "review"):
            self.gate.review(image, res)  # plausibility (skull rim, NT view): may refuse the whole image
        res.processing_ms = round((time.perf_counter() - t0) * 1000, 1)
        return res

    def _run_all(self, names: list[str], image: np.ndarray, pixel_size_mm: float | None, options: dict | None,
                 strict: bool, task: str, res: Result) -> None:
        for name in names:
            m = self._run(name, image, pixel_size_mm, (options or {}).get(name, {}), strict, routed=task != name)
            res.results[name] = m
            res.models.update(m.models)

    def route(self, image: np.ndarray, res: Result) -> list[str]:
        """The auto router: plane-cls -> the plane gate -> the measurers the table routes the plane to.

        Without a plane classifier: the table's first measurer (HC), as before plane-cls existed.
        Fills ``res.plane``, ``plane_confidence``, ``plane_evidence`` (and ``status``/``reason`` on refusal).
        """
        classifier = self.plane_classifier()
        if classifier is None:
            res.plane_evidence = {"classifier": None, "note": "no plane classifier: the default measurement"}
            return [measurers.default_measurer()]
        from fetal_detect.pipeline.plane_gate import predict_with_features

        # one pass gives the plane and the features the gate's distance check needs (no second pass there)
        pred, feats, _ = predict_with_features(classifier, image)
        pred.features = feats
        plane, conf = pred.top_class
        res.plane, res.plane_confidence = plane, round(float(conf), 4)
        res.plane_evidence = {"classifier": "plane-cls",
                              "probs": {k: round(float(v), 4) for k, v in sorted(pred.probs.items(), key=lambda kv: -kv[1])}}
        res.models["plane-cls"] = predictor_info(classifier)
        refusal = self.gate(image, pred) if self.gate is not None else None
        res.plane_evidence["gate"] = refusal
        if refusal:
            res.status, res.reason = "no_standard_plane", str(refusal)
            return []
        return measurers.routes(plane)

    def _run(self, name: str, image: np.ndarray, pixel_size_mm: float | None, kwargs: dict, strict: bool,
             routed: bool = False) -> Measurement:
        spec = measurers.get_measurer(name)
        try:
            m = self.measurer(name)
        except FetalDetectError as e:  # routed there by auto, but its model is not installed: say so, go on
            if not routed:
                raise
            return Measurement(name, status="refused", reason=f"not available here: {e}")
        try:
            out = m(image, pixel_size_mm, **kwargs)
        except FetalDetectError as e:
            if strict or e.status != 422:  # a bad request (pixel size, box) is the same for every measurer
                raise
            return Measurement(name, status="no_finding", reason=str(e), models=models_of(m, spec))
        return to_measurement(spec, out, models_of(m, spec), pixel_size_mm)


def predictor_info(p) -> dict:
    """``{weights, backend, sha256}`` of a loaded predictor (the file's content hash identifies the model)."""
    from fetal_detect.runtime import weights_sha256

    w = str(getattr(p, "weights", ""))
    return {"weights": w, "backend": getattr(p, "backend", None), "sha256": weights_sha256(w) if w else None}


def models_of(measurer, spec: measurers.MeasurerSpec) -> dict:
    """Model task -> predictor info for the models a measurer holds (constructor argument ``x_weights`` ->
    attribute ``x_predictor``), so every result's ``models`` says which file and back-end ran."""
    out = {}
    for task, arg in {**spec.models, **spec.optional_models}.items():
        p = getattr(measurer, arg.replace("weights", "predictor"), None)
        if p is not None:
            out[task] = predictor_info(p)
    return out


def to_measurement(spec: measurers.MeasurerSpec, out: dict, models: dict, pixel_size_mm: float | None) -> Measurement:
    """A measurer's output dict -> :class:`Measurement`: the table's fields with units, the measurer's own
    ``status``/``note`` (e.g. NT on an unsuitable plane: refused), quality, overlay primitives, the rest as details."""
    values = {f: out[f] for f in spec.fields if f in out}
    own = out.get("status", "ok")
    status = "ok" if own == "ok" else "refused"
    reason = None if status == "ok" else (out.get("note") or own)
    draws = set(spec.overlay)  # the primitives the table row declares
    overlay = Overlay(ellipse=out.get("ellipse") if "ellipse" in draws else None,
                      calipers=calipers(spec, out, pixel_size_mm) if "calipers" in draws else [],
                      boxes=boxes(out) if "boxes" in draws else [],
                      outlines=outlines(out) if "outline" in draws else [])
    skip = set(values) | {"ellipse", "calipers", "status", "confidence", "processing_ms", "model_ms"} | {
        k for k in out if k.endswith("_outline_xy")}
    details = {k: v for k, v in public(out).items() if k not in skip}
    return Measurement(spec.name, status, reason, values, {f: spec.fields[f] for f in values},
                       out.get("confidence"), overlay, models, details)


def calipers(spec: measurers.MeasurerSpec, out: dict, pixel_size_mm: float | None) -> list[Caliper]:
    """The measurer's calipers in the one schema: :class:`Caliper` items as they are, a bare point pair
    ``[[x, y], [x, y]]`` named after the row's first field; an ellipse adds its BPD (minor) and OFD (major) axes,
    named after the row's ``*bpd_mm``/``*ofd_mm`` fields and as long as the reported values."""
    found = out.get("calipers") or []
    if len(found) == 2 and all(isinstance(p, (list, tuple)) and len(p) == 2 and not isinstance(p[0], (list, tuple))
                               for p in found):
        found = [Caliper(next(iter(spec.fields), spec.name).split("_")[0], tuple(found[0]), tuple(found[1]))]
    result = [c for c in found if isinstance(c, Caliper)]
    e = out.get("ellipse")
    if e:
        t = math.radians(e["angle_deg"])
        for axis, half, ang in (("ofd", e["a"], t), ("bpd", e["b"], t + math.pi / 2)):
            name = next((f[:-3] for f in spec.fields if f.endswith(f"{axis}_mm")), axis)  # e.g. brain_bpd
            dx, dy = math.cos(ang) * half, math.sin(ang) * half
            result.append(Caliper(name, (e["cx"] - dx, e["cy"] - dy), (e["cx"] + dx, e["cy"] + dy), 2 * half,
                                  out.get(f"{name}_mm")))  # the reported (calibrated) length, not a second one
    for c in result:
        if c.length_px is None:
            c.length_px = float(np.hypot(c.p2[0] - c.p1[0], c.p2[1] - c.p1[1]))
        if c.length_mm is None and pixel_size_mm:
            c.length_mm = c.length_px * pixel_size_mm
    return result


def outlines(out: dict) -> list[dict]:
    """Closed traces a measurer reports as ``<name>_outline_xy`` (the NT ``band_outline_xy``), as named point lists."""
    return [{"name": k[: -len("_outline_xy")], "points": [[round(float(x), 2), round(float(y), 2)] for x, y in v]}
            for k, v in out.items() if k.endswith("_outline_xy") and v is not None and len(v) > 2]


def boxes(out: dict) -> list[dict]:
    """Boxes as ``{name, confidence, box_xyxy}`` (image px): the measurer's detections, else its structures."""
    src = out.get("detections") or list((out.get("structures") or {}).values())
    return [{"name": d.get("name"), "confidence": d.get("confidence"), "box_xyxy": d["box_xyxy"]}
            for d in src if isinstance(d, dict) and "box_xyxy" in d]


def parse_weights(weights: Iterable[str] | dict | None, task: str = "auto") -> dict:
    """``["PATH", "nt-seg=PATH"]`` -> ``{model task: path}`` (CLI ``--weights``, batch, serve); a bare PATH goes to
    its sidecar's task, else the primary model of ``task``."""
    from fetal_detect.runtime import read_sidecar

    if isinstance(weights, dict):
        return dict(weights)
    out: dict = {}
    for w in weights or []:
        name, sep, path = str(w).partition("=")
        if not sep or Path(w).exists():
            name, path = read_sidecar(Path(w)).get("task") or measurers.primary_model(task), w
        if not Path(path).exists():
            raise FetalDetectError(f"{path}: weights file not found")
        out[name] = str(Path(path).resolve())
    return out
