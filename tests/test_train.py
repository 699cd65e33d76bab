import torch

from medlib.train import TrainConfig, train


def problem():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(64, 4, generator=g)
    samples = [(x, x.sum().unsqueeze(0)) for x in xs]
    return model, samples


def collate(b):
    return torch.stack([x for x, _ in b]), torch.stack([y for _, y in b])


def loss_fn(m, batch):
    return torch.nn.functional.mse_loss(m(batch[0]), batch[1])


CFG = TrainConfig(num_epochs=3, lr=1e-2, batch_size=8, grad_accum=2, checkpoint_every=2, seed=5)


def test_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    model, samples = problem()
    full = train(model, samples, collate, loss_fn, CFG)
    reference = [p.detach().clone() for p in model.parameters()]

    model2, _ = problem()
    ckpt = tmp_path / "ckpt.pt"
    train(model2, samples, collate, loss_fn, CFG, checkpoint_path=ckpt, stop_after_steps=5)  # a "crash" after step 5
    model3, _ = problem()  # a fresh process: new model, state from the checkpoint (saved at step 4)
    resumed = train(model3, samples, collate, loss_fn, CFG, checkpoint_path=ckpt)
    assert resumed["loss_curve"] == full["loss_curve"]
    for a, b in zip(reference, model3.parameters()):
        assert torch.equal(a, b)


def test_loss_goes_down_and_curve_is_kept():
    model, samples = problem()
    out = train(model, samples, collate, loss_fn, TrainConfig(num_epochs=20, lr=1e-2, batch_size=16))
    assert out["loss_curve"][-1][1] < out["loss_curve"][0][1] / 2
