"""``calibrate IMAGE [IMAGE ...]``: pixel size (mm/px) from each image's on-screen depth ruler, one JSON line each."""
import json
import sys
from pathlib import Path

from fetal_detect.errors import FetalDetectError


def register(sub):
    p = sub.add_parser("calibrate", help="pixel size (mm/px) from the scanner's on-screen depth ruler",
                       description="Find the depth ruler (a column of regularly spaced ticks along the left or "
                                   "right edge), fit the tick spacing over all ticks and print one JSON object per "
                                   "image: pixel_size_mm (null when refused), reason, spacing_px, ticks [[x, y]], "
                                   "confidence, pattern. Refuses rather than guesses (too few ticks, irregular "
                                   "gaps). A clean ruler whose tick interval is ambiguous (the right-edge dot "
                                   "column of the Siemens layout, 3-4 sparse dots, a long tick every 5) prints "
                                   "pixel_size_candidates_mm (5 mm and 1 cm) instead: give --interval-mm, or "
                                   "let `analyze`/`batch` pick it from the fetal anatomy on first-trimester "
                                   "images. Exit status 2 when a file cannot be read.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG/JPEG/BMP/TIFF or DICOM files")
    p.add_argument("--interval-mm", dest="interval_mm", metavar="MM",
                   help="mm between neighbouring ticks (default: read from the tick pattern, 5 mm on the "
                        "left-edge GE layout; a pattern that fits both 5 mm and 1 cm ticks is refused unless "
                        "this is given)")
    p.add_argument("--overlay", metavar="DIR", help="write IMAGE-ruler.png with the ticks used into DIR")
    p.add_argument("--anatomy", action="store_true",
                   help="first-trimester mid-sagittal images: run nt-det and let the fetal anatomy (thalami, "
                        "midbrain, palate) pick an ambiguous interval or veto a ruler 1.6x off, as analyze and "
                        "batch do (adds 'anatomy' and the reviewed pixel_size_mm/detail)")
    p.set_defaults(func=run)


def calibrate_file(path: str, interval_mm: float | None = None, overlay_dir: str | None = None,
                   analyzer=None) -> dict:
    """One image -> the JSON object ``calibrate`` prints (raises FetalDetectError for unreadable files).
    ``analyzer``: review the read with the fetal anatomy, as ``analyze --task nt`` does."""
    from fetal_detect.io import load_image
    from fetal_detect.measure.ruler import draw_ruler, read_ruler

    loaded = load_image(path)
    ruler = read_ruler(loaded.image, interval_mm=interval_mm)
    out = {"image": str(path), **ruler.as_dict()}
    if analyzer is not None:
        from fetal_detect.measure.calibration import ruler_calibration

        res = analyzer.analyze(loaded.image, task="nt", calibration=ruler_calibration(ruler))
        reviewed = res.ruler or {}
        out.update(pixel_size_mm=res.pixel_size_mm, source=res.pixel_size_source, reason=res.pixel_size_detail,
                   interval_mm=reviewed.get("interval_mm", out.get("interval_mm")),
                   interval_from=reviewed.get("interval_from", out.get("interval_from")),
                   anatomy=reviewed.get("anatomy"))
        ruler = reviewed or ruler
    if loaded.pixel_size_mm is not None:
        out["dicom_pixel_size_mm"] = loaded.pixel_size_mm
    if overlay_dir:
        from fetal_detect.report import write_image

        dest = Path(overlay_dir) / f"{Path(path).stem}-ruler.png"
        out["overlay"] = str(write_image(dest, draw_ruler(loaded.image, ruler)))
    return out


def parse_interval_mm(text: str | None) -> float | None:
    """``--interval-mm`` -> mm between ticks (0.5-50), None when not given."""
    if text is None:
        return None
    try:
        v = float(text)
    except ValueError:
        raise FetalDetectError(f"--interval-mm must be a number of mm, got '{str(text)[:40]}'") from None
    if not 0.5 <= v <= 50:
        raise FetalDetectError(f"--interval-mm must be between 0.5 and 50 mm, got {str(text)[:40]}")
    return v


def run(args) -> int:
    interval = parse_interval_mm(args.interval_mm)
    analyzer = None
    if args.anatomy:
        from fetal_detect.pipeline.analyze import Analyzer

        analyzer = Analyzer()
    status = 0
    for path in args.images:
        try:
            out = calibrate_file(path, interval, args.overlay, analyzer)
        except FetalDetectError as e:
            print(f"fetal-detect: error: {e}", file=sys.stderr)
            out, status = {"image": str(path), "pixel_size_mm": None, "source": None, "error": str(e)}, 2
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    return status
