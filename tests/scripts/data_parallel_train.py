"""Train a small regression model with medlib's loop and write the loss curve and final weights to a
JSON file. Run by plain `python` (one process) or `accelerate launch --num_processes 2` (gloo on CPU):
tests/test_train.py compares the two. With `--items`, sample i carries i % 3 + 1 targets and the loss
is a mean over targets, returned as `(loss, n)` like the papers' token-mean losses."""

import json
import sys

import torch

from medlib.train import TrainConfig, data_parallel, train


def main(out: str, items: bool) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(37, 8), torch.randn(37, 3)  # 37: the last global batch is uneven
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))

    def loss_fn(m, b):
        if not items:
            return torch.nn.functional.mse_loss(m(x[b])[:, 0], y[b, 0])
        keep = torch.arange(3)[None] <= (b % 3)[:, None]  # sample i: its first i % 3 + 1 targets
        err = (m(x[b]) - y[b])[keep]
        return (err**2).mean(), int(keep.sum())

    history = train(model, list(range(37)), torch.tensor, loss_fn,
                    TrainConfig(num_epochs=3, lr=0.05, batch_size=8, warmup_ratio=0.0, desc="data-parallel check"))
    rank, world = data_parallel()
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"processes": world, "loss_curve": history["loss_curve"],
                       "weights": [p.detach().reshape(-1).tolist() for p in model.parameters()]}, f)


if __name__ == "__main__":
    main(sys.argv[1], "--items" in sys.argv[2:])
