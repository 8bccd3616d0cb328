"""The optimizer lab: theory as the oracle, the lecture's claims, the outputs (the page and
its API: test_lab_server.py).

Every number here comes from the lab's own runs, which drive gradwise's optimizer classes.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradwise import lab
from gradwise.cli import main
from gradwise.lab import report

ROOT = Path(__file__).resolve().parents[1]


def quadratic(k: float) -> lab.Surface:
    """``f = (x^2 + k y^2) / 2``: eigenvalues mu = 1, L = k."""
    return lab.get_surface("taco", {"cond": k})


# -- theory as the oracle -------------------------------------------------------------------


@pytest.mark.parametrize("k", [10, 100, 1000])
def test_gradient_descent_with_the_best_step_converges_at_k_minus_1_over_k_plus_1(k):
    # lr = 2/(L+mu) maps each eigen-coordinate to +-(k-1)/(k+1) times itself: every step
    # shrinks the distance by exactly that factor, from any start.
    run = lab.run(quadratic(k), "sgd", 1000, hypers={"lr": 2 / (k + 1)}, start=(1.0, 1.0))
    assert run.rate == pytest.approx((k - 1) / (k + 1), rel=0.01)


@pytest.mark.parametrize("k", [10, 100, 1000])
def test_heavy_ball_with_the_best_parameters_converges_at_the_square_root_rate(k):
    # torch-form momentum with a constant lr is Polyak's heavy ball. With lr = 4/(sqrt L +
    # sqrt mu)^2 and momentum rho^2, rho = (sqrt k - 1)/(sqrt k + 1), both eigen-coordinates
    # have a double root rho: |x_t| ~ (a + b t) rho^t. Over the window [n/2, n] the polynomial
    # factor adds at most (n / (n/2)) ** (2/n) = 2 ** (2/n) to the measured rate: < 0.3% for
    # the n below (which runs until rho^n ~ 1e-150, far above float64's underflow).
    rho = (math.sqrt(k) - 1) / (math.sqrt(k) + 1)
    n = math.ceil(150 * math.log(10) / -math.log(rho))
    run = lab.run(quadratic(k), "momentum", n, start=(1.0, 1.0),
                  hypers={"lr": 4 / (math.sqrt(k) + 1) ** 2, "momentum": rho ** 2})
    assert run.status == "ok"
    assert 2 ** (2 / n) < 1.003
    assert run.rate == pytest.approx(rho, rel=0.01)
    # and the theory says it is this much faster than the best plain gradient descent
    assert run.rate < (k - 1) / (k + 1)


def test_measured_rate_stops_before_underflow():
    d = 0.5 ** np.arange(2000.0)  # reaches 0 in float64 after ~1075 steps
    assert lab.measured_rate(d, 1000, 1999) is None
    assert lab.measured_rate(d, 10, 1999) == pytest.approx(0.5)


# -- the lecture's claims -------------------------------------------------------------------


def _heavy_ball_closed_form(x0: float, h: float, lr: float, mu: float, t: np.ndarray):
    """``x_t`` of heavy ball on ``f = h x^2 / 2`` from the roots of
    ``l^2 - (1 + mu - lr h) l + mu = 0``, with ``x_1 = (1 - lr h) x_0`` (torch's buffer
    starts at the first gradient)."""
    l1, l2 = np.roots([1.0, -(1 + mu - lr * h), mu]).astype(complex)
    a = ((1 - lr * h) * x0 - l2 * x0) / (l1 - l2)
    return (a * l1 ** t + (x0 - a) * l2 ** t).real


def test_sgd_crawls_out_of_a_saddle_while_momentum_escapes():
    # f = x^2 - y^2 from (0.8, 1e-3): the escape direction y is barely excited.
    saddle = lab.get_surface("saddle")
    lr = 0.01
    sgd, momentum = lab.compare(saddle, ["sgd", "momentum"], 600,
                                hypers={"sgd": {"lr": lr}, "momentum": {"lr": lr}})
    t = np.arange(600.0)
    x0, y0 = saddle.start
    # plain GD multiplies y by 1 + 2 lr per step: ln(1000) / ln(1.02) ~ 349 steps to leave
    gd_dist = np.hypot(x0 * (1 - 2 * lr) ** t, y0 * (1 + 2 * lr) ** t)
    hb_dist = np.hypot(_heavy_ball_closed_form(x0, 2, lr, 0.9, t),
                       _heavy_ball_closed_form(y0, -2, lr, 0.9, t))
    assert sgd.escape_step == int(np.argmax(gd_dist > 1)) == pytest.approx(349, abs=2)
    assert momentum.escape_step == int(np.argmax(hb_dist > 1))
    assert sgd.escape_step > 4 * momentum.escape_step


def test_adagrad_step_sizes_shrink_monotonically():
    # From (-4, 1.5) with lr = 0.5 < |y_0| AdaGrad never overshoots (its step in a coordinate
    # is lr g_t / sqrt(sum g^2) <= lr), so every gradient keeps its sign.
    run = lab.run(lab.get_surface("taco"), "adagrad", 300, hypers={"lr": 0.5})
    assert np.all(np.sign(run.path) == np.sign(run.path[0]))
    steps = run.step_sizes
    assert np.all(np.diff(steps) < 0)
    # |g_t| shrinks, so sum_{s<=t} g_s^2 >= t g_t^2 and each coordinate moves <= lr / sqrt(t)
    t = np.arange(1, len(steps) + 1)
    assert np.all(steps <= math.sqrt(2) * 0.5 / np.sqrt(t) * (1 + 1e-12))


@pytest.mark.parametrize(("beta1", "beta2"), [(0.9, 0.999), (0.9, 0.99), (0.99, 0.999)])
def test_adam_first_step_without_bias_correction(beta1, beta2):
    # First update from m = v = 0: m = (1-b1) g, v = (1-b2) g^2. Corrected, each coordinate
    # moves lr * g / |g| = lr; uncorrected, lr (1-b1) / sqrt(1-b2): 3.16x for the defaults,
    # the same for b2 = 0.99, and *smaller* for b1 = 0.99.
    taco = lab.get_surface("taco")
    hypers = {"lr": 0.1, "beta1": beta1, "beta2": beta2}
    with_bc, without = lab.compare(taco, ["adam", "adam-nobc"], 3,
                                   hypers={"adam": hypers, "adam-nobc": hypers})
    assert with_bc.first_step == pytest.approx(0.1 * math.sqrt(2), rel=1e-6)
    ratio = without.first_step / with_bc.first_step
    assert ratio == pytest.approx((1 - beta1) / math.sqrt(1 - beta2), rel=1e-6)
    if (beta1, beta2) == (0.9, 0.999):
        assert ratio > 3


def _best(surface, optimizer, lrs, steps=800):
    runs = [lab.run(surface, optimizer, steps, hypers={"lr": lr}) for lr in lrs]
    return min(runs, key=lambda r: r.steps_to_tol or math.inf)


def test_adams_advantage_over_momentum_shrinks_on_the_rotated_valley():
    # Each method with its best lr from a grid, on each valley (condition number 1000).
    k = 1000
    aligned = quadratic(k)
    turned = lab.get_surface("rotated", {"cond": k, "angle": 45})
    m_aligned = _best(aligned, "momentum", [x / k for x in (2, 2.5, 3, 3.5)])
    m_turned = lab.run(turned, "momentum", 800, hypers={"lr": m_aligned.hypers["lr"]})
    a_aligned = _best(aligned, "adam", [0.5, 1, 2, 3])
    a_turned = _best(turned, "adam", [0.5, 1, 2, 3])
    # momentum is rotation invariant: the same path, turned by 45 degrees
    c = math.sqrt(0.5)
    rotation = np.array([[c, -c], [c, c]])
    np.testing.assert_allclose(m_turned.path, m_aligned.path @ rotation.T, atol=1e-9)
    assert m_turned.steps_to_tol == m_aligned.steps_to_tol
    advantage_aligned = m_aligned.steps_to_tol / a_aligned.steps_to_tol
    advantage_turned = m_turned.steps_to_tol / a_turned.steps_to_tol
    assert advantage_aligned > 1  # per-coordinate scaling fits the axes
    assert advantage_turned < advantage_aligned / 2


# -- outputs ----------------------------------------------------------------------------------


def _lab(capsys, *args):
    code = main(["lab", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_plots_gif_csv_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "taco"
    code, stdout, err = _lab(capsys, "--surface", "taco", "--optimizers", "sgd,momentum,adam",
                             "--steps", "80", "--tol", "0.3", "--frames", "6",
                             "--set", "adam.lr=0.2", "--out", out)
    assert code == 0, err
    for name in report.OUTPUT_FILES:
        assert (out / name).stat().st_size > 0
    assert (out / "contour.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gif = Image.open(out / "paths.gif")
    assert gif.format == "GIF" and gif.n_frames == 6 and gif.info["loop"] == 0
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["optimizer"] for r in rows] == ["sgd", "momentum", "adam"]
    for name in ("sgd", "momentum", "adam"):
        assert f"\n{name} " in stdout
    assert "lr=0.2" in rows[2]["settings"] and "lr=0.2" in stdout

    # GD on (x^2 + 50 y^2)/2 in closed form: x_t = (1 - lr)^t x_0, y_t = (1 - 50 lr)^t y_0
    lr, t = 1.8 / 50, np.arange(81.0)
    path = np.stack([-4 * (1 - lr) ** t, 1.5 * (1 - 50 * lr) ** t], axis=1)
    dist = np.linalg.norm(path, axis=1)
    assert float(rows[0]["final_distance"]) == pytest.approx(dist[-1], rel=1e-9)
    assert int(rows[0]["steps_to_tol"]) == int(np.argmax(dist <= 0.3))
    # Adam against torch's own implementation, step by step
    p = torch.tensor([-4.0, 1.5], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.2)
    ref = [p.detach().clone()]
    for _ in range(80):
        opt.zero_grad()
        (0.5 * (p[0] ** 2 + 50 * p[1] ** 2)).backward()
        opt.step()
        ref.append(p.detach().clone())
    dist = torch.stack(ref).norm(dim=1).numpy()
    assert float(rows[2]["final_distance"]) == pytest.approx(dist[-1], rel=1e-9)
    hits = np.flatnonzero(dist <= 0.3)
    assert rows[2]["steps_to_tol"] == (str(hits[0]) if len(hits) else "")
    saved = json.loads((out / "runs.json").read_text())
    assert len(saved["runs"][1]["path"]) == 81


SURFACE_MODULE = '''
import torch

def bowl(x, y):
    return (x - 1) ** 2 + 2 * (y + 0.5) ** 2

bowl.start = (-1.0, 1.0)
bowl.minimum = (1.0, -0.5)

def ring(x, y):  # not elementwise: the contour falls back to point by point
    return (torch.stack([x, y]).norm() - 1) ** 2

def vector(x, y):
    return torch.stack([x, y])

def plain(x, y):
    return 3.0

def constant(x, y):
    return torch.tensor(3.0, dtype=torch.float64)

def cliff(x, y):
    if float(x.detach()) < 0:
        raise ValueError("x must stay positive")
    return (x + 1) ** 2 + y ** 2

cliff.start = (1.0, 0.0)

not_a_function = 3
'''


@pytest.fixture()
def surface_module(tmp_path, monkeypatch):
    name = f"lab_surfaces_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{name}.py").write_text(SURFACE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_python_surface_from_a_module(surface_module, tmp_path, capsys):
    out = tmp_path / "bowl"
    code, _stdout, err = _lab(capsys, "--surface", f"python:{surface_module}:bowl",
                             "--optimizers", "sgd,adam", "--steps", "60", "--frames", "4",
                             "--set", "sgd.lr=0.1", "--set", "adam.lr=0.1", "--out", out)
    assert code == 0, err
    rows = list(csv.DictReader((out / "table.csv").open()))
    # GD with lr 0.1 on this bowl: x - 1 shrinks by 0.8, y + 0.5 by 0.6 per step
    expected = math.hypot(2 * 0.8 ** 60, 1.5 * 0.6 ** 60)
    assert float(rows[0]["final_distance"]) == pytest.approx(expected, rel=1e-9)
    ring = lab.get_surface(f"python:{surface_module}:ring")
    runs = lab.compare(ring, ["adam"], 20)
    assert Image.open(__import__("io").BytesIO(lab.contour_png(ring, runs))).size[0] > 100


BAD_INPUTS = [
    (["--surface", "tacos"], "unknown surface 'tacos'; accepted: taco, rotated, saddle"),
    (["--optimizers", "sgd,adamax"], "unknown optimizer 'adamax'; accepted: sgd, momentum"),
    (["--optimizers", "sgd,sgd"], "name one twice"),
    (["--optimizers", "adam", "--set", "adam.lrr=0.1"],
     "optimizer 'adam' has no hyperparameter 'lrr'; accepted: lr, beta1, beta2"),
    (["--optimizers", "adam", "--set", "adam.lr=-1"], "adam.lr=-1 is invalid"),
    (["--optimizers", "adam", "--set", "adam.lr=fast"], "adam.lr='fast' is invalid"),
    (["--optimizers", "adam", "--set", "adam.beta2=1"], "adam.beta2=1 is invalid"),
    (["--optimizers", "momentum", "--set", "momentum.form=leaky"],
     "momentum.form='leaky' is invalid; accepted: torch, velocity"),
    (["--optimizers", "nesterov", "--set", "nesterov.momentum=0"],
     "optimizer 'nesterov': nesterov=True requires momentum > 0"),
    (["--optimizers", "sgd", "--set", "adam.lr=0.1"], "'adam' is not among the optimizers"),
    (["--set", "lr=0.1"], "expected OPTIMIZER.NAME=VALUE or surface.NAME=VALUE"),
    (["--set", "surface.cond=0.5"], "surface.cond=0.5 is invalid; surface.cond must be"),
    (["--set", "surface.angle=30"], "surface 'taco' has no parameter 'angle'; accepted: cond"),
    (["--steps", "0"], "--steps=0 is invalid; --steps must be an integer >= 1"),
    (["--steps", "ten"], "--steps='ten' is invalid"),
    (["--start", "1"], "--start='1' is invalid; --start must be X,Y"),
    (["--start", "1,nan"], "--start=nan is invalid"),
    (["--noise", "-1"], "--noise=-1.0 is invalid"),
    (["--tol", "0"], "--tol=0.0 is invalid"),
    (["--gallery", "--surface", "taco"], "--gallery takes no --surface"),
    (["--port", "80"], "--port goes with --serve"),
    (["--serve", "--steps", "5"], "--serve takes no --steps"),
    (["--serve", "--port", "http"], "--port='http' is invalid"),
    (["--serve", "--gallery"], "--gallery and --serve exclude each other"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_exits_2_names_the_culprit_and_writes_nothing(tmp_path, capsys, args,
                                                                  message):
    out = tmp_path / "out"
    code, _stdout, err = _lab(capsys, *args, "--out", out)
    assert code == 2
    assert err.startswith("gradwise: error: ") and message in err, err
    assert not out.exists()


@pytest.mark.parametrize(("function", "message"), [
    ("missing", "has no 'missing'; its callables: bowl"),
    ("not_a_function", "'not_a_function' is a int, not callable"),
    ("vector", "returns (2,) at (1.0, 1.0); it must return a scalar"),
    ("plain", "returns float at (1.0, 1.0); it must return a scalar (a 0-d tensor"),
    ("constant", "returns a value autograd cannot differentiate"),
    ("cliff", "cliff' fails at (-0.0138"),
])
def test_bad_python_surface(surface_module, tmp_path, capsys, function, message):
    out = tmp_path / "out"
    code, _, err = _lab(capsys, "--surface", f"python:{surface_module}:{function}", "--out", out)
    assert code == 2 and message in err, err
    assert not out.exists()


def test_python_surface_that_does_not_import(tmp_path, capsys):
    code, _, err = _lab(capsys, "--surface", "python:no_such_lab_module:f", "--out", tmp_path)
    assert code == 2
    assert "module 'no_such_lab_module' does not import (ModuleNotFoundError" in err
    code, _, err = _lab(capsys, "--surface", "python:only_two", "--out", tmp_path)
    assert code == 2 and "expected python:MODULE:FUNCTION" in err


def test_the_installed_command_exits_2_on_bad_input(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gradwise.cli", "lab", "--surface", "nope",
                             "--out", str(tmp_path / "x")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("gradwise: error: unknown surface 'nope'")
    assert "Traceback" not in result.stderr


# -- the gallery ------------------------------------------------------------------------------


def test_gallery_covers_the_lecture_pictures():
    names = {scene.name for scene in lab.GALLERY}
    assert {"taco", "saddle", "noisy", "adagrad", "adam-bias", "rotated", "rosenbrock"} <= names
    for scene in lab.GALLERY:  # every scene is valid input
        surface = lab.get_surface(scene.surface, scene.params)
        for name in scene.optimizers:
            lab.runner.resolve_hypers(name, surface, scene.hypers.get(name))


def test_gallery_command_renders_each_scene_with_a_table(tmp_path, capsys, monkeypatch):
    scenes = tuple(s for s in lab.GALLERY if s.name in ("adam-bias", "saddle"))
    monkeypatch.setattr(report, "GALLERY", scenes)
    code, stdout, err = _lab(capsys, "--gallery", "--frames", "3", "--out", tmp_path / "g")
    assert code == 0, err
    for scene in ("adam-bias", "saddle"):
        assert f"== {scene}:" in stdout
        for name in report.GALLERY_FILES:
            assert (tmp_path / "g" / scene / name).is_file()
    tables = (tmp_path / "g" / "tables.md").read_text()
    assert "## adam-bias" in tables and "| adam-nobc |" in tables


def test_docs_page_shows_the_generated_gallery():
    page = (ROOT / "docs" / "lab.md").read_text()
    for scene in lab.GALLERY:
        for name in ("contour.png", "paths.gif"):
            assert f"lab/{scene.name}/{name}" in page
            assert (ROOT / "docs" / "lab" / scene.name / name).is_file()
