"""Newton and L-BFGS against closed forms, scipy.optimize and torch.optim.LBFGS."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize as so
import torch

from gradwise.optim import LBFGS, Newton

F64 = torch.float64


def rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def minimise(opt, params, loss_fn):
    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    return opt.step(closure)


def test_lbfgs_rosenbrock_like_scipy():
    ref = so.minimize(so.rosen, [-1.2, 1.0], jac=so.rosen_der, method="L-BFGS-B",
                      options=dict(gtol=1e-12, ftol=1e-15))
    x = torch.tensor([-1.2, 1.0], dtype=F64, requires_grad=True)
    opt = LBFGS([x], max_iter=500, max_eval=1000, tolerance_grad=1e-12, tolerance_change=1e-15)
    minimise(opt, [x], lambda: rosenbrock(x))
    assert torch.allclose(x.detach(), torch.ones(2, dtype=F64), rtol=0, atol=1e-8)
    evals = opt.state[x]["func_evals"]
    assert evals <= 1.25 * ref.nfev, (evals, ref.nfev)


def _digits_logistic(digits):
    x, y = digits
    return x, y, x.shape[1], 10


def test_lbfgs_l2_logistic_regression_matches_scipy(digits):
    """Softmax regression on digits with an L2 penalty on the weights only (not the bias):
    gradwise's per-group weight_decay against scipy's L-BFGS-B on the same objective."""
    x, y, d, c = _digits_logistic(digits)
    lam = 1e-2

    def objective(flat):
        w = torch.tensor(flat[: d * c].reshape(d, c), requires_grad=True)
        b = torch.tensor(flat[d * c:], requires_grad=True)
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + 0.5 * lam * (w**2).sum()
        loss.backward()
        return loss.item(), np.concatenate([w.grad.numpy().ravel(), b.grad.numpy()])

    ref = so.minimize(objective, np.zeros(d * c + c), jac=True, method="L-BFGS-B",
                      options=dict(maxiter=10_000, gtol=1e-10, ftol=1e-15, maxcor=10))
    w = torch.zeros(d, c, dtype=F64, requires_grad=True)
    b = torch.zeros(c, dtype=F64, requires_grad=True)
    opt = LBFGS([{"params": [w], "weight_decay": lam}, {"params": [b]}], history_size=10,
                max_iter=10_000, max_eval=10_000, tolerance_grad=1e-10, tolerance_change=1e-12)
    minimise(opt, [w, b], lambda: torch.nn.functional.cross_entropy(x @ w + b, y))
    with torch.no_grad():
        ours = float(torch.nn.functional.cross_entropy(x @ w + b, y) + 0.5 * lam * (w**2).sum())
    assert abs(ours - ref.fun) <= 1e-10 * ref.fun
    assert np.abs(np.concatenate([w.detach().numpy().ravel(), b.detach().numpy()])
                  - ref.x).max() < 1e-3
    evals = opt.state[w]["func_evals"]
    assert evals <= 1.5 * ref.nfev, (evals, ref.nfev)


def test_lbfgs_fixed_step_matches_torch():
    """Without a line search the algorithm is torch's: same iterates, to rounding."""
    torch.manual_seed(0)
    a = torch.randn(8, 8, dtype=F64)
    a = a @ a.T / 8 + 0.5 * torch.eye(8, dtype=F64)
    b = torch.randn(8, dtype=F64)
    results = []
    for cls in (LBFGS, torch.optim.LBFGS):
        x = torch.zeros(8, dtype=F64, requires_grad=True)
        opt = cls([x], lr=0.5, max_iter=15, history_size=5, line_search_fn=None)
        for _ in range(3):
            minimise(opt, [x], lambda x=x: 0.5 * x @ a @ x - b @ x)
        results.append(x.detach().clone())
    assert torch.allclose(results[0], results[1], rtol=1e-12, atol=1e-14)


