"""``analyze IMAGE``: classify the scan plane, route to its measurement (HC, NT, CNS), print one JSON report."""
WEIGHT_FLAGS = {"plane-cls": "plane_weights", "hc-seg": "hc_weights", "nt-det": "nt_weights", "nt-seg": "nt_seg_weights",
                "cns-det": "cns_weights", "cns-seg": "cns_seg_weights"}


def register(sub):
    from fetal_detect.commands.measure import add_strict_plane

    p = sub.add_parser("analyze", help="plane + the matching measurement for one image, as one JSON report",
                       description="Classify the scan plane (plane-cls) and route to the right measurement: "
                                   "trans-thalamic -> HC, mid-sagittal -> NT, trans-ventricular -> CNS structures, "
                                   "other -> status no_standard_plane. --task forces one measurement.")
    p.add_argument("image", help="PNG/JPEG/BMP/TIFF or DICOM file")
    p.add_argument("--task", default="auto", choices=("auto", "hc", "nt", "cns"),
                   help="auto (default): classify the plane first")
    p.add_argument("--pixel-size", dest="pixel_size", metavar="MM",
                   help="mm per pixel; without it: the DICOM calibration, else the on-screen depth ruler, "
                        "else results in px")
    for task, dest in WEIGHT_FLAGS.items():
        p.add_argument(f"--{dest.replace('_', '-')}", dest=dest, metavar="W",
                       help=f"{task} model (.pt/.onnx); default weights/{task}.pt")
    p.add_argument("--overlay", metavar="PNG", help="write the image with the measurement (or detections) drawn")
    add_strict_plane(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from fetal_detect.commands import print_json
    from fetal_detect.commands.measure import positive_mm
    from fetal_detect.io import load_image
    from fetal_detect.measure.calibration import calibrate_image
    from fetal_detect.pipeline.analyze import Analyzer, draw_result

    loaded = load_image(args.image)
    cal = calibrate_image(loaded, positive_mm(args.pixel_size) if args.pixel_size else None, user_detail="--pixel-size")
    px = cal.pixel_size_mm
    weights = {task: getattr(args, dest) for task, dest in WEIGHT_FLAGS.items() if getattr(args, dest)}
    report = Analyzer(weights).analyze(loaded.image, px, args.task, strict_plane=args.strict_plane)
    report["image"] = str(args.image)
    report.update(cal.as_dict())
    if args.overlay:
        from fetal_detect.report import draw_boxes, write_image

        img = draw_result(loaded.image, report["task"], report["result"])
        img = img if img is not None else draw_boxes(loaded.image, [])
        if cal.source == "ruler":
            from fetal_detect.measure.ruler import draw_ruler

            img = draw_ruler(img, cal.ruler)
        write_image(args.overlay, img)
        report["overlay"] = args.overlay
    print_json(report)
    return 0
