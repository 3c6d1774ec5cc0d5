"""Calibrate/validate the skull-rim check (:mod:`fetal_detect.measure.skull_rim`) against real heads.

``python -m fetal_detect.evaluate.skull_rim`` runs the shipped hc-seg (through :class:`HCMeasurer`) on

- ``hc18_val``: HC18's val split (heads hc-seg did not train on);
- ``tv_plane``: every ``--tv-step``-th tv_plane image (FETAL_PLANES_DB scanners; hc-seg never saw them);
- ``deskull``: the same HC18 val images with the skull band (normalised radius 0.78-1.15 of the reference
  ellipse) replaced by pixels drawn from the head's interior: a disc without a rim (crude, see docs/auto.md);

and reports, per set, how often hc-seg finds a "skull" and how often the rim check passes it (with the
current :data:`LIMITS`). Writes ``runs/evaluate/skull-rim/{per_image.csv,metrics.json}``. Heads should
pass >= 97 %; the de-skulled discs should not.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fetal_detect import settings


def deskull(image: np.ndarray, ellipse: dict, rng: np.random.Generator) -> np.ndarray:
    """``image`` with the band 0.78-1.15 (normalised radius) of ``ellipse`` filled from its interior (< 0.7)."""
    h, w = image.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    th = np.radians(ellipse["angle_deg"])
    dx, dy = xx - ellipse["cx"], yy - ellipse["cy"]
    u = (dx * np.cos(th) + dy * np.sin(th)) / ellipse["a"]
    v = (-dx * np.sin(th) + dy * np.cos(th)) / ellipse["b"]
    rr = np.sqrt(u * u + v * v)
    out = image.copy()
    band = (rr > 0.78) & (rr < 1.15)
    out[band] = rng.choice(image[rr < 0.7], int(band.sum()))
    return out


def evaluate(tv_step: int = 2, limit: int | None = None, progress: bool = True, **_) -> dict:
    import cv2
    import pandas as pd
    from tqdm import tqdm

    from fetal_detect.data import registry
    from fetal_detect.errors import FetalDetectError
    from fetal_detect.io import load_image
    from fetal_detect.measure.geometry import fit_ellipse
    from fetal_detect.measure.skull_rim import LIMITS, check_skull, skull_rim
    from fetal_detect.pipeline.hc import HCMeasurer

    measurer, rng, rows = HCMeasurer(), np.random.default_rng(0), []
    hc18 = settings.SHARED_DATA / "hc18"
    meta = pd.read_csv(registry.prepare("hc18", "segment").root / "meta.csv", dtype=str)
    names = [n.split("__")[-1] for n in meta.loc[meta["split"] == "val", "name"]][:limit]
    items = []
    for n in names:
        items.append(("hc18_val", n, lambda n=n: load_image(hc18 / "images" / f"{n}.png").image))

        def desk(n=n):
            mask = cv2.imread(str(hc18 / "masks" / f"{n}_Mask.png"), cv2.IMREAD_GRAYSCALE)
            fit = fit_ellipse(mask) if mask is not None else None
            return None if fit is None else deskull(load_image(hc18 / "images" / f"{n}.png").image, fit[0].as_dict(), rng)

        items.append(("deskull", n, desk))
    tv = sorted((settings.SHARED_DATA / "tv_plane" / "images").glob("*.jpg"))[::tv_step][:limit]
    items += [("tv_plane", f.stem, lambda f=f: load_image(f).image) for f in tv]
    for group, name, read in tqdm(items, desc="skull rim", unit="img", disable=not progress):
        image = read()
        if image is None:
            continue
        try:
            res = measurer(image, None)
        except FetalDetectError:
            rows.append({"group": group, "name": name, "found": False, "passed": False})
            continue
        rim = skull_rim(image, res["ellipse"])
        ok, reason = check_skull(rim, res["confidence"])
        rows.append({"group": group, "name": name, "found": True, "passed": ok, "reason": reason,
                     "confidence": res["confidence"], **rim})
    df = pd.DataFrame(rows)
    out = settings.RUNS_DIR / "evaluate" / "skull-rim"
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "per_image.csv", index=False)
    metrics = {"limits": LIMITS, "sets": {g: {"images": int(len(x)), "skull_found": int(x["found"].sum()),
                                              "passed": int(x["passed"].sum()),
                                              "pass_rate": round(float(x["passed"].mean()), 4)}
                                          for g, x in df.groupby("group")}, "out": str(out)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Skull-rim check on real heads and de-skulled discs")
    ap.add_argument("--tv-step", type=int, default=2, help="every N-th tv_plane image (default 2)")
    ap.add_argument("--limit", type=int, help="at most this many images per set (a quick check)")
    a = ap.parse_args()
    print(json.dumps(evaluate(a.tv_step, a.limit), indent=2))
