"""The optimizers on a CUDA device (skipped without one): every backend against torch.optim on
the GPU, flat storage bit for bit against per-tensor storage, and a CPU model moved to the GPU
after flattening."""

from __future__ import annotations

import pytest
import torch
from helpers import digits_mlp, rel_diff, train
from test_optim_flat import ALL, ALL_IDS, _safe
from test_optim_parity import CASES as TORCH_OPTIONS

import gradwise.optim as go

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def gpu_digits(digits):
    x, y = digits
    return x.float().cuda(), y.cuda()


@pytest.mark.parametrize(("name", "kw"), TORCH_OPTIONS,
                         ids=[ALL_IDS[ALL.index(case)] for case in TORCH_OPTIONS])
@pytest.mark.parametrize("flat", [False, True], ids=["per-tensor", "flat"])
def test_every_backend_follows_torch_on_cuda(gpu_digits, name, kw, flat):
    kw = _safe(kw)
    theirs = digits_mlp().cuda()
    want = train(theirs, getattr(torch.optim, name)(theirs.parameters(), **kw), gpu_digits, 100)
    for backend in ("auto", "foreach", "fused", "native"):
        ours = digits_mlp().cuda()
        try:
            opt = getattr(go, name)(ours.parameters(), backend=backend, flat=flat, **kw)
        except ValueError:  # no torch kernel for this rule on CUDA
            continue
        assert rel_diff(train(ours, opt, gpu_digits, 100), want) <= 1e-5, backend


@pytest.mark.parametrize(("name", "kw"), ALL, ids=ALL_IDS)
def test_flat_equals_per_tensor_on_cuda(gpu_digits, name, kw):
    kw = _safe(kw)
    for backend in ("reference", "fused"):
        runs = []
        for flat in (False, True):
            model = digits_mlp().cuda()
            opt = getattr(go, name)(model.parameters(), backend=backend, flat=flat, **kw)
            runs.append(train(model, opt, gpu_digits, 100))
        assert torch.equal(*runs), backend


def test_flat_model_moved_to_cuda_is_rebuilt_there(digits, gpu_digits):
    model = digits_mlp()
    opt = go.Adam(model.parameters(), lr=1e-3, flat=True)
    twin = digits_mlp()
    ref = torch.optim.Adam(twin.parameters(), lr=1e-3)
    train(model, opt, digits, 10)
    train(twin, ref, digits, 10)
    model.cuda()
    twin.cuda()
    ref.load_state_dict(ref.state_dict())  # torch's way to move its state
    got = train(model, opt, gpu_digits, 10, start=10)
    assert rel_diff(got, train(twin, ref, gpu_digits, 10, start=10)) <= 1e-5
    (bucket,) = opt._buckets[0]
    assert bucket.param.is_cuda and bucket.state["exp_avg"].is_cuda and bucket.intact()
