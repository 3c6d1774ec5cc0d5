"""``demo``: the main job on the embedded default: HC on phantoms (+ HC18 samples when present).

Writes overlays, ``report.json``, ``report.csv`` and an ``overview.png`` sheet under ``runs/demo/``.
"""
from pathlib import Path


def register(sub):
    p = sub.add_parser("demo", help="measure HC on phantoms (+ HC18 validation samples) -> overlays and a report",
                       description="Runs the HC pipeline with the shipped model on seeded phantoms with exact "
                                   "truth and, when ../shared/data/hc18 is present, on validation images the "
                                   "model never saw. Output: runs/demo/.")
    p.add_argument("--n", type=int, default=8, help="number of phantoms (default 8)")
    p.add_argument("--hc18", type=int, default=4, help="HC18 validation images to add when present (default 4)")
    p.add_argument("--weights", help="hc-seg model (default: weights/hc-seg.pt)")
    p.add_argument("--out", help="output folder (default runs/demo)")
    p.set_defaults(func=run)


def run(args) -> int:
    from fetal_detect import settings
    from fetal_detect.data.converters.hc18 import iter_hc18
    from fetal_detect.data.phantom import write_hc18_layout
    from fetal_detect.measure.hc_scoring import score, split_items, summarise
    from fetal_detect.pipeline.hc import HCMeasurer
    from fetal_detect.report import contact_sheet, write_csv, write_image, write_json

    out = Path(args.out or settings.RUNS_DIR / "demo")
    measurer = HCMeasurer(args.weights)
    write_hc18_layout(out / "phantoms", args.n, seed=2026, first_index=901)  # HC18 ids stop at 806: no clash
    items, _ = iter_hc18(out / "phantoms")
    sources = {it.image_path.name: "phantom" for it in items}
    if args.hc18 and (settings.SHARED_DATA / "hc18").is_dir():
        from fetal_detect.data import registry

        val = split_items(registry.prepare("hc18", "segment"), "val")[: args.hc18]
        items += val
        sources.update({it.image_path.name: "hc18-val" for it in val})
    rows, overlays = score(items, measurer)
    for r in rows:
        r["source"] = sources.get(r["image"], "")
    for name, img in overlays.items():
        write_image(out / "overlays" / f"{Path(name).stem}.png", img)
    summary = {"phantom": summarise([r for r in rows if r["source"] == "phantom"]),
               "hc18-val": summarise([r for r in rows if r["source"] == "hc18-val"]) if args.hc18 else None}
    report = {"model": measurer.model_info, "summary": summary, "images": rows}
    write_json(out / "report.json", report)
    write_csv(out / "report.csv", rows)
    shown = [r for r in rows if r["status"] == "ok" and r["image"] in overlays]
    write_image(out / "overview.png", contact_sheet(
        [overlays[r["image"]] for r in shown],
        [f"{r['image']}: HC {r['hc_mm']:.1f} vs {r['hc_ref_mm']:.1f} mm" for r in shown]))
    print(f"{'image':22s} {'source':9s} {'HC mm':>8s} {'ref mm':>8s} {'err mm':>7s} {'dice':>6s}")
    for r in rows:
        if r["status"] == "ok":
            print(f"{r['image']:22s} {r['source']:9s} {r['hc_mm']:8.1f} {r['hc_ref_mm']:8.1f} "
                  f"{r['hc_err_mm']:+7.2f} {r.get('dice', float('nan')):6.3f}")
        else:
            print(f"{r['image']:22s} {r['source']:9s} failed: {r.get('error')}")
    for k, s in summary.items():
        if s and s.get("n_scored"):
            print(f"{k}: {s['n_scored']}/{s['n_images']} measured, HC MAE {s.get('hc_mae_mm', float('nan')):.2f} mm, "
                  f"Dice {s.get('dice', float('nan')):.3f}")
    print(f"overlays, report.json, report.csv and overview.png in {out}")
    return 0
