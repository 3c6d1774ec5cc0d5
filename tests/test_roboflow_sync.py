"""Roboflow sync against a local fake API: pinned cache, manifest, no-op re-run, diff, validation, safety."""
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from fake_roboflow import (CNS_REF, TEST_KEY, copy_export, count_images, fake_api, fake_version,  # noqa: F401
                           good_export, rf, run_cli, truncated, with_entry, zip_folder)

from fetal_detect.data import roboflow_sync
from fetal_detect.errors import FetalDetectError

WS, PROJECT, VERSION = CNS_REF


def _vdir(version=VERSION, project=PROJECT):
    return roboflow_sync.version_dir(roboflow_sync.RoboflowRef(WS, project, version))


def _error(err: str) -> str:
    """The one error line of a failed command (stderr may also hold log lines), checked to be alone."""
    lines = [ln for ln in err.splitlines() if ln.startswith("fetal-detect: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_sync_installs_pinned_version_with_manifest(rf, capsys, caplog, good_export):
    caplog.set_level(logging.DEBUG)  # urllib3 logs request URLs (with ?api_key=) at debug level
    code, out, err = run_cli(capsys, "data", "sync", "cns_roboflow")
    assert code == 0, err
    assert "api_key=***" in caplog.text and TEST_KEY not in caplog.text + err + json.dumps(out)
    vdir = _vdir()
    assert out["status"] == "synced" and Path(out["path"]) == vdir
    assert vdir.parent.parent.parent == roboflow_sync.cache_root()
    manifest = json.loads((vdir / "manifest.json").read_text())
    assert sum(c["images"] for c in manifest["counts"].values()) == count_images(good_export)
    assert manifest["names"] == ["CHOROID_PLEXUS", "CSP", "MIDLINE_FALX"]
    assert manifest["roboflow"]["id"] == f"{WS}/{PROJECT}/{VERSION}" and manifest["problems"] == {}
    assert manifest["files"]["data.yaml"] == roboflow_sync._files(vdir)["data.yaml"]
    assert set(manifest["counts"]["train"]["boxes"]) <= set(manifest["names"])
    assert not [p for p in vdir.parent.iterdir() if p.name.startswith(".")]  # no partial or old folders
    assert TEST_KEY not in (vdir / "manifest.json").read_text()


def test_key_is_read_from_the_roboflow_config_file(rf, capsys, monkeypatch, tmp_path):
    config = tmp_path / "roboflow-config.json"
    config.write_text(json.dumps({"workspaces": {"w1": {"url": WS, "apiKey": TEST_KEY}}, "RF_WORKSPACE": WS}))
    monkeypatch.delenv("ROBOFLOW_API_KEY")
    monkeypatch.setenv("ROBOFLOW_CONFIG_DIR", str(config))
    code, out, err = run_cli(capsys, "data", "sync", "cns_roboflow")
    assert code == 0 and out["status"] == "synced", err
    monkeypatch.setenv("ROBOFLOW_CONFIG_DIR", str(tmp_path / "none.json"))
    code, _, err = run_cli(capsys, "data", "sync", "cns_roboflow")
    assert code == 2 and "ROBOFLOW_API_KEY" in _error(err)


def test_resync_is_noop_when_nothing_changed(rf, capsys):
    assert run_cli(capsys, "data", "sync", "cns_roboflow")[0] == 0
    before = _snapshot(_vdir())
    downloads = sum(1 for m, p in rf.requests if p.startswith("/download"))
    code, out, _ = run_cli(capsys, "data", "sync", "cns_roboflow")
    assert code == 0 and out["status"] == "unchanged"
    assert _snapshot(_vdir()) == before
    assert sum(1 for m, p in rf.requests if p.startswith("/download")) == downloads  # nothing downloaded


def test_same_files_under_new_metadata_stay_unchanged(rf, capsys):
    assert run_cli(capsys, "data", "sync", "cns_roboflow")[0] == 0
    before = {k: v for k, v in _snapshot(_vdir()).items() if k != "manifest.json"}
    rf.versions[CNS_REF] = replace(rf.good, created=rf.good.created + 60)  # re-generated, same content
    code, out, _ = run_cli(capsys, "data", "sync", "cns_roboflow")
    assert code == 0 and out["status"] == "unchanged"
    assert {k: v for k, v in _snapshot(_vdir()).items() if k != "manifest.json"} == before
    downloads = sum(1 for m, p in rf.requests if p.startswith("/download"))
    assert run_cli(capsys, "data", "sync", "cns_roboflow")[1]["status"] == "unchanged"
    assert sum(1 for m, p in rf.requests if p.startswith("/download")) == downloads


def test_killed_sync_leftovers_are_cleaned(rf, capsys):
    assert run_cli(capsys, "data", "sync", "cns_roboflow")[0] == 0
    parent, dead = _vdir().parent, 2**22 + 12345  # above Linux pid_max: no such process
    (parent / f".v{VERSION}.partial-{dead}-abc").mkdir()
    _vdir().rename(parent / f".v{VERSION}.old-{dead}")  # killed between the two renames
    code, out, _ = run_cli(capsys, "data", "sync", "cns_roboflow")
    assert code == 0 and out["status"] == "unchanged"  # the previous version was put back, not re-downloaded
    assert [p.name for p in parent.iterdir()] == [f"v{VERSION}"]


def test_synced_version_prepares_through_registry(rf, capsys, tmp_path, monkeypatch):
    from fetal_detect import settings
    from fetal_detect.data.registry import prepare

    code, out, _ = run_cli(capsys, "data", "sync", "cns_roboflow")
    reg = yaml.safe_load(settings.DATASETS_YAML.read_text())
    assert roboflow_sync.synced_root(reg["cns_roboflow"]["source"]["roboflow"]) == Path(out["path"])
    entry = {**reg["cns_roboflow"], "source": {"path": out["path"]}}
    (tmp_path / "datasets.yaml").write_text(yaml.safe_dump({"cns_synced": entry}))
    monkeypatch.setattr(settings, "DATASETS_YAML", tmp_path / "datasets.yaml")
    ds = prepare("cns_synced", "detect")
    assert sum(c["images"] for c in ds.manifest["counts"].values()) == sum(c["images"] for c in out["counts"].values())


def test_diff_reports_added_removed_images_and_class_changes(rf, capsys, good_export, tmp_path):
    v1 = copy_export(good_export, tmp_path / "v1")
    dropped = sorted((v1 / "train" / "images").iterdir())[:3]
    for img in dropped:
        img.unlink()
        (v1 / "train" / "labels" / f"{img.stem}.txt").unlink()
    rf.versions[(WS, PROJECT, 1)] = fake_version(v1, created=1_600_000_000.0)
    for version in ("1", "2"):  # ad hoc flags, no datasets.yaml entry needed
        code, _, err = run_cli(capsys, "data", "sync", "--workspace", WS, "--project", PROJECT, "--version", version)
        assert code == 0, err
    code, out, _ = run_cli(capsys, "data", "diff", "cns_roboflow", "--from", "1", "--to", "2")
    assert code == 0
    assert out["images"]["added"] == 3 and out["images"]["removed"] == 0
    assert {f.split("/")[-1] for f in out["images"]["added_files"]} == {p.name for p in dropped}
    gained = sum(len([ln for ln in (good_export / "train" / "labels" / f"{p.stem}.txt").read_text().splitlines()
                      if ln.strip()]) for p in dropped)
    assert sum(c["change"] for c in out["boxes_per_class"].values()) == gained
    code, _, err = run_cli(capsys, "data", "diff", "cns_roboflow", "--from", "2", "--to", "5")
    assert code == 2 and "not synced" in _error(err)


def _bad_labels_export(good_export, tmp_path):
    bad = copy_export(good_export, tmp_path / "bad")
    labels = sorted((bad / "train" / "labels").glob("*.txt"))
    labels[0].write_text("0 1.5 0.5 0.2 0.2\n")  # outside [0, 1]
    labels[1].write_text("7 0.5 0.5 0.2 0.2\n")  # unknown class id
    labels[2].unlink()  # image without labels
    img = sorted((bad / "train" / "images").iterdir())[3]  # the same image in train and valid
    shutil.copy(img, bad / "valid" / "images" / f"dup_{img.name}")
    shutil.copy(bad / "train" / "labels" / f"{img.stem}.txt", bad / "valid" / "labels" / f"dup_{img.stem}.txt")
    return bad


def test_validation_reports_label_problems_and_strict_refuses(rf, capsys, good_export, tmp_path):
    rf.versions[CNS_REF] = fake_version(_bad_labels_export(good_export, tmp_path))
    code, out, err = run_cli(capsys, "data", "sync", "cns_roboflow", "--strict")
    assert code == 2 and "--strict" in _error(err)
    assert not _vdir().exists() and not list(_vdir().parent.iterdir())
    code, out, err = run_cli(capsys, "data", "sync", "cns_roboflow")
    assert code == 0
    problems = out["problems"]
    for kind in ("labels_out_of_range", "unknown_class_ids", "images_without_labels", "duplicates_across_splits"):
        assert problems[kind]["count"] == 1, (kind, problems)
    assert "class_names" not in problems


def test_wrong_class_names_are_reported(rf, capsys, good_export):
    data_yaml = (good_export / "data.yaml").read_text().replace("CHOROID_PLEXUS", "CHOROID")
    rf.versions[CNS_REF] = replace(rf.good, zip_bytes=zip_folder(good_export, replace={"data.yaml": data_yaml.encode()}))
    code, out, _ = run_cli(capsys, "data", "sync", "cns_roboflow")
    assert code == 0 and out["problems"]["class_names"]["count"] == 1
    assert "CHOROID_PLEXUS" in out["problems"]["class_names"]["examples"][0]
    assert run_cli(capsys, "data", "sync", "cns_roboflow", "--strict", "--force")[0] == 2


def _variants(good: bytes) -> dict:
    return {
        "truncated": dict(zip_bytes=truncated(good)),
        "short_body": dict(zip_bytes=good[: len(good) // 2], content_length=len(good)),
        "traversal": dict(zip_bytes=with_entry(good, "train/../../../../evil_traversal.txt")),
        "absolute": dict(zip_bytes=with_entry(good, "/tmp/fetal_detect_evil_absolute.txt")),
        "symlink": dict(zip_bytes=with_entry(good, "train/images/link.jpg", b"/etc/passwd", symlink=True)),
        "http_500_export": dict(export_status=500),
        "http_403_download": dict(download_status=403),
        "not_a_zip": dict(zip_bytes=b"<html>gateway error</html>"),
    }


@pytest.fixture(scope="module")
def installed_copy(tmp_path_factory):
    """One good install, copied into each variant's cache (the tests then differ only in the bad download)."""
    return {"dir": tmp_path_factory.mktemp("installed") / "v"}


@pytest.mark.parametrize("variant", list(_variants(b"x")))
def test_broken_or_malicious_download_is_rejected_whole(rf, capsys, variant, installed_copy):
    if installed_copy["dir"].exists():
        shutil.copytree(installed_copy["dir"], _vdir())
    else:
        assert run_cli(capsys, "data", "sync", "cns_roboflow")[0] == 0
        shutil.copytree(_vdir(), installed_copy["dir"])
    before = _snapshot(_vdir())
    good = rf.versions[CNS_REF]
    rf.versions[CNS_REF] = replace(good, created=good.created + 1, **_variants(good.zip_bytes)[variant])
    code, out, err = run_cli(capsys, "data", "sync", "cns_roboflow")
    assert code == 2 and out is None
    assert _error(err) and TEST_KEY not in err
    assert _snapshot(_vdir()) == before  # the previous version is intact
    assert roboflow_sync._files(_vdir()) == json.loads((_vdir() / "manifest.json").read_text())["files"]
    assert not [p for p in _vdir().parent.iterdir() if p.name != f"v{VERSION}"]  # no half-written folder
    cache = roboflow_sync.cache_root()
    assert not list(cache.parent.parent.rglob("evil_traversal.txt"))
    assert not Path("/tmp/fetal_detect_evil_absolute.txt").exists()


@pytest.mark.parametrize("name", ["../x.txt", "a/../../x.txt", "..\\x.txt", "/abs.txt", "C:/x.txt"])
def test_unsafe_zip_names_refuse_the_archive(tmp_path, name):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("data.yaml", "names: [a]\n")
    (tmp_path / "a.zip").write_bytes(with_entry(buf.getvalue(), name))
    (tmp_path / "out").mkdir()
    with pytest.raises(FetalDetectError, match="refused the whole archive"):
        roboflow_sync.safe_unpack(tmp_path / "a.zip", tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())  # checked before anything is written


def test_wrong_key_is_one_line_without_the_key(rf, capsys, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-key-zz9plural-alpha"
    monkeypatch.setenv("ROBOFLOW_API_KEY", wrong)
    code, out, err = run_cli(capsys, "data", "sync", "cns_roboflow")
    assert code == 2 and out is None
    assert "API key" in _error(err)
    assert wrong not in err and wrong not in caplog.text
    code, _, err = run_cli(capsys, "data", "sync", "cns_roboflow", "--api-key", wrong)
    assert code == 2 and wrong not in err
    assert not roboflow_sync.version_dir(roboflow_sync.RoboflowRef(*CNS_REF)).exists()


def test_http_errors_are_one_line(rf, capsys):
    code, _, err = run_cli(capsys, "data", "sync", "--workspace", WS, "--project", "no-such-project", "--version", "1")
    assert code == 2 and "does not exist" in _error(err) and TEST_KEY not in err
    code, _, err = run_cli(capsys, "data", "sync", "cns_roboflow", "--version", "9")
    assert code == 2 and "not found" in _error(err)


def test_cli_process_exits_nonzero_on_traversal(rf, tmp_path):
    rf.versions[CNS_REF] = replace(rf.good, zip_bytes=with_entry(rf.good.zip_bytes, "../../evil_proc.txt"))
    env = {**os.environ, "FETAL_DETECT_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "fetal_detect", "data", "sync", "cns_roboflow"], env=env,
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode != 0 and "'..' in the path" in r.stderr and TEST_KEY not in r.stdout + r.stderr
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("v2"))
    assert not list(tmp_path.rglob("evil_proc.txt"))
