"""Training: caching, exact resume after interruption, corrupted checkpoints, gap and dummy class."""
import pytest
import torch

from paperlib import cache, edm, training

TINY = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [4], "dropout": 0.1}
CFG = {"steps": 12, "batch_size": 6, "warmup_steps": 3, "ema_halflife": 4, "network": TINY, "seed": 3}


class Killed(Exception):
    pass


def kill_at(k):
    def callback(step, loss):
        if step == k:
            raise Killed(f"simulated kill at step {k}")
    return callback


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(10, 1, 8, 8, generator=g) * 2 - 1


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def folder(cfg, data, name):
    return cache.entry_dir(name, training.cache_config(cfg, data))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted run (trained once, in its own cache folder)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAPERLIB_CACHE", str(tmp_path_factory.mktemp("reference_cache")))
        model, hist = training.train(CFG, data, name="reference", progress=False, device="cpu")
        return model, hist, training.cache_config(CFG, data)


def test_train_returns_ema_model_and_history(reference):
    model, hist, _ = reference
    assert isinstance(model, edm.Precond) and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert len(hist["loss"]) == CFG["steps"] and all(torch.isfinite(torch.tensor(hist["loss"])))
    assert hist["wall_time"] > 0 and hist["steps_per_s"] > 0 and hist["num_params"] > 0
    assert hist["from_cache"] is False and hist["resumed_from"] is None
    out = model(torch.randn(2, 1, 8, 8), 1.0)
    assert out.shape == (2, 1, 8, 8)


def test_rerun_is_served_from_cache(data, reference):
    training.train(CFG, data, name="reference", progress=False, device="cpu")
    calls = []
    model, hist = training.train(CFG, data, name="reference", progress=False, device="cpu",
                                 callback=lambda s, l: calls.append(s))
    assert hist["from_cache"] is True and calls == []
    assert hist["resumed_from"] is None
    assert_same(model, reference[0])
    assert hist["loss"] == reference[1]["loss"]
    # Defaults written out explicitly give the same cache entry.
    explicit = dict(CFG, lr=training.DEFAULTS["lr"], network=dict(TINY, embedding="positional"))
    assert training.cache_config(explicit, data) == training.cache_config(CFG, data)


def test_key_depends_on_config_data_and_code(data):
    base = training.cache_config(CFG, data)
    assert training.cache_config(dict(CFG, seed=4), data) != base
    data2 = data.clone()
    data2[0, 0, 0, 0] += 0.01
    assert training.cache_config(CFG, data2) != base
    assert base["code"] == training.code_version() and len(base["code"]) == 16
    with pytest.raises(ValueError, match="unknown"):
        training.resolve_config({"stepz": 3})
    with pytest.raises(ValueError, match="gap"):
        training.resolve_config({"gap": [1.0, 0.5]})


@pytest.mark.parametrize("kill_step,save_on_interrupt,resume_step", [(10, False, 8), (10, True, 10), (3, False, None)])
def test_resume_after_kill_gives_identical_weights(data, reference, kill_step, save_on_interrupt, resume_step):
    with pytest.raises(Killed):
        training.train(CFG, data, name="run", progress=False, device="cpu", checkpoint_every=4,
                       callback=kill_at(kill_step), save_on_interrupt=save_on_interrupt)
    seen = []
    model, hist = training.train(CFG, data, name="run", progress=False, device="cpu", checkpoint_every=4,
                                 callback=lambda s, l: seen.append(s))
    assert hist["resumed_from"] == resume_step
    assert seen == list(range((resume_step or 0) + 1, CFG["steps"] + 1))  # no lost steps, none repeated twice
    assert hist["loss"] == reference[1]["loss"]
    assert_same(model, reference[0])
    # The finished run cleaned its checkpoints up.
    assert not list(folder(CFG, data, "run").glob("ckpt_*"))


def test_corrupted_checkpoints_are_skipped(data, reference):
    with pytest.raises(Killed):
        training.train(CFG, data, name="run", progress=False, device="cpu", checkpoint_every=4,
                       callback=kill_at(11), save_on_interrupt=False)
    f = folder(CFG, data, "run")
    assert sorted(p.name for p in f.glob("ckpt_*.pt")) == ["ckpt_00000004.pt", "ckpt_00000008.pt"]
    newest = f / "ckpt_00000008.pt"
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    newest.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="checksum"):
        assert cache.load(newest) is None
    with pytest.warns(UserWarning):
        model, hist = training.train(CFG, data, name="run", progress=False, device="cpu", checkpoint_every=4)
    assert hist["resumed_from"] == 4
    assert_same(model, reference[0])


