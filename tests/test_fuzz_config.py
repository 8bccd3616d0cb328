"""Seeded fuzzing of the training config: random and mutated configs and ``--set`` values.

(a) 400 cases (``IN_PROCESS_CASES``) through ``gradwise.config.load_config(raw, overrides)``
    in-process: examples/digits.yaml (or, about one case in seven, an empty config) with
    values swapped for wrong types, huge numbers, NaN/inf, negatives, unknown keys, unicode,
    very long strings, nested junk, bad dotted keys and shorthand sections. The only
    exception allowed is ``UserError`` with a non-empty message.
(b) 20 cases (``CLI_CASES``) through the real ``gradwise train CONFIG --set ... --out DIR``
    on digits with 1 epoch, mutated config files and ``--set`` lists alternately: exit status
    0 or 2, never 1; no traceback; after exit 2 the ``--out`` folder does not exist. The stream
    is drawn with values that cannot make a valid run long or huge (no mid-sized epochs, MC
    samples, layer widths or paddings, no batch size 1; (a) builds nothing, so it takes them
    all); of it, the first 10 cases that load_config accepts (``CLI_ACCEPTED``: they reach the
    data, model, optimizer, schedule and augment builders, and training) and the first 10 it
    rejects are run.
(c) 150 cases (``SETUP_CASES``) of that same stream that load_config accepts, through the
    Trainer's set-up in-process (``Trainer(config, out=None)``: data, model, optimizer,
    schedule, augmentation and evaluation are built and checked, nothing is trained or
    written): the only exception allowed is ``UserError``, as for load_config. This is where
    most of what (b) would find is found, a hundred times cheaper.

Then one named regression test per mistake found by hand (exit 2, a message naming the key or
file, no ``--out`` folder left). Every case is reproducible from its seed and index: a failure
prints ``fuzz_case(SEED, i)`` / ``cli_case(SEED, i)`` beside the case.
"""

from __future__ import annotations

import copy
import math
import os
import random
import reprlib
import subprocess
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from gradwise.config import load_config
from gradwise.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "digits.yaml"
BASE = yaml.safe_load(EXAMPLE.read_text())
SEED = 20240611
IN_PROCESS_CASES = 400
CLI_CASES = 20
SETUP_CASES = 150
CLI_ACCEPTED = 10  # of the CLI cases, those load_config accepts (they reach the builders)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlevel = 80, 80, 4


def short(value) -> str:
    """A bounded repr (deep, long or recursive values included)."""
    try:
        return _short.repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deep to show>"


# -- the generator -------------------------------------------------------------------------------

#: Dotted keys of the config (those of the example and others it could have).
KEYS = [
    "name", "seed", "device", "data", "data.source", "data.val_fraction", "data.normalize",
    "data.label_column", "data.train_size", "model", "model.name", "model.channels",
    "model.dropout", "model.hidden", "model.batch_norm", "optimizer", "optimizer.name",
    "optimizer.lr", "optimizer.weight_decay", "optimizer.decay_norm_and_bias",
    "optimizer.momentum", "optimizer.nesterov", "optimizer.betas", "optimizer.eps", "schedule",
    "schedule.name", "schedule.warmup_epochs", "schedule.total_steps", "schedule.gamma",
    "schedule.step_size", "schedule.milestones", "train", "train.epochs", "train.max_steps",
    "train.batch_size", "train.eval_batch_size", "train.grad_clip", "train.precision",
    "train.full_batch", "train.divergence_factor", "train.log_every", "train.monitor_every",
    "train.checkpoint", "train.channels_last", "regularization", "regularization.l1",
    "regularization.l2", "regularization.label_smoothing", "augment", "augment.flip",
    "augment.crop", "augment.crop.padding", "augment.mixup.alpha", "augment.cutout.size",
    "evaluate", "evaluate.samples", "evaluate.tta_flip", "evaluate.tta_shift",
]
BAD_KEYS = ["a..b", ".", "..", "", " ", "train.", ".train", "train..epochs", "trαin.epochs",
            "x" * 3000, "train.epochs.x", "seed.x", "optimizer.name.x", "__class__",
            "model_config", "train.model_fields", "data.source.x.y"]
