"""``export --task TASK --format onnx|engine|openvino|torchscript [--int8|--half] [--verify]``.

Writes ``runs/export/<task>/<task>[-int8].<ext>`` and its JSON sidecar; prints the sidecar as JSON.
See :mod:`fetal_detect.export` and docs/export.md.
"""
from fetal_detect.tasks import TASK_NAMES


def register(sub):
    from fetal_detect.export import DEFAULT_EXCLUDE, EXCLUDE, FORMATS

    p = sub.add_parser("export", help="export a model (onnx, engine, openvino, torchscript; INT8) with a parity check",
                       description="Export a trained model for deployment; INT8 calibrates on the task's own data.")
    p.add_argument("--task", required=True, choices=[t for t in TASK_NAMES if t != "gan"])
    p.add_argument("--format", dest="fmt", default="onnx", choices=FORMATS)
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--int8", action="store_true", help="INT8, calibrated on training images of --data")
    prec.add_argument("--half", action="store_true", help="FP16 (needs a CUDA GPU for onnx/torchscript)")
    p.add_argument("--imgsz", type=int, help="input size (default: the model's training size)")
    p.add_argument("--weights", help="the .pt to export (default: weights/<task>.pt)")
    p.add_argument("--data", help="dataset for INT8 calibration and --verify (default: the task's dataset)")
    p.add_argument("--verify", action="store_true", help="compare the export with the PyTorch model on the val split")
    p.add_argument("--verify-n", type=int, dest="verify_n", help="score only the first N val images (hc-seg)")
    p.add_argument("--calib-n", type=int, default=64, dest="calib_n", help="INT8 calibration images (default 64)")
    p.add_argument("--exclude", default=DEFAULT_EXCLUDE, choices=EXCLUDE,
                   help="INT8: head nodes kept in float. decode (default): the box/DFL decode, class sigmoid and "
                        "concat tail; head: also the last conv of each branch and the mask protos; none: nothing")
    p.add_argument("--static", action="store_true", help="ONNX with a fixed imgsz x imgsz input (default: dynamic axes)")
    p.add_argument("--out", help="output folder (default: runs/export/<task>)")
    p.set_defaults(func=run)


def run(args) -> int:
    from fetal_detect.commands import print_json, stdout_to_stderr
    from fetal_detect.export import export

    with stdout_to_stderr():  # Ultralytics and the exporters print progress: stdout is for the JSON alone
        meta = export(args.task, args.fmt, weights=args.weights, imgsz=args.imgsz, int8=args.int8, half=args.half,
                      data=args.data, verify=args.verify, verify_n=args.verify_n, calib_n=args.calib_n,
                      exclude=args.exclude, out=args.out, dynamic=not args.static)
    print_json(meta)
    return 0
