"""``data``: list the registry, convert datasets into the Ultralytics layout, sync with Roboflow."""
from pathlib import Path


def register(sub):
    p = sub.add_parser("data", help="dataset registry: list, prepare, Roboflow sync/diff/push")
    cmds = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    ls = cmds.add_parser("list", help="datasets in datasets.yaml and whether their source is present")
    ls.set_defaults(func=_list)
    pr = cmds.add_parser("prepare", help="convert a dataset to runs/datasets/NAME (cached, with manifest.json)")
    pr.add_argument("name", help="datasets.yaml name or a folder")
    pr.add_argument("--task", default=None, help="task whose format to write (default: the dataset's first task)")
    pr.add_argument("--folds", type=int, help="K-fold split by patient")
    pr.add_argument("--fold", type=int, default=0)
    pr.add_argument("--force", action="store_true", help="convert again even if the cache is current")
    pr.set_defaults(func=_prepare)
    _register_roboflow(cmds)


def _roboflow_args(p, version: bool = True) -> None:
    p.add_argument("name", nargs="?", help="datasets.yaml name with a roboflow block (or give the flags)")
    p.add_argument("--workspace", help="Roboflow workspace slug (overrides the entry)")
    p.add_argument("--project", help="Roboflow project slug (overrides the entry)")
    if version:
        p.add_argument("--version", type=int, help="Roboflow version number (overrides the pinned one)")
    p.add_argument("--format", default=None, help="export format (default: the entry's, else yolov8)")


def _register_roboflow(cmds) -> None:
    key_help = "Roboflow API key (default: $ROBOFLOW_API_KEY or the roboflow config file; never printed)"
    sy = cmds.add_parser("sync", help="download a pinned Roboflow version into runs/datasets/roboflow/...")
    _roboflow_args(sy)
    sy.add_argument("--api-key", default=None, help=key_help)
    sy.add_argument("--strict", action="store_true", help="validation problems are fatal (nothing installed)")
    sy.add_argument("--force", action="store_true", help="download again even if the cached version is current")
    sy.set_defaults(func=_sync)
    df = cmds.add_parser("diff", help="compare two synced versions: images added/removed, boxes per class")
    _roboflow_args(df, version=False)
    df.add_argument("--from", dest="v_from", type=int, required=True, help="older version number")
    df.add_argument("--to", dest="v_to", type=int, required=True, help="newer version number")
    df.set_defaults(func=_diff)
    pu = cmds.add_parser("push", help="upload images with model predictions as pre-annotations")
    _roboflow_args(pu)
    pu.add_argument("--predictions", required=True, type=Path,
                    help="folder of YOLO *.txt (class xc yc w h [conf]) or *.json ({instances: [...]}) files")
    pu.add_argument("--images", type=Path, help="folder with the images (default: PREDICTIONS/images or PREDICTIONS)")
    pu.add_argument("--names", help="comma-separated class names the prediction ids index "
                                    "(default: the entry's names)")
    pu.add_argument("--conf", type=float, default=0.0, help="drop predicted boxes below this confidence")
    pu.add_argument("--split", default="train", choices=["train", "valid", "test"])
    pu.add_argument("--batch", help="Roboflow upload batch name (default: 'fetal-detect predictions DATE')")
    pu.add_argument("--dry-run", action="store_true", help="read and count, upload nothing")
    pu.add_argument("--api-key", default=None, help=key_help)
    pu.set_defaults(func=_push)


def _list(args) -> int:
    from fetal_detect.data.registry import load_registry
    from fetal_detect.errors import FetalDetectError

    for e in load_registry().values():
        try:
            present = "generated" if e.root is None else ("present" if e.root.exists() else "missing")
        except FetalDetectError:
            present = "not synced"
        print(f"{e.name:16s} {e.layout:16s} {','.join(e.tasks):22s} {present:9s} {e.description}")
    return 0


def _prepare(args) -> int:
    from fetal_detect.commands import print_json
    from fetal_detect import gan  # noqa: F401  (registers the `synthetic:` records hook)
    from fetal_detect.data.registry import get_entry, prepare
    from fetal_detect.tasks import get_task

    entry = get_entry(args.name)
    task = get_task(args.task or (entry.tasks[0] if entry.tasks else "hc-seg"))
    ds = prepare(args.name, task.kind, folds=args.folds, fold=args.fold, force=args.force)
    print_json({"dataset": ds.manifest["dataset"], "root": str(ds.root), "data": str(ds.data),
                "counts": ds.manifest["counts"]})
    return 0


def _ref(args):
    from fetal_detect.data.roboflow_sync import resolve_ref

    return resolve_ref(args.name, args.workspace, args.project, getattr(args, "version", None), args.format)


def _sync(args) -> int:
    from fetal_detect.commands import print_json
    from fetal_detect.data.roboflow_sync import sync

    ref, entry = _ref(args)
    print_json(sync(ref, api_key=args.api_key, entry=entry, strict=args.strict, force=args.force))
    return 0


def _diff(args) -> int:
    from fetal_detect.commands import print_json
    from fetal_detect.data.roboflow_sync import diff, resolve_ref

    ref, _ = resolve_ref(args.name, args.workspace, args.project, args.v_to, args.format)
    print_json(diff(ref, args.v_from, args.v_to))
    return 0


def _push(args) -> int:
    from fetal_detect.commands import print_json
    from fetal_detect.data.roboflow_sync import push
    from fetal_detect.errors import FetalDetectError

    from fetal_detect.data.roboflow_sync import resolve_ref

    # uploads go to the project; the version only completes the reference (1 when none is known)
    ref, entry = resolve_ref(args.name, args.workspace, args.project, args.version or (None if args.name else 1),
                             args.format)
    names = [n.strip() for n in args.names.split(",")] if args.names else list(entry.names if entry else [])
    if not names:
        raise FetalDetectError("give --names (the class names the prediction ids index) or a datasets.yaml NAME")
    print_json(push(ref, args.predictions, names, api_key=args.api_key, images_dir=args.images, split=args.split,
                    batch=args.batch, conf=args.conf, dry_run=args.dry_run))
    return 0