SHORTHANDS = {
    "data": ["digits", "npz:missing.npz", "npz:", "csv:missing.csv", "folder:missing-folder",
             "mnist1d", "", "DIGITS", "npz:" + "x" * 5000],
    "model": ["mlp", "convnet", "resnet", "cnn1d", "transformer", "", "MLP", "python:nope:f"],
    "optimizer": ["adam", "ADAM", "adamw", "lbfgs", "sgd ", "adamax", "", "ådam"],
    "schedule": ["cosine", "onecycle", "step", "cyclic", "triangle", "", "constant"],
}
#: In (b): no data set that takes long to make.
SAFE_SHORTHANDS = {**SHORTHANDS, "data": [s for s in SHORTHANDS["data"] if s != "mnist1d"]}
TEXTS = ["", " ", "abc", "1e-3", "nan", "inf", ".inf", "true", "0x10", "ünïcødé ✓ 漢字 🚀",
         "\x00", "a\nb", "x" * 300, "x" * 100_000, "None", "1_000", "-0", "5.0"]


def nested(depth: int, leaf=None):
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def junk(rng: random.Random, safe: bool = False):
    """A wrong, odd or extreme value. ``safe``: none that would make a valid run long or huge
    (no small or mid-sized positive integers but 1, no deep nesting)."""
    pool = [True, False, None, 0, -1, -(10**30), 10**30, 2**63, 2**64, 1e308, -1e308, 1e-320,
            math.nan, math.inf, -math.inf, 0.5, -0.0, 5.0, 1.5, [], [1, 2], ["a", None],
            [0.9, 0.99, 0.999], {}, {"a": 1}, {"": None}, {"x": {"y": [1, {"z": math.nan}]}},
            rng.choice(TEXTS)]
    if not safe:
        pool += [1, 2, 3, 64, 1000, nested(rng.randint(2, 60)), nested(3000),
                 rng.randint(-10**6, 10**6)]
    return rng.choice(pool)


#: Values of about the right type that sit at or past the edge of what makes sense: they pass
#: the schema more often and reach the data, model, optimizer, schedule and augment builders.
#: None makes a run long or big (no mid-sized widths, paddings, sample counts or epochs).
PLAUSIBLE = {
    "name": ["ünïcødé", "x" * 300, "a/b", "../up", ""],
    "seed": [0, 2**32 - 1, 2**32, -1],
    "device": ["cpu", "auto", "mps", "cuda", "cuda:0", "cuda:99", "CPU", "tpu"],
    "data.val_fraction": [1e-9, 0.999999, 0.5, 0.0, 1.0],
    "data.normalize": [False],
    "data.label_column": ["label", "x", ""],
    "data.train_size": [1, 10, 11, 10**30],
    "model.name": ["mlp", "convnet", "resnet", "cnn1d", "MLP", "python:os:getcwd"],
    "model.channels": [[], [1], [0], [-1], [2**40], [1, 1, 1, 1, 1, 1], [8.5]],
    "model.hidden": [[], [0], [-3], [2**40], [4.5], 16],
    "model.dropout": [0.0, 0.999, 1.0, -0.1, 1e308, math.nan],
    "model.batch_norm": [False, True, "yes"],
    "optimizer.name": ["adam", "adamw", "rmsprop", "adagrad", "lbfgs", "sgd"],
    "optimizer.lr": [0.0, 1e308, 1e-320, 1e6],
    "optimizer.weight_decay": [0.0, 1e308, 1e6],
    "optimizer.momentum": [0.0, 0.999, 1.0, 1.5, -0.5, math.nan],
    "optimizer.nesterov": [True, "yes"],
    "optimizer.betas": [[0.9], [0.9, 0.999, 0.9], [1.0, 1.0], [-1, 0.5], [], "0.9,0.99"],
    "optimizer.eps": [0.0, -1.0, 1e308, math.inf],
    "schedule.name": ["constant", "step", "multistep", "exponential", "inverse_time", "cosine",
                      "cosine_restarts", "cyclic", "onecycle"],
    "schedule.warmup_epochs": [0.0, 0.5, 1e6, 1e308],
    "schedule.total_steps": [1, 0, -1, 10**30],
    "schedule.gamma": [0.0, -1.0, 1e308, math.nan],
    "schedule.step_size": [0, -1, 1, 10**30],
    "schedule.milestones": [[], [0], [-1], [10**30], [3, 1], 5],
    "train.epochs": [1, 0, -1],
    "train.max_steps": [1, 10**30],
    "train.batch_size": [10**30, 2**63, 1797],
    "train.eval_batch_size": [10**30, 2**63],
    "train.grad_clip": [1e-320, 1e308],
    "train.precision": ["bf16", "fp16", "FP32"],
    "train.full_batch": [True],
    "train.divergence_factor": [1.0000001, 1e308],
    "train.log_every": [1, 10**30],
    "train.monitor_every": [0, 1, 10**30],
    "train.checkpoint": [False],
    "train.channels_last": [False],
    "regularization.l1": [1e308, 0.5],
    "regularization.l2": [1e308, 0.5],
    "regularization.label_smoothing": [0.999999, 0.5],
    "augment.flip": [{}, None, {"p": 2.0}, {"p": -1}],
    "augment.crop": [{}, {"padding": 0}, {"padding": 10**30}, {"padding": -1}],
    "augment.crop.padding": [0, 10**30, -1, 2.5],
    "augment.mixup.alpha": [0.0, 1e308, -1.0, math.nan],
    "augment.cutout.size": [0, 8, 9, 10**30],
    "evaluate.samples": [0, 2, -1],
    "evaluate.tta_flip": [True],
    "evaluate.tta_shift": [1, 7, 8, 10**30],
}


