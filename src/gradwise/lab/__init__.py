"""The optimizer lab: gradwise's own optimizers on 2-D loss surfaces, with the lecture's pictures.

Surfaces (:func:`get_surface`): ``taco`` (``(x^2 + cond*y^2)/2``), ``rotated`` (the same valley
turned by ``angle`` degrees), ``saddle`` (``x^2 - y^2``), ``monkey`` (``x^3 - 3xy^2``), ``wells``
(a local and a global minimum with a saddle between), ``rosenbrock``, ``beale``, and a user's
``python:module:function``. Optimizers (:data:`OPTIMIZERS`): ``sgd``, ``momentum``, ``nesterov``,
``adagrad``, ``rmsprop``, ``adam``, ``adamw``, ``adam-nobc``, ``newton``, ``lbfgs``, each the real
:mod:`gradwise.optim` class on one float64 tensor of 2 elements.

Example::

    from gradwise import lab
    surface = lab.get_surface("taco", {"cond": 100})
    runs = lab.compare(surface, ["sgd", "momentum", "adam"], 200, hypers={"adam": {"lr": 0.2}})
    print(lab.format_table(runs))
    png = lab.contour_png(surface, runs)   # bytes; also loss_png, steps_png, paths_gif

The command line: ``gradwise lab`` (one comparison), ``gradwise lab --gallery`` (the lecture's
pictures), ``gradwise lab --serve`` (a local page).
"""

from .plots import contour_png, loss_png, paths_gif, steps_png
from .report import (
    DEFAULT_OPTIMIZERS,
    GALLERY,
    Scene,
    csv_text,
    format_table,
    gallery,
    markdown_table,
    render,
    run_scene,
)
from .runner import OPTIMIZERS, LabOptimizer, Run, compare, measured_rate, run
from .server import make_server, serve
from .surfaces import SURFACES, Surface, get_surface, load_python

__all__ = [
    "SURFACES", "Surface", "get_surface", "load_python",
    "OPTIMIZERS", "LabOptimizer", "Run", "run", "compare", "measured_rate",
    "contour_png", "loss_png", "steps_png", "paths_gif",
    "DEFAULT_OPTIMIZERS", "GALLERY", "Scene", "run_scene", "gallery", "render", "csv_text",
    "format_table", "markdown_table", "make_server", "serve",
]
