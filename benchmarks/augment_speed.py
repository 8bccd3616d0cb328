"""What augmentation costs: gradwise's batched pipeline, a per-sample Python pipeline, one step.

On batches of 3x32x32 CIFAR-10 images (normalised per channel), times

- ``batched``: :class:`gradwise.augment.Augment` with flip + crop(padding 4) + color_jitter +
  cutout(8), the whole batch at once;
- ``per-sample``: the same transforms sample by sample with torch ops in a Python loop, as a
  typical ``Dataset.__getitem__`` transform does, then stacked;
- ``mixup`` and ``cutmix`` alone (batched);
- ``train step``: forward + backward + SGD step of
  ``build_model("convnet", (3, 32, 32), 10, channels=[32, 64, 128])`` on the batch.

Every round runs each contender once on the same batch, in a rotating order; the table gives
the median over rounds (and the fastest), then the ratios per-sample / batched and
augmentation / training step.

Then gradwise against ``kornia.augmentation`` (skipped, with a note, where kornia is not
installed: ``pip install kornia``) on the same work, interleaved the same way:

- CIFAR-like, ``--kornia-batch`` x 3x32x32: flip + crop(padding 4) + color jitter (brightness,
  contrast, saturation 0.4, in that order);
- MNIST-like, ``--kornia-batch`` x 1x28x28: crop(padding 2) + color jitter (brightness and
  contrast 0.4).

gradwise takes the normalised batch and returns it normalised (its jitter works in raw space
and clamps to [0, 1] there); kornia takes the raw batch, jitters it (clamping to [0, 1]),
normalises it, and pads the crop with the channel mean, which is gradwise's zero fill. The
ratio printed is gradwise / kornia (below 1: gradwise faster). kornia draws every random number
from torch's global generator (it takes no ``torch.Generator``); the script checks that and
prints what it found.

    python benchmarks/augment_speed.py
    python benchmarks/augment_speed.py --batch 256 --repeats 50 --device cuda
    python benchmarks/augment_speed.py --only-kornia --kornia-batch 256 --repeats 50

On a CPU shared with other work, torch's intra-op threads wait for each other at every op:
small ops (the batched augmentations) then cost scheduler time slices, not compute. Compare
``--threads 1``, and the ``min`` column, with the medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gradwise.augment import Augment
from gradwise.nn import build_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = "../shared/data/cifar10-jpeg-subset/cifar10_jpeg_subset.npz"
DEFAULT_MNIST = "../shared/data/mnist/mnist.npz"
PIPELINE = {"flip": {"p": 0.5}, "crop": {"padding": 4}, "color_jitter": {}, "cutout": {"size": 8}}


def load_images(path: str, seed: int, shape: tuple[int, ...] = (32, 32, 3),
                limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw images (N, C, H, W) in [0, 1] and labels: the .npz's ``x_train`` (N, H, W, C) or
    (N, H, W) uint8 (at most ``limit`` of them), or random uint8 images of ``shape`` where the
    file is absent."""
    file = Path(path) if Path(path).is_absolute() else ROOT / path
    if file.exists():
        with np.load(file) as d:
            pixels, labels = d["x_train"][:limit], d["y_train"][:limit]
        print(f"data: {file.name}, {len(pixels)} images")
    else:
        print(f"note: no file at {path}; timing random uint8 images instead")
        rng = np.random.default_rng(seed)
        pixels = rng.integers(0, 256, (2048, *shape), dtype=np.uint8)
        labels = rng.integers(0, 10, 2048)
    raw = torch.from_numpy(pixels).float() / 255
    raw = raw[:, None] if raw.ndim == 3 else raw.permute(0, 3, 1, 2)
    return raw.contiguous(), torch.from_numpy(np.asarray(labels)).long()