def as_text(value) -> str:
    """``value`` as one would write it after ``--set KEY=``."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**9)
    return text.removesuffix("\n...\n").strip()


def _section_of(raw: dict, part: str) -> dict:
    """raw[part] as a dict (a shorthand string expanded, junk replaced), for writing into."""
    child = raw.get(part)
    if isinstance(child, str) and part in SHORTHANDS:
        child = {"source" if part == "data" else "name": child}
    if not isinstance(child, dict):
        child = {}
    raw[part] = child
    return child


def put(raw: dict, key: str, value) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        node = _section_of(node, part)
    node[parts[-1]] = value


def mutate(rng: random.Random, raw: dict, safe: bool) -> str:
    """Apply one random mutation to ``raw``; what it did, in words. ``safe``: none that could
    make a valid run long (the train section is never dropped: its default is 10 epochs)."""
    shorthands = SAFE_SHORTHANDS if safe else SHORTHANDS
    sections = ["data", "model", "optimizer", "schedule", "augment", "evaluate",
                "regularization"] + ([] if safe else ["train"])
    op = rng.choice(["value", "value", "value", "unknown", "shorthand", "delete", "section",
                     "typo", "odd key"])
    if op == "value":
        key = rng.choice(KEYS)
        if key in PLAUSIBLE and rng.random() < (0.7 if safe else 0.4):
            value = rng.choice(PLAUSIBLE[key])
        elif safe and key in UNSAFE_KEYS:
            return "skipped"
        else:
            value = junk(rng, safe)
        put(raw, key, value)
        return f"{key}={short(value)}"
    if op == "unknown":
        section = rng.choice([None, "train", "data", "optimizer", "model", "evaluate",
                              "regularization", "augment"])
        name = rng.choice(["epoch", "lr_max", "ünï", "x" * 2000, "", " ", "a.b", "__init__",
                           "model_extra", "1"])
        node = raw if section is None else _section_of(raw, section)
        node[name] = junk(rng, safe)
        return f"unknown key {section}.{short(name)}"
    if op == "shorthand":
        section = rng.choice(list(shorthands))
        raw[section] = rng.choice(shorthands[section])
        return f"{section}: {short(raw[section])}"
    if op == "delete":
        key = rng.choice([k for k in raw if not (safe and k == "train")] or ["seed"])
        raw.pop(key, None)
        return f"deleted {key}"
    if op == "section":
        section = rng.choice(sections)
        raw[section] = junk(rng, safe)
        return f"{section} = {short(raw[section])}"
    if op == "typo":
        key = rng.choice(["train", "optimizer", "data"])
        section = _section_of(raw, key)
        if section:
            name = rng.choice(list(section))
            section[name[:-1] or "x"] = section.pop(name)
        return f"typo in {key}"
    # keys that are not strings: YAML's 1:, null:, true: keys (and a tuple, from Python)
    section = rng.choice([None, "model", "optimizer", "train", "augment"])
    node = raw if section is None else _section_of(raw, section)
    node[rng.choice([1, None, True, 2.5] + ([] if safe else [("a", "b")]))] = junk(rng, safe)
    return f"non-string key in {section}"


#: Keys whose valid values can make a run long or big: (b) leaves them alone.
UNSAFE_KEYS = {"train", "train.epochs", "train.batch_size", "train.eval_batch_size",
               "train.monitor_every", "evaluate", "evaluate.samples", "model", "model.channels",
               "model.hidden", "augment.crop.padding", "augment.cutout.size", "data",
               "data.source"}


def override(rng: random.Random, safe: bool) -> str:
    """One ``--set`` item: a good or bad key, a YAML text that is odd, wrong or extreme."""
    texts = ["true", "false", "null", "~", "1e308", "1e400", "-1e400", str(10**30), "-1",
             str(2**64), ".nan", ".inf", "-.inf", "NaN", "[1, 2", "{a: 1}", "[0.9, 0.99]",
             "&a [*a]", "!!python/object/apply:os.system ['true']", "", "'quoted'",
             "ünïcødé ✓", "x" * 10_000, "0x10", "1_000", "5.0", "- a", ": :", "{", "\t",
             "%YAML 1.1", "---\na: 1", "a: b", "adam", "npz:missing.npz", "0", "1",
             "[" * 40 + "]" * 40, "{a: " * 40 + "1" + "}" * 40]
    if not safe:
        texts += ["[" * 600, "[" * 600 + "]" * 600, "64", "1000", "3"]
    roll = rng.random()
    if roll > 0.6:
        key = rng.choice(list(PLAUSIBLE))
        return f"{key}={as_text(rng.choice(PLAUSIBLE[key]))}"
    if roll < 0.08:
        return rng.choice(["train.epochs", "", "=", "==", "=x", ".=1", "a..b=1", "=" * 5,
                           "train.epochs==5"])
    key = rng.choice(BAD_KEYS) if roll < 0.25 else rng.choice(KEYS)
    if safe and key in UNSAFE_KEYS:
        key = rng.choice(sorted(set(KEYS) - UNSAFE_KEYS))
    if rng.random() < 0.1:
        section = rng.choice(list(SHORTHANDS))
        return f"{section}={rng.choice((SAFE_SHORTHANDS if safe else SHORTHANDS)[section])}"
    pad = rng.choice(["", "", " "])
    return f"{pad}{key}{pad}={rng.choice(texts)}"


def fuzz_case(seed: int, i: int, safe: bool = False) -> tuple[dict, list[str], str]:
    """Case ``i`` of the stream of ``seed``: (raw config, --set items, what was done)."""
    rng = random.Random(f"{seed}:{i}:{safe}")
    raw = copy.deepcopy(BASE) if safe or rng.random() > 0.15 else {}  # or a config from nothing
    if safe:
        raw["train"]["epochs"] = 1
    done = [mutate(rng, raw, safe) for _ in range(rng.choice([1, 1, 2, 3] if safe else
                                                             [0, 1, 1, 2, 3]))]
    overrides = [override(rng, safe) for _ in range(rng.choice([0, 0, 1, 1, 2, 3]))]
    return raw, overrides, "; ".join(done) or "no mutation"


# -- (a) in-process ----------------------------------------------------------------------------

def escaped_from(exc: BaseException) -> str:
    """The innermost frame of gradwise that the exception went through, as file:line."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "gradwise" in f.filename]
    frame = frames[-1] if frames else traceback.extract_tb(exc.__traceback__)[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} {frame.name}"


