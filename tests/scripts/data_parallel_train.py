"""Train a small regression model with medlib's loop and write the loss curve and final weights to a
JSON file. Run by plain `python` (one process) or `accelerate launch --num_processes 2` (gloo on CPU):
tests/test_train.py compares the two."""

import json
import sys

import torch

from medlib.train import TrainConfig, data_parallel, train


def main(out: str) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(37, 8), torch.randn(37, 1)  # 37: the last global batch is uneven
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    history = train(model, list(range(37)), torch.tensor, lambda m, b: torch.nn.functional.mse_loss(m(x[b]), y[b]),
                    TrainConfig(num_epochs=3, lr=0.05, batch_size=8, warmup_ratio=0.0, desc="data-parallel check"))
    rank, world = data_parallel()
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"processes": world, "loss_curve": history["loss_curve"],
                       "weights": [p.detach().reshape(-1).tolist() for p in model.parameters()]}, f)


if __name__ == "__main__":
    main(sys.argv[1])
