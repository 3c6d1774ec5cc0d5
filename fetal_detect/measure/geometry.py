"""Geometry on masks: robust ellipse fitting and ellipse perimeter. All lengths in px unless named ``*_mm``."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import cv2
import numpy as np


@dataclass(frozen=True)
class Ellipse:
    """An ellipse in image px: centre (cx, cy), semi-axes a >= b, ``angle_deg`` of the a-axis from +x."""

    cx: float
    cy: float
    a: float
    b: float
    angle_deg: float

    def as_dict(self) -> dict:
        return {k: round(float(v), 3) for k, v in asdict(self).items()}

    def scaled(self, factor: float) -> "Ellipse":
        return Ellipse(self.cx, self.cy, self.a * factor, self.b * factor, self.angle_deg)

    def normalised_radius(self, pts: np.ndarray) -> np.ndarray:
        """r for each (x, y) point: 1 on the ellipse, < 1 inside."""
        t = math.radians(self.angle_deg)
        d = pts - np.array([self.cx, self.cy])
        u = d[:, 0] * math.cos(t) + d[:, 1] * math.sin(t)
        v = -d[:, 0] * math.sin(t) + d[:, 1] * math.cos(t)
        return np.sqrt((u / self.a) ** 2 + (v / self.b) ** 2)

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Filled ellipse as a uint8 0/255 mask of ``shape`` (h, w), pixel centres inside."""
        h, w = shape
        yy, xx = np.mgrid[0:h, 0:w]
        pts = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float64)
        return (self.normalised_radius(pts).reshape(h, w) <= 1.0).astype(np.uint8) * 255


def ellipse_perimeter(a: float, b: float) -> float:
    """Ramanujan's second approximation of an ellipse perimeter (relative error < 1e-9 for HC shapes)."""
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def outer_contour(mask: np.ndarray) -> np.ndarray | None:
    """Outer border (N x 2 px, in order) of the foreground blob with the largest filled area, or None."""
    binary = mask.view(np.uint8) if mask.dtype == bool else (mask > 0).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    return max(contours, key=cv2.contourArea).reshape(-1, 2)


class EllipseFit(NamedTuple):
    """A robust ellipse fit: the ellipse, the share of border points near it, and how many border points
    were left out of the fit because they lie on a cut that is not skull (image frame, scan sector)."""

    ellipse: Ellipse
    inliers: float
    points_dropped: int = 0
    n_points: int = 0


def fit_ellipse(mask: np.ndarray, min_points: int = 20, trim_px: float = 2.0, iterations: int = 3
                ) -> tuple[Ellipse, float] | None:
    """``(ellipse, inlier_fraction)`` of :func:`fit_ellipse_detail` without exclusions, or ``None``."""
    fit = fit_ellipse_detail(mask, min_points=min_points, trim_px=trim_px, iterations=iterations)
    return None if fit is None else (fit.ellipse, fit.inliers)


