"""Data-parallel training (2 CPU processes, gloo) gives the weights of single-process training, and its
checkpoints are those of a single-process run (resume across the two)."""
import os

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from paperlib import distributed, training

TINY = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [4]}
CFG = {"steps": 8, "batch_size": 8, "warmup_steps": 2, "ema_halflife": 3, "network": TINY, "seed": 5}

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def _data():
    return torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


class Stop(Exception):
    pass


def _worker(rank, world, rdzv, tmp):
    """A full run (cache ``tmp/full``) and a run stopped after step 5 (cache ``tmp/stopped``)."""
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{rdzv}", rank=rank, world_size=world)
    try:
        os.environ["PAPERLIB_CACHE"] = f"{tmp}/full"
        model, hist = distributed.train(CFG, _data(), name="ddp", device="cpu", progress=False)
        torch.save({"ema": model.state_dict(), "loss": hist["loss"]}, f"{tmp}/weights.{rank}")

        def stop(step, loss):
            if step == 5:
                raise Stop
        os.environ["PAPERLIB_CACHE"] = f"{tmp}/stopped"
        try:
            distributed.train(CFG, _data(), name="ddp", device="cpu", progress=False, checkpoint_every=100,
                              callback=stop)
        except Stop:
            pass
    finally:
        tdist.destroy_process_group()


def _assert_close(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    with pytest.MonkeyPatch.context() as m:
        m.setenv("PAPERLIB_CACHE", str(tmp_path_factory.mktemp("single")))
        model, hist = training.train(CFG, _data(), name="ddp", device="cpu", progress=False)
        return model.state_dict(), hist["loss"]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, str(tmp / "rdzv"), str(tmp)), nprocs=2, join=True)
    return tmp


def test_two_processes_match_single_process(two_processes, single):
    r0, r1 = torch.load(two_processes / "weights.0"), torch.load(two_processes / "weights.1")
    _assert_close(r0["ema"], single[0])
    _assert_close(r1["ema"], r0["ema"])
    assert r0["loss"] == pytest.approx(single[1], rel=1e-4)  # the global batch's loss, step by step


def test_checkpoint_resumes_in_a_single_process(two_processes, single, monkeypatch):
    # both processes stopped after step 5 and rank 0 saved a checkpoint: a single process resumes it
    monkeypatch.setenv("PAPERLIB_CACHE", str(two_processes / "stopped"))
    model, hist = training.train(CFG, _data(), name="ddp", device="cpu", progress=False)
    assert hist["resumed_from"] == 5
    _assert_close(model.state_dict(), single[0])


def test_batch_must_split_evenly():
    with pytest.raises(ValueError, match="batch_size"):
        distributed.Shares(0, 3, 8, torch.device("cpu"))


def test_single_process_is_plain_training(tmp_path, monkeypatch, single):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    model, _ = distributed.train(CFG, _data(), name="ddp", device="cpu", progress=False)
    _assert_close(model.state_dict(), single[0])
