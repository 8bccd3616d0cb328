"""Newton's method with the exact Hessian, for small problems."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import number


class Newton(torch.optim.Optimizer):
    """Exact Newton steps::

        x_new = x - lr * (H + damping * I)^-1 g

    with the gradient ``g`` and Hessian ``H`` of the loss at ``x``. Newton's step has no
    learning rate to tune (``lr=1`` jumps to the minimum of the local quadratic model) but needs
    the ``n x n`` Hessian: ``n**2`` numbers and an ``O(n**3)`` solve, so it is for small
    problems; above ``max_params`` parameters the constructor raises ValueError (use LBFGS).

    ``step(closure)`` takes a closure that recomputes and returns the loss *without* calling
    ``backward``: the optimizer differentiates it twice (the Hessian rows come from one batched
    double-backward, vectorised with vmap). ``damping > 0`` (Levenberg-Marquardt) keeps the
    step finite where ``H`` is singular; near a saddle point the undamped step heads for the
    saddle, as the lecture warns. ``lr`` and ``damping`` may differ per param group.

    Example::

        opt = Newton([w], lr=1.0)
        opt.step(lambda: ((A @ w - b) ** 2).sum())   # a quadratic: solved in one step
    """

    def __init__(self, params, lr: float = 1.0, damping: float = 0.0, *,
                 max_params: int = 5000):
        if not (isinstance(max_params, int) and max_params > 0):
            raise ValueError(f"max_params={max_params!r} is invalid; it must be an integer > 0")
        self.max_params = max_params
        super().__init__(params, dict(lr=lr, damping=damping))
        n = sum(p.numel() for p in self._params())
        if n > max_params:
            raise ValueError(
                f"Newton got {n:,} parameters, more than max_params={max_params:,}: its Hessian "
                f"would hold {n * n:,} numbers; raise max_params if you mean it, or use LBFGS"
            )

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        number("lr", group["lr"], 0)
        number("damping", group["damping"], 0)
        for p in group["params"]:
            if p.is_complex():
                raise ValueError("Newton supports real parameters only")

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> Tensor:  # type: ignore[override]
        """One Newton step; returns the loss before the step."""
        if closure is None:
            raise ValueError("Newton.step needs a closure that returns the loss (no backward)")
        params = self._params()
        with torch.enable_grad():
            loss = closure()
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            g = torch.cat([_flat(gi, p) for gi, p in zip(grads, params, strict=True)])
            hessian = _hessian(g, params)
        shift = torch.cat([torch.full((p.numel(),), float(group["damping"]), dtype=g.dtype)
                           for group in self.param_groups for p in group["params"]])
        system = hessian.detach() + torch.diag(shift.to(g.device))
        direction = torch.linalg.solve(system, g.detach())
        offset = 0
        for group in self.param_groups:
            for p in group["params"]:
                n = p.numel()
                p.sub_(direction[offset:offset + n].view_as(p), alpha=float(group["lr"]))
                offset += n
        state = self.state[params[0]]
        state["n_iter"] = state.get("n_iter", 0) + 1
        return loss.detach()


def _flat(grad: Tensor | None, p: Tensor) -> Tensor:
    if grad is None:
        return torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
    return grad.reshape(-1)


def _hessian(g: Tensor, params: list[Tensor]) -> Tensor:
    """Rows ``d g_i / d params``, from one vmap-batched backward (row by row where vmap fails)."""
    n = g.numel()
    if not g.requires_grad:  # the loss is linear in the parameters
        return torch.zeros(n, n, dtype=g.dtype, device=g.device)
    eye = torch.eye(n, dtype=g.dtype, device=g.device)
    try:
        rows = torch.autograd.grad(g, params, grad_outputs=eye, is_grads_batched=True,
                                   retain_graph=True, allow_unused=True)
        return torch.cat([_batched_flat(r, p, n) for r, p in zip(rows, params, strict=True)], 1)
    except RuntimeError:
        out = []
        for i in range(n):
            row = torch.autograd.grad(g[i], params, retain_graph=True, allow_unused=True)
            out.append(torch.cat([_flat(r, p) for r, p in zip(row, params, strict=True)]))
        return torch.stack(out)


def _batched_flat(rows: Tensor | None, p: Tensor, n: int) -> Tensor:
    if rows is None:
        return torch.zeros(n, p.numel(), dtype=p.dtype, device=p.device)
    return rows.reshape(n, -1)