def test_lbfgs_state_dict_continues(digits):
    """Saving and loading the optimizer between steps changes nothing."""
    x, y, d, c = _digits_logistic(digits)

    def run(split):
        w = torch.zeros(d, c, dtype=F64, requires_grad=True)
        opt = LBFGS([w], max_iter=5, weight_decay=1e-2)
        for i in range(4):
            if split and i == 2:
                saved = opt.state_dict()
                opt = LBFGS([w], max_iter=5, weight_decay=1e-2)
                opt.load_state_dict(saved)
            minimise(opt, [w], lambda w=w: torch.nn.functional.cross_entropy(x @ w, y))
        return w.detach()

    assert torch.equal(run(False), run(True))


def test_lbfgs_groups_must_share_algorithm_settings():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="share 'max_iter'"):
        LBFGS([{"params": [a]}, {"params": [b], "max_iter": 3}])
    with pytest.raises(ValueError, match="line_search_fn"):
        LBFGS([a], line_search_fn="backtracking")


def test_newton_solves_a_quadratic_in_one_step():
    torch.manual_seed(0)
    m = torch.randn(6, 6, dtype=F64)
    a, b = m @ m.T + torch.eye(6, dtype=F64), torch.randn(6, dtype=F64)
    w = torch.zeros(6, dtype=F64, requires_grad=True)
    Newton([w]).step(lambda: 0.5 * w @ a @ w - b @ w)
    assert torch.allclose(w.detach(), torch.linalg.solve(a, b), rtol=1e-12, atol=1e-12)


def test_newton_on_several_tensors_and_damping():
    """Two parameter tensors form one Hessian; damping gives the closed form (A + mu I)^-1 b."""
    torch.manual_seed(1)
    m = torch.randn(5, 5, dtype=F64)
    a, b = m @ m.T + torch.eye(5, dtype=F64), torch.randn(5, dtype=F64)
    u = torch.zeros(2, dtype=F64, requires_grad=True)
    v = torch.zeros(3, dtype=F64, requires_grad=True)

    def loss():
        w = torch.cat([u, v])
        return 0.5 * w @ a @ w - b @ w

    Newton([u, v], damping=0.5).step(loss)
    want = torch.linalg.solve(a + 0.5 * torch.eye(5, dtype=F64), b)
    assert torch.allclose(torch.cat([u, v]).detach(), want, rtol=1e-12, atol=1e-12)


def test_newton_converges_quadratically_on_rosenbrock():
    x = torch.tensor([-1.2, 1.0], dtype=F64, requires_grad=True)
    opt = Newton([x])
    errors = []
    for _ in range(6):
        opt.step(lambda: rosenbrock(x))
        errors.append(float((x.detach() - 1).norm()))
    # once close, the error squares each step: 5.6e-2 -> 9.6e-6 -> 1.9e-11
    assert errors[-1] < 1e-10
    for before, after in zip(errors[3:], errors[4:], strict=False):
        assert after <= 10 * before**2


def test_newton_refuses_a_large_problem():
    big = torch.zeros(101, requires_grad=True)
    with pytest.raises(ValueError, match="max_params=100"):
        Newton([big], max_params=100)
    Newton([torch.zeros(100, requires_grad=True)], max_params=100)  # at the limit: fine


def test_newton_needs_a_closure():
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="closure"):
        Newton([w]).step(None)


def test_cubic_step_of_a_flat_or_degenerate_bracket_is_the_midpoint():
    """Equal slopes on a quadratic (no curvature left in the cubic) and a zero-width bracket
    have no cubic minimiser; the safeguarded step is the bracket's midpoint, not a
    ZeroDivisionError."""
    from gradwise.optim.lbfgs import _cubic_min

    # f(t) = -t^2 on [0, 1]: slopes 0 and -2, f 0 and -1: disc 0 and a zero denominator
    assert _cubic_min(0.0, 0.0, 0.0, 1.0, -1.0, -2.0, 0.0, 1.0) == 0.5
    assert _cubic_min(1.0, 2.0, 1.0, 1.0, 2.0, 1.0, 0.0, 2.0) == 1.0
    # a true cubic minimiser still wins: f(t) = (t - 0.3)^2 through t = 0 and t = 1
    t = _cubic_min(0.0, 0.09, -0.6, 1.0, 0.49, 1.4, 0.0, 1.0)
    assert abs(t - 0.3) < 1e-12
