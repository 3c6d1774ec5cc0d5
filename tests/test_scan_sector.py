"""The scan sector's convex hull comes from the traced border, and is the hull of every lit pixel."""
import cv2
import numpy as np

from fetal_detect.data.phantom import make_hc
from fetal_detect.measure.geometry import scan_sector


def _hull_of_every_pixel(g: np.ndarray) -> np.ndarray:
    lit = cv2.morphologyEx((g > 4).astype(np.uint8), cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(lit, connectivity=8)
    big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    hull = np.zeros(g.shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(cv2.findNonZero((labels == big).astype(np.uint8))), 1)
    return hull > 0


def test_sector_hull_equals_the_hull_of_every_lit_pixel():
    rng = np.random.default_rng(0)
    fan = np.zeros((540, 800), np.uint8)
    cv2.ellipse(fan, (400, 20), (500, 500), 90, -35, 35, 120, -1)  # a fan with speckle and dark fluid inside
    fan = np.where(rng.random(fan.shape) < 0.3, fan // 3, fan).astype(np.uint8)
    cv2.circle(fan, (400, 300), 60, 0, -1)
    cv2.putText(fan, "GA 20w", (20, 40), cv2.FONT_HERSHEY_SIMPLEX, 1, 255, 2)  # burnt-in text: a separate piece
    for g in (fan, make_hc(3, pixel_size_mm=0.2).image, make_hc(9, pixel_size_mm=0.3).image):
        assert np.array_equal(scan_sector(g), _hull_of_every_pixel(g))
    assert scan_sector(np.zeros((50, 60), np.uint8)).all()  # nothing lit: everything counts as scanned