def channel_stats(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (C, 1, 1) of raw images (N, C, H, W)."""
    std, mean = torch.std_mean(raw, dim=(0, 2, 3), correction=0, keepdim=True)
    return mean[0], std[0]


def interleaved(contenders: dict, batches, repeats: int, warmup: int, sync) -> dict:
    """Seconds per call of each contender: every round runs each once on the round's batch, in
    a rotating order; the first ``warmup`` rounds are not timed."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(warmup + repeats):
        batch = batches(r)
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            sync()
            start = time.perf_counter()
            contenders[name](batch[name])
            sync()
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def kornia_global_rng_check(kornia_aug, gradwise_aug, raw, x, y, device) -> str:
    """What the two draw their random numbers from, checked rather than assumed."""
    torch.manual_seed(0)
    a = kornia_aug(raw)
    torch.manual_seed(0)
    b = kornia_aug(raw)
    torch.manual_seed(0)
    torch.rand(1)  # another consumer of the global generator, e.g. a dropout layer
    c = kornia_aug(raw)
    out1, _ = gradwise_aug(x, y, torch.Generator(device=device).manual_seed(0))
    torch.rand(1)
    out2, _ = gradwise_aug(x, y, torch.Generator(device=device).manual_seed(0))
    return (f"kornia: same global seed -> same batch: {torch.equal(a, b)}; one extra global "
            f"draw in between -> same batch: {torch.equal(a, c)}. gradwise: same Generator seed "
            f"-> same batch whatever the global RNG does: {torch.equal(out1, out2)}")


def kornia_comparison(args, device, sync) -> None:
    """gradwise's Augment against kornia.augmentation on the same work (see the docstring)."""
    try:
        import kornia
        import kornia.augmentation as K
    except ImportError:
        print("\nnote: kornia is not installed (pip install kornia); skipping the gradwise vs "
              "kornia comparison")
        return
    workloads = []
    raw, labels = load_images(args.data, args.seed)
    mean, std = channel_stats(raw)
    fill = mean.flatten().tolist()
    workloads.append((
        "CIFAR-like 3x32x32: flip + crop(4) + color jitter", raw, labels, mean, std,
        Augment({"flip": {}, "crop": {"padding": 4}, "color_jitter": {}}, input_shape=(3, 32, 32),
                num_classes=10, mean=mean, std=std, value_range=(0.0, 1.0)),
        K.AugmentationSequential(
            K.RandomHorizontalFlip(p=0.5), K.RandomCrop((32, 32), padding=4, fill=fill),
            K.ColorJitter(0.4, 0.4, 0.4, 0.0, order=(0, 1, 2)), K.Normalize(mean.flatten(),
                                                                             std.flatten()))))
    raw, labels = load_images(args.mnist, args.seed, shape=(28, 28), limit=10000)
    mean, std = channel_stats(raw)
    fill = mean.flatten().tolist()
    workloads.append((
        "MNIST-like 1x28x28: crop(2) + color jitter", raw, labels, mean, std,
        Augment({"crop": {"padding": 2}, "color_jitter": {}}, input_shape=(1, 28, 28),
                num_classes=10, mean=mean, std=std, value_range=(0.0, 1.0)),
        K.AugmentationSequential(
            K.RandomCrop((28, 28), padding=2, fill=fill),
            K.ColorJitter(0.4, 0.4, 0.0, 0.0, order=(0, 1)), K.Normalize(mean.flatten(),
                                                                          std.flatten()))))
    print(f"\ngradwise vs kornia {kornia.__version__}, batch {args.kornia_batch}, median and min "
          f"of {args.repeats} interleaved rounds (ms per batch)")
    print(f"{'work':50s} {'gradwise':>9s} {'kornia':>9s} {'min g/k':>15s} {'gradwise/kornia':>16s}")
    picker = np.random.default_rng(args.seed)
    check = ""
    for title, raw, labels, mean, std, ours, theirs in workloads:
        g, k, g_min, k_min, batch = time_workload(args, device, sync, picker, raw, labels,
                                                  mean, std, ours, theirs)
        print(f"{title:50s} {g:9.2f} {k:9.2f} {g_min:7.2f}/{k_min:<7.2f} {g / k:15.2f}x")
        if not check:
            check = kornia_global_rng_check(theirs, ours, batch["kornia"], *batch["gradwise"],
                                            device)
    print(check)


def time_workload(args, device, sync, picker, raw, labels, mean, std, ours, theirs):
    """Median and min ms per batch of gradwise (``ours``, on normalised batches) and kornia
    (``theirs``, on raw batches), and one pair of batches."""
    raw, labels = raw.to(device), labels.to(device)
    x_all = (raw - mean.to(device)) / std.to(device)
    theirs = theirs.to(device)
    generator = torch.Generator(device=device).manual_seed(args.seed)

    def batches(r):
        idx = torch.from_numpy(picker.choice(len(labels), args.kornia_batch, replace=False))
        idx = idx.to(device)
        return {"gradwise": (x_all[idx], labels[idx]), "kornia": raw[idx]}

    times = interleaved({"gradwise": lambda b: ours(*b, generator), "kornia": theirs},
                        batches, args.repeats, args.warmup, sync)
    medians = [statistics.median(times[name]) * 1e3 for name in ("gradwise", "kornia")]
    mins = [min(times[name]) * 1e3 for name in ("gradwise", "kornia")]
    return *medians, *mins, batches(0)


def per_sample_pipeline(mean, std, generator):
    """flip + crop(4) + color_jitter(0.4, 0.4, 0.4) + cutout(8), one (C, H, W) image at a time,
    the way a per-sample Dataset transform does it."""

    def grey(raw):
        return 0.299 * raw[0:1] + 0.587 * raw[1:2] + 0.114 * raw[2:3]

    def transform(img):
        if float(torch.rand((), generator=generator)) < 0.5:
            img = img.flip(-1)
        top, left = torch.randint(0, 9, (2,), generator=generator).tolist()
        img = F.pad(img, (4, 4, 4, 4))[:, top:top + 32, left:left + 32]
        b, c, s = (1 + (2 * torch.rand(3, generator=generator) - 1) * 0.4).tolist()
        raw = (img * std + mean) * b
        m = grey(raw).mean()
        raw = (raw - m) * c + m
        g = grey(raw)
        raw = (g + (raw - g) * s).clamp(0, 1)
        img = (raw - mean) / std
        cy, cx = torch.randint(0, 32, (2,), generator=generator).tolist()
        img[:, max(cy - 4, 0):cy + 4, max(cx - 4, 0):cx + 4] = 0
        return img

    def run(x, y):
        return torch.stack([transform(img) for img in x]), y

    return run


def train_step(device, seed):
    torch.manual_seed(seed)
    model = build_model("convnet", (3, 32, 32), 10, channels=[32, 64, 128]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def run(x, y):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return run


def batched_vs_per_sample(args, device, sync) -> None:
    """The first table: batched, per-sample, mixup, cutmix and a training step."""
    raw, labels = load_images(args.data, args.seed)
    mean, std = channel_stats(raw)
    x_all = ((raw - mean) / std).to(device)
    y_all = labels.to(device)
    mean_d, std_d = mean.to(device), std.to(device)

    generator = torch.Generator(device=device).manual_seed(args.seed)
    batched = Augment(PIPELINE, input_shape=(3, 32, 32), num_classes=10, mean=mean, std=std,
                      value_range=(0.0, 1.0))
    mix = Augment({"mixup": {"alpha": 0.2}}, input_shape=(3, 32, 32), num_classes=10)
    cut = Augment({"cutmix": {"alpha": 1.0}}, input_shape=(3, 32, 32), num_classes=10)
    loop = per_sample_pipeline(mean_d, std_d, generator)
    step = train_step(device, args.seed)
    contenders = {
        "batched flip+crop+jitter+cutout": lambda x, y: batched(x, y, generator),
        "per-sample loop, same ops": loop,
        "mixup alone (batched)": lambda x, y: mix(x, y, generator),
        "cutmix alone (batched)": lambda x, y: cut(x, y, generator),
        "train step (convnet 32-64-128)": step,
    }

    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    picker = np.random.default_rng(args.seed)
    for r in range(args.warmup + args.repeats):
        idx = torch.from_numpy(picker.choice(len(y_all), args.batch, replace=False)).to(device)
        x, y = x_all[idx], y_all[idx]
        x_aug, _ = batched(x, y, generator)  # the step trains on an augmented batch
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            inputs = (x_aug, y) if name.startswith("train") else (x, y)
            sync()
            start = time.perf_counter()
            contenders[name](*inputs)
            sync()
            if r >= args.warmup:
                times[name].append(time.perf_counter() - start)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
          f"{platform.machine()}, {os.cpu_count()} cpus, 1-min load {load:.1f} after the run; "
          f"batch {args.batch} of 3x32x32; median and min of {args.repeats} interleaved rounds")
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"{'contender':34s} {'median ms':>10s} {'min ms':>8s} {'us/sample':>10s}")
    for name, t in times.items():
        print(f"{name:34s} {median[name] * 1e3:10.2f} {min(t) * 1e3:8.2f} "
              f"{median[name] / args.batch * 1e6:10.1f}")
    a, b = median[names[0]], median[names[1]]
    s = median[names[-1]]
    print(f"per-sample / batched:          {b / a:6.1f}x")
    print(f"batched augment / train step:  {a / s:6.1%}")
    print(f"per-sample augment / train step: {b / s:4.1%}")
    print(f"mixup / train step:            {median[names[2]] / s:6.1%}")
    print(f"cutmix / train step:           {median[names[3]] / s:6.1%}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="CIFAR-10 .npz with x_train (N, 32, 32, 3) uint8; a relative path "
                             "is taken from the repository root (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); on a busy "
                             "machine 1 avoids waits for descheduled worker threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mnist", default=DEFAULT_MNIST,
                        help="MNIST .npz with x_train (N, 28, 28) uint8, for the kornia "
                             "comparison (default: %(default)s)")
    parser.add_argument("--kornia-batch", type=int, default=256,
                        help="batch size of the kornia comparison (default 256)")
    parser.add_argument("--only-kornia", action="store_true",
                        help="run the gradwise vs kornia comparison alone")
    parser.add_argument("--no-kornia", action="store_true",
                        help="skip the gradwise vs kornia comparison")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if not args.only_kornia:
        batched_vs_per_sample(args, device, sync)
    if not args.no_kornia:
        kornia_comparison(args, device, sync)


if __name__ == "__main__":
    main()