def test_fuzz_load_config_raises_only_user_errors():
    """400 seeded cases through load_config: a Config or a UserError with a message."""
    failures: dict[str, list[str]] = {}
    accepted = rejected = 0
    for i in range(IN_PROCESS_CASES):
        raw, overrides, done = fuzz_case(SEED, i)
        try:
            load_config(raw, overrides)
            accepted += 1
        except UserError as exc:
            rejected += 1
            if not str(exc).strip():
                failures.setdefault("UserError with an empty message", []).append(
                    f"fuzz_case({SEED}, {i}): {done}; --set {short(overrides)}")
        except Exception as exc:  # anything else is a bug
            kind = bug_kind(exc)
            failures.setdefault(kind, []).append(
                f"fuzz_case({SEED}, {i}): {done}; --set {short(overrides)}")
    print(f"\n{IN_PROCESS_CASES} cases: {accepted} accepted, {rejected} UserError, "
          f"{sum(map(len, failures.values()))} other")
    assert not failures, failure_report(failures)


def bug_kind(exc: Exception) -> str:
    """An exception that is not a UserError, as one line: its type, message and origin."""
    first = str(exc).splitlines()[0][:120] if str(exc) else ""
    return f"{type(exc).__name__}: {first} (escaping from {escaped_from(exc)})"


