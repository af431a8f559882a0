"""Profiles, folders and the verified result cache."""
import json

import pytest
import torch

from paperlib import cache, config, report


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "cache"))


def test_profile_selection(monkeypatch):
    monkeypatch.setenv("PAPERLIB_PROFILE", "smoke")
    assert config.profile() == "smoke"
    assert config.choose(smoke=1, cpu=2, gpu=3) == 1
    monkeypatch.setenv("PAPERLIB_PROFILE", "cpu")
    assert config.choose(smoke=1, cpu=2, gpu=3) == 2
    monkeypatch.delenv("PAPERLIB_PROFILE")
    assert config.profile() == ("gpu" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("PAPERLIB_PROFILE", "huge")
    with pytest.raises(ValueError, match="PAPERLIB_PROFILE"):
        config.profile()


def test_choose_needs_every_profile():
    with pytest.raises(ValueError, match="missing"):
        config.choose(smoke=1, cpu=2)


def test_cached_reuses_and_recomputes_on_config_change():
    calls = []

    def compute(v):
        calls.append(v)
        return torch.full((3,), float(v))

    a = cache.cached("curve", {"n": 1}, lambda: compute(1))
    b = cache.cached("curve", {"n": 1}, lambda: compute(99))
    c = cache.cached("curve", {"n": 2}, lambda: compute(2))
    assert calls == [1, 2]
    assert torch.equal(a, b) and torch.equal(c, torch.full((3,), 2.0))


def test_corrupted_or_truncated_file_is_recomputed():
    cache.cached("curve", {"n": 1}, lambda: torch.arange(1000.0))
    path = cache.entry_dir("curve", {"n": 1}) / "result.pt"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="checksum"):
        again = cache.cached("curve", {"n": 1}, lambda: torch.zeros(2))
    assert torch.equal(again, torch.zeros(2))
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match="checksum"):
        assert cache.load(path) is None


def test_key_is_order_independent_and_code_version_tracks_source():
    assert cache.key({"a": 1, "b": 2}) == cache.key({"b": 2, "a": 1})
    assert cache.key({"a": 1}) != cache.key({"a": 2})

    def f():
        return 1

    def g():
        return 2

    assert cache.code_version(f) != cache.code_version(g)
    with pytest.raises(ValueError, match="config"):
        cache.key([1, 2])
    with pytest.raises(ValueError, match="name"):
        cache.entry_dir("../escape", {})


def test_report_rows_roundtrip(monkeypatch):
    monkeypatch.setenv("PAPERLIB_PROFILE", "smoke")
    report.start("99_demo", "Demo")
    report.record("99_demo", "rate", 0.5, paper=0.922, verdict="qualitatively")
    report.record("99_demo", "rate", 0.6, paper=0.922, verdict="qualitatively")  # replaced, not duplicated
    rows = report.rows("99_demo")
    assert rows == [{"quantity": "rate", "paper": 0.922, "ours": 0.6, "verdict": "qualitatively", "note": ""}]
    assert "| rate | 0.922 | 0.6 | **qualitatively** |" in report.markdown("99_demo")
    report.record("99_demo", "P(||n|| <= r)", 0.99, verdict="reproduced")
    row = report.markdown("99_demo").splitlines()[-1]
    assert row.count(" | ") == 4  # the pipes of ||n|| are escaped and do not split the row
    board = report.scoreboard(exclude=())
    assert "1 reproduced, 1 qualitatively" in board and "### Demo" in board
    with pytest.raises(ValueError, match="verdict"):
        report.record("99_demo", "x", 1, verdict="maybe")
    assert json.loads(json.dumps(report.load_all()))[0]["title"] == "Demo"


def test_scoreboard_archived_column(monkeypatch, tmp_path):
    monkeypatch.setenv("PAPERLIB_PROFILE", "smoke")
    report.start("98_demo", "Demo")
    report.record("98_demo", "rate", 0.5, paper=0.922, verdict="qualitatively")
    report.record("98_demo", "zone", "[1, 2]", verdict="n/a")
    archive = tmp_path / "gpu_records"
    archive.mkdir()
    doc = {"chapter": "98_demo", "title": "Demo", "url": "", "profile": "gpu", "started": "2026-11-23T08:00:00+00:00",
           "rows": [{"quantity": "rate", "paper": 0.922, "ours": 0.9, "verdict": "reproduced", "note": ""},
                    {"quantity": "only on gpu", "paper": None, "ours": 7, "verdict": "n/a", "note": ""}],
           "run": {"device": "NVIDIA H100", "seconds": 12.5, "commit": "abc1234"}}
    (archive / "98_demo.json").write_text(json.dumps(doc))
    board = report.scoreboard(exclude=(), archive=archive).splitlines()
    start = board.index("### Demo")
    assert "NVIDIA H100" in board[start + 2] and "`abc1234`" in board[start + 2] and "12.5 s" in board[start + 2]
    table = board[start + 4:]
    assert table[0] == "| quantity | paper says | we measure | GPU (archived) | verdict |"
    assert "| rate | 0.922 | 0.5 | 0.9 | **qualitatively** (GPU (archived): **reproduced**) |" in table
    assert "| zone | – | [1, 2] | – | **n/a** |" in table  # no archived value
    assert "| only on gpu | – | – | 7 | **n/a** |" in table  # archived only
    # no archive folder (e.g. a notebook opened alone on Colab): the plain table
    assert "GPU (archived)" not in report.scoreboard(exclude=(), archive=tmp_path / "missing")
