"""``data``: list the registry and convert datasets into the Ultralytics layout."""


def register(sub):
    p = sub.add_parser("data", help="dataset registry: list, prepare")
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


def _list(args) -> int:
    from fetal_detect.data.registry import load_registry

    for e in load_registry().values():
        present = "generated" if e.root is None else ("present" if e.root.exists() else "missing")
        print(f"{e.name:16s} {e.layout:16s} {','.join(e.tasks):22s} {present:9s} {e.description}")
    return 0


def _prepare(args) -> int:
    from fetal_detect.commands import print_json
    from fetal_detect.data.registry import get_entry, prepare
    from fetal_detect.tasks import get_task

    entry = get_entry(args.name)
    task = get_task(args.task or (entry.tasks[0] if entry.tasks else "hc-seg"))
    ds = prepare(args.name, task.kind, folds=args.folds, fold=args.fold, force=args.force)
    print_json({"dataset": ds.manifest["dataset"], "root": str(ds.root), "data": str(ds.data),
                "counts": ds.manifest["counts"]})
    return 0
