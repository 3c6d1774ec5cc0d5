"""``measure NAME IMAGE``: one measurement as JSON (:meth:`fetal_detect.result.Result.to_dict`), optionally with
an overlay PNG. One subcommand per row of the measurer table; a measurement with flags of its own
(``hc --ga-weeks``, ``nt --box``) adds them in :data:`EXTRAS`. "Nothing found" is a one-line error (exit 2).
"""
from fetal_detect import measurers
from fetal_detect.errors import FetalDetectError


def positive_mm(text: str) -> float:
    """``--pixel-size`` -> mm per pixel (see :func:`fetal_detect.io.parse_pixel_size_mm`)."""
    from fetal_detect.io import parse_pixel_size_mm

    return parse_pixel_size_mm(text, "--pixel-size")


def _add_common(p, spec):
    from fetal_detect.runtime import BACKEND_CHOICES

    p.add_argument("image", help="PNG/JPEG/BMP/TIFF or DICOM file")
    p.add_argument("--pixel-size", dest="pixel_size", metavar="MM",
                   help="mm per pixel; without it: the DICOM calibration, else the on-screen depth ruler, "
                        "else results in px")
    p.add_argument("--weights", action="append", default=[], metavar="[TASK=]PATH",
                   help=f"model (.pt or .onnx); a bare PATH is the {next(iter(spec.models))} model, TASK=PATH names "
                        f"another ({', '.join(spec.all_models)}); default: the shipped ones")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="auto (default): a parity-checked INT8 ONNX when there is one, else PyTorch")
    p.add_argument("--overlay", metavar="PNG", help="write the image with the measurement drawn")


# --- flags of single measurements: (add_args(parser), options(args) -> (constructor options, call kwargs), post)

def _hc_args(p):
    p.add_argument("--ga-weeks", type=float, help="known gestational age: adds the INTERGROWTH-21st HC z-score and centile")
    p.add_argument("--tta", action="store_true", help="also segment the left-right mirrored image and average the two "
                   "ellipses (hc18 val HC error 1.99 -> 1.94 mm; twice the model time)")


def _hc_options(args):
    return {"tta": True if args.tta else None}, {}


def _hc_post(result, args) -> None:
    if args.ga_weeks is None:
        return
    m = result.results["hc"]
    if m.units.get("hc_mm") != "mm" or m.values.get("hc_mm") is None:
        raise FetalDetectError("--ga-weeks needs HC in mm: give --pixel-size (or a calibrated DICOM, or an image "
                               "with a readable depth ruler)")
    from fetal_detect.measure.hc import intergrowth_hc_centile

    m.details["centile"] = intergrowth_hc_centile(m.values["hc_mm"], args.ga_weeks)


def _nt_args(p):
    p.add_argument("--box", metavar="X1,Y1,X2,Y2", help="measure inside this NT region (px) without the detector")
    p.add_argument("--crl-mm", dest="crl_mm", metavar="MM", help="crown-rump length: adds the NT centile for that CRL")
    p.add_argument("--seg-weights", dest="seg_weights", help="nt-seg model for the band axis (default: the shipped one if any)")
    add_strict_plane(p)


def add_strict_plane(p):
    """``--strict-plane``, shared by measure nt, analyze and batch."""
    p.add_argument("--strict-plane", dest="strict_plane", action="store_true",
                   help="NT: refuse a doubtful mid-sagittal plane (status refused, no NT value) instead of "
                        "measuring it with plane_ok false and the reasons")


def _nt_options(args):
    from fetal_detect.pipeline.nt import parse_box

    box = parse_box(args.box)
    crl = None
    if args.crl_mm is not None:
        try:
            crl = float(args.crl_mm)
        except ValueError:
            raise FetalDetectError(f"--crl-mm must be a number of mm, got '{args.crl_mm}'") from None
    if args.seg_weights:
        args.weights.append(f"nt-seg={args.seg_weights}")
    return {"need_detector": box is None}, {"box": box, "crl_mm": crl, "strict_plane": args.strict_plane}


EXTRAS = {"hc": (_hc_args, _hc_options, _hc_post), "nt": (_nt_args, _nt_options, None)}


def register(sub):
    names = ", ".join(measurers.names())
    p = sub.add_parser("measure", help=f"measure one image ({names}) and print JSON")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    for spec in measurers.measurer_table().values():
        k = kinds.add_parser(spec.name, help=spec.description, description=spec.description)
        _add_common(k, spec)
        add_args = EXTRAS.get(spec.name, (None,))[0]
        if add_args:
            add_args(k)
        k.set_defaults(func=run)


def run(args) -> int:
    from fetal_detect.pipeline.analyze import Analyzer, parse_weights

    _, options, post = EXTRAS.get(args.kind, (None, None, None))
    ctor, call = options(args) if options else ({}, {})

    def make_analyzer():
        analyzer = Analyzer(parse_weights(args.weights, args.kind), backend=args.backend)
        analyzer.measurer(args.kind, **ctor)
        return analyzer

    return analyze_image(args, make_analyzer, args.kind, {args.kind: call}, strict=True, post=post)


def analyze_image(args, make_analyzer, task: str, options: dict, strict: bool = False, post=None) -> int:
    """``analyze`` and ``measure``: load ``args.image``, calibrate (``--pixel-size`` > DICOM > ruler), then
    build the analyzer (so a bad file fails before any model loads), analyse, write ``--overlay``, print
    the result as JSON."""
    from fetal_detect.commands import print_json
    from fetal_detect.io import load_image
    from fetal_detect.measure.calibration import calibrate_image

    loaded = load_image(args.image)
    cal = calibrate_image(loaded, positive_mm(args.pixel_size) if args.pixel_size else None, user_detail="--pixel-size")
    result = make_analyzer().analyze(loaded.image, task=task, calibration=cal, options=options, strict=strict)
    if post:
        post(result, args)
    result.extra["image"] = str(args.image)
    if args.overlay:
        from fetal_detect.report import draw_overlay, write_image

        write_image(args.overlay, draw_overlay(loaded.image, result.overlay, result.measurements, result.units))
        result.extra["overlay_file"] = args.overlay
    print_json(result.to_dict())
    return 0
