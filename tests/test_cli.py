"""The command line (python -m paperlib): the danger zone of an image folder, train/sample with the cache."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from paperlib import data
from paperlib.__main__ import main


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(12):
        sub = tmp_path / "imgs" / f"c{k % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(sub / f"{k}.png")
    return tmp_path / "imgs"


def test_load_folder(folder):
    x = data.load_folder(folder, size=8)
    assert x.shape == (12, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    g = data.load_folder(folder, size=8, grayscale=True)
    assert g.shape == (12, 1, 8, 8)
    with pytest.raises(ValueError, match="size"):
        data.load_folder(folder, size=0)
    with pytest.raises(ValueError, match="folder"):
        data.load_folder(folder / "missing")


def test_danger_zone_of_a_folder(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "zone.json"
    assert main(["danger-zone", str(folder), "--size", "8", "--levels", "12", "--n-noise", "2", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["n"] == 12 and summary["d"] == 192 and len(summary["max_weight"]) == 12
    w = np.array(summary["max_weight"])
    assert w[0] > 0.99 and w[-1] < 0.5  # one-hot at small sigma, spread out at large sigma


def test_train_then_sample_reuses_the_cache(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "cache"))
    args = [str(folder), "--size", "8", "--steps", "6", "--batch-size", "4", "--channels", "8", "--threads", "1"]
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["train", *args, "--out", str(first)]) == 0
    assert json.loads(first.read_text())["from_cache"] is False
    assert main(["sample", *args, "--samples", "4", "--sampling-steps", "3", "--out", str(second)]) == 0
    s = json.loads(second.read_text())
    assert s["model_folder"] == json.loads(first.read_text())["folder"]
    assert 0.0 <= s["memorization_rate"] <= 1.0


def test_bad_arguments_give_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "paperlib", "danger-zone", str(tmp_path / "nothing-here")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "error" in proc.stderr and "Traceback" not in proc.stderr
