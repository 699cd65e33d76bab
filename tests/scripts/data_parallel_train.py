"""Train a small model with medlib's loop and write the loss curve and final weights to a JSON file.
Run by plain `python` (one process) or `accelerate launch --num_processes 2` (gloo on CPU):
tests/test_train.py compares the two. `--items`: sample i carries i % 3 + 1 targets and the loss is a
mean over targets, returned as `(loss, n)` like the papers' token-mean losses. `--fsdp`: the trained
stack of blocks is sharded across the processes (FSDP2)."""

import json
import sys

import torch
from torch import nn

from medlib.parallel import data_parallel
from medlib.train import TrainConfig, train


class Net(nn.Module):
    """An input layer, a stack of two residual blocks (what FSDP shards) and a frozen head."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(2))
        self.head = nn.Linear(16, 3)
        self.head.requires_grad_(False)

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = h + b(h)
        return self.head(h)


def main(out: str, items: bool, fsdp: bool) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(37, 8), torch.randn(37, 3)  # 37: the last global batch is uneven
    model = Net()

    def loss_fn(m, b):
        if not items:
            return nn.functional.mse_loss(m(x[b])[:, 0], y[b, 0])
        keep = torch.arange(3)[None] <= (b % 3)[:, None]  # sample i: its first i % 3 + 1 targets
        err = (m(x[b]) - y[b])[keep]
        return (err**2).mean(), int(keep.sum())

    history = train(model, list(range(37)), torch.tensor, loss_fn,
                    TrainConfig(num_epochs=3, lr=0.05, batch_size=8, warmup_ratio=0.0, max_grad_norm=0.5, fsdp=fsdp,
                                desc="data-parallel check"))
    rank, world = data_parallel()
    weights = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in model.parameters()]
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"processes": world, "loss_curve": history["loss_curve"], "fsdp_blocks": history.get("fsdp_blocks", 0),
                       "weights": [w.detach().reshape(-1).tolist() for w in weights]}, f)


if __name__ == "__main__":
    main(sys.argv[1], "--items" in sys.argv[2:], "--fsdp" in sys.argv[2:])