def failure_report(failures: dict[str, list[str]]) -> str:
    """Each kind of failure with up to three of its cases."""
    return "\n".join(f"{kind} in {len(cases)} cases, e.g.\n    " + "\n    ".join(cases[:3])
                     for kind, cases in failures.items())


def test_fuzz_trainer_setup_raises_only_user_errors():
    """150 accepted cases of the (b) stream through Trainer(config, out=None)."""
    from gradwise.train import Trainer

    failures: dict[str, list[str]] = {}
    accepted = i = 0
    while accepted < SETUP_CASES:
        raw, overrides, done = fuzz_case(SEED, i, safe=True)
        i += 1
        try:
            config = load_config(raw, overrides)
        except UserError:
            continue
        accepted += 1
        try:
            Trainer(config, None, quiet=True)
        except UserError as exc:
            assert str(exc).strip(), f"empty message: fuzz_case({SEED}, {i - 1}, safe=True)"
        except Exception as exc:
            kind = bug_kind(exc)
            failures.setdefault(kind, []).append(
                f"fuzz_case({SEED}, {i - 1}, safe=True): {done}; --set {short(overrides)}")
    print(f"\n{SETUP_CASES} accepted cases (of {i} drawn) set up: "
          f"{sum(map(len, failures.values()))} raised something else than a UserError")
    assert not failures, failure_report(failures)


def test_fuzz_generator_reaches_both_outcomes():
    """The stream is not all-rejected or all-accepted (else the fuzz tests little)."""
    outcomes = set()
    for i in range(60):
        raw, overrides, _ = fuzz_case(SEED, i)
        try:
            load_config(raw, overrides)
            outcomes.add("accepted")
        except Exception:
            outcomes.add("rejected")
    assert outcomes == {"accepted", "rejected"}


# -- (b) the real command line -------------------------------------------------------------------

def gradwise(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gradwise.cli", *map(str, args)],
                          capture_output=True, text=True, env=ENV, timeout=timeout)


def cli_case(seed: int, i: int) -> tuple[dict, list[str], str]:
    """CLI case ``i``: even ones mutate the config file, odd ones only add --set items."""
    raw, overrides, done = fuzz_case(seed, i, safe=True)
    if i % 2:
        raw = copy.deepcopy(BASE)
        raw["train"]["epochs"] = 1
        overrides = overrides or [override(random.Random(f"{seed}:{i}:extra"), safe=True)]
        done = "digits.yaml, 1 epoch"
    else:
        overrides = []
    return raw, overrides, done


