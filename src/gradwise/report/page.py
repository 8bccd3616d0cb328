"""The pieces every gradwise HTML page is made of: escaping, number formats, sections,
tables, figures, badges and the page itself (one self-contained file: the style sheet inline,
plots as base64 PNG, no scripts, nothing fetched from elsewhere).

    >>> table([("epochs", fmt_number(12000))])
    '<table class="kv"><tr><th>epochs</th><td>12,000</td></tr></table>'
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from html import escape as _escape

from matplotlib.figure import Figure

from .. import __version__, _io
from ..rundir import record_number as number_of
from . import plots

BADGE_CLASSES = {"healthy": "good", "plateau": "warn", "underfitting": "warn",
                 "overfitting": "bad", "not-learning": "fail", "diverging": "fail"}


def e(text: object) -> str:
    """``text`` escaped for HTML, quotes included."""
    return _escape(str(text), quote=True)


def fmt_percent(value: object) -> str:
    """An accuracy as shown in the tables: ``0.95543`` -> ``95.54%``."""
    v = number_of(value)
    return f"{100 * v:.2f}%" if math.isfinite(v) else "—"


def fmt_number(value: object) -> str:
    """Integers with thousands separators, floats to 4 significant digits."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"


def fmt_seconds(value: object) -> str:
    v = number_of(value)
    if not math.isfinite(v):
        return "—"
    if v < 60:
        return f"{v:.3g} s"
    minutes, seconds = divmod(round(v), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def badge(label: object) -> str:
    return (f'<span class="badge badge-{BADGE_CLASSES.get(str(label), "other")}">'
            f"{e(label)}</span>")


def img(fig: Figure, alt: str) -> str:
    return f'<figure><img src="{plots.figure_data_uri(fig)}" alt="{e(alt)}"></figure>'


def section(section_id: str, title: str, caption: str, body: str) -> str:
    return (f'<section id="{section_id}">\n<h2>{e(title)}</h2>\n'
            f'<p class="caption">{e(caption)}</p>\n{body}\n</section>')


def table(rows: Iterable[tuple[str, str]], cls: str = "kv") -> str:
    body = "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="{cls}">{body}</table>'


def nav(sections: list[tuple[str, str]]) -> str:
    links = " ".join(f'<a href="#{sid}">{e(title)}</a>' for sid, title in sections)
    return f'<nav aria-label="sections">{links}</nav>'


# -- the page ---------------------------------------------------------------------------------

CSS = """
:root { color-scheme: light; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0;
        --soft: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
             sans-serif; }
main { max-width: 1000px; margin: 0 auto; padding: 20px 20px 40px; }
h1 { font-size: 1.7rem; margin: 0 0 .2em; overflow-wrap: anywhere; }
h2 { font-size: 1.2rem; margin: 0 0 .15em; }
h3 { font-size: 1rem; margin: .8em 0 .3em; }
.kicker { margin: 0; color: var(--muted); text-transform: uppercase; letter-spacing: .06em;
          font-size: .75rem; }
.facts, .muted { color: var(--muted); font-size: .9rem; }
nav { margin: 12px 0; font-size: .9rem; }
nav a { margin-right: 14px; white-space: nowrap; }
section { margin: 26px 0; padding-top: 10px; border-top: 1px solid var(--line); }
.caption { color: var(--muted); margin: 0 0 10px; font-size: .92rem; }
figure { margin: 0; }
img { display: block; max-width: 100%; height: auto; }
table { border-collapse: collapse; font-size: .92rem; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left;
         vertical-align: top; }
thead th { border-bottom: 2px solid var(--line); }
.kv th { font-weight: 500; color: var(--muted); }
table.runs td:first-child { white-space: nowrap; }
td.num, th.num { white-space: nowrap; text-align: right; font-variant-numeric: tabular-nums; }
td.best { background: #dafbe1; font-weight: 600; }
.wide { overflow-x: auto; }
pre { background: var(--soft); padding: 12px 14px; border-radius: 6px; overflow-x: auto;
      font-size: .85rem; line-height: 1.4; }
code { font-size: .9em; }
.status { font-weight: 600; margin: .2em 0; }
.status-finished { color: #1a7f37; }
.status-stopped { color: #cf222e; }
.status-incomplete { color: #9a6700; }
.badge { display: inline-block; white-space: nowrap; padding: 1px 10px; border-radius: 999px;
         color: #fff; font-weight: 600; font-size: .85rem; margin-right: 6px; }
.badge-good { background: #1a7f37; }
.badge-warn { background: #9a6700; }
.badge-bad { background: #bc4c00; }
.badge-fail { background: #cf222e; }
.badge-other { background: #59636e; }
.verdict { margin: .2em 0; }
ul.warnings li { color: #9a3412; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
          margin-right: 6px; vertical-align: -1px; }
footer { margin-top: 30px; color: var(--muted); font-size: .8rem; }
@media print { nav { display: none; } section { break-inside: avoid; } }
"""


def page(title: str, body: str, kind: str = "report") -> str:
    """The whole page: ``body`` (HTML) under ``title`` (text), marked as a gradwise page of
    ``kind`` (``report``, ``comparison``, ``search``) so that it may later be replaced."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"{_io.generator_mark(kind)}\n"
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<link rel="icon" href="data:,">\n'
            f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"{body}\n<footer>Written by gradwise {e(__version__)}: one file, no scripts, "
            f"nothing fetched from elsewhere.</footer>\n</main>\n</body>\n</html>\n")
