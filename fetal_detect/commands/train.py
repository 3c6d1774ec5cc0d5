"""``train``: train a task's model from scratch on a registry dataset."""
from fetal_detect.tasks import TASK_NAMES, task_table


def register(sub):
    rows = "\n".join(f"  {t.name:10s} {t.kind:9s} data={t.data:12s} {t.description}" for t in task_table().values())
    p = sub.add_parser("train", help="train a model for a task (from its yaml, no download)",
                       description="Train a YOLOv8 model (or the GAN) from scratch. Tasks:\n" + rows,
                       formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=TASK_NAMES)
    p.add_argument("--data", help="datasets.yaml name or a folder (default: the task's dataset)")
    p.add_argument("--epochs", type=int, help="epochs (default from the task table)")
    p.add_argument("--imgsz", type=int, help="square input size in px (default from the task table)")
    p.add_argument("--model", help="model yaml (from scratch) or .pt to fine-tune, e.g. yolov8s-seg.yaml")
    p.add_argument("--batch", type=int)
    p.add_argument("--workers", type=int, default=2, help="data loader workers (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0; runs are deterministic)")
    p.add_argument("--device", help="cpu, 0, 0,1 (default: GPU if present, else cpu)")
    p.add_argument("--folds", type=int, help="patient-level K-fold cross-validation: train K models, report mean +- SD")
    p.add_argument("--fold", type=int, help="train only this fold of --folds")
    p.add_argument("--hours", type=float, help="time budget; Ultralytics fits the epochs into it")
    p.add_argument("--name", help="run name under runs/train/TASK/")
    p.set_defaults(func=run)


def run(args) -> int:
    from fetal_detect.commands import print_json
    from fetal_detect.engine.train import train, train_folds

    kw = dict(data=args.data, epochs=args.epochs, imgsz=args.imgsz, model=args.model, batch=args.batch,
              workers=args.workers, seed=args.seed, device=args.device, hours=args.hours)
    if args.folds and args.fold is None:
        print_json(train_folds(args.task, args.folds, **kw)["summary"])
        return 0
    res = train(args.task, fold=args.fold, folds=args.folds, name=args.name, **kw)
    print_json({"task": res.task, "weights": str(res.weights), "run_dir": str(res.run_dir), "metrics": res.metrics})
    return 0
