import numpy as np
import pytest
import torch

from medlib.train import TrainConfig, epoch_order, train


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


SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r})
from tests.test_train import problem, collate, loss_fn, CFG
from medlib.train import train
model, samples = problem()
cfg = CFG.__class__(**{{**CFG.__dict__, "checkpoint_every": 1}})
slow = lambda m, b: (__import__("time").sleep(0.05), loss_fn(m, b))[1]
out = train(model, samples, collate, slow, cfg, checkpoint_path={ckpt!r})
torch.save([p.detach() for p in model.parameters()], {result!r})
"""


def test_run_killed_with_sigkill_resumes_to_the_same_result(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    model, samples = problem()
    train(model, samples, collate, loss_fn, CFG)
    reference = [p.detach() for p in model.parameters()]

    ckpt, result = tmp_path / "ckpt.pt", tmp_path / "result.pt"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=root, ckpt=str(ckpt), result=str(result)))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=root)
    deadline = time.time() + 60
    while not ckpt.exists() and time.time() < deadline:  # wait for a first checkpoint, then kill mid-run
        time.sleep(0.05)
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not result.exists()
    subprocess.run([sys.executable, str(script)], cwd=root, check=True, timeout=120)
    resumed = torch.load(result)
    for a, b in zip(reference, resumed):
        assert torch.equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("items,fsdp", [(False, False), (True, False), (True, True)],
                         ids=["sample-mean", "item-mean", "item-mean-fsdp"])
def test_two_gloo_processes_under_accelerate_launch_match_one_process(tmp_path, items, fsdp):
    """`accelerate launch` with 2 CPU processes (gloo): the same loss curve and weights as one process
    with the same global batch, including an uneven last batch (one process idle), with gradient
    clipping, for a loss averaged over samples, for one averaged over a varying number of items per
    sample (as answer tokens are), and with the trained blocks sharded by FSDP2."""
    import json
    import socket
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent / "scripts" / "data_parallel_train.py"
    with socket.socket() as s:  # a free loopback port for the process group's rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flag = ["--items"] * items + ["--fsdp"] * fsdp
    subprocess.run([sys.executable, str(script), str(tmp_path / "one.json"), *flag], check=True, capture_output=True)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)]
    done = subprocess.run(launch + [str(script), str(tmp_path / "two.json"), *flag], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert (one["processes"], two["processes"]) == (1, 2) and two["fsdp_blocks"] == 2 * fsdp
    # equal up to float summation order, which Adam's normalised steps carry into the weights' 5th digit
    assert np.allclose([v for _, v in one["loss_curve"]], [v for _, v in two["loss_curve"]], atol=1e-4)
    for a, b in zip(one["weights"], two["weights"]):
        assert np.allclose(a, b, atol=5e-4)


def test_gpu_benchmark_runs_its_code_on_small_configs_with_matching_losses(tmp_path):
    """`benchmarks/gpu.py` on small configurations (CPU): both paths train on identical batches and
    start from the same loss; the paper-size numbers need a GPU and live in results/benchmarks/gpu.json."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"
    subprocess.run([sys.executable, str(script), "--scale", "small", "--steps", "1", "--only", "medblip", "--out", str(tmp_path)],
                   check=True, capture_output=True)
    (row,) = json.loads((tmp_path / "gpu_small.json").read_text())["results"]
    assert row["first_loss_rel_diff"] < 1e-4 and row["plain_samples_per_s"] > 0 and row["medlib_samples_per_s"] > 0
    assert row["plain_mfu"] > 0 and row["grid_vit_hours_saved_per_10k_images"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True], ids=["data-parallel", "fsdp"])
