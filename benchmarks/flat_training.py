"""What flat storage buys a training step: the MNIST example's convnet and a ResNet-18-sized
ResNet, one training step (zero_grad, forward, backward, optimizer step) with and without
``flat=True``, interleaved over rounds; the optimizer's share of the step (``zero_grad`` plus
``step``, timed apart) before and after.

Batches are random tensors of the real shapes (the step time does not depend on the values);
the models run in channels-last layout, as the Trainer runs them.

    python benchmarks/flat_training.py                     # both models, SGD and AdamW
    python benchmarks/flat_training.py --device cuda --batch 256 --rounds 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import gradwise.optim as go
from gradwise.nn import build_model

MODELS = {
    # examples/mnist.yaml's model
    "mnist convnet": lambda: build_model("convnet", (1, 28, 28), 10, channels=(16, 32, 64),
                                         convs_per_stage=2),
    # ResNet-18's widths and depth on 32x32 images (11M parameters in 62 tensors)
    "resnet-18 (32x32)": lambda: build_model("resnet", (3, 32, 32), 10,
                                             widths=(64, 128, 256, 512), blocks_per_stage=2),
}
INPUTS = {"mnist convnet": (1, 28, 28), "resnet-18 (32x32)": (3, 32, 32)}
OPTIMIZERS = {
    "SGD nesterov": lambda params, flat: go.SGD(params, lr=0.05, momentum=0.9, nesterov=True,
                                                weight_decay=5e-4, flat=flat),
    "AdamW": lambda params, flat: go.AdamW(params, lr=1e-3, flat=flat),
}


def contender(model_name, opt_name, flat, batch, device):
    torch.manual_seed(0)
    model = MODELS[model_name]().to(device).to(memory_format=torch.channels_last)
    opt = OPTIMIZERS[opt_name](model.parameters(), flat)
    x = torch.randn(batch, *INPUTS[model_name], device=device)
    x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step() -> tuple[float, float]:
        """(seconds of the whole step, seconds of zero_grad + optimizer step)"""
        sync()
        t0 = time.perf_counter()
        opt.zero_grad()
        sync()
        t1 = time.perf_counter()
        F.cross_entropy(model(x), y).backward()
        sync()
        t2 = time.perf_counter()
        opt.step()
        sync()
        t3 = time.perf_counter()
        return t3 - t0, (t1 - t0) + (t3 - t2)

    for _ in range(3):  # state, compiled kernels, allocator warm
        step()
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--block", type=int, default=3, help="steps per contender per round")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"batch {args.batch}\n")
    print("| model | optimizer | storage | ms/step | optimizer ms | optimizer share | "
          "step speed-up |")
    print("|---|---|---|---:|---:|---:|---:|")
    for model_name in MODELS:
        for opt_name in OPTIMIZERS:
            steps = {flat: contender(model_name, opt_name, flat, args.batch, args.device)
                     for flat in (False, True)}
            totals: dict[bool, list[float]] = {False: [], True: []}
            parts: dict[bool, list[float]] = {False: [], True: []}
            for r in range(args.rounds):
                for flat in ((False, True) if r % 2 == 0 else (True, False)):
                    for _ in range(args.block):
                        total, part = steps[flat]()
                        totals[flat].append(total)
                        parts[flat].append(part)
            base = statistics.median(totals[False])
            for flat in (False, True):
                total, part = statistics.median(totals[flat]), statistics.median(parts[flat])
                print(f"| {model_name} | {opt_name} | {'flat' if flat else 'per tensor'} | "
                      f"{1e3 * total:.2f} | {1e3 * part:.2f} | {100 * part / total:.0f}% | "
                      f"{base / total:.2f}x |")


if __name__ == "__main__":
    main()
