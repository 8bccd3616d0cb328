"""Helpers shared by the tests: a small real model and weight comparisons."""

from __future__ import annotations

import copy

import torch


def digits_mlp(dtype=torch.float32, seed=0) -> torch.nn.Module:
    """64 -> 32 -> 10 tanh network with a fixed initialisation.

    Smooth on purpose: a ReLU kink crossed by one rounding error turns a 1e-9 difference
    between two exact implementations into 1e-5 a few dozen steps later.
    """
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
    return model.to(dtype)


def train(model, opt, data, steps, *, batch=128, start=0, on_step=None):
    """``steps`` minibatch updates over a fixed sequence of batches; returns the flat weights."""
    x, y = data
    x = x.to(next(model.parameters()).dtype)
    for i in range(start, start + steps):
        if on_step is not None:
            on_step(i, opt)
        lo = (i * batch) % (len(x) - batch)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[lo:lo + batch]), y[lo:lo + batch]).backward()
        opt.step()
    return flat(model)


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||``, the relative difference of two weight vectors."""
    return float((a - b).norm() / b.norm())


def clone(model):
    return copy.deepcopy(model)