def _dump(raw: dict) -> str:
    """The config as YAML (non-string keys and NaN/inf included, as a user could write them)."""
    return yaml.safe_dump(raw, allow_unicode=True, sort_keys=False)


def cli_cases(seed: int) -> list[int]:
    """Indices of the CLI cases run: the first ``CLI_ACCEPTED`` that load_config accepts and
    the first ``CLI_CASES - CLI_ACCEPTED`` that it rejects, in order."""
    accepted, rejected = [], []
    i = 0
    while len(accepted) < CLI_ACCEPTED or len(rejected) < CLI_CASES - CLI_ACCEPTED:
        raw, overrides, _ = cli_case(seed, i)
        try:
            load_config(yaml.safe_load(_dump(raw)), overrides)
            accepted.append(i)
        except Exception:
            rejected.append(i)
        i += 1
    return sorted(accepted[:CLI_ACCEPTED] + rejected[:CLI_CASES - CLI_ACCEPTED])


def test_fuzz_cli_exits_0_or_2_without_traceback(tmp_path):
    """20 seeded cases through `gradwise train`, two at a time."""
    def one(i):
        raw, overrides, done = cli_case(SEED, i)
        config, out = tmp_path / f"case-{i}.yaml", tmp_path / f"out-{i}"
        config.write_text(_dump(raw), encoding="utf-8")
        args = [arg for item in overrides for arg in ("--set", item)]
        result = gradwise("train", config, *args, "--out", out, "--quiet")
        where = f"cli_case({SEED}, {i}): {done}; --set {short(overrides)}"
        problems = []
        if result.returncode not in (0, 2):
            problems.append(f"exit {result.returncode}")
        if "Traceback" in result.stderr:
            problems.append("traceback")
        if result.returncode == 2 and out.exists():
            problems.append(f"exit 2 but {out.name} left: {sorted(os.listdir(out))}")
        if result.returncode == 0 and not (out / "summary.json").is_file():
            problems.append("exit 0 without summary.json")
        tail = "\n      ".join(result.stderr.strip().splitlines()[-4:])
        return result.returncode, [f"{where}: {', '.join(problems)}\n      {tail}"] if problems \
            else []

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, cli_cases(SEED)))
    codes = [rc for rc, _ in results]
    print(f"\n{CLI_CASES} CLI cases: exit codes {sorted(codes)}")
    problems = [p for _, found in results for p in found]
    assert not problems, f"{len(problems)} of {CLI_CASES} cases:\n" + "\n".join(problems)


# -- named regressions --------------------------------------------------------------------------

