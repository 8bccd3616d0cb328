"""The report's figures: one function per plot, built on matplotlib's object API (no pyplot).

Every function takes plain lists and returns a :class:`matplotlib.figure.Figure` with an Agg
canvas attached; :func:`figure_data_uri` and :func:`save_png` turn one into a PNG.
"""

from __future__ import annotations

import base64
import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeGuard

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from .. import _io
from ..errors import UserError

#: The lecture's rule of thumb for ||lr * update|| / ||weight||, and the band around it.
UPDATE_RATIO_TARGET = 1e-3
UPDATE_RATIO_BAND = (1e-4, 1e-2)
DPI = 110
#: Up to this many series get a legend; more are coloured by position with a colour bar.
MAX_LEGEND = 10
#: Up to this many points get markers, so that a one-step or one-epoch run still shows up.
MARKERS_UP_TO = 30

Series = tuple[Sequence[float], Sequence[float]]  # (x values, y values)


# -- figures and files ------------------------------------------------------------------------

def new_figure(width: float = 7.5, height: float = 3.4) -> Figure:
    """An empty figure with constrained layout and an Agg canvas (no pyplot state)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure rendered as PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def figure_data_uri(fig: Figure, dpi: int = DPI) -> str:
    """The figure as a ``data:image/png;base64,...`` URI, for an ``<img src=...>``."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig, dpi)).decode("ascii")