def fit_ellipse_detail(mask: np.ndarray, exclude: np.ndarray | None = None, min_points: int = 20,
                       trim_px: float = 2.0, iterations: int = 3, min_kept: float = 0.5) -> EllipseFit | None:
    """Robust ellipse fit to the outer border of the largest blob in ``mask``.

    Border points where ``exclude`` (a bool image of ``mask``'s shape, see :func:`border_zone`) is True
    are left out: there the mask was cut by the image frame or the scan sector, and a straight cut
    pulls the fit. If fewer than ``min_kept`` of the points would remain, none are left
    out (too little arc left to fit). Then the direct least-squares ellipse is fitted to the points near
    the convex hull, and refitted without outliers (points farther than ``max(trim_px, 3 x MAD)`` from the
    curve), so a broken or noisy contour (a missing arc, a stray blob glued on) pulls the fit little.
    Border pixel centres lie half a pixel inside the true edge, so 0.5 px is added to both semi-axes.

    Returns an :class:`EllipseFit` or ``None`` when there is nothing to fit.
    """
    border = outer_contour(mask)
    if border is None or len(border) < min_points:
        return None
    pts = border.astype(np.float64)
    keep = np.ones(len(pts), bool)
    if exclude is not None:
        cut = exclude[border[:, 1], border[:, 0]]
        if (~cut).sum() >= max(min_points, min_kept * len(pts)):
            keep = ~cut
    # the convex hull bridges concave bites out of the skull (shadowed or missed arcs)
    on_hull = _near_convex_hull(border, tol=1.5) & keep
    use = pts[on_hull] if on_hull.sum() >= max(min_points, 0.5 * keep.sum()) else pts[keep]
    ell = _fit(use)
    if ell is None:
        return None
    for _ in range(iterations):
        resid = np.abs(ell.normalised_radius(use) - 1.0) * ell.b
        mad = np.median(np.abs(resid - np.median(resid))) * 1.4826
        ok = resid <= max(trim_px, 3 * mad)
        if ok.all() or ok.sum() < min_points:
            break
        refit = _fit(use[ok])
        if refit is None:
            break
        ell = refit
    resid_all = np.abs(ell.normalised_radius(pts[keep]) - 1.0) * ell.b
    inliers = float(np.mean(resid_all <= max(trim_px, 0.02 * ell.b)))
    return EllipseFit(Ellipse(ell.cx, ell.cy, ell.a + 0.5, ell.b + 0.5, ell.angle_deg), inliers,
                      int(len(pts) - keep.sum()), len(pts))


def mean_ellipse(ellipses: list[Ellipse]) -> Ellipse:
    """Parameter-wise mean of ellipses fitted to views of one object (test-time augmentation); the
    axis angle is averaged on the doubled-angle circle, since an ellipse at 89 deg is one at -91 deg."""
    if len(ellipses) == 1:
        return ellipses[0]
    t = np.radians([2 * e.angle_deg for e in ellipses])
    angle = math.degrees(math.atan2(np.sin(t).mean(), np.cos(t).mean())) / 2
    return Ellipse(*(float(np.mean([getattr(e, k) for e in ellipses])) for k in ("cx", "cy", "a", "b")), angle)


def border_zone(shape: tuple[int, int], image_gray: np.ndarray | None = None, width_px: float = 2.0) -> np.ndarray:
    """Bool image (``shape`` = h, w): where a mask edge is a cut, not a skull border: the outermost
    ``width_px`` of the image frame and, with ``image_gray``, the outside of the scan sector
    (:func:`scan_sector`) widened by ``width_px + 1``.

    The edges of the detection box are *not* cuts to leave out: the box bounds the prototype masks
    (without the crop they spill far past the skull), so where a mask meets its box, the box regression
    is the model's best estimate of the skull's extent (tried on hc18 val: leaving box-edge points out
    raised the HC error).
    """
    h, w = shape
    zone = np.zeros((h, w), bool)
    k = int(math.ceil(width_px))
    zone[:k], zone[h - k:], zone[:, :k], zone[:, w - k:] = True, True, True, True
    if image_gray is not None:
        outside = ~scan_sector(image_gray)
        if outside.any():
            d = 2 * (k + 1) + 1
            zone |= cv2.dilate(outside.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))) > 0
    return zone


