"""``analyze IMAGE``: classify the scan plane, run the measurements that serve it, print one JSON result.

The measurement choices, the routing and the weights flags are generated from the measurer table
(``measure:`` in ``cfg/tasks.yaml``); the output is :meth:`fetal_detect.result.Result.to_dict`.
"""
from fetal_detect import measurers
from fetal_detect.runtime import BACKEND_CHOICES


def add_common(p, task_help: str) -> None:
    """The flags ``analyze`` and ``batch`` share: task, weights, back-end."""
    p.add_argument("--task", default="auto", choices=measurers.choices(), help=task_help)
    p.add_argument("--weights", action="append", default=[], metavar="[TASK=]PATH",
                   help="a model for a task, e.g. cns-seg=best.pt (repeatable; a bare PATH goes to the task its "
                        "sidecar names); default: the shipped models")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="auto (default): a parity-checked INT8 ONNX model when one is shipped or exported, else "
                        "PyTorch; torch: always the .pt; onnx: the ONNX export. The choice is in every result's models")
    from fetal_detect.commands.measure import add_strict_plane

    add_strict_plane(p)


def routing_help() -> str:
    rows = measurers.measurer_table().values()
    planes = sorted({p for m in rows for p in m.planes})
    route = "; ".join(f"{p} -> {' + '.join(measurers.routes(p))}" for p in planes)
    return f"auto (default): classify the plane first ({route}; other -> no_standard_plane)"


def register(sub):
    names = ", ".join(f"{m.name} ({m.description})" for m in measurers.measurer_table().values())
    p = sub.add_parser("analyze", help="plane + the matching measurements for one image, as one JSON result",
                       description="Classify the scan plane (plane-cls) and run the measurements the measurer table "
                                   f"routes it to. Measurements: {names}. --task forces one.")
    p.add_argument("image", help="PNG/JPEG/BMP/TIFF or DICOM file")
    add_common(p, routing_help())
    p.add_argument("--pixel-size", dest="pixel_size", metavar="MM",
                   help="mm per pixel; without it: the DICOM calibration, else the on-screen depth ruler, "
                        "else results in px")
    p.add_argument("--overlay", metavar="PNG", help="write the image with the overlay drawn (ellipse, calipers, boxes)")
    p.set_defaults(func=run)


def run(args) -> int:
    from fetal_detect.commands.measure import analyze_image
    from fetal_detect.pipeline.analyze import Analyzer, call_options, parse_weights

    weights = parse_weights(args.weights, args.task)
    return analyze_image(args, lambda: Analyzer(weights, backend=args.backend), args.task,
                         call_options(getattr(args, "strict_plane", False)))
