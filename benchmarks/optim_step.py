"""Time per optimizer step: gradwise's backends against torch.optim and the memory bus.

For each optimizer, every contender (gradwise's backends, torch.optim's for-loop, foreach and
fused implementations) owns its parameters, gradients and state; each round runs every contender
for a short block of steps, in a rotating order, and each reports its median step time. The
memory bandwidth is measured in the same run, as the fastest of three streaming kernels over the
same tensor layout, and each optimizer's floor is ``bytes moved per step / bandwidth`` (Adam:
28 bytes per fp32 parameter).

Where torch has no implementation of a rule (RMSprop has no fused kernel; gradwise's options have
none at all), the peer is the rule written by hand with torch's in-place ops, per tensor and with
``torch._foreach_*``: the best a torch user gets without a compiler.

``flat`` contenders keep each param group in one buffer (``flat=True``): one kernel per step
whatever the number of tensors. The ``resnet50`` layout is the parameter shapes of a ResNet-50
(25.6M parameters in 161 tensors: a few big convolutions beside many small norms and biases).

    python benchmarks/optim_step.py          # 8M params in 40 tensors, 1M in 100, resnet50
    python benchmarks/optim_step.py --sizes 8000000x40 --rounds 50 --device cuda
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import gradwise.optim as go


def timed(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def resnet50_shapes() -> list[tuple[int, ...]]:
    """The parameter shapes of a ResNet-50 (bottleneck blocks 3-4-6-3, 1000 classes)."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    cin = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            for cout, k, c in ((width, 1, cin), (width, 3, width), (4 * width, 1, width)):
                shapes += [(cout, c, k, k), (cout,), (cout,)]  # conv, BN weight and bias
            if b == 0:  # the projection shortcut
                shapes += [(4 * width, cin, 1, 1), (4 * width,), (4 * width,)]
            cin = 4 * width
    return shapes + [(1000, 2048), (1000,)]