def save_png(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write the figure as a PNG file, atomically (its folder is created); returns the path."""
    return _io.write_file(Path(path), png_bytes(fig, dpi))


# -- helpers ----------------------------------------------------------------------------------

def ema(values: Sequence[float], smoothing: float | None = None) -> list[float]:
    """Bias-corrected exponential moving average; non-finite values give NaN and are skipped.

    ``smoothing`` is the weight of the past (0: none); by default it grows with the length.
    """
    if smoothing is None:
        smoothing = default_smoothing(len(values))
    out, avg, weight = [], 0.0, 0.0
    for value in values:
        if not _finite(value):
            out.append(math.nan)
            continue
        avg = smoothing * avg + (1 - smoothing) * value
        weight = smoothing * weight + (1 - smoothing)
        out.append(avg / weight)
    return out


def default_smoothing(n: int) -> float:
    """About 10 % of the points in the averaging window, 0 for tiny series, at most 0.95."""
    return min(0.95, max(0.0, 1.0 - 10.0 / n)) if n else 0.0


def _finite(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _points(xs: Sequence[float], ys: Sequence[float], positive: bool = False):
    """The (x, y) pairs with finite values (and y > 0 where ``positive``)."""
    pairs = [(x, y) for x, y in zip(xs, ys, strict=False)
             if _finite(x) and _finite(y) and (y > 0 or not positive)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def spans_decade(values: Sequence[float]) -> bool:
    """Whether the positive finite values span more than a factor of 10 (then: log axis)."""
    positive = [v for v in values if _finite(v) and v > 0]
    return bool(positive) and max(positive) > 10 * min(positive)


def _log_if_wide(ax, values: Sequence[float]) -> bool:
    if spans_decade(values) and all(v > 0 for v in values if _finite(v)):
        ax.set_yscale("log")
        return True
    return False


def _label(text) -> str:
    """A legend label shown as is: no mathtext, not hidden by a leading underscore."""
    text = str(text).replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def categorical_colors(n: int) -> list[str]:
    """``n`` distinct colours as hex strings: tab10, then tab20, then evenly spaced hues."""
    from matplotlib.colors import to_hex

    if n <= 20:
        listed = colormaps["tab10" if n <= 10 else "tab20"]
        return [to_hex(listed(i)) for i in range(n)]  # an int picks the i-th listed colour
    cmap = colormaps["hsv"]
    return [to_hex(cmap(i / n)) for i in range(n)]


def _style(ax, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def _x_axis(ax, xs: Sequence[float], xlim: tuple[float, float] | None = None) -> None:
    """Integer ticks (steps, epochs); ``xlim`` (the run's step range) when given, and room
    around a single x value."""
    finite = [x for x in xs if _finite(x)]
    if xlim is not None and xlim[1] > xlim[0]:
        pad = 0.02 * (xlim[1] - xlim[0])
        ax.set_xlim(xlim[0] - pad, xlim[1] + pad)
    elif finite and min(finite) == max(finite):
        ax.set_xlim(finite[0] - 1, finite[0] + 1)
    ax.xaxis.get_major_locator().set_params(integer=True)


def _xs(series: Mapping[str, Series]) -> list[float]:
    return [x for xs, _ in series.values() for x in xs]


def _marker(n: int) -> str:
    return "o" if n <= MARKERS_UP_TO else ""


def _plot_many(fig: Figure, ax, series: Mapping[str, Series], positive: bool = False) -> list:
    """One line per named series: a legend for a few, colours by position (and a colour bar)
    for many. Returns every y value plotted."""
    names = list(series)
    colors: Sequence[str | tuple[float, float, float, float]]
    if len(names) <= MAX_LEGEND:
        colors = categorical_colors(len(names))
    else:
        cmap = colormaps["viridis"]
        colors = [cmap(i / max(len(names) - 1, 1)) for i in range(len(names))]
    plotted = []
    for name, color in zip(names, colors, strict=True):
        xs, ys = _points(*series[name], positive=positive)
        plotted += ys
        ax.plot(xs, ys, color=color, lw=1.4, marker=_marker(len(xs)), ms=3, label=_label(name))
    if len(names) <= MAX_LEGEND:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    else:
        mappable = ScalarMappable(Normalize(0, len(names) - 1), colormaps["viridis"])
        bar = fig.colorbar(mappable, ax=ax, pad=0.01)
        bar.set_label(f"tensor 0 ({names[0]}) to {len(names) - 1} ({names[-1]})", fontsize=7)
    return plotted


# -- a run ------------------------------------------------------------------------------------

def loss_figure(steps: Sequence[float], losses: Sequence[float],
                smoothing: float | None = None) -> Figure:
    """Training loss per step: raw (faint), moving average (solid), log y over a decade;
    a red line where the loss first became non-finite."""
    fig = new_figure()
    ax = fig.add_subplot()
    xs, ys = _points(steps, losses)
    smooth_x, smooth_y = _points(steps, ema(losses, smoothing))
    ax.plot(xs, ys, color="C0", alpha=0.3, lw=1, marker=_marker(len(xs)), ms=3,
            label="loss per logged step")
    ax.plot(smooth_x, smooth_y, color="C0", lw=2, marker=_marker(len(smooth_x)), ms=3,
            label="moving average")
    bad = [s for s, v in zip(steps, losses, strict=False) if not _finite(v)]
    if bad:
        ax.axvline(bad[0], color="#cf222e", ls="--", lw=1.2, label=f"non-finite at step {bad[0]}")
    _log_if_wide(ax, ys)
    _x_axis(ax, steps)
    _style(ax, "step", "training loss")
    ax.legend(fontsize=8, frameon=False)
    return fig


def accuracy_figure(epochs: Sequence[float], train_accuracy: Sequence[float],
                    val_accuracy: Sequence[float], train_loss: Sequence[float] = (),
                    val_loss: Sequence[float] = (),
                    averaged: tuple[str, Sequence[float], Sequence[float]] | None = None
                    ) -> Figure:
    """Train and validation accuracy per epoch with the gap shaded; train and validation
    loss per epoch on the right when given; ``averaged``: ``(label, val_accuracy, val_loss)``
    of a weight average (EMA, SWA), drawn dotted beside the live validation curves (NaN where
    it has no value yet)."""
    with_loss = any(_finite(v) for v in list(train_loss) + list(val_loss))
    fig = new_figure(height=3.4)
    axes = fig.subplots(1, 2 if with_loss else 1, squeeze=False)[0]
    ax = axes[0]
    n = len(epochs)
    tx, ty = _points(epochs, train_accuracy)
    vx, vy = _points(epochs, val_accuracy)
    ax.plot(tx, ty, color="C0", lw=2, marker=_marker(n), ms=4, label="train")
    ax.plot(vx, vy, color="C1", lw=2, ls="--", marker=_marker(n), ms=4, label="validation")
    if averaged is not None:
        ax_, ay_ = _points(epochs, averaged[1])
        ax.plot(ax_, ay_, color="C2", lw=2, ls=":", marker=_marker(n), ms=4,
                label=f"validation, {averaged[0]}")
    both = [(e, t, v) for e, t, v in zip(epochs, train_accuracy, val_accuracy, strict=False)
            if _finite(e) and _finite(t) and _finite(v)]
    if both:
        ex, et, ev = zip(*both, strict=True)
        ax.fill_between(ex, et, ev, color="C3", alpha=0.15, lw=0, label="gap")
        if len(both) == 1:  # a single epoch: show the gap as a bar
            ax.vlines(ex, et, ev, color="C3", alpha=0.4, lw=6)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    _style(ax, "epoch", "accuracy")
    ax.set_title("accuracy", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    if with_loss:
        ax = axes[1]
        tx, ty = _points(epochs, train_loss)
        vx, vy = _points(epochs, val_loss)
        ax.plot(tx, ty, color="C0", lw=2, marker=_marker(n), ms=4, label="train")
        ax.plot(vx, vy, color="C1", lw=2, ls="--", marker=_marker(n), ms=4, label="validation")
        if averaged is not None:
            lx, ly = _points(epochs, averaged[2])
            ax.plot(lx, ly, color="C2", lw=2, ls=":", marker=_marker(n), ms=4,
                    label=f"validation, {averaged[0]}")
            vy = vy + ly
        _log_if_wide(ax, ty + vy)
        _style(ax, "epoch", "loss")
        ax.set_title("loss", fontsize=10)
        ax.legend(fontsize=8, frameon=False)
    for ax in axes:
        _x_axis(ax, epochs)
    return fig


def lr_figure(steps: Sequence[float], lrs: Sequence[float]) -> Figure:
    """The learning rate per step (log y when it spans more than a decade)."""
    fig = new_figure(height=2.8)
    ax = fig.add_subplot()
    xs, ys = _points(steps, lrs)
    ax.plot(xs, ys, color="C2", lw=2, marker=_marker(len(xs)), ms=3)
    if not _log_if_wide(ax, ys):
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    _x_axis(ax, xs)
    _style(ax, "step", "learning rate")
    return fig


def update_ratio_figure(series: Mapping[str, Series],
                        xlim: tuple[float, float] | None = None) -> Figure:
    """||lr * update|| / ||weight|| per parameter tensor over steps, log y, with the 1e-3
    rule of thumb and the 1e-4..1e-2 band; ``xlim``: the run's step range."""
    fig = new_figure(height=3.6)
    ax = fig.add_subplot()
    low, high = UPDATE_RATIO_BAND
    ax.axhspan(low, high, color="#2da44e", alpha=0.10, lw=0)
    ax.axhline(UPDATE_RATIO_TARGET, color="black", ls=":", lw=1.2)
    values = _plot_many(fig, ax, series, positive=True)
    ax.set_yscale("log")
    ax.set_ylim(min(values + [low]) / 2, max(values + [high]) * 2)
    ax.text(0.995, UPDATE_RATIO_TARGET, "1e-3 ", transform=ax.get_yaxis_transform(),
            ha="right", va="bottom", fontsize=7)
    _x_axis(ax, _xs(series), xlim)
    _style(ax, "step", "update / weight")
    return fig


def grad_norm_figure(total: Series | None, per_tensor: Mapping[str, Series],
                     xlim: tuple[float, float] | None = None) -> Figure:
    """Gradient L2 norm per step: the total (black) and per tensor (coloured) where given."""
    fig = new_figure(height=3.4)
    ax = fig.add_subplot()
    values = _plot_many(fig, ax, per_tensor, positive=True) if per_tensor else []
    if total is not None:
        xs, ys = _points(*total, positive=True)
        values += ys
        ax.plot(xs, ys, color="black", lw=2, marker=_marker(len(xs)), ms=3, label="total")
        if not per_tensor:
            ax.legend(fontsize=8, frameon=False)
        elif len(per_tensor) <= MAX_LEGEND:  # redraw the legend with "total" in it
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _log_if_wide(ax, values)
    _x_axis(ax, _xs(per_tensor) + list(total[0] if total else []), xlim)
    _style(ax, "step", "gradient norm")
    return fig


def dead_relu_figure(series: Mapping[str, Series],
                     xlim: tuple[float, float] | None = None) -> Figure:
    """Fraction of dead ReLU units per module over steps (0 to 100 %)."""
    fig = new_figure(height=3.2)
    ax = fig.add_subplot()
    _plot_many(fig, ax, series)
    ax.axhline(0.5, color="#cf222e", ls=":", lw=1)
    ax.set_ylim(-0.02, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    _x_axis(ax, _xs(series), xlim)
    _style(ax, "step", "dead ReLU units")
    return fig


# -- several runs -----------------------------------------------------------------------------

def overlay_figure(curves: Sequence[tuple[str, str, Series]], xlabel: str, ylabel: str,
                   percent: bool = False, log: bool | None = None) -> Figure:
    """One line per run, ``curves = [(label, colour, (xs, ys)), ...]``; log y by default when
    the values span more than a decade."""
    fig = new_figure(height=3.4)
    ax = fig.add_subplot()
    values = []
    for label, color, (xs, ys) in curves:
        px, py = _points(xs, ys)
        values += py
        ax.plot(px, py, color=color, lw=1.8, marker=_marker(len(px)), ms=3, label=_label(label))
    if log or (log is None and not percent):
        _log_if_wide(ax, values)
    if percent:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    _x_axis(ax, [x for _, _, (xs, _) in curves for x in xs])
    _style(ax, xlabel, ylabel)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


# -- the learning-rate range test -------------------------------------------------------------

def lr_find_figure(result: Mapping) -> Figure:
    """Loss against learning rate (log x) for the LR range test: each seed's smoothed curve
    (raw faint), the suggestions as vertical lines with their per-seed spread shaded, and the
    suggested learning rate in the title."""
    try:
        lrs = [float(v) for v in result["lrs"]]
        curves = list(result.get("curves") or [])
        suggestions = dict(result.get("suggestions") or {})
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UserError("lr_find_figure: expected a result {'lrs': [increasing learning "
                        "rates], 'curves': [{'seed', 'loss', 'smoothed'}], 'suggestions': "
                        "{...}, 'suggested_lr', 'warning'}") from None
    if not lrs or min(lrs) <= 0:
        raise UserError("lr_find_figure: 'lrs' must be a non-empty list of positive learning "
                        "rates")
    fig = new_figure(height=4.0)
    ax = fig.add_subplot()
    colors = categorical_colors(max(len(curves), 1))
    shown = []
    x_range = [lrs[0], lrs[-1]]
    for curve, color in zip(curves, colors, strict=False):
        seed = curve.get("seed", "?")
        curve_lrs = curve.get("lrs") or lrs  # each seed's sweep may stop at its own point
        x_range = [min(x_range[0], curve_lrs[0]), max(x_range[1], curve_lrs[-1])]
        raw_x, raw_y = _points(curve_lrs, curve.get("loss") or [])
        ax.plot(raw_x, raw_y, color=color, alpha=0.25, lw=1)
        xs, ys = _points(curve_lrs, curve.get("smoothed") or curve.get("loss") or [])
        ax.plot(xs, ys, color=color, lw=2, label=f"seed {seed}")
        shown.append((ys, raw_y))
    suggested = result.get("suggested_lr")
    if _finite(suggested) and suggested > 0:  # wide and pale, under the readings' lines
        ax.axvline(suggested, color="#2da44e", lw=5, alpha=0.35,
                   label=f"suggested: {suggested:.2g}")
        title = f"LR range test: suggested learning rate {suggested:.2g}"
    else:
        title = "LR range test: no learning rate suggested"
    styles = {"steepest": ("steepest descent", "--", "#1f2328"),
              "min_over_10": ("minimum loss / 10", "-.", "#8250df")}
    for key, entry in suggestions.items():
        name, ls, color = styles.get(key, (key.replace("_", " "), ":", "#57606a"))
        entry = entry if isinstance(entry, Mapping) else {"value": entry}
        spread = [v for v in entry.get("per_seed") or [] if _finite(v) and v > 0]
        if len(spread) > 1 and max(spread) > min(spread):
            ax.axvspan(min(spread), max(spread), color=color, alpha=0.10, lw=0)
        value = entry.get("value")
        if _finite(value) and value > 0:
            ax.axvline(value, color=color, ls=ls, lw=1.4, label=f"{name}: {value:.2g}")
    ax.set_xscale("log")
    if x_range[1] > x_range[0] > 0:
        ax.set_xlim(*x_range)
    _lr_find_ylim(ax, shown)
    _style(ax, "learning rate", "training loss")
    fig.suptitle(title, fontsize=11)
    if result.get("warning"):
        text = textwrap.fill("warning: " + str(result["warning"]).replace("$", r"\$"), 100)
        ax.set_title(text, fontsize=8, color="#9a3412", loc="left")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def _lr_find_ylim(ax, curves: list[tuple[list[float], list[float]]]) -> None:
    """From just below the lowest loss (raw or smoothed) to a little above the starting loss:
    the blow-up at the largest learning rates would otherwise squash the interesting part."""
    values = [v for smoothed, raw in curves for v in smoothed + raw]
    if not values:
        return
    low, high = min(values), max(values)
    start = max(s[0] for s, _ in curves if s) if any(s for s, _ in curves) else high
    if start > low:
        high = min(high, start + 0.5 * (start - low))
    margin = 0.05 * (high - low) or 0.05 * abs(high) or 0.1
    ax.set_ylim(low - margin, high + margin)
