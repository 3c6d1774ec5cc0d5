"""``evaluate``: score a model on held-out data; writes OUT/metrics.json and plots.

Each task's evaluator is ``fetal_detect.evaluate.<task with _>.evaluate(data, weights, out)``.
"""
import importlib

from fetal_detect.errors import FetalDetectError


def register(sub):
    p = sub.add_parser("evaluate", help="metrics, per-image CSV and plots on held-out data",
                       description="Evaluate a model. --data is a folder in the task's layout or a datasets.yaml "
                                   "name (then its held-out val split is used). Without --weights the shipped "
                                   "model weights/<task>.pt is used.")
    p.add_argument("--task", required=True, help="hc-seg, nt-det, nt-measure, cns-det, plane-cls, ...")
    p.add_argument("--data", help="folder or dataset name (default: the task's dataset)")
    p.add_argument("--weights", help="model file (.pt or .onnx); default weights/<task>.pt")
    p.add_argument("--out", help="output folder (default runs/evaluate/<task>/<data>)")
    p.add_argument("--split", default="val", help="split of a registry dataset to score (default val)")
    p.add_argument("--tta", action="store_true", help="hc-seg: also segment the mirrored image and average the two ellipses")
    p.set_defaults(func=run)


def evaluator(task: str):
    try:
        return importlib.import_module(f"fetal_detect.evaluate.{task.replace('-', '_')}").evaluate
    except ModuleNotFoundError:
        raise FetalDetectError(f"no evaluator for task '{task}'") from None


def run(args) -> int:
    from fetal_detect.commands import print_json
    from fetal_detect.tasks import task_table

    data = args.data or (task_table()[args.task].data if args.task in task_table() else None)
    if data is None:
        raise FetalDetectError(f"--data is required for task '{args.task}'")
    extra = {}
    if args.tta:
        if args.task != "hc-seg":
            raise FetalDetectError("--tta is only for --task hc-seg")
        extra["tta"] = True
    metrics = evaluator(args.task)(data=data, weights=args.weights, out=args.out, split=args.split, **extra)
    print_json(metrics)
    return 0
