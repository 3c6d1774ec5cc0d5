"""The dataset registry: entries for every shared set, cached conversion with a manifest, auto-detection."""
import json

import pytest
import yaml

from fetal_detect import settings
from fetal_detect.data import registry
from fetal_detect.data.phantom import write_hc18_layout
from fetal_detect.errors import FetalDetectError


def test_registry_has_an_entry_for_every_shared_set_and_the_phantoms():
    reg = registry.load_registry()
    shared = {e.root.name for e in reg.values() if e.root is not None}
    assert {"hc18", "nt_shenzhen", "tv_plane", "cns_roboflow", "brain_abnormal"} <= shared
    assert {"phantom-hc", "phantom-nt", "phantom-cns", "phantom-blank"} <= set(reg)
    for e in reg.values():
        assert e.layout and e.source


def test_prepare_writes_ultralytics_layout_with_manifest_and_reuses_the_cache():
    ds = registry.prepare("phantom-hc", "segment")
    data = yaml.safe_load(ds.data.read_text())
    assert data["names"] == {0: "skull"} and (ds.root / data["train"]).is_dir()
    m = json.loads((ds.root / "manifest.json").read_text())
    assert m["counts"]["train"]["images"] + m["counts"]["val"]["images"] == 40
    assert m["split_rule"]["grouped_by"] == "patient"
    assert all(len(f["sha256"]) == 64 for f in m["files"])
    labels = sorted((ds.root / "labels" / "train").glob("*.txt"))
    first = labels[0].read_text().split()
    assert first[0] == "0" and len(first) > 7  # a polygon, not a box
    stamp = (ds.root / "manifest.json").stat().st_mtime_ns
    again = registry.prepare("phantom-hc", "segment")
    assert (again.root / "manifest.json").stat().st_mtime_ns == stamp


def test_a_folder_works_in_place_of_a_name(tmp_path):
    write_hc18_layout(tmp_path / "mine", 8, seed=5)
    ds = registry.prepare(tmp_path / "mine", "segment")
    assert ds.manifest["layout"] == "hc18"
    assert sum(c["images"] for c in ds.manifest["counts"].values()) == 8


def test_kfold_preparation_is_patient_disjoint_across_folds():
    vals = []
    for k in range(2):
        ds = registry.prepare("phantom-hc", "segment", folds=2, fold=k)
        vals.append({f["patient"] for f in ds.manifest["files"] if f["split"] == "val"})
    assert vals[0] and vals[1] and not vals[0] & vals[1]


def test_unknown_names_and_unreadable_folders_are_user_errors(tmp_path):
    with pytest.raises(FetalDetectError, match="neither a dataset"):
        registry.get_entry("no-such-set")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FetalDetectError, match="cannot tell the dataset layout"):
        registry.get_entry(tmp_path / "empty")


def test_real_hc18_split_is_patient_disjoint():
    if not (settings.SHARED_DATA / "hc18").is_dir():
        pytest.skip("../shared/data/hc18 is not present")
    ds = registry.prepare("hc18", "segment")
    by_split = {}
    for f in ds.manifest["files"]:
        by_split.setdefault(f["patient"], set()).add(f["split"])
    assert all(len(s) == 1 for s in by_split.values())
    assert ds.manifest["counts"]["val"]["images"] > 50


def test_a_roboflow_entry_without_a_local_copy_asks_for_a_sync(tmp_path, monkeypatch):
    reg = tmp_path / "datasets.yaml"
    reg.write_text("rf:\n  source: {roboflow: {workspace: w, project: p, version: 3, format: yolov8}}\n"
                   "  layout: roboflow-yolov8\n  names: [a]\n")
    entry = registry.load_registry(reg)["rf"]
    with pytest.raises(FetalDetectError, match="data sync rf"):
        entry.root