def test_all_checkpoints_corrupted_restarts_from_scratch(data, reference):
    with pytest.raises(Killed):
        training.train(CFG, data, name="run", progress=False, device="cpu", checkpoint_every=4,
                       callback=kill_at(9), save_on_interrupt=False)
    f = folder(CFG, data, "run")
    for p in f.glob("ckpt_*.pt"):
        p.write_bytes(p.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning):
        model, hist = training.train(CFG, data, name="run", progress=False, device="cpu", checkpoint_every=4)
    assert hist["resumed_from"] is None
    assert_same(model, reference[0])


def test_corrupted_final_model_is_retrained(data, reference):
    training.train(CFG, data, name="reference", progress=False, device="cpu")
    f = folder(CFG, data, "reference")
    final = f / "final.pt"
    final.write_bytes(final.read_bytes()[:-10] + b"0123456789")
    with pytest.warns(UserWarning):
        model, hist = training.train(CFG, data, name="reference", progress=False, device="cpu")
    assert hist["from_cache"] is False
    assert_same(model, reference[0])


def test_snapshots_equal_shorter_runs(data):
    cfg = dict(CFG, snapshots=[5, 9])
    model, hist = training.train(cfg, data, name="snap", progress=False, device="cpu")
    assert hist["snapshots"] == [5, 9]
    snap5 = training.load_snapshot(cfg, data, 5, name="snap", device="cpu")
    short, _ = training.train(dict(CFG, steps=5), data, name="short", progress=False, device="cpu")
    assert_same(snap5, short)  # the EMA schedule does not depend on the total number of steps
    assert training.load_snapshot(cfg, data, 7, name="snap") is None
    assert_same(training.load_snapshot(cfg, data, 12, name="snap", device="cpu"), model)


def test_ema_decay_zero_is_the_raw_model(data):
    cfg = dict(CFG, ema_decay=0.0, ema_halflife=None, steps=4)
    model, _ = training.train(cfg, data, name="ema0", progress=False, device="cpu")
    stored = cache.load(folder(cfg, data, "ema0") / "final.pt")
    for k, v in stored["model"].items():
        assert torch.equal(v, stored["ema"][k])
    assert_same(model, model)  # eval copy is usable
    # With a long half-life the EMA lags the raw weights.
    cfg2 = dict(CFG, ema_halflife=1000, ema_rampup=None, steps=4)
    training.train(cfg2, data, name="ema1", progress=False, device="cpu")
    stored2 = cache.load(folder(cfg2, data, "ema1") / "final.pt")
    assert any(not torch.equal(v, stored2["ema"][k]) for k, v in stored2["model"].items())


def test_gap_training_never_sees_gap_sigmas(data, monkeypatch):
    seen = []
    original = edm.edm_loss

    def recording(denoiser, x0, sigma, *args, **kwargs):
        seen.append(sigma.detach().clone())
        return original(denoiser, x0, sigma, *args, **kwargs)

    monkeypatch.setattr(edm, "edm_loss", recording)
    cfg = dict(CFG, steps=20, batch_size=8, gap=[0.2, 1.0])
    training.train(cfg, data, name="gap", progress=False, device="cpu")
    s = torch.cat(seen)
    assert s.numel() == 160
    assert not ((s >= 0.2) & (s <= 1.0)).any()
    assert (s < 0.2).any() and (s > 1.0).any()


def test_dummy_class_path(data, monkeypatch):
    seen = []
    original = edm.edm_loss

    def recording(denoiser, x0, sigma, *args, **kwargs):
        seen.append((x0.detach().clone(), kwargs.get("class_labels")))
        return original(denoiser, x0, sigma, *args, **kwargs)

    monkeypatch.setattr(edm, "edm_loss", recording)
    cfg = dict(CFG, steps=6, dummy_class=True, dummy_count=10)
    model, _ = training.train(cfg, data, name="dummy", progress=False, device="cpu")
    assert model.num_classes == 2 and model.class_label == 0
    labels = torch.cat([y for _, y in seen])
    x0 = torch.cat([x for x, _ in seen])
    assert set(labels.tolist()) == {0, 1}
    # Class-0 images are training images; class-1 images are the fixed uniform-noise images.
    flat = data.reshape(10, -1)
    for x, y in zip(x0, labels):
        is_train = (torch.cdist(x.reshape(1, -1), flat).min() == 0).item()
        assert is_train == (y.item() == 0)
    dummy = training._dummy_images(training.resolve_config(cfg), data)
    assert dummy.shape == data.shape and dummy.min() >= -1 and dummy.max() <= 1
    out = model(torch.randn(3, 1, 8, 8), 0.5)  # samples the real class by default
    assert out.shape == (3, 1, 8, 8)


