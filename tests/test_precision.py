"""Mixed precision and channels-last in training: validation, cache keys, fallbacks, exact resume."""
import warnings

import pytest
import torch

from paperlib import cache, training

TINY = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [4]}
CFG = {"steps": 8, "batch_size": 6, "warmup_steps": 2, "ema_halflife": 3, "network": TINY, "seed": 1}

pytestmark = pytest.mark.usefixtures("one_thread")
needs_bf16 = pytest.mark.skipif(not training.cpu_has_bf16(), reason="this CPU has no bfloat16 instructions")


@pytest.fixture(scope="module")
def data():
    return torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "cache"))


class Killed(Exception):
    pass


def kill_at(k):
    def callback(step, loss):
        if step == k:
            raise Killed
    return callback


def assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("key, value", [("precision", "fp8"), ("precision", None), ("channels_last", 1)])
def test_bad_values_are_rejected(key, value):
    with pytest.raises(ValueError, match=key):
        training.resolve_config({key: value})


def test_fp32_keys_are_those_of_before(data):
    """fp32 / contiguous runs (the CPU default) keep the cache key they had before these options."""
    key = training.cache_config(CFG, data, "cpu")
    assert "precision" not in key["train"] and "channels_last" not in key["train"]
    for extra in ({"precision": "fp32"}, {"precision": "auto"}, {"channels_last": False}):
        assert training.cache_config({**CFG, **extra}, data, "cpu") == key
    assert training.cache_config({**CFG, "channels_last": True}, data, "cpu")["train"]["channels_last"] is True


def test_effective_precision_on_cpu(monkeypatch):
    assert training.effective_precision("auto", "cpu") == "fp32"
    with pytest.warns(UserWarning, match="fp32"):
        assert training.effective_precision("fp16", "cpu") == "fp32"
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="fp32"):
        assert training.effective_precision("bf16", "cpu") == "fp32"
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: True)
    assert training.effective_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision"):
        training.effective_precision("half", "cpu")


@pytest.mark.parametrize("bf16, expected", [(True, ("bf16", "bf16", "fp16")), (False, ("fp16", "fp32", "fp16"))])
def test_effective_precision_on_cuda(monkeypatch, bf16, expected):
    """auto: bf16 where the GPU has it (A100, H100), else fp16 with loss scaling (T4)."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = tuple(training.effective_precision(p, "cuda") for p in ("auto", "bf16", "fp16"))
    assert got == expected


def test_fallback_is_keyed_as_fp32(data, monkeypatch):
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning):
        key = training.cache_config({**CFG, "precision": "bf16"}, data, "cpu")
    assert key == training.cache_config(CFG, data, "cpu")


@needs_bf16
def test_bf16_training_is_keyed_close_to_fp32_and_resumes_exactly(data):
    cfg = {**CFG, "precision": "bf16"}
    assert training.cache_config(cfg, data, "cpu")["train"]["precision"] == "bf16"
    ref32, h32 = training.train(CFG, data, name="fp32", progress=False, device="cpu")
    ref, h = training.train(cfg, data, name="bf16", progress=False, device="cpu")
    assert h["folder"] != h32["folder"]
    assert h["loss"] == pytest.approx(h32["loss"], rel=0.05)  # bfloat16 has 8 bits of mantissa
    with pytest.raises(Killed):
        training.train(cfg, data, name="bf16_killed", progress=False, device="cpu", callback=kill_at(5))
    resumed, hist = training.train(cfg, data, name="bf16_killed", progress=False, device="cpu")
    assert hist["resumed_from"] == 5
    assert_same(resumed, ref)


def test_channels_last_matches_contiguous_and_resumes_exactly(data):
    ref, h = training.train(CFG, data, name="nchw", progress=False, device="cpu")
    cfg = {**CFG, "channels_last": True}
    cl, hcl = training.train(cfg, data, name="nhwc", progress=False, device="cpu")
    for (k, a), b in zip(ref.state_dict().items(), cl.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)
    with pytest.raises(Killed):
        training.train(cfg, data, name="nhwc_killed", progress=False, device="cpu", callback=kill_at(3))
    resumed, hist = training.train(cfg, data, name="nhwc_killed", progress=False, device="cpu")
    assert hist["resumed_from"] == 3
    assert_same(resumed, cl)


def test_fp16_loss_scaling_path_checkpoints_the_scaler(data, monkeypatch):
    """The fp16 path (GradScaler), exercised on the CPU by forcing it: the scale is checkpointed, resume is exact."""
    monkeypatch.setattr(training, "effective_precision", lambda precision, device: precision)
    cfg = {**CFG, "precision": "fp16"}
    try:
        ref, h = training.train(cfg, data, name="fp16", progress=False, device="cpu")
    except RuntimeError as exc:  # an old CPU autocast without float16 kernels
        pytest.skip(f"CPU autocast has no float16 here: {exc}")
    assert all(torch.isfinite(torch.tensor(h["loss"])))
    with pytest.raises(Killed):
        training.train(cfg, data, name="fp16_killed", progress=False, device="cpu", callback=kill_at(5))
    folder = cache.entry_dir("fp16_killed", training.cache_config(cfg, data, "cpu"))
    assert "scaler" in cache.load(folder / "ckpt_00000005.pt")
    resumed, hist = training.train(cfg, data, name="fp16_killed", progress=False, device="cpu")
    assert hist["resumed_from"] == 5
    assert_same(resumed, ref)