def test_a_notebook_arm_under_accelerate_launch_trains_across_two_processes(tmp_path, fsdp):
    """The notebooks' own entry point (`medlib run`) under `accelerate launch` with 2 CPU processes:
    both run the notebook and train on their halves of each global batch; the first writes the run.
    The loss curve follows the one-process run's; it matches only to dropout noise (the Q-Former's
    dropout masks differ with the split), the exact equality being `test_two_gloo_processes_...`'s."""
    import json
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    arm = ["-m", "medlib", "run", "medblip", "--profile", "smoke", "-p", "num_epochs", "1", "--output-dir"]
    subprocess.run([sys.executable, *arm, str(tmp_path / "one")], check=True, capture_output=True, timeout=600)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)]
    if fsdp:  # OPT's decoder layers and the Q-Former's layers are sharded; the frozen ViT stays whole
        launch[launch.index("--multi_gpu")] = "--use_fsdp"
        launch += ["--fsdp_version", "2"]
    done = subprocess.run(launch + [*arm, str(tmp_path / "two")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = (json.loads((tmp_path / d / "run.json").read_text()) for d in ("one", "two"))
    assert two["train_info"]["status"] == "finished" and two["run_info"]["processes"] == 2 and "processes" not in one["run_info"]
    a, b = ([v for _, v in r["train_info"]["loss_curve"]] for r in (one, two))
    assert len(a) == len(b) > 3 and np.allclose(a, b, rtol=0.01)
    assert not (tmp_path / "two" / "notebook.ipynb").read_text().count("Traceback")


def test_length_groups_sort_runs_of_batches_and_keep_every_sample():
    lengths = np.random.default_rng(1).integers(5, 40, size=103)
    plain = epoch_order(103, seed=3, epoch=0)
    grouped = epoch_order(103, seed=3, epoch=0, lengths=lengths, batch_size=4, length_groups=5)
    assert sorted(grouped) == list(range(103))
    for start in range(0, 103, 20):  # each run of 5 batches of 4: the same samples as the plain order, sorted
        assert sorted(grouped[start:start + 20]) == sorted(plain[start:start + 20])
        assert list(lengths[grouped[start:start + 20]]) == sorted(lengths[grouped[start:start + 20]])
    assert list(epoch_order(103, 3, 0, lengths, 4, 0)) == list(plain)  # off: the plain order
    with pytest.raises(ValueError, match="2 lengths for 103 samples"):
        epoch_order(103, 3, 0, [1, 2], 4, 5)


def test_early_stopping_keeps_the_weights_of_the_lowest_validation_loss():
    """A validation loss that falls, then rises: training stops after `patience` checks without a new lowest
    loss, and the weights left in the model are those of the lowest check."""
    model, samples = problem()
    seen, weights = iter([3.0, 2.0, 1.0, 1.5, 1.8, 0.5, 0.1]), {}

    def validate(m):
        weights[len(weights)] = [p.detach().clone() for p in m.parameters()]
        return next(seen)

    cfg = TrainConfig(num_epochs=20, lr=1e-2, batch_size=16, validate_every=2, patience=2)
    out = train(model, samples, collate, loss_fn, cfg, validate=validate)
    assert [v for _, v in out["val_curve"]] == [3.0, 2.0, 1.0, 1.5, 1.8] and out["patience_ran_out"]
    assert out["best_step"] == 6 and out["step"] == 10 and "best_weights" not in out
    for a, b in zip(weights[2], model.parameters()):
        assert torch.equal(a, b)
    # no patience: every epoch trains, the last check is at the end, the lowest check's weights are kept
    model, samples = problem()
    seen = iter([2.0, 1.0, 3.0])
    out = train(model, samples, collate, loss_fn, TrainConfig(num_epochs=3, lr=1e-2, batch_size=16, validate_every=4),
                validate=lambda m: next(seen))
    assert out["step"] == 12 and out["best_step"] == 8 and not out["patience_ran_out"]
    with pytest.raises(ValueError, match="validate_every > 0"):
        train(model, samples, collate, loss_fn, TrainConfig(num_epochs=1, batch_size=16), validate=lambda m: 0.0)


def test_a_resumed_run_repeats_the_early_stopping_of_an_uninterrupted_one(tmp_path):
    def val_of(m):
        return float(sum(p.abs().sum() for p in m.parameters()))  # any function of the weights

    cfg = TrainConfig(num_epochs=4, lr=1e-2, batch_size=8, checkpoint_every=2, seed=5, validate_every=3, patience=1)
    model, samples = problem()
    full = train(model, samples, collate, loss_fn, cfg, validate=val_of)
    model2, _ = problem()
    ckpt = tmp_path / "ckpt.pt"
    train(model2, samples, collate, loss_fn, cfg, checkpoint_path=ckpt, stop_after_steps=7, validate=val_of)
    model3, _ = problem()
    resumed = train(model3, samples, collate, loss_fn, cfg, checkpoint_path=ckpt, validate=val_of)
    assert resumed["val_curve"] == full["val_curve"] and resumed["best_step"] == full["best_step"]
    for a, b in zip(model.parameters(), model3.parameters()):
        assert torch.equal(a, b)


def test_the_plateau_schedule_halves_the_rate_at_each_check_without_a_new_lowest_loss(monkeypatch):
    """After warm-up the rate holds until a check finds no new lowest loss, then halves, whatever the budget."""
    import medlib.train as mt
    model, samples = problem()
    seen, rates, optimizer = iter([3.0, 2.0, 2.5, 1.0, 1.2, 1.1, 1.3]), [], []
    real = mt._optimizer
    monkeypatch.setattr(mt, "_optimizer", lambda *a, **k: optimizer.append(real(*a, **k)) or optimizer[0])

    def validate(m):
        rates.append(optimizer[0][3].param_groups[0]["lr"])  # the rate the steps before this check trained with
        return next(seen)

    cfg = TrainConfig(num_epochs=50, lr=1e-2, batch_size=16, validate_every=2, patience=3, warmup_ratio=0.0,
                      schedule="plateau")
    out = train(model, samples, collate, loss_fn, cfg, validate=validate)
    # checks 3, 5 and 6 found no new lowest loss: each halves the rate; check 7 is the third since the best
    assert rates == pytest.approx([1e-2, 1e-2, 1e-2, 5e-3, 5e-3, 2.5e-3, 1.25e-3])
    assert out["best_step"] == 8 and out["step"] == 14 and out["patience_ran_out"]
    with pytest.raises(ValueError, match="schedule must be"):
        train(model, samples, collate, loss_fn, TrainConfig(num_epochs=1, batch_size=16, schedule="cosine"))