def layout(spec: str) -> list[tuple[int, ...]]:
    """``NUMELxCOUNT`` (equal flat tensors) or ``resnet50``."""
    if spec == "resnet50":
        return resnet50_shapes()
    numel, count = (int(x) for x in spec.lower().split("x"))
    return [(numel // count,)] * count


def make_tensors(shapes, device, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g).to(device) for shape in shapes]


def contender(build, shapes, device, seed):
    """A step function for one optimizer instance with its own parameters and gradients."""
    params = [torch.nn.Parameter(t) for t in make_tensors(shapes, device, seed)]
    for p, g in zip(params, make_tensors(shapes, device, seed + 1), strict=True):
        p.grad = g * 1e-3
    step = build(params)
    step()  # create state; compile where the backend compiles
    return step


def optimizer_step(cls, **kw):
    def build(params):
        return cls(params, **kw).step
    return build


# -- hand-written torch peers for rules torch does not ship ------------------------------------

def velocity_sgd_loop(lr, rho):
    def build(params):
        vs = [torch.zeros_like(p) for p in params]

        def step():
            with torch.no_grad():
                for p, v in zip(params, vs, strict=True):
                    v.mul_(rho).add_(p.grad, alpha=-lr)
                    p.add_(v)
        return step
    return build


def velocity_sgd_foreach(lr, rho):
    def build(params):
        vs = [torch.zeros_like(p) for p in params]

        def step():
            with torch.no_grad():
                grads = [p.grad for p in params]
                torch._foreach_mul_(vs, rho)
                torch._foreach_add_(vs, grads, alpha=-lr)
                torch._foreach_add_(params, vs)
        return step
    return build


def adam_eps_inside_loop(lr, b1=0.9, b2=0.999, eps=1e-8):
    def build(params):
        ms = [torch.zeros_like(p) for p in params]
        vs = [torch.zeros_like(p) for p in params]
        t = [0]

        def step():
            t[0] += 1
            bc1, bc2 = 1 - b1 ** t[0], 1 - b2 ** t[0]
            with torch.no_grad():
                for p, m, v in zip(params, ms, vs, strict=True):
                    m.lerp_(p.grad, 1 - b1)
                    v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                    denom = (v / bc2).add_(eps).sqrt_()
                    p.addcdiv_(m, denom, value=-lr / bc1)
        return step
    return build


def adam_eps_inside_foreach(lr, b1=0.9, b2=0.999, eps=1e-8):
    def build(params):
        ms = [torch.zeros_like(p) for p in params]
        vs = [torch.zeros_like(p) for p in params]
        t = [0]

        def step():
            t[0] += 1
            bc1, bc2 = 1 - b1 ** t[0], 1 - b2 ** t[0]
            with torch.no_grad():
                grads = [p.grad for p in params]
                torch._foreach_lerp_(ms, grads, 1 - b1)
                torch._foreach_mul_(vs, b2)
                torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
                denom = torch._foreach_div(vs, bc2)
                torch._foreach_add_(denom, eps)
                torch._foreach_sqrt_(denom)
                torch._foreach_addcdiv_(params, ms, denom, value=-lr / bc1)
        return step
    return build


# -- the suite ---------------------------------------------------------------------------------

def suite(cuda: bool):
    """(name, bytes per parameter, gradwise contenders, torch contenders)."""
    ours = {"auto": {}, "auto flat": dict(flat=True), "foreach": dict(backend="foreach"),
            "fused": dict(backend="fused"), "fused flat": dict(backend="fused", flat=True)}

    def mine(cls, **kw):
        return {label: optimizer_step(cls, **options, **kw) for label, options in ours.items()}

    def with_torch(name, torch_cls, bytes_per_param, fused=True, **kw):
        gw = mine(getattr(go, torch_cls), **kw)
        theirs = {"for-loop": optimizer_step(getattr(torch.optim, torch_cls), foreach=False, **kw),
                  "foreach": optimizer_step(getattr(torch.optim, torch_cls), foreach=True, **kw)}
        if fused:
            theirs["fused"] = optimizer_step(getattr(torch.optim, torch_cls), fused=True, **kw)
        return name, bytes_per_param, gw, theirs

    cases = [
        with_torch("SGD momentum", "SGD", 20, lr=1e-3, momentum=0.9),
        with_torch("Adagrad", "Adagrad", 20, fused=not cuda, lr=1e-3),
        with_torch("RMSprop", "RMSprop", 20, fused=False, lr=1e-4),
        with_torch("Adam", "Adam", 28, lr=1e-4),
        with_torch("AdamW", "AdamW", 28, lr=1e-4),
    ]
    velocity = mine(go.SGD, lr=1e-3, momentum=0.9, momentum_form="velocity")
    cases.append(("SGD velocity form", 20, velocity,
                  {"hand for-loop": velocity_sgd_loop(1e-3, 0.9),
                   "hand foreach": velocity_sgd_foreach(1e-3, 0.9)}))
    eps_inside = mine(go.Adam, lr=1e-4, eps_inside=True)
    cases.append(("Adam eps inside sqrt", 28, eps_inside,
                  {"hand for-loop": adam_eps_inside_loop(1e-4),
                   "hand foreach": adam_eps_inside_foreach(1e-4)}))
    return cases


def bandwidth_probes(shapes, device):
    """Streaming kernels over the same layout, with the bytes each moves per element: an
    in-place scale (read + write), an in-place add (two reads + write) and a copy."""
    a, b = make_tensors(shapes, device, 7), make_tensors(shapes, device, 8)

    def scale():
        torch._foreach_mul_(a, 1.0000001)

    def add():
        torch._foreach_add_(a, b, alpha=1e-7)

    def copy():
        torch._foreach_copy_(a, b)

    return {"(probe scale)": (scale, 8), "(probe add)": (add, 12), "(probe copy)": (copy, 8)}


def run(shapes, device: str, rounds: int, warmup: int, block: int) -> list[dict]:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    numel = sum(math.prod(s) for s in shapes)
    probes = bandwidth_probes(shapes, device)
    rows = []
    for name, bytes_per_param, ours, theirs in suite(device == "cuda"):
        steps = {}
        compile_s = {}
        for label, build in [*(("gradwise " + k, v) for k, v in ours.items()),
                             *(("torch " + k, v) for k, v in theirs.items())]:
            start = time.perf_counter()
            steps[label] = contender(build, shapes, device, seed=len(steps))
            compile_s[label] = time.perf_counter() - start
        steps.update({label: fn for label, (fn, _) in probes.items()})
        times = {k: [] for k in steps}
        for r in range(warmup + rounds):
            labels = list(steps)
            labels = labels[r % len(labels):] + labels[:r % len(labels)]  # rotate the order
            for label in labels:
                for _ in range(block):  # a short block, so one contender's caches and
                    t = timed(steps[label], sync)  # threads are its own
                    if r >= warmup:
                        times[label].append(t)
        median = {k: statistics.median(v) for k, v in times.items()}
        # the bus moves at least as fast as the fastest streaming probe
        bandwidth = max(nbytes * numel / median.pop(label) for label, (_, nbytes) in probes.items())
        floor = bytes_per_param * numel / bandwidth
        best_torch = min(v for k, v in median.items() if k.startswith("torch"))
        for label, t in median.items():
            rows.append(dict(optimizer=name, contender=label, ms=1e3 * t,
                             vs_torch_best=best_torch / t, floor_fraction=floor / t,
                             setup_s=compile_s[label], bandwidth_gbs=bandwidth / 1e9))
        del steps
    return rows


def print_table(rows, spec, shapes, device):
    numel = sum(math.prod(s) for s in shapes)
    print(f"\n## {spec}: {numel / 1e6:g}M fp32 parameters in {len(shapes)} tensors, {device}")
    print(f"memory bandwidth (fastest streaming probe, this run): "
          f"{rows[0]['bandwidth_gbs']:.1f} GB/s\n")
    print("| optimizer | implementation | ms/step | vs torch's fastest | of bandwidth floor |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['optimizer']} | {r['contender']} | {r['ms']:.2f} | "
              f"{r['vs_torch_best']:.2f}x | {100 * r['floor_fraction']:.0f}% |")


def check_targets(rows, shapes):
    """The targets for flat storage on the default backend (printed, never fatal): at least
    torch's fastest everywhere, 1.5x with many small tensors, 90% of the floor with big ones."""
    many_small = len(shapes) >= 100 and sum(math.prod(s) for s in shapes) <= 2_000_000
    big = min(math.prod(s) for s in shapes) >= 100_000
    goal = 1.5 if many_small else 1.0
    print("\ntargets for backend='auto', flat=True:")
    for r in rows:
        if r["contender"] != "gradwise auto flat":
            continue
        ok = r["vs_torch_best"] >= goal
        line = (f"  {r['optimizer']:22s} >= {goal:g}x torch's fastest: "
                f"{'met' if ok else 'MISSED'} ({r['vs_torch_best']:.2f}x)")
        if big:
            floor_ok = r["floor_fraction"] >= 0.9
            line += (f"; >= 90% of floor: {'met' if floor_ok else 'MISSED'} "
                     f"({100 * r['floor_fraction']:.0f}%)")
        print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8000000x40,1000000x100,resnet50",
                        help="comma-separated NUMELxTENSORS or resnet50 (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--block", type=int, default=5, help="steps per contender per round")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    for spec in args.sizes.split(","):
        shapes = layout(spec)
        rows = run(shapes, args.device, args.rounds, args.warmup, args.block)
        print_table(rows, spec, shapes, args.device)
        check_targets(rows, shapes)


if __name__ == "__main__":
    main()
