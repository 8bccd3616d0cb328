"""The time budget: its text form, its split across the phases, and the test accuracy's
confidence interval.

**The split.** Each phase has a share of the budget (:data:`SHARES`). A phase that starts with
``L`` seconds of the budget left gets ``L * share / (sum of the shares of it and the phases
after it)``: time a phase leaves unused, or overruns, is spread over the phases still to come
in proportion to their shares, and the last phase (the report) ends with the budget. On
``--resume`` the time of the phases already finished is counted (their recorded seconds); the
time a killed phase had spent is not (it runs again in its full share of what is left).

With a 10-minute budget and every phase on time: look 6 s, sanity 18 s, lr-find 48 s,
coarse search 162 s, fine search 132 s, final training 222 s, report 12 s. The report's
share is also the reserve for the last epoch of the final run, which may end past its time.
"""

from __future__ import annotations

import math
import os
import re
import time
from statistics import NormalDist

from ..errors import UserError

#: The phases, in the order they run.
PHASES = ("look", "sanity", "lr_find", "coarse", "fine", "final", "report")
#: What each phase is called in messages and on the page.
TITLES = {"look": "look at the data", "sanity": "sanity check", "lr_find": "LR range test",
          "coarse": "coarse search", "fine": "fine search", "final": "final training",
          "report": "report"}
#: Each phase's share of the budget (they add up to 1).
SHARES = {"look": 0.01, "sanity": 0.03, "lr_find": 0.08, "coarse": 0.27, "fine": 0.22,
          "final": 0.37, "report": 0.02}
#: The smallest budget: the sanity check, a short LR range test, a few one-epoch trials and
#: a short final run of a small model take this long on two CPU cores.
MIN_SECONDS = 30.0
#: The largest budget (a week): a sanity bound, not a recommendation.
MAX_SECONDS = 7 * 24 * 3600.0

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(h|m|min|s|sec)?", re.I)
_UNITS = {"h": 3600.0, "m": 60.0, "min": 60.0, "s": 1.0, "sec": 1.0, None: 1.0}


def parse_budget(text: object) -> float:
    """Seconds of a budget written ``90s``, ``10m``, ``1h30m`` or a plain number of seconds.

    >>> parse_budget("10m"), parse_budget("1h30m"), parse_budget("45"), parse_budget(90)
    (600.0, 5400.0, 45.0, 90.0)
    """
    if isinstance(text, bool):
        seconds = math.nan
    elif isinstance(text, int | float):
        seconds = float(text)
    else:
        shown = str(text).strip()
        pos, seconds, parts = 0, 0.0, 0
        while pos < len(shown):
            match = _PART.match(shown, pos)
            if match is None or match.end() == pos:
                seconds = math.nan
                break
            seconds += float(match.group(1)) * _UNITS[(match.group(2) or "").lower() or None]
            pos, parts = match.end(), parts + 1
            while pos < len(shown) and shown[pos] == " ":
                pos += 1
        if parts == 0:
            seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise UserError(f"--budget {text!r} is invalid; give a time such as 90s, 10m, 1h30m "
                        "or a number of seconds")
    if seconds < MIN_SECONDS:
        raise UserError(f"--budget {text!r} ({seconds:g} s) is too small to run even the sanity "
                        f"check and one short trial; the minimum is {MIN_SECONDS:g} s")
    if seconds > MAX_SECONDS:
        raise UserError(f"--budget {text!r} is longer than a week ({MAX_SECONDS:g} s), the "
                        "most gradwise accepts")
    return seconds


def phase_seconds(phase: str, left: float, done: set[str] | frozenset[str] = frozenset()
                  ) -> float:
    """The seconds phase ``phase`` gets when it starts with ``left`` seconds of the budget
    left, the phases in ``done`` finished (the rule of the module doc).

    >>> round(phase_seconds("coarse", 600 - 72), 1)       # look, sanity, lr_find on time
    162.0
    """
    if phase not in SHARES:
        raise ValueError(f"unknown phase {phase!r}")
    rest = [p for p in PHASES[PHASES.index(phase):] if p not in done]
    return max(0.0, left) * SHARES[phase] / sum(SHARES[p] for p in rest)


def planned_seconds(budget: float) -> dict[str, float]:
    """Each phase's share of ``budget`` in seconds, when every phase keeps to its time.

    >>> planned_seconds(600)["final"]
    222.0
    """
    return {p: round(budget * SHARES[p], 3) for p in PHASES}


#: The normal quantile of a two-sided 95% interval, 1.95996...
Z95 = NormalDist().inv_cdf(0.975)


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / n`` (95% for the default z)::

        centre = (p + z^2 / 2n) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)

    Unlike the normal approximation ``p +- z sqrt(p (1 - p) / n)`` it stays inside [0, 1]
    and does not shrink to a point at 100%.

    >>> [round(v, 4) for v in wilson_interval(990, 1000)]
    [0.9817, 0.9946]
    >>> [round(v, 4) for v in wilson_interval(10, 10)]
    [0.7225, 1.0]
    """
    if n <= 0:
        return math.nan, math.nan
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def process_start() -> float | None:
    """When this process started (as ``time.time()``), read from ``/proc`` on Linux; None
    elsewhere. The command line's budget counts from there: the interpreter's start and the
    imports are part of the time a user waits."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) of a number of seconds.

    >>> clock(75.4), clock(3725)
    ('1:15', '1:02:05')
    """
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