def assert_refused(result: subprocess.CompletedProcess, names: str, out: Path | None) -> None:
    """Exit 2, one message naming ``names``, no traceback, no ``out`` folder left."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert names in result.stderr, result.stderr[-3000:]
    if out is not None:
        assert not out.exists(), f"{out} left behind: {sorted(os.listdir(out))}"


def train_refused(tmp_path: Path, *sets: str, names: str, config: Path = EXAMPLE,
                  quiet: bool = True) -> subprocess.CompletedProcess:
    out = tmp_path / "run"
    args = [arg for item in ("train.epochs=1", *sets) for arg in ("--set", item)]
    result = gradwise("train", config, *args, "--out", out, *(["--quiet"] if quiet else []))
    assert_refused(result, names, out)
    return result


def test_set_bool_for_an_int_is_refused(tmp_path):
    train_refused(tmp_path, "train.epochs=true", names="train.epochs")


def test_set_huge_seed_is_refused(tmp_path):
    train_refused(tmp_path, "seed=100000000000000000000000000", names="seed")


def test_set_infinite_warmup_is_refused(tmp_path):
    train_refused(tmp_path, "schedule.warmup_epochs=.inf", names="schedule.warmup_epochs")


def test_set_unknown_device_is_refused(tmp_path):
    result = train_refused(tmp_path, "device=cudaXYZ", names="device")
    assert "cudaXYZ" in result.stderr


def test_set_huge_finite_warmup_is_refused(tmp_path):
    # found by the fuzz: 1e308 passes the schema, then round(1e308 * steps) overflows
    train_refused(tmp_path, "schedule.warmup_epochs=1e308", names="warmup_epochs")


def test_set_deeply_nested_value_is_refused(tmp_path):
    # found by the fuzz: YAML nested 600 deep makes the parser recurse past Python's limit
    train_refused(tmp_path, "model.hidden=" + "[" * 600 + "]" * 600, names="model.hidden")


def test_device_mps_where_torch_has_no_mps_is_refused(tmp_path):
    # found by the fuzz: device 'mps' passes the config, then torch fails on the first tensor
    if torch.backends.mps.is_available():
        pytest.skip("this torch has MPS")
    train_refused(tmp_path, "device=mps", names="mps")


def test_config_file_not_utf8_is_refused(tmp_path):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("name: café\ndata: digits\ntrain: {epochs: 1}\n".encode("latin-1"))
    train_refused(tmp_path, names="latin1.yaml", config=config)


def test_tta_shift_larger_than_the_images_is_refused_before_training(tmp_path):
    result = train_refused(tmp_path, "evaluate.tta_shift=100000", names="tta_shift",
                           quiet=False)
    assert "epoch 1/" not in result.stderr  # no epoch was trained


def test_lbfgs_without_full_batch_is_refused(tmp_path):
    train_refused(tmp_path, "optimizer.name=lbfgs", "train.full_batch=false",
                  names="full_batch")


def test_train_size_smaller_than_the_classes_is_refused(tmp_path):
    train_refused(tmp_path, "data.train_size=5", names="train_size")


def test_empty_npz_file_is_refused(tmp_path):
    empty = tmp_path / "EMPTY.npz"
    empty.write_bytes(b"")
    train_refused(tmp_path, f"data=npz:{empty}", names="EMPTY.npz")


def test_out_naming_an_existing_file_is_refused(tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("keep me\n")
    result = gradwise("train", EXAMPLE, "--set", "train.epochs=1", "--out", out, "--quiet")
    assert_refused(result, "notes.txt", None)
    assert out.is_file() and out.read_text() == "keep me\n"


def test_out_below_a_file_is_refused(tmp_path):
    # what a read-only folder cannot show as root: a folder that cannot be made
    parent = tmp_path / "notes.txt"
    parent.write_text("keep me\n")
    result = gradwise("train", EXAMPLE, "--set", "train.epochs=1", "--out", parent / "run",
                      "--quiet")
    assert_refused(result, "notes.txt", None)
    assert parent.read_text() == "keep me\n"


def test_out_inside_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("chmod does not stop this user from writing (root)")
        out = folder / "run"
        result = gradwise("train", EXAMPLE, "--set", "train.epochs=1", "--out", out, "--quiet")
        assert_refused(result, str(out) if str(out) in result.stderr else "read-only", out)
    finally:
        folder.chmod(0o755)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 1-epoch run (a small MLP on digits) to damage and resume."""
    run = tmp_path_factory.mktemp("resume") / "run"
    result = gradwise("train", EXAMPLE, "--set", "train.epochs=1", "--set", "model=mlp",
                      "--set", "model.hidden=[16]", "--out", run, "--quiet")
    assert result.returncode == 0, result.stderr
    return run


@pytest.mark.parametrize("damage", ["zero bytes", "a saved list"])
def test_resume_from_a_damaged_last_checkpoint_is_refused(finished_run, tmp_path, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    last = run / "checkpoints" / "last.pt"
    if damage == "zero bytes":
        last.write_bytes(b"")
    else:
        torch.save([1, 2, 3], last)
    before = last.read_bytes()
    result = gradwise("train", "--resume", run, "--quiet")
    assert_refused(result, "last.pt", None)
    assert last.read_bytes() == before  # left as it was, for the user to look at
