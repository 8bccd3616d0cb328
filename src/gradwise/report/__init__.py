"""Reports of training runs: one self-contained HTML page per run, a comparison page for
several, and the figures they are made of (also used for the LR range test).

    build_report("runs/demo")                         # -> runs/demo/report.html
    compare_runs(["runs/sgd", "runs/adam"], "compare.html")
"""

from .html import build_report, compare_runs
from .plots import figure_data_uri, lr_find_figure, save_png

__all__ = ["build_report", "compare_runs", "lr_find_figure", "save_png", "figure_data_uri"]
