"""``measure KIND IMAGE``: one measurement as JSON, optionally with an overlay PNG.

Each kind is one small function below (``_hc``, ...) registered in ``KINDS``.
"""
import time

from fetal_detect.errors import FetalDetectError


def positive_mm(text: str) -> float:
    """``--pixel-size`` -> mm per pixel (see :func:`fetal_detect.io.parse_pixel_size_mm`)."""
    from fetal_detect.io import parse_pixel_size_mm

    return parse_pixel_size_mm(text, "--pixel-size")


def _add_common(p):
    p.add_argument("image", help="PNG/JPEG/BMP/TIFF or DICOM file")
    p.add_argument("--pixel-size", dest="pixel_size", metavar="MM",
                   help="mm per pixel; without it: the DICOM calibration, else the on-screen depth ruler, "
                        "else results in px")
    p.add_argument("--weights", help="model (.pt or .onnx); default: the shipped one")
    p.add_argument("--overlay", metavar="PNG", help="write the image with the measurement drawn")


def _load(args):
    """The image (or DICOM) and its :class:`~fetal_detect.measure.calibration.Calibration`
    (``--pixel-size``, else DICOM, else the on-screen ruler; see :func:`resolve_pixel_size`)."""
    from fetal_detect.io import load_image
    from fetal_detect.measure.calibration import calibrate_image

    loaded = load_image(args.image)
    user = positive_mm(args.pixel_size) if args.pixel_size else None
    args._calibration = calibrate_image(loaded, user, user_detail="--pixel-size")
    return loaded, args._calibration.pixel_size_mm


def _finish(res: dict, args, loaded, measurer, draw, t0: float) -> dict:
    """Overlay (``--overlay``), timing, pixel-size source and model facts, shared by every kind."""
    from fetal_detect.report import write_image

    if args.overlay:
        img = draw(loaded.image, res)
        if args._calibration.source == "ruler":
            from fetal_detect.measure.ruler import draw_ruler

            img = draw_ruler(img, args._calibration.ruler)
        write_image(args.overlay, img)
        res["overlay"] = args.overlay
    res["processing_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    res.update(args._calibration.as_dict())
    res["model"] = measurer.model_info
    return res


def _hc(args) -> dict:
    from fetal_detect.pipeline import public
    from fetal_detect.pipeline.hc import HCMeasurer
    from fetal_detect.report import draw_hc

    t0 = time.perf_counter()
    loaded, px = _load(args)
    measurer = HCMeasurer(args.weights, tta=True if args.tta else None)
    res = _finish(measurer(loaded.image, px), args, loaded, measurer, draw_hc, t0)
    if args.ga_weeks is not None:
        if res.get("units") != "mm":
            raise FetalDetectError("--ga-weeks needs HC in mm: give --pixel-size (or a calibrated DICOM, or an image with a readable depth ruler)")
        from fetal_detect.measure.hc import intergrowth_hc_centile

        res["centile"] = intergrowth_hc_centile(res["hc_mm"], args.ga_weeks)
    return public(res)


def _hc_args(p):
    p.add_argument("--ga-weeks", type=float, help="known gestational age: adds the INTERGROWTH-21st HC z-score and centile")
    p.add_argument("--tta", action="store_true", help="also segment the left-right mirrored image and average the two "
                   "ellipses (hc18 val HC error 1.99 -> 1.94 mm; twice the model time)")


def _nt(args) -> dict:
    from fetal_detect.pipeline import public
    from fetal_detect.pipeline.nt import NTMeasurer, draw_nt, parse_box

    t0 = time.perf_counter()
    box = parse_box(args.box)
    crl = None
    if args.crl_mm is not None:
        try:
            crl = float(args.crl_mm)
        except ValueError:
            raise FetalDetectError(f"--crl-mm must be a number of mm, got '{args.crl_mm}'") from None
    loaded, px = _load(args)
    measurer = NTMeasurer(args.weights, args.seg_weights, need_detector=box is None)
    res = _finish(measurer(loaded.image, px, box=box, crl_mm=crl, strict_plane=args.strict_plane), args, loaded,
                  measurer, draw_nt, t0)
    return public(res)


def _nt_args(p):
    p.add_argument("--box", metavar="X1,Y1,X2,Y2", help="measure inside this NT region (px) without the detector")
    p.add_argument("--crl-mm", dest="crl_mm", metavar="MM", help="crown-rump length: adds the NT centile for that CRL")
    p.add_argument("--seg-weights", dest="seg_weights", help="nt-seg model for the band axis (default: the shipped one if any)")
    add_strict_plane(p)


def add_strict_plane(p):
    """``--strict-plane``, shared by measure nt, analyze and batch."""
    p.add_argument("--strict-plane", dest="strict_plane", action="store_true",
                   help="NT: refuse a doubtful mid-sagittal plane (status unsuitable_plane, no NT value) instead of "
                        "measuring it with plane_ok false and the reasons")


KINDS = {"hc": (_hc, "head circumference, BPD, OFD (mm) and GA from the skull", _hc_args),
         "nt": (_nt, "nuchal translucency thickness (mm), calipers, mid-sagittal plane check", _nt_args)}


def register(sub):
    p = sub.add_parser("measure", help="measure one image (hc, nt) and print JSON")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    for name, (fn, helptext, *add_args) in KINDS.items():  # (run, help[, add_kind_specific_args])
        k = kinds.add_parser(name, help=helptext, description=helptext)
        _add_common(k)
        for add in add_args:
            add(k)
        k.set_defaults(func=lambda args, fn=fn: _run(fn, args))


def _run(fn, args) -> int:
    from fetal_detect.commands import print_json

    print_json(fn(args))
    return 0
