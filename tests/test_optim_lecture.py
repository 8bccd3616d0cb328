"""Options torch lacks, against the lecture's formulas written out in numpy.

The objective is a fixed quadratic ``f(x) = 0.5 x'Ax - b'x`` (gradient ``Ax - b``), evaluated
identically on both sides, so every difference comes from the update rule. fp64 throughout.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gradwise.optim as go

RNG = np.random.default_rng(0)
_M = RNG.normal(size=(6, 6))
A = _M @ _M.T / 6 + 0.1 * np.eye(6)
B = RNG.normal(size=6)
X0 = RNG.normal(size=6)
STEPS = 60
BACKENDS = ["reference", "foreach"]


def grad(x):
    return A @ x - B


def lr_at(i, lr):
    """The learning rate of step ``i``: ``lr``, cut 10x from step 30 on."""
    return lr if i < 30 else lr / 10


def run_gradwise(cls, backend, lr, **kw):
    x = torch.nn.Parameter(torch.tensor(X0))
    opt = cls([x], lr=lr, backend=backend, **kw)
    path = []
    for i in range(STEPS):
        opt.param_groups[0]["lr"] = lr_at(i, lr)
        x.grad = torch.tensor(grad(x.detach().numpy()))
        opt.step()
        path.append(x.detach().numpy().copy())
    return np.array(path)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("nesterov", [False, True])
def test_velocity_form_momentum(backend, nesterov):
    rho, lr = 0.9, 0.05
    x, v, path = X0.copy(), np.zeros(6), []
    for i in range(STEPS):
        v_prev = v
        v = rho * v - lr_at(i, lr) * grad(x)
        x = x + (-rho * v_prev + (1 + rho) * v if nesterov else v)
        path.append(x)
    got = run_gradwise(go.SGD, backend, lr, momentum=rho, nesterov=nesterov,
                       momentum_form="velocity")
    np.testing.assert_allclose(got, np.array(path), rtol=1e-12, atol=1e-12)


def test_velocity_and_torch_forms_agree_until_the_learning_rate_changes():
    velocity = run_gradwise(go.SGD, "reference", 0.05, momentum=0.9, momentum_form="velocity")
    torch_form = run_gradwise(go.SGD, "reference", 0.05, momentum=0.9)
    np.testing.assert_allclose(velocity[:30], torch_form[:30], rtol=1e-10, atol=1e-12)
    # after the cut, the velocity form still carries momentum built at the old rate
    assert np.abs(velocity[31] - torch_form[31]).max() > 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("bias_correction", "eps_inside"), [(False, False), (True, True)])
def test_adam_variants(backend, bias_correction, eps_inside):
    lr, b1, b2, eps = 0.05, 0.9, 0.999, 1e-8
    x, m, v, path = X0.copy(), np.zeros(6), np.zeros(6), []
    for i in range(STEPS):
        t = i + 1
        dx = grad(x)
        m = b1 * m + (1 - b1) * dx
        v = b2 * v + (1 - b2) * dx * dx
        m_hat, v_hat = (m / (1 - b1**t), v / (1 - b2**t)) if bias_correction else (m, v)
        denom = np.sqrt(v_hat + eps) if eps_inside else np.sqrt(v_hat) + eps
        x = x - lr_at(i, lr) * m_hat / denom
        path.append(x)
    got = run_gradwise(go.Adam, backend, lr, eps=eps, bias_correction=bias_correction,
                       eps_inside=eps_inside)
    np.testing.assert_allclose(got, np.array(path), rtol=1e-10, atol=1e-12)


def test_adam_without_bias_correction_takes_a_huge_first_step():
    """The lecture: m and v start at 0, so the uncorrected first step is
    (1 - b1) / sqrt(1 - b2) = 3.16 times the corrected one, in every coordinate (up to eps)."""
    with_bc = run_gradwise(go.Adam, "reference", 0.05)[0] - X0
    without = run_gradwise(go.Adam, "reference", 0.05, bias_correction=False)[0] - X0
    ratio = np.abs(without) / np.abs(with_bc)
    np.testing.assert_allclose(ratio, 0.1 / np.sqrt(0.001), rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("eps_inside", [False, True])
def test_rmsprop_slide_formula(backend, eps_inside):
    lr, decay_rate, eps = 0.01, 0.99, 1e-8
    x, grad_squared, path = X0.copy(), np.zeros(6), []
    for i in range(STEPS):
        dx = grad(x)
        grad_squared = decay_rate * grad_squared + (1 - decay_rate) * dx * dx
        denom = np.sqrt(grad_squared + eps) if eps_inside else np.sqrt(grad_squared) + eps
        x = x - lr_at(i, lr) * dx / denom
        path.append(x)
    got = run_gradwise(go.RMSprop, backend, lr, alpha=decay_rate, eps=eps, eps_inside=eps_inside)
    np.testing.assert_allclose(got, np.array(path), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("eps_inside", [False, True])
def test_adagrad_slide_formula(backend, eps_inside):
    lr, eps = 0.5, 1e-7
    x, grad_squared, path = X0.copy(), np.zeros(6), []
    for i in range(STEPS):
        dx = grad(x)
        grad_squared = grad_squared + dx * dx
        denom = np.sqrt(grad_squared + eps) if eps_inside else np.sqrt(grad_squared) + eps
        x = x - lr_at(i, lr) * dx / denom
        path.append(x)
    got = run_gradwise(go.Adagrad, backend, lr, eps=eps, eps_inside=eps_inside)
    np.testing.assert_allclose(got, np.array(path), rtol=1e-10, atol=1e-12)


def test_adagrad_steps_shrink_monotonically():
    """The running sum only grows, so under a constant gradient every step is shorter."""
    x = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = go.Adagrad([x], lr=1.0)
    steps = []
    for _ in range(20):
        before = x.detach().clone()
        x.grad = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
        opt.step()
        steps.append(float((x.detach() - before).norm()))
    assert all(b < a for a, b in zip(steps, steps[1:], strict=False))
