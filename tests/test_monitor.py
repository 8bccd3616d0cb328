"""The monitor's numbers against hand computations, and its warnings on runs that earn them."""

from __future__ import annotations

import math

import torch

from gradwise.train import Trainer
from gradwise.train.monitor import Monitor

DIGITS = {"data": "digits", "model": {"name": "mlp", "hidden": [32]},
          "train": {"epochs": 1, "checkpoint": False, "monitor_every": 5}}


def _monitor_records(trainer):
    return [r for r in trainer.records if "monitor" in r]


def test_update_ratio_of_plain_sgd_is_lr_times_grad_over_weight(digits):
    x, y = digits
    model = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    model.double()
    monitor = Monitor(model, num_classes=10, every=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    assert monitor.begin(1)
    loss = torch.nn.functional.cross_entropy(model(x[:100]), y[:100])
    loss.backward()
    expected = {name: 0.05 * float(p.grad.norm()) / float(p.detach().norm())
                for name, p in model.named_parameters() if p.ndim == 2}
    grads = {name: float(p.grad.norm()) for name, p in model.named_parameters() if p.ndim == 2}
    monitor.before_update()
    opt.step()
    record = monitor.end()
    assert record["update_ratio"].keys() == expected.keys() == {"0.weight", "2.weight"}
    for name, value in expected.items():
        assert math.isclose(record["update_ratio"][name], value, rel_tol=1e-9)
        assert math.isclose(record["grad_norm"][name], grads[name], rel_tol=1e-12)
    assert not monitor.begin(2) and monitor.end() is None  # steps 1, 3, 6 ... only
    assert monitor.begin(3)


def test_dead_relu_fraction_counts_units_silent_for_the_whole_batch(digits):
    x, _ = digits
    model = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU()).double()
    with torch.no_grad():
        model[0].bias[:6] = -1e3   # 6 of 8 units can never fire
    monitor = Monitor(model, num_classes=10, every=1)
    monitor.begin(1)
    model(x[:50])
    monitor.before_update()
    record = monitor.end()
    assert record["dead_relu"] == {"1": 0.75}
    assert any("75% of the units after 1 are dead" in w for w in monitor.warnings)


def test_dead_relu_fraction_of_conv_channels_matches_any_over_batch_and_space():
    """Channels (N, C, H, W) in both memory layouts against the definition: a channel is dead
    when no sample fires it anywhere, ``(out > 0).any(dim=(0, 2, 3))`` false."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 12, 3)
    with torch.no_grad():
        conv.bias[:5] = -1e3   # 5 of 12 channels never fire
        conv.bias[5] = -1.5    # one fires only at a few positions of a few samples
    model = torch.nn.Sequential(conv, torch.nn.ReLU())
    x = torch.randn(16, 3, 10, 10)
    fired = model(x) > 0
    assert 0 < float(fired[:, 5].float().mean()) < 0.05  # the rare channel is a real test
    dead = ~fired.any(dim=(0, 2, 3))
    assert int(dead.sum()) == 5
    oracle = float(dead.float().mean())
    for layout in (torch.contiguous_format, torch.channels_last):
        model.to(memory_format=layout)
        monitor = Monitor(model, num_classes=10, every=1)
        monitor.begin(1)
        model(x.contiguous(memory_format=layout))
        monitor.before_update()
        assert monitor.end()["dead_relu"] == {"1": oracle}


def test_monitor_records_land_in_the_run_every_n_steps():
    trainer = Trainer(DIGITS, out=None, quiet=True)
    trainer.fit()
    steps = [r["step"] for r in _monitor_records(trainer)]
    assert steps == [1] + list(range(5, trainer.step + 1, 5))
    record = _monitor_records(trainer)[-1]["monitor"]
    assert set(record["update_ratio"]) == {"features.1.weight", "head.weight"}
    assert set(record["dead_relu"]) == {"features.2"}
    step_records = [r for r in trainer.records if "loss" in r]
    assert all(r["grad_norm"] > 0 for r in step_records)
    assert trainer.monitor.warnings == []


def test_far_too_low_lr_warns_about_the_update_ratio():
    config = {**DIGITS, "optimizer": {"name": "sgd", "lr": 1e-7}}
    summary = Trainer(config, out=None, quiet=True).fit()
    assert any("far below the ~1e-3 rule of thumb" in w for w in summary["warnings"])


def test_a_badly_scaled_head_warns_about_the_initial_loss():
    trainer = Trainer(DIGITS, out=None, quiet=True)
    with torch.no_grad():
        trainer.model.head.weight.mul_(300)
    summary = trainer.fit()
    assert any(w.startswith("initial loss") for w in summary["warnings"])
    healthy = Trainer(DIGITS, out=None, quiet=True).fit()
    assert not any(w.startswith("initial loss") for w in healthy["warnings"])


def test_a_schedule_annealing_the_lr_to_zero_raises_no_update_ratio_warning():
    config = {**DIGITS, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
              "schedule": {"name": "cosine", "warmup_epochs": 0.5},
              "train": {**DIGITS["train"], "epochs": 2}}
    trainer = Trainer(config, out=None, quiet=True)
    summary = trainer.fit()
    ratios = [r["monitor"]["update_ratio"]["head.weight"] for r in _monitor_records(trainer)]
    assert min(ratios) < 1e-5  # the first warmup step and the last annealed steps
    assert summary["warnings"] == []
