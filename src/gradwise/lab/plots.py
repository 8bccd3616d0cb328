"""The lab's pictures: contour plot with the paths, loss per step, and an animated GIF.

Matplotlib's object API only (``Figure`` + ``FigureCanvasAgg``, no pyplot state), so plots are
safe in threads (the ``--serve`` page) and never open a window. Each function returns bytes.
"""

from __future__ import annotations

import io
import math
from typing import SupportsFloat

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from PIL import Image

from .runner import OPTIMIZERS, Run
from .surfaces import Surface

#: One colour per lab optimizer, the same in every picture.
COLORS = dict(zip(OPTIMIZERS, ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd",
                               "#8c564b", "#e377c2", "#17becf", "#000000", "#7f7f7f"),
                  strict=True))


def color(optimizer: str) -> str:
    return COLORS.get(optimizer, "#444444")


def plot_window(surface: Surface, runs: list[Run]) -> tuple[float, float, float, float]:
    """The surface's window, or (a user's surface without one) a box around the paths."""
    if surface.window is not None:
        return surface.window
    points = [np.asarray(surface.start, dtype=float)[None]]
    points += [r.path for r in runs]
    for p in (surface.minimum, surface.saddle):
        if p is not None:
            points.append(np.asarray(p, dtype=float)[None])
    pts = np.concatenate(points)
    pts = pts[np.all(np.abs(pts) < 1e3, axis=1)]
    lo, hi = pts.min(0), pts.max(0)
    pad = np.maximum((hi - lo) * 0.15, 0.5)
    return (float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]),
            float(hi[1] + pad[1]))


def _figsize(window, width=7.0) -> tuple[float, float]:
    x0, x1, y0, y1 = window
    height = width * (y1 - y0) / (x1 - x0) + 0.9
    return (width, min(max(height, 3.0), 7.5))


def draw_surface(ax: Axes, surface: Surface, window: tuple[float, float, float, float],
                 n: int = 160, fill: bool = True) -> None:
    """Contour lines of ``surface`` over ``window`` (log-spaced above the minimum where it has
    one, shaded unless ``fill`` is False), and markers for the minimum and the saddle point."""
    X, Y, Z = surface.grid(window, n)
    fmin = surface.minimum_value
    finite = np.isfinite(Z)
    if fmin is not None and finite.any():
        gap = np.where(finite, Z - fmin, np.nan)
        top = float(np.nanmax(gap))
        low = max(float(np.nanpercentile(gap, 0.5)), top * 1e-7, 1e-12)
        if top > low:
            levels = np.geomspace(low, top, 24)
            if fill:
                ax.contourf(X, Y, np.clip(gap, low, top), levels=levels, norm=LogNorm(low, top),
                            cmap="Blues_r", alpha=0.35)
            ax.contour(X, Y, gap, levels=levels, norm=LogNorm(low, top), cmap="viridis",
                       linewidths=0.7)
    elif finite.any():
        lo, hi = np.nanpercentile(Z[finite], [2, 98])
        if hi > lo:
            levels = np.linspace(lo, hi, 25)
            if fill:
                ax.contourf(X, Y, np.clip(Z, lo, hi), levels=levels, cmap="Blues_r",
                            alpha=0.35)
            ax.contour(X, Y, Z, levels=levels, cmap="viridis", linewidths=0.7)
    if surface.minimum is not None:
        ax.plot(*surface.minimum, marker="*", color="gold", markeredgecolor="black",
                markersize=14, linestyle="none", zorder=5)
    if surface.saddle is not None:
        ax.plot(*surface.saddle, marker="X", color="white", markeredgecolor="black",
                markersize=9, linestyle="none", zorder=5)
    ax.set_xlim(window[0], window[1])
    ax.set_ylim(window[2], window[3])
    ax.set_aspect("equal")
    ax.set_xlabel("x")
    ax.set_ylabel("y")


