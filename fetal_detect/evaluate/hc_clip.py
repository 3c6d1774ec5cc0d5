"""How HC holds up when the skull leaves the image: cut val heads by the frame or a black sector edge.

hc18 has almost no heads cut by the frame or the fan, but larger heads elsewhere often are. This takes
the ``n`` largest heads of a registry split, cuts ``cut_frac`` of each head's width off its right side
(``frame``: the image is cropped there; ``sector``: a slanted black fan edge is painted there), runs the
HC pipeline on the cut image and compares, against the uncut reference HC, the ellipse fitted to all
mask border points with the default fit (border cuts left out)::

    python -m fetal_detect.evaluate.hc_clip [--weights W] [--data hc18] [--n 40]
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from fetal_detect.errors import FetalDetectError
from fetal_detect.measure.geometry import ellipse_perimeter, fit_ellipse


def cut(image: np.ndarray, truth: np.ndarray, kind: str, cut_frac: float = 0.12) -> np.ndarray:
    """``image`` with the right ``cut_frac`` of the reference head width cut off (``frame`` or ``sector``)."""
    ys, xs = np.nonzero(truth)
    x_cut = int(xs.max() - cut_frac * (xs.max() - xs.min()))
    if kind == "frame":
        return np.ascontiguousarray(image[:, :x_cut])
    yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    out = image.copy()
    out[xx > x_cut + 0.25 * (yy - ys.mean())] = 0
    return out


def clip_robustness(weights=None, data: str = "hc18", split: str = "val", n: int = 40, cut_frac: float = 0.12) -> dict:
    from fetal_detect.data import registry
    from fetal_detect.io import load_image
    from fetal_detect.measure.hc_scoring import split_items
    from fetal_detect.pipeline.hc import HCMeasurer

    measurer = HCMeasurer(weights)
    items = sorted((it for it in split_items(registry.prepare(data, "segment"), split) if it.hc_mm is not None),
                   key=lambda it: -it.hc_mm)[:n]
    out = {}
    for kind in ("frame", "sector"):
        whole, default, failed = [], [], 0
        for it in items:
            img = cut(load_image(it.image_path).image, it.load_mask(), kind, cut_frac)
            try:
                res = measurer(img, it.pixel_size_mm)
            except FetalDetectError:  # no skull found in the cut image
                failed += 1
                continue
            ell = fit_ellipse(res["mask"])[0]
            whole.append(measurer.calibration.apply(ellipse_perimeter(ell.a, ell.b) * it.pixel_size_mm) - it.hc_mm)
            default.append(res["hc_mm"] - it.hc_mm)
        w, d = np.array(whole), np.array(default)
        out[kind] = {"n": len(w), "failed": failed, "all_points_mae_mm": float(np.mean(np.abs(w))), "all_points_bias_mm": float(w.mean()),
                     "default_fit_mae_mm": float(np.mean(np.abs(d))), "default_fit_bias_mm": float(d.mean())}
    return {"data": f"{data} {split}, {len(items)} largest heads, {cut_frac:.0%} of the head width cut", **out}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights")
    p.add_argument("--data", default="hc18")
    p.add_argument("--split", default="val")
    p.add_argument("--n", type=int, default=40)
    a = p.parse_args(argv)
    print(json.dumps(clip_robustness(a.weights, a.data, a.split, a.n), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
