"""gradwise: train neural networks from a YAML config.

    gradwise train CONFIG.yaml [--set key.path=value ...] [--out runs/NAME] [--tensorboard]
    gradwise train --resume runs/NAME
    gradwise train CONFIG.yaml --seeds 0-4 [--workers N]   one run per seed (a seed group)
    gradwise ensemble RUN_DIR|GROUP...   the runs' averaged and voted test accuracy
    gradwise train CONFIG.yaml --nproc 2  data-parallel (or: torchrun ... -m gradwise train ...)
    gradwise sanity CONFIG.yaml          overfit ~20 examples first (exit 1 if it cannot)
    gradwise lr-find CONFIG.yaml         the learning-rate range test
    gradwise report RUN_DIR              rebuild RUN_DIR/report.html
    gradwise compare RUN_DIR... --out FILE.html
    gradwise search CONFIG.yaml [--workers N] [--storage URL] [--resume]
    gradwise recipe DATA [--budget 10m] [--out DIR] [--resume]   the whole procedure, timed
    gradwise lab [--surface S] [--optimizers A,B] [--set opt.hyper=V] | --gallery | --serve

A user's mistake (a bad key or value, a missing file, bad data) prints one message and exits
with status 2; nothing is left half-written.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from ._io import reason
from .errors import UserError
from .lab.runner import OPTIMIZERS as LAB_OPTIMIZERS
from .optim import registry

#: Upper bounds of the counts that allocate (each sweep or seed holds a model and its curves).
MAX_SEEDS = 100
MAX_SWEEP_STEPS = 100_000
MAX_SANITY_SIZE = 10_000


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UserError as exc:
        print(f"gradwise: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, UnicodeError) as exc:  # a file the user named: unreadable, unwritable
        where = getattr(exc, "filename", None)
        print(f"gradwise: error: {f'{where}: ' if where else ''}{reason(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gradwise: {getattr(args, 'interrupted', 'interrupted')}", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradwise", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a model from a YAML config",
                                description="Train a model from a YAML config into a run "
                                            "directory (config.yaml, metrics.jsonl, "
                                            "checkpoints/, summary.json).",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="optimizers (optimizer.name):\n" + textwrap.indent(
                                    registry.describe(trainable=True), "  "))
    train.add_argument("config", nargs="?", help="the YAML config (optional with --resume)")
    train.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a config key, e.g. train.epochs=5 "
                       "or data=npz:mnist.npz (repeatable)")
    train.add_argument("--out", help="the run directory (default: runs/<config name>)")
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue a run from its last checkpoint, with its own config")
    train.add_argument("--seeds", metavar="SEEDS", help="train one run per seed into "
                       "OUT/seed-K (a seed group for gradwise ensemble), e.g. 0-4 or 0,3,7")
    train.add_argument("--workers", type=int, default=1, help="with --seeds: runs trained at "
                       "once, each in its own process (default 1)")
    train.add_argument("--quiet", action="store_true", help="print only the final summary")
    train.add_argument("--tensorboard", action="store_true",
                       help="also log to RUN_DIR/tensorboard (needs the tensorboard package)")
    train.add_argument("--nproc", type=int, metavar="N", help="train data-parallel on N local "
                       "processes (torch.distributed; train.batch_size is the global batch)")
    train.set_defaults(run=_train)

    sanity = commands.add_parser(
        "sanity", help="check that the model can overfit a tiny subset",
        description="The lecture's first check: train on ~20 examples with every regularizer "
                    "off and expect 100% train accuracy. Exit status 0 if it passes, 1 if not.")
    _config_arguments(sanity)
    sanity.add_argument("--size", type=int, default=20, help="examples to fit (default 20)")
    sanity.add_argument("--steps", type=int, default=300, help="step budget (default 300)")
    sanity.set_defaults(run=_sanity)

    lr_find = commands.add_parser(
        "lr-find", help="the learning-rate range test",
        description="Sweep the learning rate exponentially from a fresh model for a few seeds, "
                    "plot the smoothed loss and suggest a learning rate. Writes lr_find.json "
                    "and lr_find.png into --out (default runs/<name>-lr-find).")
    _config_arguments(lr_find)
    lr_find.add_argument("--out", help="output folder (default: runs/<config name>-lr-find)")
    lr_find.add_argument("--start", type=float, default=1e-7, help="first LR (default 1e-7)")
    lr_find.add_argument("--end", type=float, default=10.0, help="last LR (default 10)")
    lr_find.add_argument("--steps", type=int, default=200, help="sweep length (default 200)")
    lr_find.add_argument("--seeds", type=int, default=3, help="sweeps from fresh models "
                         "(default 3)")
    lr_find.set_defaults(run=_lr_find)

    report = commands.add_parser("report", help="rebuild a run's report.html",
                                 description="Rebuild RUN_DIR/report.html from the run's files "
                                             "(also for a run still in progress).")
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.set_defaults(run=_report_command)

    ensemble = commands.add_parser(
        "ensemble", help="evaluate finished runs together as an ensemble",
        description="Evaluate finished runs (or the members of seed groups written by "
                    "gradwise train --seeds) on their common test set: each member, the average "
                    "of their probabilities, their majority vote and how often they disagree. "
                    "Writes ensemble.json and ensemble.html into --out (default runs/ensemble).",
        epilog="Example: gradwise train examples/mnist1d.yaml --seeds 0-4 --out runs/m1d-seeds "
               "&& gradwise ensemble runs/m1d-seeds")
    ensemble.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    ensemble.add_argument("--out", help="output folder (default: runs/ensemble, -2, ...)")
    ensemble.add_argument("--checkpoint", default="last", choices=["last", "best"],
                          help="the members' weights: the final ones (last, default) or those "
                               "of their best validation epoch (best)")
    ensemble.set_defaults(run=_ensemble)

    compare = commands.add_parser("compare", help="overlay the curves of several runs",
                                  description="One HTML page overlaying the curves of several "
                                              "runs, with a table of their final metrics.")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    compare.add_argument("--out", required=True, help="the HTML file to write")
    compare.set_defaults(run=_compare)

    lab = commands.add_parser(
        "lab", help="the optimizer lab: gradwise's optimizers on 2-D surfaces",
        description="Run gradwise's optimizers from one start on a 2-D surface and write a "
                    "contour plot with the paths (contour.png), loss.png, steps.png, an "
                    "animated paths.gif, table.csv and runs.json into --out; print the table. "
                    "--gallery renders the lecture's pictures, --serve opens a local page.",
        epilog="surfaces: taco (cond), rotated (cond, angle), saddle, monkey, wells (tilt), "
               "rosenbrock (a, b), beale, python:MODULE:FUNCTION. optimizers: "
               f"{', '.join(LAB_OPTIMIZERS)}. Example: "
               "gradwise lab --surface taco --optimizers sgd,momentum,adam --set adam.lr=0.2 "
               "--set surface.cond=100 --out runs/lab-taco")
    lab.add_argument("--surface", help="the surface (default taco)")
    lab.add_argument("--optimizers", metavar="NAME,NAME,...",
                     help="comma-separated (default sgd,momentum,nesterov,adagrad,rmsprop,adam)")
    lab.add_argument("--set", dest="settings", action="append", default=[],
                     metavar="OPT.NAME=VALUE", help="a hyperparameter (adam.lr=0.1, "
                     "momentum.momentum=0.95) or a surface parameter (surface.cond=100); "
                     "repeatable")
    lab.add_argument("--steps", help="updates per optimizer (default: the surface's)")
    lab.add_argument("--start", metavar="X,Y", help="the start point (default: the surface's; "
                     "write --start=-4,1.5 where X is negative)")
    lab.add_argument("--noise", help="gradient noise: add NOISE * N(0, I) to every gradient")
    lab.add_argument("--seed", help="seed of the gradient noise (default 0)")
    lab.add_argument("--tol", help="tolerance on the distance to the minimum (default 1e-3)")
    lab.add_argument("--frames", help="frames of the GIF (default 40)")
    lab.add_argument("--out", help="output folder (default runs/lab-<surface>, "
                     "runs/lab-gallery with --gallery)")
    lab.add_argument("--gallery", action="store_true", help="render the lecture's pictures")
    lab.add_argument("--serve", action="store_true",
                     help="serve the interactive page on 127.0.0.1")
    lab.add_argument("--port", help="port for --serve (default 8765; 0 picks a free one)")
    lab.set_defaults(run=_lab)

    search = commands.add_parser(
        "search", help="hyperparameter search: random, log-scale, coarse-to-fine (Optuna)",
        description="Search the hyperparameters of a config's 'space:' section in the stages "
                    "of its 'search:' section (coarse: many short runs; fine: fewer, longer "
                    "runs in ranges narrowed around the best). Writes results.csv, stages.json, "
                    "best.yaml (a config for gradwise train) and report.html into --out "
                    "(default runs/<config name>); the trials live in --storage "
                    "(default OUT/study.db).",
        epilog="Example: gradwise search examples/search-mnist1d.yaml --workers 2")
    search.add_argument("config", help="the YAML config with space: and search: sections")
    search.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key (train.epochs=5), a "
                        "search setting (search.sampler=grid) or a range "
                        "(space.optimizer.lr='loguniform(1e-3, 1e-1)'); repeatable")
    search.add_argument("--out", help="the search folder (default: runs/<config name>)")
    search.add_argument("--storage", metavar="URL", help="an Optuna RDB storage shared by "
                        "workers, e.g. postgresql://user@host/db (default: sqlite OUT/study.db)")
    search.add_argument("--resume", action="store_true", help="continue the search in --out "
                        "(trials of a dead process are run again)")
    search.add_argument("--workers", type=int, default=1, help="local worker processes "
                        "(default 1)")
    search.add_argument("--quiet", action="store_true", help="print only the result")
    search.set_defaults(run=_search)

    recipe = commands.add_parser(
        "recipe", help="the whole procedure on a dataset within a time budget",
        description="Look at the data, check that the model overfits 20 examples, run the LR "
                    "range test, search coarse then fine, train the best configuration with "
                    "weight averaging for the rest of the budget, then write report.html, "
                    "summary.json and best.yaml into --out (default runs/recipe-<data>).",
        epilog="Example: gradwise recipe mnist1d --budget 5m --out runs/recipe-mnist1d")
    recipe.add_argument("data", metavar="DATA",
                        help="digits, mnist1d, npz:PATH, folder:PATH or csv:PATH")
    recipe.add_argument("--budget", help="wall-clock time for everything: 90s, 10m, 1h30m or "
                        "seconds (default 10m; at least 30s)")
    recipe.add_argument("--out", help="the recipe folder (default: runs/recipe-<data>)")
    recipe.add_argument("--workers", type=int, default=1, help="local search workers "
                        "(default 1)")
    recipe.add_argument("--storage", metavar="URL", help="the search's Optuna storage, shared "
                        "by workers (default: sqlite OUT/search/study.db)")
    recipe.add_argument("--resume", action="store_true", help="continue a killed recipe in "
                        "--out: finished phases, trials and epochs are kept")
    recipe.add_argument("--config", metavar="BASE.yaml", help="a training config whose keys "
                        "are fixed (never searched)")
    recipe.add_argument("--quiet", action="store_true", help="print only the result")
    recipe.set_defaults(run=_recipe)
    return parser


def _train(args) -> int:
    from .config import load_config
    from .rundir import RunDir
    from .train import distributed, seeds

    if args.seeds is not None or (args.resume and seeds.is_group(args.resume)):
        if args.nproc is not None:
            raise UserError("--nproc trains one run on several processes; a seed group trains "
                            "its runs in processes of their own (--workers): give one of them")
        return _train_seeds(args)
    if args.workers != 1:
        raise UserError("--workers trains several seeds at once; it needs --seeds")
    distributed.restart_as_resume(args)  # a job restarted by torchrun --max-restarts
    if args.resume:
        run_dir = Path(args.resume)
        saved = load_config(RunDir.open(run_dir).config_path)
        if args.overrides:
            raise UserError("--resume continues a run with its own config; drop --set")
        if args.config and load_config(args.config) != saved:
            raise UserError(f"--resume {args.resume!r}: {args.config!r} differs from the run's "
                            "config.yaml; resume without CONFIG or start a new run with --out")
        if args.out and Path(args.out) != run_dir:
            raise UserError("--resume and --out name different run directories; give one")
        config, out = saved, run_dir
    else:
        if not args.config:
            raise UserError("give a CONFIG file (or --resume RUN_DIR)")
        config = load_config(args.config, args.overrides)
        out = Path(args.out) if args.out else _fresh_run_dir(config.name or Path(args.config).stem)
    if args.nproc is not None:
        return distributed.launch_cli(args, config, out)
    trainer = distributed.make_trainer(config, out, resume=bool(args.resume), quiet=args.quiet,
                                       tensorboard=args.tensorboard)
    args.interrupted = (f"interrupted; continue with: gradwise train --resume {out} (a run "
                        "stopped before its first checkpoint starts again from the beginning)")
    summary = trainer.fit(resume=bool(args.resume))
    distributed.shutdown()
    if distributed.rank() == 0:
        print(_summary_text(summary, out))
    return 0


def _train_seeds(args) -> int:
    from .config import load_config
    from .train import seeds

    if args.resume:
        if args.seeds is not None or args.config or args.overrides or args.out:
            raise UserError("--resume GROUP continues a seed group with its own config and "
                            "seeds; drop CONFIG, --seeds, --set and --out")
        out = Path(args.resume)
        summaries = seeds.resume_seeds(out, workers=args.workers, quiet=args.quiet)
        chosen = seeds.read_seeds(out)
    else:
        if not args.config:
            raise UserError("give a CONFIG file with --seeds")
        chosen = seeds.parse_seeds(args.seeds)
        config = load_config(args.config, args.overrides)
        out = Path(args.out) if args.out else _fresh_run_dir(config.name or Path(args.config).stem)
        args.interrupted = f"interrupted; continue with: gradwise train --resume {out}"
        summaries = seeds.train_seeds(config, chosen, out, workers=args.workers,
                                      quiet=args.quiet)
    print(seeds.describe(summaries, chosen))
    print(f"runs in {out}/seed-K; evaluate them together with: gradwise ensemble {out}")
    return 0


def _ensemble(args) -> int:
    from .train import run_ensemble

    out = Path(args.out) if args.out else _fresh_run_dir("ensemble")
    if args.out:  # refused before the slow evaluation, if it is taken
        from .rundir import claim
        claim(out, "ensemble", create=False)
    result = run_ensemble.evaluate_runs(args.run_dirs, checkpoint=args.checkpoint)
    run_ensemble.write_ensemble(result, out)
    print(run_ensemble.describe(result))
    print(f"results in {out}/  (ensemble.json, ensemble.html)")
    return 0


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the YAML config")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key (repeatable)")


def _sanity(args) -> int:
    from . import _checks
    from .config import load_config
    from .train import sanity_check

    result = sanity_check(load_config(args.config, args.overrides),
                          size=_checks.integer("--size", args.size, 1, maximum=MAX_SANITY_SIZE),
                          max_steps=_checks.integer("--steps", args.steps, 1,
                                                    maximum=MAX_SWEEP_STEPS))
    print(result["message"])
    return 0 if result["passed"] else 1


def _lr_find(args) -> int:
    from . import _checks, _io
    from .config import load_config
    from .report import lr_find_figure, save_png
    from .rundir import claim
    from .train import lr_find

    config = load_config(args.config, args.overrides)
    seeds = _checks.integer("--seeds", args.seeds, 1, maximum=MAX_SEEDS)
    steps = _checks.integer("--steps", args.steps, 2, maximum=MAX_SWEEP_STEPS)
    out = Path(args.out) if args.out else _fresh_run_dir(
        f"{config.name or Path(args.config).stem}-lr-find")
    claim(out, "lr-find", create=False)
    result = lr_find(config, seeds=tuple(config.seed + i for i in range(seeds)),
                     start=args.start, end=args.end, steps=steps)
    claim(out, "lr-find")
    _io.write_json(out / "lr_find.json", result)
    save_png(lr_find_figure(result), out / "lr_find.png")
    for name, reading in result["suggestions"].items():
        spread = ", ".join(f"{v:.2g}" for v in reading["per_seed"])
        print(f"{name:12s} {reading['value']:.3g}   (per seed: {spread})")
    print(f"suggested lr {result['suggested_lr']:.3g} for {result['optimizer']}")
    if result["warning"]:
        print(f"warning: {result['warning']}")
    print(f"plot and numbers in {out}/  (lr_find.png, lr_find.json)")
    return 0


def _report_command(args) -> int:
    from .report import build_report

    print(f"wrote {build_report(Path(args.run_dir))}")
    return 0


def _compare(args) -> int:
    from .report import compare_runs

    print(f"wrote {compare_runs([Path(d) for d in args.run_dirs], Path(args.out))}")
    return 0


def _lab(args) -> int:
    from .lab.report import command

    return command(args)


def _search(args) -> int:
    from .config import parse_assignment
    from .search import Search, check_spec, check_workers, load_search

    overrides = dict(parse_assignment(item, example="train.batch_size=64")
                     for item in args.overrides)
    spec = load_search(args.config, overrides, check=False)
    workers = check_workers(spec, args.workers)  # before the slower check of the space
    check_spec(spec)
    out = Path(args.out) if args.out else Path("runs") / spec.name
    summary = Search(spec, out, args.storage, resume=args.resume, quiet=args.quiet).run(workers)
    best = summary.get("best")
    if best:
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in best["params"].items())
        print(f"best: stage {best['stage']} trial {best['trial']}: {summary['metric']} "
              f"{best['value']:.4f}, test accuracy {best.get('test_accuracy') or 0:.4f} ({shown})")
    print(f"results in {out} (results.csv, best.yaml, report.html)")
    return 0


def _recipe(args) -> int:
    from .recipe import Recipe, SanityFailed
    from .recipe.budget import process_start
    from .recipe.core import data_name

    name = f"recipe-{data_name(args.data)}" if isinstance(args.data, str) else "recipe"
    out = Path(args.out) if args.out else (Path("runs") / name if args.resume
                                           else _fresh_run_dir(name))
    recipe = Recipe(args.data, args.budget, out, workers=args.workers, storage=args.storage,
                    resume=args.resume, config=args.config, quiet=args.quiet,
                    started=None if args.resume else process_start())
    args.interrupted = (f"interrupted; continue with: gradwise recipe {args.data} --out {out} "
                        "--resume")
    try:
        summary = recipe.run()
    except SanityFailed as failed:
        print(f"gradwise: the sanity check failed, the recipe stopped: "
              f"{failed.summary.get('stop_reason')} (see {out}/sanity.json, report.html)",
              file=sys.stderr)
        return 1
    low, high = summary["test_accuracy_ci95"]
    print(f"test accuracy {100 * summary['test_accuracy']:.2f}% (95% Wilson interval "
          f"{100 * low:.2f}% to {100 * high:.2f}%, {summary['test_size']} examples) in "
          f"{summary['wall_seconds']:.0f} s of a {summary['budget_seconds']:.0f} s budget")
    print(f"results in {out}/  (report.html, summary.json, best.yaml, search/, final/)")
    return 0


def _fresh_run_dir(name: str) -> Path:
    """``runs/NAME``, or ``runs/NAME-2``, ``-3`` ... so an earlier run is never overwritten."""
    base = Path("runs") / name
    candidate, i = base, 1
    while candidate.exists():
        i += 1
        candidate = base.with_name(f"{base.name}-{i}")
    return candidate


def _summary_text(summary: dict, out: Path) -> str:
    lines = []
    if summary["stopped_early"]:
        lines.append(f"stopped early: {summary['stop_reason']}")
    lines.append(
        f"test accuracy {100 * summary['test_accuracy']:.2f}%  "
        f"(val {100 * summary['val_accuracy']:.2f}%, train {100 * summary['train_accuracy']:.2f}%;"
        f" best val epoch {summary['best_epoch']}; {summary['epochs']} epochs in "
        f"{summary['wall_seconds']:.1f} s)")
    chosen = summary.get("test_accuracy_from")
    if chosen not in (None, "live"):
        lines.append(f"  (the {chosen} model's, chosen on validation accuracy; the live model's "
                     f"test accuracy is {100 * summary['test_accuracy_live']:.2f}%)")
    ensemble = summary.get("snapshot_ensemble")
    if ensemble:
        shown = ", ".join(f"{100 * s['test_accuracy']:.2f}%" for s in summary["snapshots"])
        lines.append(f"snapshot ensemble of snapshots {ensemble['members']}: test accuracy "
                     f"{100 * ensemble['test_accuracy']:.2f}% (each snapshot: {shown})")
    diagnosis = summary.get("diagnosis")
    if diagnosis:
        lines.append(f"diagnosis: {diagnosis['label']} - {diagnosis['message']}")
        lines += [f"  try: {advice}" for advice in diagnosis["advice"]]
    lines += [f"warning: {warning}" for warning in summary.get("warnings", [])]
    lines.append(f"results in {out}/  (report.html, summary.json, metrics.jsonl, checkpoints/)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