NEXT_BATCH = training._next_batch


def sigint_inside_step(monkeypatch, call, times=1):
    """Send SIGINT to this process from inside the ``call``-th batch draw, i.e. in the middle of a step."""
    import os
    import signal
    calls = {"n": 0}
    real = training._next_batch

    def drawing(*args):
        calls["n"] += 1
        if calls["n"] == call:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        return real(*args)
    monkeypatch.setattr(training, "_next_batch", drawing)


def test_ctrl_c_inside_a_step_is_held_to_its_end_and_checkpointed(data, reference, monkeypatch):
    sigint_inside_step(monkeypatch, call=7)
    with pytest.raises(KeyboardInterrupt):
        training.train(CFG, data, name="run", progress=False, device="cpu", checkpoint_every=4)
    assert sorted(p.name for p in folder(CFG, data, "run").glob("ckpt_*.pt")) == ["ckpt_00000004.pt", "ckpt_00000007.pt"]
    monkeypatch.setattr(training, "_next_batch", NEXT_BATCH)  # (not undo(): it would drop the cache dir too)
    model, hist = training.train(CFG, data, name="run", progress=False, device="cpu", checkpoint_every=4)
    assert hist["resumed_from"] == 7
    assert_same(model, reference[0])


def test_a_second_ctrl_c_interrupts_at_once(data, monkeypatch):
    sigint_inside_step(monkeypatch, call=7, times=2)
    with pytest.raises(KeyboardInterrupt):
        training.train(CFG, data, name="run", progress=False, device="cpu", checkpoint_every=4)
    assert sorted(p.name for p in folder(CFG, data, "run").glob("ckpt_*.pt")) == ["ckpt_00000004.pt"]


def test_ctrl_c_in_the_last_step_saves_the_final_model_then_stops(data, reference, monkeypatch):
    sigint_inside_step(monkeypatch, call=CFG["steps"])
    with pytest.raises(KeyboardInterrupt):
        training.train(CFG, data, name="run", progress=False, device="cpu", checkpoint_every=4)
    monkeypatch.setattr(training, "_next_batch", NEXT_BATCH)  # (not undo(): it would drop the cache dir too)
    model, hist = training.train(CFG, data, name="run", progress=False, device="cpu")
    assert hist["from_cache"] is True
    assert_same(model, reference[0])


def test_train_many_in_processes_equals_training_one_after_the_other(data, reference):
    cfgs = [CFG, dict(CFG, seed=4), CFG]
    out = training.train_many([(c, data) for c in cfgs], workers=2, name="many", progress=False, device="cpu",
                              num_threads=1)
    assert len(out) == 3
    assert_same(out[0][0], reference[0]) and out[0][1]["loss"] == reference[1]["loss"]
    alone, _ = training.train(cfgs[1], data, name="alone", progress=False, device="cpu")
    assert_same(out[1][0], alone)
    with pytest.raises(ValueError, match="workers"):
        training.train_many([(CFG, data)], workers=0)


@pytest.mark.slow
def test_interrupting_train_many_checkpoints_running_runs_and_cancels_the_rest(data, cache_dir):
    """Ctrl-C while processes train: each running training checkpoints its last step, the queued one
    never starts, and no process is left behind."""
    import multiprocessing
    import os
    import signal
    import threading
    import time
    long = dict(CFG, steps=100_000)
    cfgs = [dict(long, seed=s) for s in (0, 1, 2)]

    sent = {}

    def interrupt_when_both_train():
        deadline = time.monotonic() + 120
        while len(list(cache_dir.glob("many/*/config.json"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        sent["t"] = time.monotonic()
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_both_train, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        training.train_many([(c, data) for c in cfgs], workers=2, name="many", progress=False, device="cpu",
                            num_threads=1, checkpoint_every=10**9)
    assert time.monotonic() - sent["t"] < 30  # the workers stopped at once (none started the queued run)
    steps = [training._ckpt_steps(folder(c, data, "many")) for c in cfgs]
    assert len(steps[0]) == 1 and len(steps[1]) == 1 and 0 < steps[0][0] < long["steps"], steps
    assert not folder(cfgs[2], data, "many").exists() or steps[2] == []
    assert not multiprocessing.active_children()
