"""Bad input gets one clear ValueError naming the culprit and what is accepted."""

from __future__ import annotations

import pytest
import torch

import gradwise.optim as go


def params():
    return [torch.nn.Parameter(torch.zeros(3))]


@pytest.mark.parametrize(("cls", "kw", "match"), [
    (go.SGD, dict(lr=-0.1), r"lr=-0.1 is invalid; lr must be a finite number >= 0"),
    (go.SGD, dict(lr=float("nan")), r"lr=nan"),
    (go.SGD, dict(momentum=-1), r"momentum=-1"),
    (go.SGD, dict(nesterov=True), r"nesterov=True requires momentum > 0"),
    (go.SGD, dict(momentum=0.9, momentum_form="heavy"),
     r"momentum_form='heavy'.*'torch', 'velocity'"),
    (go.Adam, dict(betas=(0.9, 1.0)),
     r"betas\[1\]=1.0 is invalid; betas\[1\] must be a number in \[0, 1\)"),
    (go.Adam, dict(betas=(-0.1, 0.99)), r"betas\[0\]=-0.1"),
    (go.Adam, dict(betas=0.9), r"betas must be a pair"),
    (go.AdamW, dict(eps=-1e-8), r"eps=-1e-08"),
    (go.RMSprop, dict(alpha=1.5), r"alpha=1.5.*\[0, 1\]"),
    (go.Adagrad, dict(lr_decay=-1), r"lr_decay=-1"),
    (go.Adam, dict(backend="cuda"), r"backend='cuda' is not one of auto, reference, foreach"),
    (go.Adam, dict(backend="fused", foreach=True), r"backend='fused' and torch's fused/foreach"),
    (go.Adam, dict(capturable=True), r"capturable=True is not supported"),
    (go.SGD, dict(differentiable=True), r"differentiable=True is not supported"),
])
def test_bad_hyperparameters(cls, kw, match):
    with pytest.raises(ValueError, match=match):
        cls(params(), **kw)


def test_bad_value_in_a_later_param_group_is_named():
    with pytest.raises(ValueError, match=r"lr=-1"):
        go.Adam([{"params": params()}, {"params": params(), "lr": -1}])


def test_non_tensor_in_params():
    with pytest.raises(ValueError, match=r"params\[1\] is a int; an optimizer takes tensors"):
        go.Adam([torch.nn.Parameter(torch.zeros(2)), 3])
    with pytest.raises(ValueError, match=r"params\[0\] is a str"):
        go.SGD([{"params": ["w"]}], lr=0.1)


def test_sparse_gradient_is_refused():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = go.Adam(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    before = emb.weight.detach().clone()
    with pytest.raises(ValueError, match="sparse gradient.*SparseAdam"):
        opt.step()
    assert torch.equal(emb.weight, before)  # nothing half-done


def test_native_backend_where_torch_has_no_kernel():
    with pytest.raises(ValueError, match="torch has no fused RMSprop kernel"):
        go.RMSprop(params(), backend="native")
    with pytest.raises(ValueError, match="torch has no fused Adam kernel"):
        go.Adam(params(), backend="native", eps_inside=True)
