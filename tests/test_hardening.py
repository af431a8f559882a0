"""Issue 12: hostile and extreme input. Each test failed before its fix (see the comment on each) and
checks a clear error (naming the argument) or a right number."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from paperlib import cache, edm, geometry, memorization, regimes, shells, training

F64 = torch.float64
TINY = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [4], "dropout": 0.0}
CFG = {"steps": 30, "batch_size": 6, "warmup_steps": 0, "ema_halflife": 4, "network": TINY, "seed": 3}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ duplicates and ties (float32)
def duplicated(dtype, n=100, n_dup=10, d=64):
    x = torch.rand(n - n_dup, d, generator=gen(1), dtype=F64) * 2 - 1
    return torch.cat([x, x[:n_dup]]).to(dtype)


def test_duplicated_points_share_their_weight_in_float32_as_in_float64():
    # before: float32 gave W = 0.936 (a duplicated point weighted ~0.65 instead of 0.5)
    sig = [0.002, 0.01]
    w32 = geometry.max_posterior_weight(duplicated(torch.float32), sig, 4, gen(2), progress=False)
    w64 = geometry.max_posterior_weight(duplicated(F64), sig, 4, gen(2), progress=False)
    expected = (80 * 1.0 + 20 * 0.5) / 100
    torch.testing.assert_close(w64, torch.full((2,), expected, dtype=F64), atol=1e-9, rtol=0)
    torch.testing.assert_close(w32, w64, atol=1e-6, rtol=0)
    s32 = geometry.self_posterior_weight(duplicated(torch.float32), sig, 4, gen(2), progress=False)
    torch.testing.assert_close(s32, torch.full((2,), expected, dtype=F64), atol=1e-6, rtol=0)


def test_coverage_bounds_with_copies_of_training_points_keep_upper_above_lower():
    # before: float32 gave upper < lower for test points that are copies of training points
    train = torch.rand(200, 3072, generator=gen(3)) * 2 - 1
    test = torch.cat([train[:20], torch.rand(10, 3072, generator=gen(4)) * 2 - 1])
    sig = torch.tensor([0.002, 0.01, 0.1, 1.0, 10.0], dtype=F64)
    lo, hi = geometry.coverage_bounds(train, test, sig, progress=False)
    assert bool((hi >= lo - 1e-10).all()), (lo, hi)
    lo64, hi64 = geometry.coverage_bounds(train.double(), test.double(), sig, progress=False)
    torch.testing.assert_close(lo, lo64, atol=1e-9, rtol=0)
    torch.testing.assert_close(hi, hi64, atol=1e-6, rtol=0)


# ------------------------------------------------------------------ outliers (float32)
def with_outliers(dtype, scale=1000.0):
    x = torch.rand(300, 3072, generator=gen(5), dtype=F64) * 2 - 1
    x[:3] *= scale
    return x.to(dtype)


def test_self_coverage_with_outliers_in_float32_matches_float64():
    # before: 3 images at 1000x among 300 dropped float32 self-coverage at sigma 0.002 to ~0.54
    sig = [0.002, 0.02]
    c32 = geometry.coverage(with_outliers(torch.float32), with_outliers(torch.float32), sig, 4, gen(6), progress=False)
    c64 = geometry.coverage(with_outliers(F64), with_outliers(F64), sig, 4, gen(6), progress=False)
    assert c64.min() > 0.95
    torch.testing.assert_close(c32, c64, atol=0.02, rtol=0)


def test_danger_zone_with_outliers_does_not_start_at_the_smallest_sigma():
    # before: with 3 training images at 1e7 x scale, float32 reported a zone starting at sigma = 0.002
    # (coverage of held-out images 0.6 there instead of 0)
    x = torch.rand(400, 3072, generator=gen(5), dtype=F64) * 2 - 1
    x[:3] *= 1e7
    train, test = x[:300], x[300:]
    sig = regimes.default_sigmas(16)
    z32 = regimes.danger_zone(train.float(), test.float(), sig, n_noise=2, generator=gen(7), progress=False)
    z64 = regimes.danger_zone(train, test, sig, n_noise=2, generator=gen(7), progress=False)
    assert float(z32.coverage[0]) == 0.0 and not z32.empty and z32.lower > 1.0
    # (float32 and float64 draw different noise, so the edges agree up to Monte Carlo error)
    assert abs(math.log(z32.lower / z64.lower)) < 0.2 and abs(math.log(z32.upper / z64.upper)) < 0.2


# ------------------------------------------------------------------ extreme sigma, far points
def test_tiny_sigma_gives_the_exact_limit_not_an_overflow():
    # before: sigma = 1e-30 raised RuntimeError (value cannot be converted to float without overflow)
    data = torch.rand(20, 8, generator=gen(8)) * 2 - 1
    x = data[:3] + 1e-3 * torch.randn(3, 8, generator=gen(9))
    nearest = geometry.nearest_neighbors(x, data, 1)[1][:, 0]
    for s in (1e-30, 1e-100):
        w = geometry.posterior_weights(x, data, s)
        assert torch.isfinite(w).all()
        torch.testing.assert_close(w, torch.nn.functional.one_hot(nearest, 20).float())
        torch.testing.assert_close(geometry.empirical_denoiser(x, data, s), data[nearest])
        torch.testing.assert_close(geometry.max_weight_at(x, data, s), torch.ones(3))
    W = geometry.max_posterior_weight(data, [1e-30, 1e-100], 2, gen(1), progress=False)
    torch.testing.assert_close(W, torch.ones(2, dtype=F64))
    C = geometry.coverage(data, data, [1e-30], 2, gen(1), progress=False)
    C64 = geometry.coverage(data.double(), data.double(), [1e-30], 2, gen(1), progress=False)
    torch.testing.assert_close(C, C64)
    with pytest.raises(ValueError, match="sigma"):
        geometry.posterior_weights(x, data, 1e-200)


def test_shell_hit_probability_of_far_points_is_zero_not_nan():
    # before: NaN for r / sigma around 5e10 and beyond (scipy's ncx2)
    r = torch.tensor([1e8, 1e12, 1e30, 1e200], dtype=F64)
    for d in (2, 3072):
        p = geometry.shell_hit_probability(r, 0.002, d)
        assert torch.equal(p, torch.zeros(4, dtype=F64))
    assert geometry.shell_hit_probability(0.0, 1.0, 3072).item() > 0.98


# ------------------------------------------------------------------ messages name the right argument
def test_messages_name_the_right_argument():
    train = torch.randn(10, 4, dtype=F64)
    test = torch.randn(3, 4, dtype=F64)
    bad = torch.full((3, 4), float("nan"), dtype=F64)
    cases = [
        (lambda: geometry.coverage_bounds(train, bad, [1.0], progress=False), "test"),
        (lambda: geometry.coverage_bounds(bad.repeat(4, 1), test, [1.0], progress=False), "train"),
        (lambda: geometry.coverage_bounds(train, test[:, :3], [1.0], progress=False), "test"),
        (lambda: regimes.danger_zone(torch.full((10, 4), float("nan")), None, [1.0], progress=False), "train"),
        (lambda: regimes.danger_zone(train, bad, [1.0], progress=False), "test"),
        (lambda: geometry.concentration_thresholds(train, "12"), "index"),
        (lambda: geometry.concentration_thresholds(train, 1.5), "index"),
        (lambda: memorization.one_third_rule(test, train, ratio=True), "ratio"),
        (lambda: geometry.max_posterior_weight(train, [1.0], True, progress=False), "n_noise"),
        (lambda: geometry.coverage(train, test, "0.1", progress=False), "sigmas"),
        (lambda: geometry.coverage(train, test, [1.0], generator=5, progress=False), "generator"),
        (lambda: geometry.shell_radii(100, tail=float("nan")), "tail"),
        (lambda: geometry.shell_hit_probability("1", 1.0, 4), "r"),
    ]
    for fn, word in cases:
        with pytest.raises(ValueError, match=word):
            fn()


# ------------------------------------------------------------------ training
def tiny_data():
    return torch.rand(10, 1, 8, 8, generator=gen(0)) * 2 - 1


def test_diverging_training_stops_with_a_clear_error_and_is_never_cached(tmp_path, monkeypatch, one_thread):
    # before: lr = 1e6 ended normally, cached the NaN model as finished and served it on rerun
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "cache"))
    cfg = dict(CFG, lr=1e6)
    for _ in range(2):  # the second call trains again (nothing was cached) and fails again
        with pytest.raises(training.TrainingDiverged, match="diverged at step"):
            training.train(cfg, tiny_data(), name="nan", progress=False, device="cpu", checkpoint_every=5)
        folder = cache.entry_dir("nan", training.cache_config(cfg, tiny_data()))
        assert not (folder / "final.pt").exists()


@pytest.mark.parametrize("key,value", [
    ("grad_clip", -1.0), ("grad_clip", float("nan")), ("steps", True), ("batch_size", 2.0), ("seed", False),
    ("lr", float("inf")), ("warmup_steps", True), ("adam_betas", [0.9, 1.5]), ("adam_eps", 0), ("sigma_data", -0.5),
    ("P_std", 0), ("dummy_class", 1), ("dummy_count", True), ("snapshots", [True]), ("ema_rampup", -1),
    ("network", {"model_channels": True}),
])
def test_training_config_is_validated(key, value):
    # before: booleans passed as integers and a negative grad_clip flipped the gradient
    with pytest.raises(ValueError, match=key):
        training.resolve_config({key: value})


@pytest.mark.parametrize("make,word", [
    (lambda: (tiny_data() * 127.5 + 127.5).to(torch.uint8), "uint8"),
    (lambda: tiny_data() * 127.5 + 127.5, "127.5"),
    (lambda: tiny_data() * 3, r"\[-1, 1\]"),
])
def test_training_data_must_be_images_in_minus_one_one(make, word):
    # before: uint8 images 0..255 were trained on as they were
    with pytest.raises(ValueError, match=word):
        training.cache_config(CFG, make())


# ------------------------------------------------------------------ load_folder: modes, non-images, .tif
def _save(path, array, mode=None, **kw):
    from PIL import Image
    im = Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)
    im.save(path, **kw)


def test_load_folder_decodes_16bit_palette_alpha_cmyk_and_la(tmp_path):
    # before: 16-bit PNGs came back all white (values clipped at 255)
    from PIL import Image
    from paperlib import data
    rng = np.random.default_rng(0)
    g16 = rng.integers(0, 65536, (8, 8), dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "a16.png")  # mode I;16
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "b_rgb.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "c_palette.png")
    rgba = np.concatenate([rgb, np.full((8, 8, 1), 128, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "d_rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "e_cmyk.tif")
    la = np.stack([rgb[:, :, 0], np.full((8, 8), 200, np.uint8)], axis=2)
    Image.fromarray(la, "LA").save(tmp_path / "f_la.png")
    x = data.load_folder(tmp_path, grayscale=True)
    assert x.shape == (6, 1, 8, 8) and x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(x[0, 0], torch.from_numpy(g16.astype(np.float64) / 65535 * 2 - 1).float(), atol=1e-5, rtol=0)
    assert float(x[0].std()) > 0.3  # not all white
    torch.testing.assert_close(x[5, 0], torch.from_numpy(rgb[:, :, 0].astype(np.float32) / 127.5 - 1))
    c = data.load_folder(tmp_path)
    assert c.shape == (6, 3, 8, 8)
    ref = torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(c[1], ref)  # RGB exact
    torch.testing.assert_close(c[3], ref)  # RGBA: alpha dropped, colours kept
    pal = torch.from_numpy(np.asarray(Image.open(tmp_path / "c_palette.png").convert("RGB"))).permute(2, 0, 1)
    torch.testing.assert_close(c[2], pal.float() / 127.5 - 1)  # palette: its colours
    assert (c[4] - ref).abs().mean() < 0.1  # CMYK .tif, now read (was skipped)
    torch.testing.assert_close(c[0, 0], c[0, 1])


def test_load_folder_skips_hidden_and_non_images_with_a_count_and_refuses_float_images(tmp_path):
    # before: a macOS ._x.png or a non-image named .png aborted with a PIL traceback
    from PIL import Image
    from paperlib import data
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    for i in range(3):
        Image.fromarray(rgb).save(tmp_path / f"img{i}.png")
    (tmp_path / "._img0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.warns(UserWarning, match="skipped 2 file"):
        x = data.load_folder(tmp_path)
    assert x.shape == (3, 3, 8, 8)
    Image.fromarray(np.zeros((8, 8), np.float32), mode="F").save(tmp_path / "zz.tif")
    with pytest.raises(ValueError, match="mode 'F'"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data.load_folder(tmp_path)


def test_decoded_dataset_cache_is_checksummed(tmp_path, monkeypatch, capsys):
    # before: edited bytes in datasets/*.npy changed the data silently; a cold decode was silent
    from paperlib import data
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    monkeypatch.delenv("PAPERLIB_PROGRESS", raising=False)
    calls = []

    def fake_decode(name, split, copy, paths):
        calls.append(1)
        return np.arange(2 * 1 * 4 * 4, dtype=np.uint8).reshape(2, 1, 4, 4)

    monkeypatch.setattr(data, "_decode", fake_decode)
    monkeypatch.setattr(data, "_verify", lambda rel, *st: "0" * 64)
    args = ("toy", "train", "official", ("r",), (("p", 1, 1),))
    data._images.cache_clear()
    a = data._images(*args).copy()
    assert "decoding toy train" in capsys.readouterr().err  # the person waiting is told
    (f,) = (tmp_path / "datasets").iterdir()
    raw = bytearray(f.read_bytes())
    raw[-70] ^= 0x01  # one pixel byte of the array (before the 64-byte checksum)
    f.write_bytes(bytes(raw))
    data._images.cache_clear()
    with pytest.warns(UserWarning, match="checksum"):
        b = data._images(*args)
    assert np.array_equal(a, b) and len(calls) == 2  # decoded again, not the edited bytes
    data._images.cache_clear()
    assert np.array_equal(data._images(*args), a) and len(calls) == 2  # the rewritten file is trusted
    data._images.cache_clear()


# ------------------------------------------------------------------ CLI
@pytest.fixture
def folder(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    d = tmp_path / "imgs"
    d.mkdir()
    for k in range(6):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(d / f"{k}.png")
    return d


@pytest.mark.parametrize("extra,flag", [
    (["--n", "-1"], "--n"), (["--n", "0"], "--n"), (["--size", "0"], "--size"), (["--size", "-5"], "--size"),
    (["--levels", "0"], "--levels"), (["--levels", "-3"], "--levels"), (["--n-noise", "0"], "--n-noise"),
    (["--weight-level", "1.5"], "--weight-level"), (["--seed", "x"], "--seed"),
])
def test_cli_flags_are_validated_by_name(folder, extra, flag, capsys):
    # before: ignored, misreported or a traceback
    from paperlib.__main__ import main
    with pytest.raises(SystemExit) as e:
        main(["danger-zone", str(folder), *extra])
    assert e.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


@pytest.mark.parametrize("cmd,extra,flag", [
    ("train", ["--threads", "0"], "--threads"), ("train", ["--lr", "nan"], "--lr"),
    ("sample", ["--sampling-steps", "1"], "--sampling-steps"), ("sample", ["--samples", "0"], "--samples"),
])
def test_cli_training_flags_are_validated_by_name(folder, cmd, extra, flag, capsys):
    from paperlib.__main__ import main
    with pytest.raises(SystemExit):
        main([cmd, str(folder), *extra])
    assert f"argument {flag}" in capsys.readouterr().err


def test_cli_checks_before_computing(folder, tmp_path, monkeypatch, capsys):
    # before: --out to a directory failed only after the whole computation; a missing folder said
    # "name must be one of (...)"; --cls on a folder was ignored
    from paperlib import __main__ as cli
    called = []
    monkeypatch.setattr(cli, "cmd_danger_zone", lambda args: called.append(1))
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "cache"))
    cases = [
        (["danger-zone", str(folder), "--out", str(tmp_path)], "--out"),
        (["danger-zone", str(folder), "--out", str(tmp_path / "missing" / "z.json")], "does not exist"),
        (["danger-zone", str(tmp_path / "no-such-folder")], "does not exist"),
        (["danger-zone", "cifar-10"], "neither a dataset"),
        (["danger-zone", str(folder), "--cls", "1"], "--cls"),
    ]
    for argv, word in cases:
        assert cli.main(argv) == 2  # main builds its parser per call, so the patched command is used
        err = capsys.readouterr().err
        assert word in err, (argv, err)
        assert "Traceback" not in err
    assert not called


def test_cli_environment_variables_are_named(folder, tmp_path, monkeypatch, capsys):
    from paperlib.__main__ import main
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PAPERLIB_PROFILE", "smokee")
    assert main(["danger-zone", str(folder), "--levels", "4"]) == 2
    assert "PAPERLIB_PROFILE" in capsys.readouterr().err
    monkeypatch.delenv("PAPERLIB_PROFILE")
    monkeypatch.setenv("PAPERLIB_DEVICE", "gpu7")
    assert main(["danger-zone", str(folder), "--levels", "4"]) == 2
    assert "PAPERLIB_DEVICE" in capsys.readouterr().err
    monkeypatch.delenv("PAPERLIB_DEVICE")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("PAPERLIB_CACHE", str(blocker / "sub"))
    assert main(["danger-zone", str(folder), "--levels", "4"]) == 2
    assert "PAPERLIB_CACHE" in capsys.readouterr().err


def test_cli_folder_with_hidden_and_broken_files_and_a_shadowing_name(folder, tmp_path, monkeypatch, capsys):
    from paperlib.__main__ import main
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "cache"))
    (folder / "._0.png").write_bytes(b"\x00\x05\x16\x07")
    (folder / "readme.png").write_text("text")
    out = tmp_path / "z.json"
    assert main(["danger-zone", str(folder), "--levels", "4", "--n-noise", "1", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 file" in err and json.loads(out.read_text())["n"] == 6
    monkeypatch.chdir(tmp_path)
    folder.rename(tmp_path / "mnist")
    assert main(["danger-zone", "mnist", "--levels", "4", "--n-noise", "1"]) == 0
    assert "local folder" in capsys.readouterr().err


def test_cli_diverging_training_is_an_error_not_a_cached_model(folder, tmp_path, monkeypatch, capsys):
    # before: train --lr 1e6 ended with exit 0 and cached the NaN model
    from paperlib.__main__ import main
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "cache"))
    args = ["train", str(folder), "--steps", "20", "--batch-size", "4", "--channels", "8", "--threads", "1", "--lr", "1e6"]
    assert main(args) == 2
    assert "diverged" in capsys.readouterr().err
    assert main(args) == 2  # not served from the cache


# ------------------------------------------------------------------ edm, quality, regimes, EmpiricalDenoiser
def test_formula_helpers_quality_and_denoisers_validate_their_input():
    # before: NaN/-inf passed through, uint8 was accepted, internal errors instead of clear messages
    from paperlib import quality, sampling
    imgs = torch.rand(6, 1, 8, 8) * 2 - 1
    cases = [
        (lambda: edm.c_skip(float("nan")), "sigma"), (lambda: edm.c_out(-1.0), "sigma"),
        (lambda: edm.c_in(torch.tensor([1.0, -float("inf")])), "sigma"), (lambda: edm.c_noise(0.0), "sigma"),
        (lambda: edm.loss_weight(1.0, sigma_data=0.0), "sigma_data"), (lambda: edm.c_skip("1"), "sigma"),
        (lambda: edm.karras_sigmas(True), "steps"), (lambda: edm.lognormal_mass(2.0, 1.0), "gap"),
        (lambda: regimes.default_sigmas(0), "n"), (lambda: regimes.default_sigmas(8, -1.0), "sigma_min"),
        (lambda: regimes.default_sigmas(8, 1.0, 0.5), "sigma_min"), (lambda: regimes.default_sigmas(8, 0.1, math.inf), "sigma_max"),
        (lambda: regimes.default_sigmas(True), "n"),
        (lambda: quality.PatchFD((imgs * 127.5 + 127.5).to(torch.uint8)), "reference"),
        (lambda: quality.PatchFD(imgs.clone().fill_(float("nan"))), "reference"),
        (lambda: quality.PatchFD(imgs, k=0), "k"), (lambda: quality.PatchFD(imgs, scales=(0,)), "scales"),
        (lambda: quality.PatchFD(imgs)(imgs.to(torch.uint8)), "images"),
        (lambda: quality.patch_fd(imgs[:, :, :4], imgs), "images"),
        (lambda: quality.gaussian_fit(torch.full((4, 3), float("nan"))), "features"),
        (lambda: quality.frechet_distance(torch.zeros(2), torch.eye(2) * float("inf"), torch.zeros(2), torch.eye(2)), "cov1"),
        (lambda: sampling.EmpiricalDenoiser(imgs.to(torch.uint8)), "train"),
        (lambda: sampling.EmpiricalDenoiser(torch.zeros(5)), "train"),
        (lambda: sampling.EmpiricalDenoiser(imgs)(imgs, float("nan")), "sigma"),
        (lambda: sampling.EmpiricalDenoiser(imgs)(imgs.to(torch.uint8), 1.0), "x"),
        (lambda: sampling.solve(sampling.EmpiricalDenoiser(imgs), imgs.clone().fill_(float("nan")),
                                edm.karras_sigmas(3)), "^x "),  # before: said "latents"
        (lambda: sampling.sample(sampling.EmpiricalDenoiser(imgs), True, (1, 8, 8)), "^n "),
        (lambda: sampling.sample(sampling.EmpiricalDenoiser(imgs), 2, (1, 8, 8), batch_size=0), "batch_size"),
    ]
    for fn, word in cases:
        with pytest.raises(ValueError, match=word):
            fn()
    assert edm.c_skip(0.5) == pytest.approx(0.5) and torch.is_tensor(edm.c_noise(torch.tensor(1.0)))


# ------------------------------------------------------------------ report
def _record_many(args):
    import os
    folder, who = args
    os.environ["PAPERLIB_CACHE"] = folder
    from paperlib import report
    for i in range(40):
        report.record("99_conc", f"{who} row {i}", i)
    return who


def test_report_records_from_two_processes_are_all_kept(tmp_path, monkeypatch):
    # concurrency: report.record is file-locked and writes atomically (this test guards it)
    import multiprocessing as mp
    from paperlib import report
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    report.start("99_conc", "concurrency")
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_record_many, [(str(tmp_path), "a"), (str(tmp_path), "b")])
    rows = report.rows("99_conc")
    assert len(rows) == 80 and {r["quantity"] for r in rows} == {f"{w} row {i}" for w in "ab" for i in range(40)}
    for bad in ("../x", "a/b", "", None):
        with pytest.raises(ValueError, match="chapter"):
            report.start(bad, "t")
