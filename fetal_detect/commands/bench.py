"""``bench --task hc-seg --formats torch,onnx,onnx-int8,openvino [--n 200] [--json OUT]``.

Times the whole pipeline and the model alone per format, single image and batched (p50/p95 ms,
images/s), with the CPU model and thread count; see :mod:`fetal_detect.bench` and docs/export.md.
"""
from fetal_detect.tasks import TASK_NAMES


def register(sub):
    p = sub.add_parser("bench", help="latency/throughput of the pipeline and the model per back-end (JSON)",
                       description="Benchmark torch, ONNX, ONNX INT8, OpenVINO ... in one run on this machine.")
    p.add_argument("--task", default="hc-seg", choices=[t for t in TASK_NAMES if t != "gan"])
    p.add_argument("--formats", default="torch,onnx,onnx-int8,openvino",
                   help="comma-separated: torch, onnx, onnx-int8, openvino, torchscript, engine")
    p.add_argument("--n", type=int, default=200, help="images timed per format (validation images, cycled)")
    p.add_argument("--batch", type=int, default=8, help="images per call in the batched timings")
    p.add_argument("--weights", help="the .pt to start from (default: weights/<task>.pt); other formats are exported")
    p.add_argument("--data", help="images to time on (default: the task's dataset, val split)")
    p.add_argument("--threads", type=int, help="CPU threads for torch and onnxruntime (default: all cores)")
    p.add_argument("--calib-n", type=int, default=64, dest="calib_n", help="INT8 calibration images")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="also write the result to this JSON file")
    p.set_defaults(func=run)


def run(args) -> int:
    from fetal_detect.bench import bench
    from fetal_detect.commands import print_json
    from fetal_detect.report import write_json

    res = bench(args.task, [f.strip() for f in args.formats.split(",") if f.strip()], n=args.n, batch=args.batch,
                weights=args.weights, data=args.data, threads=args.threads, calib_n=args.calib_n)
    if args.json_out:
        write_json(args.json_out, res)
        res["json"] = args.json_out
    print_json(res)
    return 0
