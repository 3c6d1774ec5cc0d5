"""`data push`: images with model predictions go to Roboflow as pre-annotations (fake API on 127.0.0.1)."""
import json
import shutil

from fake_roboflow import TEST_KEY, fake_api, good_export, rf, run_cli  # noqa: F401

NAMES = ["CHOROID_PLEXUS", "CSP", "MIDLINE_FALX"]


def _predictions(good_export, folder):
    """Three images: two with YOLO txt predictions (with scores), one with an analyze-style JSON report."""
    imgs = sorted((good_export / "train" / "images").iterdir())[:3]
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for img in imgs:
        shutil.copy(img, folder / "images" / img.name)
    (folder / "labels" / f"{imgs[0].stem}.txt").write_text("0 0.5 0.5 0.2 0.2 0.91\n1 0.4 0.4 0.1 0.1 0.12\n")
    (folder / "labels" / f"{imgs[1].stem}.txt").write_text("2 0.5 0.5 0.3 0.6 0.77\n")
    (folder / f"{imgs[2].stem}.json").write_text(json.dumps({"cns": {"detections": [
        {"name": "CSP", "confidence": 0.8, "box_xyxy": [10, 10, 50, 40]},
        {"name": "Brain", "confidence": 0.9, "box_xyxy": [0, 0, 60, 60]}]}}))  # not a class of the project
    return imgs


def test_push_uploads_predictions_as_preannotations(rf, capsys, good_export, tmp_path):
    imgs = _predictions(good_export, tmp_path / "pred")
    code, out, err = run_cli(capsys, "data", "push", "cns_roboflow", "--predictions", str(tmp_path / "pred"),
                             "--conf", "0.5", "--batch", "curate-1")
    assert code == 0, err
    assert out["uploaded"] == 3 and out["boxes"] == 3 and TEST_KEY not in json.dumps(out) + err
    assert sorted(u["name"] for u in rf.uploads) == sorted(p.name for p in imgs)
    assert all(u["query"]["batch"] == "curate-1" for u in rf.uploads)
    assert len(rf.annotations) == 3 and all(a["query"]["prediction"] == "true" for a in rf.annotations)
    body = rf.annotations[0]["body"]
    assert body["labelmap"] == {str(i): n for i, n in enumerate(NAMES)}
    lines = sorted(a["body"]["annotationFile"].strip() for a in rf.annotations)
    assert all(len(ln.split()) == 5 for ln in lines)  # scores stripped, low-confidence box dropped


def test_push_dry_run_reads_without_uploading(rf, capsys, good_export, tmp_path):
    _predictions(good_export, tmp_path / "pred")
    code, out, _ = run_cli(capsys, "data", "push", "cns_roboflow", "--predictions", str(tmp_path / "pred"),
                           "--dry-run")
    assert code == 0 and out["images"] == 3 and out["boxes"] == 4 and rf.uploads == []


def test_push_bad_prediction_file_is_one_line_error(rf, capsys, good_export, tmp_path):
    imgs = _predictions(good_export, tmp_path / "pred")
    (tmp_path / "pred" / "labels" / f"{imgs[0].stem}.txt").write_text("9 0.5 0.5 0.2 0.2\n")
    code, _, err = run_cli(capsys, "data", "push", "cns_roboflow", "--predictions", str(tmp_path / "pred"))
    assert code == 2 and f"{imgs[0].stem}.txt:1" in err and rf.uploads == []
