"""Data-parallel training on several GPUs (or CPU processes) with ``torch.distributed``, for the ``paper`` profile.

Launched with ``torchrun`` as the EDM reference code is: one process per GPU, each holding a copy of
the model. :func:`train` is :func:`paperlib.training.train` split across the processes:

- every process draws the **whole global batch** (indices, noise levels, noise) from the same
  seeded generator and trains on its own equal share of it (``batch_size / world_size`` images);
  ``DistributedDataParallel`` averages the gradients, which is the gradient of the single-process
  loss on the global batch. So a run with ``W`` processes gives the weights of a single-process run
  of the same config, up to the order of floating-point sums (tested with 2 CPU processes and gloo);
  with ``dropout > 0`` the dropout masks differ (each process draws its own);
- the cache key, checkpoint format and folder are those of a single-process run (the number of
  processes is not part of the key): rank 0 writes them, so a distributed run resumes from a
  single-process checkpoint and the other way round, and a notebook finds the distributed run's
  final model in the cache;
- an exception must stop every process at the same step (e.g. ``KeyboardInterrupt`` from torchrun),
  as for any collective program.

Command line (trains Section 3's EDM-small / EDM-large of a profile into ``PAPERLIB_CACHE``, where
chapter 02 then finds them)::

    torchrun --standalone --nproc_per_node=8 -m paperlib.distributed --profile paper --which small large
"""
from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as tdist
from torch.nn.parallel import DistributedDataParallel

from . import config, recipes, training


class Shares:
    """This process's share of data-parallel training (used by :func:`paperlib.training.train`)."""

    def __init__(self, rank: int, world: int, batch_size: int, device: torch.device):
        if batch_size % world:
            raise ValueError(f"config['batch_size']={batch_size} must be divisible by the number of processes {world}")
        self.rank, self.world, self.device = rank, world, device
        self.size = batch_size // world
        self.module = None

    def attach(self, model: torch.nn.Module) -> None:
        """Wrap ``model`` for the forward passes (its gradients are averaged over the processes)."""
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.module = DistributedDataParallel(model, device_ids=ids)

    def share(self, t: torch.Tensor) -> torch.Tensor:
        """This process's rows of a global-batch tensor."""
        return t[self.rank * self.size:(self.rank + 1) * self.size]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """Mean of a scalar over the processes (the global batch's loss)."""
        value = value.detach().float().clone()
        tdist.all_reduce(value, op=tdist.ReduceOp.SUM)
        return value / self.world

    def barrier(self) -> None:
        tdist.barrier()


def setup(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group set up by ``torchrun`` (its environment variables), unless already joined.

    Returns ``(rank, world_size, device)``: ``cuda:LOCAL_RANK`` when CUDA is available (backend
    ``nccl``), else the CPU (backend ``gloo``). Without ``torchrun`` (no ``WORLD_SIZE``): ``(0, 1, device)``.
    """
    cuda = torch.cuda.is_available() and config.device().type == "cuda"
    if not tdist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1, config.device()
        tdist.init_process_group(backend or ("nccl" if cuda else "gloo"))
    rank, world = tdist.get_rank(), tdist.get_world_size()
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", rank % torch.cuda.device_count()))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def train(config_: dict | None, data: torch.Tensor, *, name: str = "edm", device=None, **kwargs):
    """:func:`paperlib.training.train` on every process of the group (see the module docstring).

    Call it in every process with the same arguments; ``device`` defaults to this process's device
    (:func:`setup`). With a single process it is :func:`paperlib.training.train`. Every process
    returns the EMA model and history; only rank 0 writes to the cache.
    """
    rank, world, dev = setup()
    device = torch.device(device) if device is not None else dev
    if world == 1:
        return training.train(config_, data, name=name, device=device, **kwargs)
    full = training.resolve_config(config_)
    shares = Shares(rank, world, full["batch_size"], device)
    return training.train(config_, data, name=name, device=device, dist=shares, **kwargs)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Train Section 3's EDM models data-parallel (launch with torchrun).")
    ap.add_argument("--profile", default=None, help="profile whose recipe to train (default: PAPERLIB_PROFILE)")
    ap.add_argument("--which", nargs="+", default=["small", "large"], choices=["small", "large"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = ap.parse_args(argv)
    rank, world, device = setup()
    x_small, x_large, _ = recipes.empirical_data(args.profile, n_test=1)
    for which in args.which:
        for seed in args.seeds:
            cfg = recipes.empirical_recipe(args.profile, which, seed)
            _, hist = train(cfg, x_small if which == "small" else x_large, name=f"02_edm_{which}", device=device,
                            progress=rank == 0)
            if rank == 0:
                print(f"EDM-{which} seed {seed}: {world} processes, {hist['steps_per_s']:.2f} steps/s, "
                      f"cached in {hist['folder']}", flush=True)
    if tdist.is_initialized():
        tdist.destroy_process_group()


if __name__ == "__main__":
    main()
