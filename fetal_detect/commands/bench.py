"""``bench --task hc-seg --formats torch,onnx,onnx-int8,openvino [--n 200] [--json OUT]``.

Times the whole pipeline and the model alone per format, single image and batched (p50/p95 ms,
images/s), with the CPU model and thread count; see :mod:`fetal_detect.bench` and docs/export.md.
"""
from fetal_detect.tasks import TASK_NAMES


def register(sub):
    p = sub.add_parser("bench", help="latency/throughput of the pipeline and the model per back-end (JSON)",
                       description="Benchmark torch, ONNX, ONNX INT8, OpenVINO ... in one run on this machine.")
    p.add_argument("--task", default="hc-seg", choices=[t for t in TASK_NAMES if t != "gan"])
    p.add_argument("--formats", default="torch,onnx,onnx-int8,openvino,openvino-int8",
                   help="comma-separated: torch, onnx, onnx-int8, openvino, openvino-int8, torchscript, engine")
    p.add_argument("--n", type=int, default=200, help="images timed per format (validation images, cycled)")
    p.add_argument("--batch", type=int, default=8, help="images per call in the batched timings")
    p.add_argument("--weights", help="the .pt to start from (default: weights/<task>.pt); other formats are exported")
    p.add_argument("--data", help="images to time on (default: the task's dataset, val split)")
    p.add_argument("--threads", type=int, help="CPU threads for torch and onnxruntime (default: all cores)")
    p.add_argument("--calib-n", type=int, default=64, dest="calib_n", help="INT8 calibration images")
    p.add_argument("--imgsz", help="comma-separated input sizes to time every format at, e.g. 192,256,320 "
                                   "(default: the model's own); exports are made at each size")
    p.add_argument("--accuracy", action="store_true",
                   help="also score every entry on the val split (HC MAE, Dice; hc-seg) and judge it against the shipped model")
    p.add_argument("--stages", action="store_true",
                   help="time the fastest ONNX/OpenVINO entry stage by stage (decode ... report; hc-seg)")
    p.add_argument("--plot", metavar="PNG", help="with --accuracy: latency vs HC MAE plot")
    p.add_argument("--md", metavar="OUT", help="also write the result table as Markdown")
    p.add_argument("--exports", metavar="DIR", help="folder of the exports to time, reused when made from the same "
                   "weights (e.g. runs/export/hc-seg after `export --verify`: entries then say verified); "
                   "default runs/bench/<task>")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="also write the result to this JSON file")
    p.set_defaults(func=run)


def run(args) -> int:
    from fetal_detect.bench import bench
    from fetal_detect.commands import print_json, stdout_to_stderr
    from fetal_detect.errors import FetalDetectError
    from fetal_detect.report import write_json

    try:
        sizes = [int(s) for s in args.imgsz.split(",") if s.strip()] if args.imgsz else None
    except ValueError:
        raise FetalDetectError(f"--imgsz must be comma-separated integers, got '{args.imgsz}'") from None
    if args.plot and not args.accuracy:
        raise FetalDetectError("--plot needs --accuracy (it plots latency against HC MAE)")
    with stdout_to_stderr():  # exports made on the way print progress: stdout is for the JSON alone
        res = bench(args.task, [f.strip() for f in args.formats.split(",") if f.strip()], n=args.n, batch=args.batch,
                    weights=args.weights, data=args.data, threads=args.threads, calib_n=args.calib_n, imgsz=sizes,
                    accuracy=args.accuracy, stages=args.stages, out=args.exports)
    if args.plot or args.md:
        from pathlib import Path

        from fetal_detect.bench_tradeoff import markdown_table, plot_tradeoff

        if args.plot:
            res["plot"] = str(plot_tradeoff(res, args.plot))
        if args.md:
            Path(args.md).parent.mkdir(parents=True, exist_ok=True)
            Path(args.md).write_text(markdown_table(res) + "\n")
    if args.json_out:
        write_json(args.json_out, res)
        res["json"] = args.json_out
    print_json(res)
    return 0
