"""gradwise: train neural networks from a YAML config.

    gradwise train CONFIG.yaml [--set key.path=value ...] [--out runs/NAME]
    gradwise train --resume runs/NAME

A user's mistake (a bad key or value, a missing file, bad data) prints one message and exits
with status 2; nothing is left half-written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UserError as exc:
        print(f"gradwise: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gradwise: interrupted; the last checkpoint is intact (continue with --resume)",
              file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradwise", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a model from a YAML config",
                                description="Train a model from a YAML config into a run "
                                            "directory (config.yaml, metrics.jsonl, "
                                            "checkpoints/, summary.json).")
    train.add_argument("config", nargs="?", help="the YAML config (optional with --resume)")
    train.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a config key, e.g. train.epochs=5 "
                       "or data=npz:mnist.npz (repeatable)")
    train.add_argument("--out", help="the run directory (default: runs/<config name>)")
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue a run from its last checkpoint, with its own config")
    train.add_argument("--quiet", action="store_true", help="print only the final summary")
    train.set_defaults(run=_train)
    return parser


def _train(args) -> int:
    from .config import load_config
    from .train import Trainer

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"--resume {args.resume!r}: no run there (config.yaml is missing)")
        saved = load_config(run_dir / "config.yaml")
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
    summary = Trainer(config, out, quiet=args.quiet).fit(resume=bool(args.resume))
    print(_report(summary, out))
    return 0


def _fresh_run_dir(name: str) -> Path:
    """``runs/NAME``, or ``runs/NAME-2``, ``-3`` ... so an earlier run is never overwritten."""
    base = Path("runs") / name
    candidate, i = base, 1
    while candidate.exists():
        i += 1
        candidate = base.with_name(f"{base.name}-{i}")
    return candidate


def _report(summary: dict, out: Path) -> str:
    lines = []
    if summary["stopped_early"]:
        lines.append(f"stopped early: {summary['stop_reason']}")
    lines.append(
        f"test accuracy {100 * summary['test_accuracy']:.2f}%  "
        f"(val {100 * summary['val_accuracy']:.2f}%, train {100 * summary['train_accuracy']:.2f}%;"
        f" best val epoch {summary['best_epoch']}; {summary['epochs']} epochs in "
        f"{summary['wall_seconds']:.1f} s)")
    lines.append(f"results in {out}/  (summary.json, metrics.jsonl, checkpoints/)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
