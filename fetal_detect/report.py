"""Outputs people look at: overlays (ellipse, calipers, boxes), contact sheets, JSON and CSV reports."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

GREEN, YELLOW, CYAN, RED = (80, 220, 80), (0, 220, 255), (255, 220, 0), (60, 60, 255)


def draw_hc(image: np.ndarray, result: dict, truth_ellipse: dict | None = None) -> np.ndarray:
    """Grey/BGR image + an HC result -> BGR overlay with the ellipse, BPD/OFD axes and the numbers."""
    out = _bgr(image)
    if truth_ellipse:
        _ellipse(out, truth_ellipse, CYAN, 1)
    e = result.get("ellipse")
    if e:
        _ellipse(out, e, GREEN, 2)
        t = math.radians(e["angle_deg"])
        c = np.array([e["cx"], e["cy"]])
        for length, ang, col in ((e["a"], t, YELLOW), (e["b"], t + math.pi / 2, YELLOW)):
            d = np.array([math.cos(ang), math.sin(ang)]) * length
            cv2.line(out, tuple(np.round(c - d).astype(int)), tuple(np.round(c + d).astype(int)), col, 1, cv2.LINE_AA)
    unit = "mm" if result.get("units") == "mm" else "px"
    lines = [f"HC {result.get(f'hc_{unit}', float('nan')):.1f} {unit}",
             f"BPD {result.get(f'bpd_{unit}', float('nan')):.1f}  OFD {result.get(f'ofd_{unit}', float('nan')):.1f}"]
    if result.get("ga_weeks"):
        lines.append(f"GA {result['ga_weeks']:.1f} wk (Hadlock)")
    _label(out, lines)
    return out


def draw_boxes(image: np.ndarray, instances: Iterable[dict], color=GREEN) -> np.ndarray:
    """Boxes with class and score; ``instances`` as dicts with ``name, confidence, box_xyxy``."""
    out = _bgr(image)
    for inst in instances:
        x1, y1, x2, y2 = (int(round(v)) for v in inst["box_xyxy"])
        cv2.rectangle(out, (x1, y1), (x2, y2), color, 1, cv2.LINE_AA)
        cv2.putText(out, f"{inst['name']} {inst['confidence']:.2f}", (x1, max(10, y1 - 3)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
    return out


def draw_calipers(out: np.ndarray, a, b, color=YELLOW, tick: float | None = None) -> None:
    """On-to-on calipers in place: a line between the two points and a short bar across it at each."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    n = np.linalg.norm(d)
    u = d / n if n > 1e-6 else np.array([0.0, 1.0])
    perp = np.array([-u[1], u[0]]) * (tick or max(4.0, 0.004 * max(out.shape[:2])))
    cv2.line(out, *_fixed(a, b), color, 1, cv2.LINE_AA, shift=4)
    for p in (a, b):
        cv2.line(out, *_fixed(p - perp, p + perp), color, 2, cv2.LINE_AA, shift=4)


def _fixed(*points) -> list[tuple[int, int]]:
    """Points as OpenCV 4-bit fixed-point (``shift=4``) integer tuples: sub-pixel drawing."""
    return [tuple(int(v) for v in np.round(np.asarray(p, float) * 16)) for p in points]


def draw_overlay(image: np.ndarray, overlay, measurements: dict | None = None, units: dict | None = None) -> np.ndarray:
    """THE overlay renderer (CLI ``--overlay``, batch overlays, the API's ``overlay_png``): the primitives of a
    :class:`fetal_detect.result.Overlay` (or its dict): ellipse, outlines, calipers, boxes, ruler ticks, numbers."""
    ov = overlay.to_dict() if hasattr(overlay, "to_dict") else dict(overlay or {})
    out = _bgr(image)
    if ov.get("ellipse"):
        _ellipse(out, ov["ellipse"], GREEN, 2)
    if ov.get("boxes"):
        out = draw_boxes(out, ov["boxes"], CYAN)
    for o in ov.get("outlines") or []:
        cv2.polylines(out, [np.round(np.asarray(o["points"], float) * 16).astype(np.int32)], True, GREEN, 1,
                      cv2.LINE_AA, shift=4)
    for c in ov.get("calipers") or []:
        draw_calipers(out, *c["points"])
    for x, y in ov.get("ruler_ticks") or []:
        cv2.drawMarker(out, (round(x), round(y)), (26, 159, 255), cv2.MARKER_TILTED_CROSS, 6, 1)
    lines = [f"{k.rsplit('_', 1)[0].upper()} {v:.1f} {(units or {}).get(k, '')}".rstrip()
             for k, v in (measurements or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
             and not (k.endswith("_px") and k[:-3] + "_mm" in measurements) and "uncalibrated" not in k]
    if lines:
        _label(out, lines[:6])
    return out


def contact_sheet(tiles: list[np.ndarray], captions: list[str] | None = None, cols: int = 4,
                  tile_w: int = 320) -> np.ndarray:
    """Grid of BGR tiles resized to ``tile_w`` wide, each with an optional caption."""
    if not tiles:
        return np.zeros((tile_w // 2, tile_w, 3), np.uint8)
    rs = []
    for i, t in enumerate(tiles):
        t = _bgr(t)
        h = int(round(t.shape[0] * tile_w / t.shape[1]))
        t = cv2.resize(t, (tile_w, h), interpolation=cv2.INTER_AREA)
        if captions:
            cv2.rectangle(t, (0, 0), (tile_w, 16), (0, 0, 0), -1)
            cv2.putText(t, captions[i][:48], (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
        rs.append(t)
    th = max(t.shape[0] for t in rs)
    rs = [cv2.copyMakeBorder(t, 0, th - t.shape[0], 0, 0, cv2.BORDER_CONSTANT) for t in rs]
    while len(rs) % cols:
        rs.append(np.zeros_like(rs[0]))
    rows = [np.hstack(rs[i:i + cols]) for i in range(0, len(rs), cols)]
    return np.vstack(rows)


def write_image(path: Path, image: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        from fetal_detect.errors import FetalDetectError

        raise FetalDetectError(f"{path}: cannot write image (unknown extension or unwritable folder)")
    return path


def save_figure(fig, path: Path) -> Path:
    """Lay out, save and close a matplotlib figure (folders made as needed)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_json(path: Path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    """Rows of flat dicts -> CSV with the union of keys as columns (nested values as JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()})
    return path


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def _bgr(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()


def _ellipse(img, e: dict, color, thickness):
    cv2.ellipse(img, ((e["cx"], e["cy"]), (2 * e["a"], 2 * e["b"]), e["angle_deg"]), color, thickness, cv2.LINE_AA)


def _label(img, lines: list[str]):
    for i, text in enumerate(lines):
        y = 18 + 18 * i
        cv2.putText(img, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
