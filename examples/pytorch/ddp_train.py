"""A small DistributedDataParallel training run that works on CPU with the gloo backend.

Every rank fits the same linear model y = X @ w_true + noise on its own shard of a
synthetic data set; DDP averages the gradients, so all ranks hold identical weights after
each step. It reads the environment the PyTorchJob operator sets (MASTER_ADDR, MASTER_PORT,
WORLD_SIZE, RANK — or torchrun's, when started through torchrun) and exits non-zero if the
model did not learn, so the job's Succeeded/Failed state means something.

    python ddp_train.py --epochs 20           # one pod per rank (Master + Workers)
    torchrun ddp_train.py --epochs 20         # elastic: torchrun reads PET_* itself
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--samples", type=int, default=2048, help="per rank")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--target-loss", type=float, default=0.05)
    args = parser.parse_args(argv)

    dist.init_process_group(backend="gloo", init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same true weights on every rank
    w_true = torch.randn(args.features, 1)
    torch.manual_seed(1000 + rank)  # a different data shard per rank
    x = torch.randn(args.samples, args.features)
    y = x @ w_true + 0.01 * torch.randn(args.samples, 1)

    model = DistributedDataParallel(nn.Linear(args.features, 1))
    optimiser = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = nn.MSELoss()
    loss = torch.tensor(float("inf"))
    for epoch in range(args.epochs):
        for start in range(0, args.samples, 256):
            optimiser.zero_grad()
            loss = loss_fn(model(x[start : start + 256]), y[start : start + 256])
            loss.backward()
            optimiser.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        mean /= world
        if rank == 0:
            print(f"epoch {epoch + 1}/{args.epochs} world={world} loss={mean.item():.5f}")

    final = loss.detach().clone()
    dist.all_reduce(final)
    final /= world
    dist.destroy_process_group()
    ok = final.item() <= args.target_loss
    if rank == 0:
        verdict = "converged" if ok else "did not converge"
        print(
            f"rank {rank} of {world} on {os.uname().nodename}: {verdict}, loss={final.item():.5f}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
