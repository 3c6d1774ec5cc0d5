"""``preprocess IMAGE_OR_DIR --steps sector,clahe,wavelet --out DIR``: processed PNGs + a before/after sheet.

Runs :func:`fetal_detect.preprocess.apply` (the code training and the runtimes use) on one image or
every image/DICOM in a folder, writes ``DIR/<name>.png`` for each and ``DIR/before_after.png`` (the
first ``--sheet`` images, original left, processed right).
"""
from pathlib import Path

from fetal_detect.errors import FetalDetectError


def register(sub):
    from fetal_detect.preprocess import STEPS

    p = sub.add_parser("preprocess", help="apply preprocessing steps to images; writes a before/after sheet",
                       description=f"Steps (in order, comma-separated): {', '.join(STEPS)}. Parameters as "
                                   "name:key=value, e.g. wavelet:method=visu:level=3. Default: the --task's steps.")
    p.add_argument("source", help="an image/DICOM file or a folder of them")
    p.add_argument("--steps", help="e.g. sector,clahe,wavelet (default: the steps of --task)")
    p.add_argument("--task", help="use this task's preprocess steps from the task table")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--sheet", type=int, default=8, help="images on the before/after sheet (default 8)")
    p.set_defaults(func=run)


def inputs(source: Path) -> list[Path]:
    """The file itself, or the image and DICOM files directly in a folder (sorted)."""
    from fetal_detect.data.converters import IMAGE_SUFFIXES

    if source.is_file():
        return [source]
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in (*IMAGE_SUFFIXES, ".dcm"))
        if not files:
            raise FetalDetectError(f"{source}: no images (png, jpg, bmp, tif, dcm) in this folder")
        return files
    raise FetalDetectError(f"{source}: file or folder not found")


def run(args) -> int:
    from fetal_detect import preprocess as pp
    from fetal_detect.commands import print_json
    from fetal_detect.io import load_image
    from fetal_detect.report import contact_sheet, write_image

    if args.steps is None and args.task is None:
        raise FetalDetectError("give --steps (e.g. sector,clahe,wavelet) or --task")
    if args.steps is not None:
        steps = pp.canonical(args.steps)
    else:
        from fetal_detect.tasks import get_task

        steps = pp.canonical(get_task(args.task).preprocess)
    out = Path(args.out)
    tiles, captions, written, failed = [], [], [], []
    for path in inputs(Path(args.source)):
        try:
            img = load_image(path).image
        except FetalDetectError as e:
            failed.append({"file": path.name, "error": str(e)})
            continue
        res = pp.apply(img, steps)
        written.append(str(write_image(out / f"{path.stem}.png", res)))
        if len(tiles) < 2 * args.sheet:
            tiles += [img, res]
            captions += [f"{path.name} before", f"after: {args.steps or ','.join(map(str, steps)) or 'none'}"]
    if not written:
        raise FetalDetectError(f"{args.source}: no image could be read ({failed[0]['error'] if failed else ''})")
    sheet = write_image(out / "before_after.png", contact_sheet(tiles, captions, cols=2))
    print_json({"steps": steps, "images": len(written), "out": str(out), "sheet": str(sheet), "failed": failed})
    return 0
