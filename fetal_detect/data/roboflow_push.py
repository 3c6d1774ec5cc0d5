"""Upload model predictions back to a Roboflow project as prediction annotations, for curators to review."""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from fetal_detect.data.roboflow_client import _client_call, open_project, resolve_api_key
from fetal_detect.data.roboflow_ref import RoboflowRef
from fetal_detect.errors import FetalDetectError

log = logging.getLogger(__name__)


@dataclass


class PendingUpload:
    """One image and its predicted boxes as YOLO text (``cls xc yc w h`` normalised, no scores)."""

    image: Path
    yolo: str
    boxes: int


def read_predictions(pred_dir: Path, names: list[str], images_dir: Path | None = None,
                     conf: float = 0.0) -> list[PendingUpload]:
    """Pair images with predictions in ``pred_dir``.

    Accepted: YOLO label files ``NAME.txt`` (``cls xc yc w h [conf]`` as Ultralytics ``save_txt`` /
    ``save_conf`` writes them; ids index ``names``) in ``pred_dir`` or ``pred_dir/labels``, or JSON
    reports ``NAME.json`` (``fetal-detect analyze`` output) whose ``instances`` or ``detections`` hold
    ``{name, confidence, box_xyxy}`` items (pixels), at the top or one level down. Images are found
    by stem in ``images_dir`` (default ``pred_dir/images``, else ``pred_dir``). Boxes under ``conf``
    and classes not in ``names`` are dropped.
    """
    from fetal_detect.data.converters import IMAGE_SUFFIXES, box_xyxy_to_xywhn

    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FetalDetectError(f"{pred_dir}: predictions folder not found")
    images_dir = Path(images_dir) if images_dir else (pred_dir / "images" if (pred_dir / "images").is_dir() else pred_dir)
    imgs = {p.stem: p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}
    label_dir = pred_dir / "labels" if (pred_dir / "labels").is_dir() else pred_dir
    preds = sorted(label_dir.glob("*.txt")) + sorted(pred_dir.glob("*.json"))
    index = {n: i for i, n in enumerate(names)}
    out, dropped = [], Counter()
    for p in preds:
        if p.stem not in imgs:
            dropped["no image"] += 1
            continue
        lines = []
        if p.suffix == ".txt":
            from fetal_detect.data.converters.yolo import yolo_lines

            for i, cls, vals in yolo_lines(p.read_text()):
                if cls is None:
                    raise FetalDetectError(f"{p}:{i}: not a YOLO prediction line")
                if len(vals) not in (4, 5) or not 0 <= cls < len(names):
                    raise FetalDetectError(f"{p}:{i}: expected 'class xc yc w h [conf]' with class < {len(names)}")
                if len(vals) == 5 and vals[4] < conf:
                    dropped["below conf"] += 1
                    continue
                lines.append((cls, *vals[:4]))
        else:
            import cv2

            try:
                instances = _instances(json.loads(p.read_text()))
            except ValueError:
                raise FetalDetectError(f"{p}: not JSON") from None
            img = cv2.imread(str(imgs[p.stem]), cv2.IMREAD_UNCHANGED)
            if img is None:
                raise FetalDetectError(f"{imgs[p.stem]}: cannot read image")
            h, w = img.shape[:2]
            for inst in instances:
                if inst.get("name") not in index:
                    dropped["class not in names"] += 1
                    continue
                if float(inst.get("confidence", 1.0)) < conf:
                    dropped["below conf"] += 1
                    continue
                lines.append((index[inst["name"]], *box_xyxy_to_xywhn(*inst["box_xyxy"], w, h)))
        text = "".join(f"{c} {x:.6f} {y:.6f} {bw:.6f} {bh:.6f}\n" for c, x, y, bw, bh in lines)
        out.append(PendingUpload(imgs[p.stem], text, len(lines)))
    if dropped:
        log.info("predictions skipped: %s", dict(dropped))
    if not out:
        raise FetalDetectError(f"{pred_dir}: no predictions (*.txt or *.json) matching images in {images_dir}")
    return out


def _instances(report) -> list[dict]:
    """``instances`` or ``detections`` (``Instance.as_dict`` items) at the top of a report or one level down."""
    if not isinstance(report, dict):
        return []
    for key in ("instances", "detections"):
        if isinstance(report.get(key), list):
            return report[key]
    return [i for v in report.values() if isinstance(v, dict) for i in _instances(v)]


def push(ref: RoboflowRef, pred_dir: Path, names: list[str], api_key: str | None = None,
         images_dir: Path | None = None, split: str = "train", batch: str | None = None,
         conf: float = 0.0, dry_run: bool = False) -> dict:
    """Upload images with predictions as pre-annotations (``is_prediction``) for curators to correct."""
    items = read_predictions(pred_dir, names, images_dir, conf)
    batch = batch or f"fetal-detect predictions {time.strftime('%Y-%m-%d %H:%M')}"
    result = {"project": f"{ref.workspace}/{ref.project}", "batch": batch, "split": split, "images": len(items),
              "boxes": sum(i.boxes for i in items), "uploaded": 0, "dry_run": dry_run}
    if dry_run:
        return result
    key = resolve_api_key(api_key, ref.workspace)
    project = open_project(ref, key)
    labelmap = dict(enumerate(names))
    for item in items:
        with _client_call(key, f"upload of {item.image.name} to {ref.workspace}/{ref.project}"):
            project.single_upload(image_path=str(item.image), split=split, batch_name=batch,
                                  tag_names=["fetal-detect-prediction"],
                                  annotation_path={"name": f"{item.image.stem}.txt", "rawText": item.yolo}
                                  if item.boxes else None,
                                  annotation_labelmap=labelmap, is_prediction=True)
        result["uploaded"] += 1
    return result
