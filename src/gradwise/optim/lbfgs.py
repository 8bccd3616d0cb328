"""L-BFGS with a strong-Wolfe line search, for full-batch deterministic problems."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import choice, number

LINE_SEARCHES = ("strong_wolfe", None)
# Settings of the algorithm itself: one value for all param groups.
_SHARED = ("lr", "max_iter", "max_eval", "tolerance_grad", "tolerance_change", "history_size",
           "line_search_fn")


class LBFGS(torch.optim.Optimizer):
    """Limited-memory BFGS, closure-based like ``torch.optim.LBFGS``.

    Each iteration builds the quasi-Newton direction ``d = -H g`` from the last
    ``history_size`` pairs ``s = x_{k+1} - x_k``, ``y = g_{k+1} - g_k`` (the two-loop recursion,
    with ``H_0 = (s.y / y.y) I``), then picks the step ``t`` along ``d``: by default with a
    line search that satisfies the strong Wolfe conditions (``c1 = 1e-4``, ``c2 = 0.9``; cubic
    interpolation), else a fixed ``t = lr`` (torch's default, ``line_search_fn=None``). One
    ``step(closure)`` runs up to ``max_iter`` iterations and ``max_eval`` closure calls; it
    stops early when ``max|g| <= tolerance_grad`` or when the step or the loss change falls
    below ``tolerance_change``.

    L-BFGS is for full-batch, deterministic objectives (the closure must return the same loss
    for the same parameters): minibatch noise breaks its curvature pairs and line search.

    Beyond torch: several param groups, optimised as one vector; a group's ``weight_decay``
    adds ``weight_decay / 2 * ||x||^2`` to the objective (so biases can be left unpenalised).
    The algorithm's settings (``lr``, ``max_iter``, ...) are shared by all groups.

    Example::

        opt = LBFGS(model.parameters(), tolerance_grad=1e-9)
        def closure():
            opt.zero_grad()
            loss = loss_fn(model(X), y)
            loss.backward()
            return loss
        opt.step(closure)
    """

    def __init__(self, params, lr: float = 1, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9,
                 history_size: int = 100, line_search_fn: str | None = "strong_wolfe",
                 weight_decay: float = 0.0):
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                        tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                        history_size=history_size, line_search_fn=line_search_fn,
                        weight_decay=weight_decay)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for key in ("lr", "tolerance_grad", "tolerance_change", "weight_decay"):
            number(key, group[key], 0)
        for key in ("max_iter", "max_eval", "history_size"):
            if not (isinstance(group[key], int) and group[key] > 0):
                raise ValueError(f"{key}={group[key]!r} is invalid; it must be an integer > 0")
        choice("line_search_fn", group["line_search_fn"], LINE_SEARCHES)
        first = self.param_groups[0]
        for key in _SHARED:
            if group[key] != first[key]:
                raise ValueError(
                    f"LBFGS param groups must share {key!r} (got {group[key]!r} and "
                    f"{first[key]!r}); only weight_decay may differ between groups"
                )
        for p in group["params"]:
            if p.is_complex():
                raise ValueError("LBFGS supports real parameters only")

    # -- flat views of all parameters -------------------------------------------------------

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _evaluate(self, closure: Callable) -> tuple[float, Tensor]:
        """The objective (closure + weight-decay terms) and its flat gradient."""
        with torch.enable_grad():
            value = closure()
        loss = float(value.detach() if isinstance(value, Tensor) else value)
        pieces = []
        for group in self.param_groups:
            wd = group["weight_decay"]
            for p in group["params"]:
                g = torch.zeros_like(p) if p.grad is None else p.grad
                if wd:
                    loss += 0.5 * wd * float(p.pow(2).sum())
                    g = g + wd * p
                pieces.append(g.reshape(-1))
        return loss, torch.cat(pieces)

    def _add(self, t: float, direction: Tensor) -> None:
        offset = 0
        for p in self._params():
            n = p.numel()
            p.add_(direction[offset:offset + n].view_as(p), alpha=t)
            offset += n

    def _set(self, values: list[Tensor]) -> None:
        for p, v in zip(self._params(), values, strict=True):
            p.copy_(v)

    # -- the algorithm ----------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> float:  # type: ignore[override]
        """Run up to ``max_iter`` iterations; return the objective at the start."""
        if closure is None:
            raise ValueError("LBFGS.step needs a closure that computes the loss and its gradient")
        cfg = self.param_groups[0]
        state = self.state[self._params()[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        loss, g = self._evaluate(closure)
        start_loss = loss
        evals = 1
        state["func_evals"] += 1
        if g.abs().max() <= cfg["tolerance_grad"]:
            return start_loss

        d, t = state.get("d"), state.get("t")
        old_s, old_y, ro = state.get("old_stps", []), state.get("old_dirs", []), state.get("ro", [])
        h_diag, prev_g, prev_loss = state.get("H_diag", 1.0), state.get("prev_flat_grad"), None
        for n_iter in range(1, cfg["max_iter"] + 1):
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d, old_s, old_y, ro, h_diag = -g, [], [], [], 1.0
            else:
                y, s = g - prev_g, d * t
                ys = float(y @ s)
                if ys > 1e-10:  # keep the pair only where the curvature is positive
                    if len(old_s) == cfg["history_size"]:
                        old_s.pop(0), old_y.pop(0), ro.pop(0)
                    old_s.append(s)
                    old_y.append(y)
                    ro.append(1.0 / ys)
                    h_diag = ys / float(y @ y)
                d = _two_loop(g, old_s, old_y, ro, h_diag)
            prev_g, prev_loss = g.clone(), loss

            # the first step is scaled to length <= lr: the gradient's size is not yet known
            t = cfg["lr"]
            if state["n_iter"] == 1:
                t *= min(1.0, 1.0 / float(g.abs().sum()))
            gtd = float(g @ d)
            if gtd > -cfg["tolerance_change"]:
                break  # not a descent direction any more

            if cfg["line_search_fn"] == "strong_wolfe":
                x0 = [p.clone() for p in self._params()]

                def objective(step: float, x0=x0, d=d) -> tuple[float, Tensor]:
                    self._set(x0)
                    self._add(step, d)
                    return self._evaluate(closure)

                loss, g, t, ls_evals = strong_wolfe(objective, t, d, loss, g, gtd,
                                                    tolerance_change=cfg["tolerance_change"])
                self._set(x0)
                self._add(t, d)
            else:
                self._add(t, d)
                ls_evals = 0
                if n_iter != cfg["max_iter"]:
                    loss, g = self._evaluate(closure)
                    ls_evals = 1
            evals += ls_evals
            state["func_evals"] += ls_evals

            if evals >= cfg["max_eval"] or g.abs().max() <= cfg["tolerance_grad"]:
                break
            if (d * t).abs().max() <= cfg["tolerance_change"]:
                break
            if abs(loss - prev_loss) < cfg["tolerance_change"]:
                break

        state.update(d=d, t=t, old_stps=old_s, old_dirs=old_y, ro=ro, H_diag=h_diag,
                     prev_flat_grad=prev_g, prev_loss=prev_loss)
        return start_loss


def _two_loop(g: Tensor, old_s: list[Tensor], old_y: list[Tensor], ro: list[float],
              h_diag: float) -> Tensor:
    """``-H g`` for the L-BFGS inverse-Hessian estimate ``H`` (Nocedal & Wright, Alg. 7.4)."""
    q = -g
    alphas = []
    for s, y, r in zip(reversed(old_s), reversed(old_y), reversed(ro), strict=True):
        a = r * float(s @ q)
        q = q - a * y
        alphas.append(a)
    r_vec = q * h_diag
    for s, y, r, a in zip(old_s, old_y, ro, reversed(alphas), strict=True):
        b = r * float(y @ r_vec)
        r_vec = r_vec + (a - b) * s
    return r_vec


def _cubic_min(t1: float, f1: float, g1: float, t2: float, f2: float, g2: float,
               lo: float, hi: float) -> float:
    """Minimiser in ``[lo, hi]`` of the cubic through two points with their slopes
    (Nocedal & Wright, eq. 3.59); the midpoint where the cubic has no minimiser."""
    if t1 == t2:
        return (lo + hi) / 2
    d1 = g1 + g2 - 3 * (f1 - f2) / (t1 - t2)
    disc = d1 * d1 - g1 * g2
    if disc < 0 or not math.isfinite(disc):
        return (lo + hi) / 2
    d2 = math.copysign(math.sqrt(disc), t2 - t1)
    denominator = g2 - g1 + 2 * d2
    if denominator == 0:  # a flat cubic (g1 = g2, disc = 0): no interior minimiser
        return (lo + hi) / 2
    t = t2 - (t2 - t1) * (g2 + d2 - d1) / denominator
    if not math.isfinite(t):
        return (lo + hi) / 2
    return min(max(t, lo), hi)


def strong_wolfe(objective: Callable[[float], tuple[float, Tensor]], t: float, d: Tensor,
                 f0: float, g0: Tensor, gtd0: float, *, c1: float = 1e-4, c2: float = 0.9,
                 tolerance_change: float = 1e-9,
                 max_evals: int = 25) -> tuple[float, Tensor, float, int]:
    """A step ``t`` along ``d`` that satisfies the strong Wolfe conditions::

        f(t) <= f(0) + c1 * t * f'(0)        (sufficient decrease)
        |f'(t)| <= c2 * |f'(0)|              (curvature)

    by bracketing, then zooming with safeguarded cubic interpolation (Nocedal & Wright,
    Algorithms 3.5 and 3.6). ``objective(t)`` returns the loss and flat gradient at
    ``x + t d``. Returns ``(f, g, t, evaluations)`` of the accepted step (the best point found
    when ``max_evals`` runs out).
    """
    d_scale = float(d.abs().max())
    prev = (0.0, f0, g0, gtd0)  # (t, f, g, f') of the previous trial
    f, g = objective(t)
    evals = 1
    gtd = float(g @ d)
    bracket = None
    while evals < max_evals:
        if f > f0 + c1 * t * gtd0 or (evals > 1 and f >= prev[1]):
            bracket = [prev, (t, f, g, gtd)]
            break
        if abs(gtd) <= -c2 * gtd0:
            return f, g, t, evals
        if gtd >= 0:
            bracket = [prev, (t, f, g, gtd)]
            break
        # extrapolate: a longer step, between 1.01x and 10x the current one
        lo, hi = t + 0.01 * (t - prev[0]), 10 * t
        new_t = _cubic_min(prev[0], prev[1], prev[3], t, f, gtd, lo, hi)
        prev = (t, f, g, gtd)
        t = new_t
        f, g = objective(t)
        evals += 1
        gtd = float(g @ d)
    if bracket is None:  # out of evaluations while extending: take the last point
        return f, g, t, evals

    # zoom: bracket[0] is the low end (the lower loss), bracket[1] the other end
    lo_pt, hi_pt = (bracket if bracket[0][1] <= bracket[1][1] else bracket[::-1])
    while evals < max_evals and abs(hi_pt[0] - lo_pt[0]) * d_scale >= tolerance_change:
        a, b = sorted((lo_pt[0], hi_pt[0]))
        margin = 0.1 * (b - a)  # stay off the ends so the interval keeps shrinking
        t = _cubic_min(lo_pt[0], lo_pt[1], lo_pt[3], hi_pt[0], hi_pt[1], hi_pt[3],
                       a + margin, b - margin)
        f, g = objective(t)
        evals += 1
        gtd = float(g @ d)
        if f > f0 + c1 * t * gtd0 or f >= lo_pt[1]:
            hi_pt = (t, f, g, gtd)
            continue
        if abs(gtd) <= -c2 * gtd0:
            return f, g, t, evals
        if gtd * (hi_pt[0] - lo_pt[0]) >= 0:
            hi_pt = lo_pt
        lo_pt = (t, f, g, gtd)
    t, f, g, _ = lo_pt
    if t == 0.0:  # nothing better than the start was found: report the start honestly
        return f0, g0, 0.0, evals
    return f, g, t, evals