def scan_sector(image_gray: np.ndarray, void_level: int = 4, close_px: int = 15) -> np.ndarray:
    """Bool image: the scanned area (fan or rectangle) as opposed to the black surround.

    The convex hull of the largest piece of pixels brighter than ``void_level`` (closed with a
    ``close_px`` disc to bridge speckle): a sector is convex, and black fluid inside it (amniotic fluid,
    ventricles) is inside the hull even where it touches the surround. All True for a full-frame image.
    Unlike :func:`fetal_detect.preprocess.sector_mask` (which must drop burnt-in text, so it opens and
    thresholds a median-filtered image), this keeps faint low-gain parts of the fan: a cut test must
    not call a dim skull arc "outside" (hc18 614_HC: the whole upper fan is grey level 5-10).
    """
    g = image_gray if image_gray.ndim == 2 else cv2.cvtColor(image_gray, cv2.COLOR_BGR2GRAY)
    lit = (g > void_level).astype(np.uint8)
    lit = cv2.morphologyEx(lit, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close_px, close_px)))
    # the hull of a pixel set is the hull of its outer border, so the largest piece is found by its traced outer
    # border (largest enclosed area) rather than by labelling every pixel: the same piece on 307 hc18/tv_plane/
    # Shenzhen frames, ~2x faster (the HC ellipse fit calls this on every image)
    border = cv2.findContours(lit, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    if not border:
        return np.ones(g.shape[:2], bool)
    border = [max(border, key=cv2.contourArea)]
    hull = np.zeros(g.shape[:2], np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.concatenate(border)), 1)
    return hull > 0


def _near_convex_hull(border: np.ndarray, tol: float) -> np.ndarray:
    """True for border points within ``tol`` px of the convex hull of the (ordered, closed) border.

    The hull's vertices are border points in border order, so each point lies between two
    consecutive vertices: its distance is taken to that hull edge and the two next to it, O(N).
    """
    idx = np.sort(cv2.convexHull(border.reshape(-1, 1, 2).astype(np.int32), returnPoints=False).ravel())
    if len(idx) < 3:
        return np.ones(len(border), bool)
    pts = border.astype(np.float64)
    a, b = pts[idx], pts[np.roll(idx, -1)]  # edge e runs from vertex e to vertex e + 1
    own = (np.searchsorted(idx, np.arange(len(pts)), side="right") - 1) % len(idx)
    d = np.full(len(pts), np.inf)
    for shift in (-1, 0, 1):
        e = (own + shift) % len(idx)
        ab, ap = b[e] - a[e], pts - a[e]
        t = np.clip((ap * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-12), 0, 1)
        d = np.minimum(d, np.hypot(*(ap - t[:, None] * ab).T))
    return d <= tol


def _fit(pts: np.ndarray) -> Ellipse | None:
    if len(pts) < 6:
        return None
    (cx, cy), (d1, d2), ang = cv2.fitEllipseDirect(pts.astype(np.float32).reshape(-1, 1, 2))
    if not all(map(math.isfinite, (cx, cy, d1, d2, ang))) or min(d1, d2) <= 0:
        return None
    # OpenCV: d1 is the axis along `ang`; make a the semi-major axis
    if d1 >= d2:
        a, b, angle = d1 / 2, d2 / 2, ang
    else:
        a, b, angle = d2 / 2, d1 / 2, ang + 90
    angle = (angle + 90) % 180 - 90
    return Ellipse(float(cx), float(cy), float(a), float(b), float(angle))


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap of two binary masks (any non-zero is foreground); 1.0 when both are empty."""
    p, t = pred > 0, truth > 0
    denom = p.sum() + t.sum()
    return 1.0 if denom == 0 else float(2 * np.logical_and(p, t).sum() / denom)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union (Jaccard) of two binary masks; 1.0 when both are empty. IoU = Dice / (2 - Dice)."""
    p, t = pred > 0, truth > 0
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)


def hausdorff_px(pred: np.ndarray, truth: np.ndarray) -> float:
    """Symmetric Hausdorff distance (px) between the outer borders of two masks; inf if one is empty."""
    from scipy.spatial import cKDTree

    def border(m):
        cs, _ = cv2.findContours((m > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        return np.concatenate([c.reshape(-1, 2) for c in cs]).astype(np.float64) if cs else None

    bp, bt = border(pred), border(truth)
    if bp is None or bt is None:
        return float("inf")
    return float(max(cKDTree(bt).query(bp)[0].max(), cKDTree(bp).query(bt)[0].max()))
