"""Fast by default: a parity-checked INT8 ONNX of the shipped model is what analyze/batch/serve load, unless
``--backend torch``; a stale or unverified export never is."""
import json

import pytest

from fetal_detect import settings, tasks
from fetal_detect.errors import FetalDetectError
from fetal_detect.runtime import default_weights, verified_export


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(tasks, "WEIGHTS_DIR", weights)
    monkeypatch.setattr("fetal_detect.runtime.WEIGHTS_DIR", weights)
    monkeypatch.setattr(settings, "RUNS_DIR", tmp_path / "runs")
    (weights / "hc-seg.pt").write_bytes(b"the shipped checkpoint")
    return weights


def _export(path, source: bytes, passed: bool):
    import hashlib

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"onnx")
    path.with_suffix(".json").write_text(json.dumps({"metrics": {"passed": passed},
                                                     "source_sha256": hashlib.sha256(source).hexdigest()}))
    return path


def test_a_verified_int8_export_of_the_shipped_model_is_the_default(shipped):
    t = tasks.get_task("hc-seg")
    assert default_weights(t) is None  # nothing verified: the shipped .pt (resolve_weights decides)
    cached = _export(settings.RUNS_DIR / "export" / "hc-seg" / "hc-seg-int8.onnx", b"the shipped checkpoint", True)
    assert verified_export(t) == cached and default_weights(t) == cached
    assert default_weights(t, "torch") == shipped / "hc-seg.pt"
    in_weights = _export(shipped / "hc-seg-int8.onnx", b"the shipped checkpoint", True)
    assert default_weights(t) == in_weights  # a shipped one first


@pytest.mark.parametrize("source, passed", [(b"other weights", True), (b"the shipped checkpoint", False)])
def test_a_stale_or_failed_export_is_never_used(shipped, source, passed):
    t = tasks.get_task("hc-seg")
    _export(settings.RUNS_DIR / "export" / "hc-seg" / "hc-seg-int8.onnx", source, passed)
    assert verified_export(t) is None and default_weights(t) is None
    with pytest.raises(FetalDetectError, match="no verified ONNX"):
        default_weights(t, "onnx")


def test_the_shipped_checkpoint_is_hashed_once_per_version_of_the_file(shipped, monkeypatch):
    import hashlib
    import os

    t = tasks.get_task("hc-seg")
    cached = _export(settings.RUNS_DIR / "export" / "hc-seg" / "hc-seg-int8.onnx", b"the shipped checkpoint", True)
    hashed = []
    real = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *a: hashed.append(1) or real(*a))
    assert [verified_export(t) for _ in range(3)] == [cached] * 3 and len(hashed) == 1  # not once per model load
    pt = shipped / "hc-seg.pt"
    pt.write_bytes(b"retrained weights")  # another size: hashed again, and the export is now stale
    assert verified_export(t) is None and len(hashed) == 2
    pt.write_bytes(b"retrained weightZ")  # the same size, a later mtime: hashed again
    os.utime(pt, ns=(pt.stat().st_atime_ns, pt.stat().st_mtime_ns + 10**9))
    assert verified_export(t) is None and len(hashed) == 3
