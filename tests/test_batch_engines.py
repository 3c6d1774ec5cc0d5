"""Batch runs: both engines give identical rows; a corrupt file is an error row, not a stop."""
from pathlib import Path

import cv2
import pandas as pd
import pytest

from fetal_detect.batch import TIMING, run_batch
from fetal_detect.data.phantom import make_hc

N = 40
CORRUPT = "hc_020_corrupt.png"  # sorts into the middle of the 40 phantoms


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """40 small HC phantoms and one truncated PNG in the middle."""
    d = tmp_path_factory.mktemp("archive")
    for i in range(N):
        cv2.imwrite(str(d / f"hc_{i:03d}.png"), make_hc(i, size=(320, 216)).image)
    (d / CORRUPT).write_bytes((d / "hc_000.png").read_bytes()[:60])
    return d


@pytest.fixture(scope="module")
def local_out(archive, tiny_hc_model, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("local") / "rows.parquet"
    summary = run_batch(archive, out, task="hc", engine="local", workers=2, weights=[str(tiny_hc_model)],
                        progress=False)
    return out, summary


def test_local_engine_writes_one_row_per_image(local_out):
    out, summary = local_out
    df = pd.read_parquet(out)
    assert summary["new"] == N + 1 and summary["rows"] == N + 1
    assert len(df) == N + 1 and df["path"].is_unique and df["sha256"].str.len().eq(64).all()
    for col in ("path", "sha256", "plane", "measurers", "hc_mm", "bpd_mm", "nt_mm", "quality", "status", "reason", "models",
                "processing_ms"):
        assert col in df.columns
    assert set(df["status"]) <= {"ok", "no_finding", "error"}  # a 1-epoch model may find no skull
    assert df["models"].str.startswith("hc-seg=best.pt@").all()
    assert not Path(str(out) + ".parts").exists()  # journals consolidated and removed


def test_corrupt_file_in_the_middle_is_an_error_row(local_out):
    out, _ = local_out
    df = pd.read_parquet(out).set_index(pd.read_parquet(out)["path"].map(lambda p: Path(p).name))
    bad = df.loc[CORRUPT]
    assert bad["status"] == "error" and CORRUPT in bad["reason"] and "corrupt PNG" in bad["reason"]
    assert len(df.drop(index=CORRUPT)) == N  # every image after it still has its row


def test_local_and_ray_engines_give_identical_rows(archive, tiny_hc_model, local_out, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'fetal-detect[ray]')")
    out = tmp_path / "rows.parquet"
    summary = run_batch(archive, out, task="hc", engine="ray", workers=2, weights=[str(tiny_hc_model)],
                        progress=False)
    assert summary["new"] == N + 1
    a = pd.read_parquet(local_out[0]).drop(columns=list(TIMING))
    b = pd.read_parquet(out).drop(columns=list(TIMING))
    pd.testing.assert_frame_equal(a, b)
