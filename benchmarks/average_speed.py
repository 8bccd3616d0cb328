"""Time of one EMA update: gradwise.ensemble.EMA next to its peers, and as a share of a step.

Part 1, a ResNet-sized model (gradwise's ``resnet`` with ResNet-18 widths, ~11M parameters):
one ``update()`` of gradwise's EMA (one ``torch._foreach_lerp_`` over parameters and float
buffers) next to torch's ``AveragedModel`` with ``get_ema_multi_avg_fn`` and
``use_buffers=True`` (the same work: parameters and buffers averaged), timm's ``ModelEmaV3``
(timm installed: `pip install --no-deps timm` is enough, the module imports only torch) and a
hand-written per-tensor ``lerp_`` loop. Every contender keeps its own
averaged copy of the same live model; each round runs each of them for a block of updates in a
rotating order, and the table gives the median update, the ratio to the fastest peer (above 1:
faster than it) and the bytes moved (read average and weights, write average: 12 per fp32
value) per second.

Part 2, the MNIST example's model (examples/mnist.yaml: a 16-32-64 BN convnet, SGD + Nesterov):
one training step on a 128x1x28x28 batch (forward, backward, optimizer step) against one EMA
update of the same model, interleaved; the EMA's share of the step.

    python benchmarks/average_speed.py
    python benchmarks/average_speed.py --rounds 40 --widths 64,128,256,512 --threads 2
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.optim import swa_utils

from gradwise.ensemble import EMA
from gradwise.nn import build_model


def timed_block(fn: Callable[[], object], repeat: int) -> float:
    """Seconds per call of ``fn``, over a block of ``repeat`` calls."""
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def interleaved(contenders: dict[str, Callable[[], object]], rounds: int, block: int,
                warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each contender; rounds rotate the order."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            t = timed_block(contenders[name], block)
            if r >= warmup:
                times[name].append(t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def timm_ema(model: nn.Module, decay: float) -> Callable[[], object] | str:
    try:
        ModelEmaV3 = _timm_model_ema().ModelEmaV3
    except Exception as error:  # any failure to import means: not measured
        return f"not measured ({type(error).__name__}: {error})".splitlines()[0][:120]
    ema = ModelEmaV3(model, decay=decay)
    return lambda: ema.update(model)


def _timm_model_ema():
    """timm's ``timm.utils.model_ema`` module. ``import timm`` needs torchvision; where that
    fails (a torchvision build that does not match torch), the module is loaded from timm's
    installed file alone: it imports nothing but torch."""
    try:
        from timm.utils import model_ema  # type: ignore[import-not-found]
        return model_ema
    except ImportError:
        spec = importlib.util.find_spec("timm")
        if spec is None or not spec.submodule_search_locations:
            raise
        path = Path(spec.submodule_search_locations[0]) / "utils" / "model_ema.py"
        module_spec = importlib.util.spec_from_file_location("timm_model_ema", path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module


def hand_loop(model: nn.Module, decay: float) -> Callable[[], object]:
    live = [p.detach() for p in model.parameters()] + [b for b in model.buffers()
                                                       if b.is_floating_point()]
    avg = [t.clone() for t in live]

    def update() -> None:
        with torch.no_grad():
            for a, w in zip(avg, live, strict=True):
                a.lerp_(w, 1 - decay)
    return update


def part_resnet(widths: tuple[int, ...], rounds: int, block: int, decay: float) -> None:
    model = build_model("resnet", (3, 32, 32), 10, widths=widths)
    numel = sum(p.numel() for p in model.parameters())
    floats = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    tensors = len(list(model.parameters())) + len(list(model.buffers()))
    print(f"model: gradwise resnet widths={widths}: {numel / 1e6:.2f}M parameters, "
          f"{floats / 1e3:.1f}k float buffer values, {tensors} tensors; decay {decay}\n")
    ours = EMA(model, decay=decay, buffers="average")
    averaged = swa_utils.AveragedModel(model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(decay),
                                       use_buffers=True)
    contenders: dict[str, Callable[[], object]] = {
        "gradwise EMA": ours.update,
        "torch AveragedModel + get_ema_multi_avg_fn": lambda: averaged.update_parameters(model),
        "torch lerp_ per tensor (hand loop)": hand_loop(model, decay),
    }
    timm = timm_ema(model, decay)
    if isinstance(timm, str):
        print(f"timm ModelEmaV3: {timm}\n")
    else:
        contenders["timm ModelEmaV3"] = timm
    result = interleaved(contenders, rounds, block)
    peers = [t for name, t in result.items() if name != "gradwise EMA"]
    best_peer = min(peers)
    print("| implementation | ms/update | vs fastest peer | GB/s |")
    print("|---|---:|---:|---:|")
    for name, t in result.items():
        gbps = 12 * (numel + floats) / t / 1e9
        print(f"| {name} | {t * 1e3:.2f} | {best_peer / t:.2f}x | {gbps:.1f} |")
    print()


def part_step(rounds: int, block: int, decay: float) -> None:
    torch.manual_seed(0)
    model = build_model("convnet", (1, 28, 28), 10, channels=(16, 32, 64), convs_per_stage=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    x = torch.randn(128, 1, 28, 28)
    y = torch.randint(0, 10, (128,))
    ema = EMA(model, decay=decay)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    result = interleaved({"training step": step, "EMA update": ema.update}, rounds, block)
    numel = sum(p.numel() for p in model.parameters())
    share = result["EMA update"] / result["training step"]
    print(f"MNIST example model (convnet 16-32-64, {numel / 1e3:.0f}k parameters), batch "
          "128x1x28x28:\n")
    print("| what | ms |")
    print("|---|---:|")
    print(f"| training step (forward, backward, SGD-Nesterov) | "
          f"{result['training step'] * 1e3:.2f} |")
    print(f"| gradwise EMA update | {result['EMA update'] * 1e3:.3f} |")
    print(f"| EMA update / training step | {share:.2%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", default="64,128,256,512",
                        help="resnet stage widths (default: ResNet-18's, ~11M parameters)")
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (default 20)")
    parser.add_argument("--block", type=int, default=5, help="updates per contender and round")
    parser.add_argument("--decay", type=float, default=0.999)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    widths = tuple(int(w) for w in args.widths.split(","))
    part_resnet(widths, args.rounds, args.block, args.decay)
    part_step(args.rounds, args.block, args.decay)


if __name__ == "__main__":
    main()
