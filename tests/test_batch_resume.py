"""Resumable batches: a killed run keeps its flushed rows; re-running skips hashes already done."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pandas as pd

from fetal_detect.batch import run_batch
from fetal_detect.data.phantom import make_hc

N = 80  # enough rows that the kill always lands mid-run, even on an idle machine


def _archive(folder: Path) -> Path:
    folder.mkdir()
    for i in range(N):
        cv2.imwrite(str(folder / f"hc_{i:03d}.png"), make_hc(100 + i, size=(320, 216)).image)
    return folder


def _journal_rows(parts: Path) -> int:
    return sum(j.read_text().count("\n") for j in parts.glob("*.jsonl")) if parts.is_dir() else 0


def test_resume_after_kill_has_all_rows_and_no_duplicates(tiny_hc_model, tmp_path):
    src, out = _archive(tmp_path / "in"), tmp_path / "rows.csv"
    parts = tmp_path / "rows.csv.parts"
    cmd = [sys.executable, "-m", "fetal_detect", "-q", "batch", str(src), "--out", str(out), "--task", "hc",
           "--workers", "1", "--weights", str(tiny_hc_model), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 240
        while _journal_rows(parts) < 3 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its pool workers, mid-run
        proc.wait()
    flushed = _journal_rows(parts)
    assert 3 <= flushed < N, "the run should have been killed part-way"
    assert not out.exists()

    summary = run_batch(src, out, task="hc", workers=0, weights=[str(tiny_hc_model)], progress=False)
    assert summary["skipped"] >= flushed and summary["new"] == N - summary["skipped"]
    df = pd.read_csv(out)
    assert len(df) == N and df["path"].is_unique and df["sha256"].is_unique
    assert not parts.exists()

    again = run_batch(src, out, task="hc", workers=0, weights=[str(tiny_hc_model)], progress=False)
    assert again["new"] == 0 and again["skipped"] == N and len(pd.read_csv(out)) == N
