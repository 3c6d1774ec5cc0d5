"""``gan``: train the rare-class GAN, sample images with YOLO labels, measure quality (KID, memorisation)."""


def register(sub):
    p = sub.add_parser("gan", help="class-conditional GAN for rare anomaly classes (train, sample, quality)",
                       description="Train a small conditional GAN on a dataset's train split, write synthetic "
                                   "images with YOLO labels, and measure KID / memorisation / the ablation. "
                                   "See docs/gan.md.")
    gs = p.add_subparsers(dest="gan_command", metavar="ACTION")
    t = gs.add_parser("train", help="train (resumes runs/train/gan/NAME/weights/last.pt when present)")
    t.add_argument("--data", default="brain_abnormal", help="datasets.yaml name or folder (default brain_abnormal)")
    t.add_argument("--epochs", type=int, default=200, help="passes over the train split (default 200)")
    t.add_argument("--imgsz", type=int, default=128, help="image side in px, a power of two (default 128)")
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--hours", type=float, help="stop (and checkpoint) after this wall time")
    t.add_argument("--name", help="run name under runs/train/gan/ (default train)")
    t.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    t.add_argument("--d-arch", choices=["recon", "projected", "dcgan"],
                   help="discriminator of a new run (default recon; a resumed run keeps its own): see docs/gan.md")
    t.add_argument("--features", default="auto",
                   help="frozen feature network of the projected discriminator: 'auto' (weights/plane-cls.pt "
                        "when present), 'random', or a .pt of this project's (default auto)")
    t.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    t.set_defaults(func=run_train)
    s = gs.add_parser("sample", help="write N images of one class + YOLO labels (images/, labels/, classes.txt)")
    s.add_argument("--weights", default="weights/gan-brain-abnormal.pt")
    s.add_argument("--class", dest="cls", required=True, help="class name as in the file names, e.g. vein-of-galen")
    s.add_argument("--n", type=int, default=16)
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=run_sample)
    q = gs.add_parser("quality", help="ablation (with/without synthetic), per-class KID, nearest-neighbour check")
    q.add_argument("--weights", help="generator (default: the one the augmented entry names)")
    q.add_argument("--data", default="brain_abnormal")
    q.add_argument("--augmented", default="brain_abnormal_aug", help="registry entry with a synthetic: option")
    q.add_argument("--epochs", type=int, default=40, help="classifier epochs (default 40)")
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    q.add_argument("--out", help="output folder (default runs/gan/quality)")
    q.set_defaults(func=run_quality)
    k = gs.add_parser("kid", help="KID of one or more generators in the plane classifier's feature space")
    k.add_argument("--weights", nargs="+", required=True, help="generator checkpoints to compare")
    k.add_argument("--data", default="brain_abnormal")
    k.add_argument("--features", default="auto", help="plane-cls .pt for the features (default weights/plane-cls.pt)")
    k.add_argument("--json", help="also write the result to this file")
    k.set_defaults(func=run_kid)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def run_train(args) -> int:
    from fetal_detect.commands import print_json
    from fetal_detect.gan.train import train

    r = train(data=args.data, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, seed=args.seed,
              name=args.name, hours=args.hours, resume=not args.no_resume, features=args.features,
              threads=args.threads, d_arch=args.d_arch)
    print_json({"task": r.task, "weights": str(r.weights), "run_dir": str(r.run_dir), "metrics": r.metrics})
    return 0


def run_sample(args) -> int:
    from fetal_detect.commands import print_json
    from fetal_detect.gan.sample import write_samples

    print_json(write_samples(args.weights, args.cls, args.n, args.out, args.seed))
    return 0


def run_quality(args) -> int:
    from fetal_detect.commands import print_json
    from fetal_detect.gan.ablation import run

    m = run(args.data, args.augmented, args.weights, args.epochs, tuple(args.seeds), out=args.out)
    print_json({k: m[k] for k in ("ablation", "accuracy_heldout", "memorisation")} | {"kid": m["kid"]["overall"],
               "kid_plane_cls": (m["kid_plane_cls"] or {}).get("overall")})
    return 0


def run_kid(args) -> int:
    import json
    from pathlib import Path

    from fetal_detect.commands import print_json
    from fetal_detect.gan.ablation import compare_kid

    r = compare_kid(args.weights, args.data, args.features)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    print_json({w: v["overall"] for w, v in r["generators"].items()})
    return 0