def _png(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _start(ax, runs: list[Run]) -> None:
    if runs and len(runs[0].path):
        ax.plot(*runs[0].path[0], marker="o", color="black", markersize=6, linestyle="none",
                zorder=6)


def contour_png(surface: Surface, runs: list[Run], title: str | None = None) -> bytes:
    """PNG: the contour plot of ``surface`` with each run's path."""
    window = plot_window(surface, runs)
    fig = Figure(figsize=_figsize(window), layout="constrained")
    ax = fig.add_subplot()
    draw_surface(ax, surface, window)
    for r in runs:
        ax.plot(r.path[:, 0], r.path[:, 1], "-o", color=color(r.optimizer), markersize=2.2,
                linewidth=1.3, label=r.optimizer, zorder=4)
    _start(ax, runs)
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    ax.set_title(title or surface.formula, fontsize=10)
    return _png(fig)


def loss_png(surface: Surface, runs: list[Run], title: str | None = None) -> bytes:
    """PNG: loss per step, ``f(x_t) - f*`` on a log scale where the minimum is known,
    else ``f(x_t)`` on a symmetric log scale."""
    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    fmin = surface.minimum_value
    for r in runs:
        steps = np.arange(len(r.loss))
        if fmin is not None:
            ax.plot(steps, np.maximum(r.loss - fmin, 1e-20), color=color(r.optimizer),
                    label=r.optimizer, linewidth=1.4)
        else:
            ax.plot(steps, r.loss, color=color(r.optimizer), label=r.optimizer, linewidth=1.4)
    if fmin is not None:
        ax.set_yscale("log")
        ax.set_ylabel("f(x_t) - f*  (floored at 1e-20)")
    else:
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_ylabel("f(x_t)")
    ax.set_xlabel("step t")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"loss per step: {surface.formula}", fontsize=10)
    return _png(fig)


def steps_png(surface: Surface, runs: list[Run], title: str | None = None) -> bytes:
    """PNG: the length of each update ``|x_{t+1} - x_t|`` on a log scale (AdaGrad's
    vanishing steps, Adam's first step)."""
    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for r in runs:
        sizes = r.step_sizes
        ax.plot(np.arange(1, len(sizes) + 1), np.maximum(sizes, 1e-20),
                color=color(r.optimizer), label=r.optimizer, linewidth=1.4)
    ax.set_yscale("log")
    ax.set_xlabel("step t")
    ax.set_ylabel("|x_t - x_(t-1)|  (floored at 1e-20)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"step sizes: {surface.formula}", fontsize=10)
    return _png(fig)


def paths_gif(surface: Surface, runs: list[Run], frames: int = 40, title: str | None = None,
              frame_ms: int = 90, hold_ms: int = 1500, dpi: int = 90) -> bytes:
    """Animated GIF: the paths drawn step by step (at most ``frames`` frames, the last one
    held for ``hold_ms``). The contours are drawn once; each frame redraws only the paths."""
    window = plot_window(surface, runs)
    fig = Figure(figsize=_figsize(window, 6.4), layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    draw_surface(ax, surface, window, n=120, fill=False)
    _start(ax, runs)
    lines = []
    for r in runs:
        (line,) = ax.plot([], [], "-o", color=color(r.optimizer), markersize=2.2, linewidth=1.3,
                          label=r.optimizer, zorder=4)
        lines.append(line)
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    ax.set_title(title or surface.formula, fontsize=10)
    counter = ax.text(0.02, 0.03, "", transform=ax.transAxes, fontsize=9, zorder=7,
                      bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))
    for artist in (*lines, counter):
        artist.set_animated(True)
    fig.set_dpi(dpi)
    canvas.draw()
    background = canvas.copy_from_bbox(fig.bbox)
    longest = max((r.steps for r in runs), default=0)
    n_frames = max(2, min(frames, longest + 1))
    marks = np.unique(np.round(np.linspace(0, longest, n_frames)).astype(int))
    images = []
    for t in marks:
        canvas.restore_region(background)
        for line, r in zip(lines, runs, strict=True):
            upto = min(t, r.steps) + 1
            line.set_data(r.path[:upto, 0], r.path[:upto, 1])
            ax.draw_artist(line)
        counter.set_text(f"step {t}")
        ax.draw_artist(counter)
        images.append(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy()))
    # one palette for all frames (from the last, which has every colour), so that the GIF
    # stores only what changes from frame to frame
    palette = images[-1].quantize(colors=96)
    images = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    if len(images) == 1:
        images.append(images[0].copy())
    durations = [frame_ms] * (len(images) - 1) + [hold_ms]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=durations, loop=0)
    return buf.getvalue()


def background_png(surface: Surface, window: tuple[float, float, float, float],
                   width_px: int = 640) -> tuple[bytes, int, int]:
    """PNG of the contours alone, the axes filling the whole image (for the web page, which
    maps ``window`` onto the image). Returns ``(png, width, height)`` in pixels."""
    x0, x1, y0, y1 = window
    height_px = int(round(width_px * (y1 - y0) / (x1 - x0)))
    height_px = max(120, min(height_px, 2 * width_px))
    dpi = 100
    fig = Figure(figsize=(width_px / dpi, height_px / dpi))
    ax = fig.add_axes((0, 0, 1, 1))
    draw_surface(ax, surface, window, n=140)
    ax.set_aspect("auto")
    ax.set_axis_off()
    return _png(fig, dpi=dpi), width_px, height_px


def finite_or_none(value: SupportsFloat | None) -> float | None:
    """``value`` for JSON: None where it is None or not finite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
