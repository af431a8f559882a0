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
    assert config.choose(smoke=1, cpu=2, gpu=3, paper=4) == 1
    monkeypatch.setenv("PAPERLIB_PROFILE", "cpu")
    assert config.choose(smoke=1, cpu=2, gpu=3, paper=4) == 2
    monkeypatch.setenv("PAPERLIB_PROFILE", "paper")
    assert config.choose(smoke=1, cpu=2, gpu=3, paper=4) == 4
    monkeypatch.delenv("PAPERLIB_PROFILE")
    assert config.profile() == ("gpu" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("PAPERLIB_PROFILE", "huge")
    with pytest.raises(ValueError, match="PAPERLIB_PROFILE"):
        config.profile()


def test_choose_needs_every_profile():
    with pytest.raises(ValueError, match="missing"):
        config.choose(smoke=1, cpu=2)
    with pytest.raises(ValueError, match="missing \\['paper'\\]"):
        config.choose(smoke=1, cpu=2, gpu=3)


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
    monkeypatch.setattr(report, "STRICT", False)  # bare verdicts: the row format, not the policy
    monkeypatch.setenv("PAPERLIB_PROFILE", "smoke")
    report.start("99_demo", "Demo")
    report.record("99_demo", "rate", 0.5, paper=0.922, verdict="qualitatively")
    report.record("99_demo", "rate", 0.6, paper=0.922, verdict="qualitatively")  # replaced, not duplicated
    rows = report.rows("99_demo")
    assert rows == [{"quantity": "rate", "paper": 0.922, "ours": 0.6, "verdict": "qualitatively", "criterion": "",
                     "note": "", "ref": None}]
    assert "| rate | 0.922 | – | 0.6 | **qualitatively** |" in report.markdown("99_demo")
    report.record("99_demo", "P(||n|| <= r)", 0.99, verdict="reproduced")
    row = report.markdown("99_demo").splitlines()[-1]
    assert row.count(" | ") == 5  # the pipes of ||n|| are escaped and do not split the row
    board = report.scoreboard(exclude=())
    assert "1 reproduced, 1 qualitatively" in board and "### Demo" in board
    with pytest.raises(ValueError, match="verdict"):
        report.record("99_demo", "x", 1, verdict="maybe")
    assert json.loads(json.dumps(report.load_all()))[0]["title"] == "Demo"


def test_scoreboard_archived_column(monkeypatch, tmp_path):
    monkeypatch.setattr(report, "STRICT", False)  # bare verdicts: the row format, not the policy
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
    assert table[0] == "| quantity | paper says | criterion | we measure | GPU (archived) | verdict |"
    assert "| rate | 0.922 | – | 0.5 | 0.9 | **qualitatively** (GPU (archived): **reproduced**) |" in table
    assert "| zone | – | – | [1, 2] | – | **n/a** |" in table  # no archived value
    assert "| only on gpu | – | – | – | 7 | **n/a** |" in table  # archived only
    # no archive folder (e.g. a notebook opened alone on Colab): the plain table
    assert "GPU (archived)" not in report.scoreboard(exclude=(), archive=tmp_path / "missing")


def test_criteria_compute_verdicts_and_state_their_rule(monkeypatch):
    monkeypatch.setenv("PAPERLIB_PROFILE", "smoke")
    c = report.at_least(60, qualitatively=30)
    assert [c(v) for v in (61, 60, 45, 29, float("nan"))] == \
        ["reproduced", "reproduced", "qualitatively", "not reproduced", "not reproduced"]
    assert c.text == "reproduced if ≥ 60; qualitatively if ≥ 30"
    m = report.at_most(5)
    assert (m(5), m(5.01)) == ("reproduced", "not reproduced")
    b = report.between(0.8, 1.25, qualitatively=(0.5, 2))
    assert [b(v) for v in (1.0, 0.6, 3)] == ["reproduced", "qualitatively", "not reproduced"]
    h = report.holds("both edges inside", reproduced=False, qualitatively=True)
    assert h("anything") == "qualitatively"
    report.start("97_demo", "Demo")
    assert report.record("97_demo", "peak", 14.4, paper=None, criterion=report.at_least(30), ref="Fig. 2",
                         figure="fig-02-peak") == "not reproduced"
    row = report.rows("97_demo")[0]
    assert row["criterion"] == "reproduced if ≥ 30" and row["ref"] == "Fig. 2" and row["figure"] == "fig-02-peak"
    assert "| peak | – | reproduced if ≥ 30 | 14.4 | **not reproduced** |" in report.markdown("97_demo")
    assert "{ref}`figure <fig-02-peak>`" in report.scoreboard(exclude=())
    with pytest.raises(ValueError, match="either criterion or verdict"):
        report.record("97_demo", "x", 1, verdict="n/a", criterion=c)
    with pytest.raises(ValueError, match="threshold"):
        report.at_least(float("nan"))
    with pytest.raises(ValueError, match="chapter"):
        report.start("../escape", "x")
    with pytest.raises(ValueError, match="chapter"):
        report.record("a/b", "x", 1)


def test_records_from_two_processes_are_all_kept(monkeypatch, tmp_path):
    """Concurrent report.record calls (two processes, one chapter) lose no row and leave valid JSON."""
    import subprocess
    import sys

    monkeypatch.setenv("PAPERLIB_PROFILE", "smoke")
    report.start("96_demo", "Demo")
    script = ("import sys\nfrom paperlib import report\n"
              "for i in range(60):\n    report.record('96_demo', f'{sys.argv[1]} row {i}', i)\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, tag]) for tag in ("a", "b")]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    quantities = {r["quantity"] for r in report.rows("96_demo")}
    assert quantities == {f"{t} row {i}" for t in "ab" for i in range(60)}


def test_settings_table_shows_all_profiles(monkeypatch):
    monkeypatch.setenv("PAPERLIB_PROFILE", "cpu")
    s = dict(smoke=dict(n=8, net=dict(ch=8)), cpu=dict(n=64, net=dict(ch=16)), gpu=dict(n=1000, net=dict(ch=64)),
             paper=dict(n=2000, net=dict(ch=128), only_paper=True))
    t = config.settings_table(s, notes={"n": "training images"}).splitlines()
    assert t[0] == "| setting | smoke | **cpu** (running) | gpu | paper | meaning |"
    assert "| `n` | 8 | **64** | 1,000 | 2,000 | training images |" in t
    assert "| `only_paper` | – | – | – | True |  |" in t
    with pytest.raises(ValueError, match="paper"):
        config.settings_table({k: v for k, v in s.items() if k != "paper"})


def test_environment_errors_name_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("PAPERLIB_DEVICE", "warp-drive")
    with pytest.raises(ValueError, match="PAPERLIB_DEVICE"):
        config.device()
    f = tmp_path / "file"
    f.write_text("x")
    monkeypatch.setenv("PAPERLIB_CACHE", str(f))
    with pytest.raises(ValueError, match="PAPERLIB_CACHE"):
        config.cache_dir()


def test_results_table_gives_every_paper_result_a_status(monkeypatch):
    monkeypatch.setenv("PAPERLIB_PROFILE", "smoke")
    report.start("95_demo", "Demo", "notebooks/95_demo")
    report.record("95_demo", "peak", 14.0, criterion=report.at_least(10), ref="Fig. 2", figure="fig-peak")
    report.record("95_demo", "ends", 20.0, criterion=report.at_most(5, qualitatively=30), ref="Fig. 2")
    report.record("95_demo", "our bound", 1.0, verdict="companion variant", ref="Cor. A.2")
    report.record("95_demo", "grid drawn", "yes", ref="Fig. 10")
    registry = [{"ref": "Fig. 2", "what": "per-level", "chapter": "95_demo"},
                {"ref": "Cor. A.2", "what": "cosine", "chapter": "95_demo"},
                {"ref": "Fig. 10", "what": "samples", "chapter": "95_demo", "illustrates": "Table 1"},
                {"ref": "Lemma B.2", "what": "identity", "chapter": "95_demo", "why": "a textbook step"}]
    out = report.results_table(registry)
    assert "4 numbered results" in out
    assert "| Fig. 2 | per-level | [Demo](../notebooks/95_demo.ipynb) | **qualitatively** | 2, {ref}`figure <fig-peak>` |" in out
    assert "**companion variant**" in out and "**illustrated (numbers: Table 1)**" in out
    assert "**missing: a textbook step**" in out
    with pytest.raises(ValueError, match="what"):
        report.results_table([{"ref": "Fig. 1", "chapter": "x"}])


def test_registry_lists_every_numbered_result_of_the_paper():
    """book/paper_results.yml names every Figure, Table, Theorem, Lemma and Corollary in the paper's text."""
    import re
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    registry = yaml.safe_load((root / "book" / "paper_results.yml").read_text())
    refs = {e["ref"] for e in registry}
    assert len(refs) == len(registry)
    text = (root.parent / "shared" / "paper" / "two-calm-ends-full-text.txt")
    if not text.exists():
        pytest.skip("the paper's text is not beside this clone")
    body = text.read_text()
    named = set()
    for kind, short in (("Figure", "Fig."), ("Table", "Table"), ("Theorem", "Thm"), ("Lemma", "Lemma"),
                        ("Corollary", "Cor.")):
        for num in re.findall(rf"^{kind} ([A-Z]?\d+(?:\.\d+)?)[ .(]", body, flags=re.M) + \
                re.findall(rf"{kind} (\d+)\b", body if kind in ("Figure", "Table") else ""):
            named.add(f"{short} {num}")
    covered = set(refs) | {f"Fig. {i}" for i in range(11, 20)}
    assert named - covered == set(), f"numbered results without a registry entry: {sorted(named - covered)}"


def test_strict_verdicts_need_a_criterion(monkeypatch):
    monkeypatch.setenv("PAPERLIB_PROFILE", "smoke")
    assert report.STRICT
    report.start("97_demo", "Demo")
    with pytest.raises(ValueError, match="criterion"):
        report.record("97_demo", "rate", 0.5, paper=0.9, verdict="reproduced")
    assert report.record("97_demo", "rate", 0.5, paper=0.9, criterion=report.at_least(0.8, qualitatively=0.4)) \
        == "qualitatively"
    assert report.record("97_demo", "zone", "[1, 2]", verdict="n/a") == "n/a"
