"""Transfer learning: start from trained weights, freeze with an explicit batch-norm mode,
discriminative learning rates, and the lecture's 2x2 table as a function.

The lecture's recipe: train on a big dataset, re-initialise the last layer, freeze the rest and
train the head; with more data, fine-tune more layers at a lower learning rate. Every function
here works on any ``torch.nn.Module``; gradwise's zoo (``head(features(x))``) is the common case.

- :func:`load_weights` copies matching tensors (same name, same shape) from a run directory, a
  checkpoint, a state dict file or an in-memory state dict; a head of another class count keeps
  the model's own initialisation; a first conv with another number of input channels is
  adapted; loading less than ``min_fraction`` of the model's parameters is an error.
- :func:`freeze` / :func:`unfreeze`: all but the head (or the last N blocks, or a predicate)
  frozen, with frozen batch norm in inference mode (``bn="eval"``, Keras' rule) or training
  (``bn="train"``, fastai's ``train_bn=True``).
- :func:`discriminative_groups`: param groups whose learning rates grow geometrically from
  ``base_lr / factor`` at the input to ``base_lr`` at the head (fastai's ``slice(lr/100, lr)``).
- :func:`strategy`: {little, a lot of} data x {similar, different} domain -> what to do.

**Blocks.** ``int`` arguments count *blocks*: the model's children in order, a
``nn.Sequential`` child opened into its own children (the zoo's ``features``, torchvision's
``layer1``..``layer4``), a normalisation layer merged into the block before it, modules without
parameters dropped. The zoo's convnet with ``channels=(32, 64)`` has the blocks ``features.0``
(conv + BN), ``features.3``, ``features.7``, ``features.10`` and ``head``; see :func:`blocks`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import _io
from .errors import UserError
from .optim.groups import NORM_LAYERS, param_groups
from .rundir import RunDir

#: Batch-norm modes of the frozen part: ``eval`` (inference statistics, fixed affine; Keras)
#: or ``train`` (statistics updated, affine trained; fastai's ``train_bn=True``).
BN_MODES = ("eval", "train")

#: What :func:`load_weights` does with a head of the source's shape.
HEAD_MODES = ("keep", "reinit")

#: Examples per class below which a task has "little" data in :func:`strategy`.
LITTLE_DATA = 1000

_BATCH_NORM = nn.modules.batchnorm._BatchNorm
_HOOK_ATTR = "_gradwise_bn_eval_hook"


# -- blocks and the head -----------------------------------------------------------------------

def blocks(model: nn.Module) -> list[str]:
    """The names of ``model``'s blocks, input first (see the module docstring).

    >>> from gradwise.nn import build_model
    >>> blocks(build_model("mlp", (4,), 3, hidden=(8, 8)))
    ['features.1', 'features.3', 'head']
    """
    return [members[0] for members in _block_members(model)]


def _block_members(model: nn.Module) -> list[list[str]]:
    """Each block's module names: the block, then the norm layers merged into it."""
    found: list[list[str]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if isinstance(child, nn.Sequential):
                visit(full + ".", child)
            elif not any(True for _ in child.parameters()):
                continue
            elif isinstance(child, NORM_LAYERS) and found:
                found[-1].append(full)
            else:
                found.append([full])

    visit("", model)
    return found


def head_name(model: nn.Module) -> str | None:
    """The classifier head: a child named ``head`` (the zoo), else the last ``nn.Linear``
    (torchvision's ``fc``, timm's ``classifier``), else None."""
    if isinstance(getattr(model, "head", None), nn.Module):
        return "head"
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _first_conv(model: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return name
    return None


def _under(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


# -- loading weights ---------------------------------------------------------------------------

def load_weights(model: nn.Module, source: str | Path | Mapping[str, Any], *,
                 min_fraction: float = 0.5, head: str = "keep") -> dict[str, Any]:
    """Copy the tensors of ``source`` into ``model`` where name and shape match; return what
    happened: ``{"loaded": [...], "adapted": [...], "skipped": {name: reason},
    "reinitialised": [...], "fraction": f}``.

    ``source`` is a gradwise run directory (its ``checkpoints/best.pt``, else ``last.pt``), a
    gradwise checkpoint (its ``model`` entry), a file holding a plain state dict, or a state
    dict in memory. Files are read with ``torch.load(weights_only=True)``.

    - The head (:func:`head_name`) with another shape (another class count) keeps the model's
      own initialisation: ``reinitialised``.
    - The first conv's weight ``(O, C, k...)`` from a model with another number of input
      channels is ``adapted``: ``C -> 1`` sums over the input channels, ``1 -> C`` repeats the
      weight and divides it by ``C``. Either way a grey image (the same values in every
      channel) gives the same activations in both models.
    - ``head="reinit"``: the head keeps the model's own initialisation even where its shape
      matches (the same class count, other classes); ``"keep"`` loads a matching head.
    - Anything else that does not match is ``skipped`` with the reason; the model keeps its
      own values there.
    - ``fraction``: the share of the model's parameter elements loaded or adapted. Below
      ``min_fraction`` nothing is changed and a UserError names the numbers: starting almost
      from scratch is not silently taken for transfer.
    """
    min_fraction = _fraction(min_fraction)
    if head not in HEAD_MODES:
        raise UserError(f"head={head!r} is invalid; accepted: 'keep' (load a head of the same "
                        "shape) or 'reinit' (keep the model's own initialisation)")
    reinit_head = head == "reinit"
    state, where = _source_state(source)
    target = model.state_dict()
    head_module = head_name(model)
    first_conv = _first_conv(model)
    new: dict[str, Tensor] = {}
    loaded: list[str] = []
    adapted: list[str] = []
    reinitialised: list[str] = []
    skipped: dict[str, str] = {}
    for name, mine in target.items():
        theirs = state.get(name)
        in_head = head_module is not None and _under(name, head_module)
        if in_head and reinit_head:
            reinitialised.append(name)
            continue
        if theirs is None:
            skipped[name] = "not in the source"
            continue
        if not isinstance(theirs, Tensor):
            skipped[name] = f"the source holds a {type(theirs).__name__}, not a tensor"
            continue
        if theirs.shape == mine.shape:
            new[name] = theirs
            loaded.append(name)
        elif in_head:
            reinitialised.append(name)
        elif first_conv is not None and name == f"{first_conv}.weight" and (
                channels := _adapt_channels(theirs, mine.shape)) is not None:
            new[name] = channels
            adapted.append(name)
        else:
            skipped[name] = (f"shape {tuple(theirs.shape)} in the source, "
                             f"{tuple(mine.shape)} in the model")
    for name in state:
        if name not in target:
            skipped[name] = "not in the model"
    sizes = {name: p.numel() for name, p in model.named_parameters()}
    total = sum(sizes.values())
    got = sum(sizes.get(name, 0) for name in loaded + adapted)
    fraction = got / total if total else 0.0
    if not got:  # (a matching scalar buffer such as num_batches_tracked is not a match)
        theirs_sample = ", ".join(list(state)[:3]) or "nothing"
        mine_sample = ", ".join(list(target)[:3]) or "nothing"
        raise UserError(f"nothing in {where} matches the model: its keys ({theirs_sample}, ...) "
                        f"against the model's ({mine_sample}, ...); is it a checkpoint of "
                        "another architecture?")
    if fraction < min_fraction:
        raise UserError(f"only {got:,} of the model's {total:,} parameters "
                        f"({fraction:.1%}) match {where}; min_fraction={min_fraction:g} needs "
                        f"at least {min_fraction:.0%} (skipped {len(skipped)} tensors, e.g. "
                        f"{next(iter(skipped.items()), ('-', '-'))[0]}); lower min_fraction to "
                        "accept it (transfer.min_fraction in a config)")
    with torch.no_grad():
        for name, value in new.items():
            target[name].copy_(value.to(device=target[name].device, dtype=target[name].dtype))
    return {"loaded": loaded, "adapted": adapted, "skipped": skipped,
            "reinitialised": reinitialised, "fraction": fraction}


def _adapt_channels(weight: Tensor, shape: torch.Size) -> Tensor | None:
    """A conv weight with ``shape``'s input channels: summed to 1, or 1 repeated and divided."""
    if weight.dim() < 3 or weight.shape[0] != shape[0] or weight.shape[2:] != shape[2:]:
        return None
    theirs, mine = weight.shape[1], shape[1]
    if mine == 1:
        return weight.sum(dim=1, keepdim=True)
    if theirs == 1:
        return weight.repeat(1, mine, *([1] * (weight.dim() - 2))) / mine
    return None


def _source_state(source: str | Path | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """The state dict of ``source`` and how to name it in a message."""
    if isinstance(source, Mapping):
        return _state_of(source, "the state dict given"), "the state dict given"
    if not isinstance(source, (str, Path)):
        raise UserError(f"weights source {source!r} is invalid; expected a run directory, a "
                        "checkpoint or state dict file, or a state dict")
    path = Path(source)
    if path.is_dir():
        run = RunDir.open(path)
        names = run.checkpoints()
        name = "best" if "best" in names else "last" if "last" in names else None
        if name is None:
            raise UserError(f"run directory {str(path)!r} holds no checkpoint "
                            "(checkpoints/best.pt or last.pt); was it trained?")
        where = repr(str(run.checkpoint_path(name)))
        return _state_of(run.load_checkpoint(name, map_location="cpu"), where), where
    where = repr(str(path))
    if not path.exists():
        raise UserError(f"weights {where} not found; expected a run directory, a checkpoint or "
                        "a state dict file")
    return _state_of(_io.load(path, map_location="cpu"), where), where


def _state_of(obj: Any, where: str) -> Mapping[str, Any]:
    """A checkpoint's ``model`` entry, or the state dict itself."""
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if (not isinstance(obj, Mapping) or not obj
            or not any(isinstance(v, Tensor) for v in obj.values())):
        raise UserError(f"{where} holds no state dict (a mapping of names to tensors, or a "
                        "gradwise checkpoint with a 'model' entry)")
    return obj


def _fraction(value: object) -> float:
    if (not isinstance(value, numbers.Real) or isinstance(value, bool)
            or not 0 <= float(value) <= 1):
        raise UserError(f"min_fraction={value!r} is invalid; it must be a number in [0, 1]")
    return float(value)


# -- freezing ----------------------------------------------------------------------------------

def freeze(model: nn.Module,
           trainable: str | Sequence[str] | int | Callable[[str], bool] = ("head",),
           bn: str = "eval") -> dict[str, list[str]]:
    """Freeze ``model`` except its ``trainable`` part; return ``{"trainable": [...],
    "frozen": [...], "frozen_bn": [...]}`` (parameter names, and the batch-norm layers of the
    frozen part).

    ``trainable`` is module names (prefixes of parameter names, such as ``"head"`` or
    ``"features.7"``), an ``int`` N (the head and the N blocks before it, see :func:`blocks`;
    0 is the head alone), or a predicate on the parameter name. Frozen parameters get
    ``requires_grad=False``: no gradient, and :func:`gradwise.optim.param_groups` leaves them
    out of the optimizer.

    ``bn`` sets the batch-norm layers of the frozen part:

    - ``"eval"``: they stay in inference mode (they normalise with their running statistics,
      which are not updated) even when ``model.train()`` is called (a forward pre-hook), and
      their affine parameters are frozen: the frozen part computes what it computes in
      ``model.eval()`` (Keras' rule).
    - ``"train"``: they normalise with the batch and update their running statistics, and
      their affine parameters keep training (fastai's ``train_bn=True``).

    Calling ``freeze`` again starts from an unfrozen model; :func:`unfreeze` undoes it.
    """
    bn = _bn_mode(bn)
    is_trainable = _trainable_fn(model, trainable)
    unfreeze(model)
    bn_layers = {name: m for name, m in model.named_modules() if isinstance(m, _BATCH_NORM)}
    frozen_bn = [name for name in bn_layers if not is_trainable(f"{name}.weight")]
    bn_params = {f"{name}.{p}" for name in frozen_bn
                 for p, _ in bn_layers[name].named_parameters(recurse=False)}
    result: dict[str, list[str]] = {"trainable": [], "frozen": [], "frozen_bn": frozen_bn}
    for name, p in model.named_parameters():
        train = is_trainable(name) or (bn == "train" and name in bn_params)
        p.requires_grad_(train)
        result["trainable" if train else "frozen"].append(name)
    if bn == "eval":
        for name in frozen_bn:
            module = bn_layers[name]
            module.eval()
            setattr(module, _HOOK_ATTR, module.register_forward_pre_hook(_keep_eval))
    return result


def _keep_eval(module: nn.Module, args: Any) -> None:
    """Forward pre-hook of a frozen batch-norm layer: inference mode, whatever train() said."""
    module.training = False


def unfreeze(model: nn.Module) -> None:
    """Make every parameter trainable again and let frozen batch norm follow ``train()``."""
    for p in model.parameters():
        p.requires_grad_(True)
    for module in model.modules():
        handle = getattr(module, _HOOK_ATTR, None)
        if handle is not None:
            handle.remove()
            delattr(module, _HOOK_ATTR)
            module.training = model.training


def _bn_mode(bn: object) -> str:
    if bn not in BN_MODES:
        raise UserError(f"bn={bn!r} is invalid; accepted: 'eval' (frozen batch norm in "
                        "inference mode, Keras) or 'train' (statistics and affine keep "
                        "training, fastai's train_bn)")
    return str(bn)


def _trainable_fn(model: nn.Module, trainable: object) -> Callable[[str], bool]:
    """``trainable`` as a predicate on parameter names, checked against ``model``."""
    names = [name for name, _ in model.named_parameters()]
    if isinstance(trainable, numbers.Integral) and not isinstance(trainable, bool):
        members = _block_members(model)
        head = head_name(model)
        body = [m for m in members if m[0] != head]
        n = int(trainable)
        if not 0 <= n <= len(body):
            raise UserError(f"trainable={n} is invalid; this model has {len(body)} blocks "
                            f"before its head ({', '.join(m[0] for m in body)}): give 0 to "
                            f"{len(body)}")
        prefixes = [p for m in body[len(body) - n:] for p in m] + ([head] if head else [])
        return lambda name: any(_under(name, p) for p in prefixes)
    if isinstance(trainable, str):
        trainable = (trainable,)
    if callable(trainable):
        return lambda name: bool(trainable(name))
    if isinstance(trainable, Sequence) and all(isinstance(t, str) for t in trainable):
        unknown = [t for t in trainable if not any(_under(n, t) for n in names)]
        if unknown:
            top = sorted({n.split(".")[0] for n in names})
            raise UserError(f"trainable names {', '.join(map(repr, unknown))} match no "
                            f"parameter of the model; its top-level modules are "
                            f"{', '.join(top)} (blocks: {', '.join(blocks(model))})")
        prefixes = list(trainable)
        return lambda name: any(_under(name, p) for p in prefixes)
    raise UserError(f"trainable={trainable!r} is invalid; give module names such as "
                    "('head',), a number of blocks before the head, or a function of the "
                    "parameter name")


# -- discriminative learning rates -------------------------------------------------------------

def discriminative_groups(model: nn.Module, base_lr: float, factor: float = 100.0,
                          groups: int | Sequence[str | Sequence[str]] | None = None, *,
                          weight_decay: float = 0.0,
                          decay_norm_and_bias: bool = False) -> list[dict]:
    """Param groups with learning rates from ``base_lr / factor`` (the first group, nearest the
    input) to ``base_lr`` (the last, the head), geometric in between: with ``k`` groups, group
    ``i`` gets ``base_lr / factor ** ((k - 1 - i) / (k - 1))`` (fastai's
    ``slice(base_lr / factor, base_lr)``; the lecture's "about 1/10" is ``factor=10`` with two
    groups).

    ``groups``: None, one group per block (:func:`blocks`); an ``int`` k, the blocks split into
    k runs of neighbours, as even as possible; or a list, input first, of module names (or
    lists of them) per group, which must cover every trainable parameter. Weight decay follows
    :func:`gradwise.optim.param_groups` (none on biases and norm layers), so a group of
    learning rates may be two param groups; frozen parameters are left out.

    >>> from gradwise.nn import build_model
    >>> net = build_model("mlp", (4,), 3, hidden=(8, 8))
    >>> [(g["name"], g["lr"]) for g in discriminative_groups(net, 0.1, factor=100)][::2]
    [('decay@0', 0.001), ('decay@1', 0.01), ('decay@2', 0.1)]
    """
    base_lr = _positive("base_lr", base_lr)
    factor = _positive("factor", factor)
    if factor < 1:
        raise UserError(f"factor={factor:g} is invalid; it must be >= 1 (the head's rate over "
                        "the first group's)")
    if (not isinstance(weight_decay, numbers.Real) or isinstance(weight_decay, bool)
            or not 0 <= weight_decay < math.inf):
        raise UserError(f"weight_decay={weight_decay!r} is invalid; it must be a number >= 0")
    parts = _lr_groups(model, groups)
    k = len(parts)
    lrs = [base_lr if k == 1 else base_lr / factor ** ((k - 1 - i) / (k - 1)) for i in range(k)]
    index = {}
    for name, p in model.named_parameters():
        index[id(p)] = next(i for i, prefixes in enumerate(parts)
                            if any(_under(name, q) for q in prefixes)) if p.requires_grad else 0

    out = param_groups(model, weight_decay=float(weight_decay), lr=base_lr,
                       lr_multipliers=lambda name: 1.0, decay_norm_and_bias=decay_norm_and_bias)
    # split param_groups' decay / no_decay groups by learning-rate group, input first
    result = []
    for i in range(k):
        for group in out:
            params = [p for p in group["params"] if index[id(p)] == i]
            if params:
                result.append({**group, "params": params, "lr": lrs[i],
                               "name": f"{group['name'].split('*')[0]}@{i}"})
    return result
    return out


def _lr_groups(model: nn.Module,
               groups: int | Sequence[str | Sequence[str]] | None) -> list[list[str]]:
    """The module-name prefixes of each learning-rate group, input first."""
    members = _block_members(model)
    parts = [m[0] for m in members]
    if groups is None:
        result = members
    elif isinstance(groups, numbers.Integral) and not isinstance(groups, bool):
        k = int(groups)
        if not 1 <= k <= len(members):
            raise UserError(f"groups={k} is invalid; this model has {len(members)} blocks "
                            f"({', '.join(parts)}): give 1 to {len(members)}")
        size, extra = divmod(len(members), k)
        result, start = [], 0
        for i in range(k):
            stop = start + size + (1 if i < extra else 0)
            result.append([p for m in members[start:stop] for p in m])
            start = stop
    elif isinstance(groups, Sequence) and not isinstance(groups, str) and groups:
        result = [[g] if isinstance(g, str) else list(g) for g in groups]
        names = [n for n, _ in model.named_parameters()]
        for prefixes in result:
            for p in prefixes:
                if not isinstance(p, str) or not any(_under(n, p) for n in names):
                    raise UserError(f"groups entry {p!r} matches no parameter of the model; "
                                    f"its blocks are {', '.join(parts)}")
    else:
        raise UserError(f"groups={groups!r} is invalid; give None (one group per block), a "
                        "number of groups, or a list of module names per group, input first")
    uncovered = [n for n, p in model.named_parameters() if p.requires_grad
                 and not any(_under(n, q) for prefixes in result for q in prefixes)]
    if uncovered:
        raise UserError(f"no learning-rate group holds {', '.join(uncovered[:3])}"
                        f"{', ...' if len(uncovered) > 3 else ''}; add it to a group")
    return result


def _positive(name: str, value: object) -> float:
    if (not isinstance(value, numbers.Real) or isinstance(value, bool)
            or not 0 < float(value) < math.inf):
        raise UserError(f"{name}={value!r} is invalid; it must be a finite number > 0")
    return float(value)


# -- the 2x2 table -----------------------------------------------------------------------------

#: (little data, similar domain) -> what to do. ``trainable`` is :func:`freeze`'s argument
#: (``None``: train everything); ``lr_factor`` the :func:`discriminative_groups` factor.
TABLE: dict[tuple[bool, bool], dict[str, Any]] = {
    (True, True): {
        "action": "linear_probe",
        "what": "train a linear classifier on the top layer, everything else frozen",
        "reason": "the top features already fit the task, and few examples can fit only a "
                  "few weights",
        "trainable": ("head",), "lr_factor": None, "lp_ft": None},
    (True, False): {
        "action": "earlier_stage",
        "what": "a linear classifier on an earlier stage's features, or fine-tune a few more "
                "layers (you are in trouble)",
        "reason": "the top features are specific to the source task and the generic early "
                  "ones may not suffice, but few examples cannot train many weights",
        "trainable": 1, "lr_factor": None,
        "lp_ft": "train the head first (LP-FT), then the last block at a lower rate"},
    (False, True): {
        "action": "fine_tune_few",
        "what": "fine-tune a few of the top layers at about 1/10 of the learning rate",
        "reason": "enough data to adjust the top layers without overfitting, and the "
                  "pretrained features are close to what the task needs",
        "trainable": 2, "lr_factor": 10.0,
        "lp_ft": "linear probe first, then fine-tune (Kumar et al. 2022: keeps the features "
                 "and out-of-distribution accuracy)"},
    (False, False): {
        "action": "fine_tune_many",
        "what": "fine-tune a larger number of layers (or all), the early ones at a lower "
                "rate",
        "reason": "the domain needs other features and there is data enough to learn them",
        "trainable": None, "lr_factor": 100.0,
        "lp_ft": "linear probe first, then fine-tune everything (Kumar et al. 2022), so the "
                 "random head does not distort the pretrained features"},
}


def strategy(n_examples_per_class: float, similar: bool, *,
             little: float = LITTLE_DATA) -> dict[str, Any]:
    """The lecture's table, {little, a lot of} data x {similar, different} domain, as a
    choice: the cell for ``n_examples_per_class`` and ``similar``, with what to do, a
    one-line reason, :func:`freeze`'s ``trainable`` and the LP-FT note where it applies.

    "Little" is fewer than ``little`` examples per class, by default 1,000: about ImageNet's
    ~1,300 per class, the scale a pretrained model's features were learnt at; below it,
    training many pretrained weights tends to overfit. A rule of thumb, not a measurement.

    >>> strategy(20, similar=True)["action"]
    'linear_probe'
    >>> strategy(5000, similar=False)["action"]
    'fine_tune_many'
    """
    n = _positive("n_examples_per_class", n_examples_per_class)
    little = _positive("little", little)
    if not isinstance(similar, bool):
        raise UserError(f"similar={similar!r} is invalid; it must be true or false")
    is_little = n < little
    cell = TABLE[(is_little, similar)]
    return {"data": "little" if is_little else "a lot", "domain":
            "similar" if similar else "different", "n_examples_per_class": n,
            "threshold": little, **cell}


# -- learning-rate multipliers for param_groups ------------------------------------------------

def lr_multipliers(model: nn.Module, lr_mult: float = 0.1,
                   factor: float = 1.0) -> Callable[[str], float]:
    """The learning-rate multiplier of each parameter name, for
    :func:`gradwise.optim.param_groups`: 1 for the head; for the trainable blocks before it
    (input first, ``k`` of them) ``lr_mult / factor ** ((k - 1 - i) / (k - 1))``, so the block
    next to the head gets ``lr_mult`` and the first trainable one ``lr_mult / factor``
    (``factor=1``: all ``lr_mult``, the lecture's "fine-tune at about 1/10"). Parameters of no
    block (a root-level parameter) count with the first block.

    >>> from gradwise.nn import build_model
    >>> net = build_model("mlp", (4,), 3, hidden=(8, 8))
    >>> f = lr_multipliers(net, 0.1, factor=10)
    >>> [round(f(n), 4) for n in ("features.1.weight", "features.3.weight", "head.weight")]
    [0.01, 0.1, 1.0]
    """
    lr_mult = _positive("lr_mult", lr_mult)
    factor = _positive("factor", factor)
    if factor < 1:
        raise UserError(f"factor={factor:g} is invalid; it must be >= 1 (the rate of the block "
                        "next to the head over the first trainable block's)")
    head = head_name(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    body = [m for m in _block_members(model) if m[0] != head
            and any(_under(n, q) for n in trainable for q in m)]
    k = len(body)
    rates = [lr_mult if k == 1 else lr_mult / factor ** ((k - 1 - i) / (k - 1))
             for i in range(k)]

    def multiplier(name: str) -> float:
        if head is not None and _under(name, head):
            return 1.0
        for members, rate in zip(body, rates, strict=True):
            if any(_under(name, q) for q in members):
                return rate
        return rates[0] if rates else lr_mult

    return multiplier


# -- measuring similarity: linear probes -------------------------------------------------------

@torch.no_grad()
def head_features(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """What ``model``'s head (:func:`head_name`) receives for ``x``, flattened to ``(N, F)``,
    in eval mode (the model's mode is restored)."""
    head = head_name(model)
    if head is None:
        raise UserError(f"{type(model).__name__} has no head (a child named 'head' or a "
                        "Linear layer) whose input could be probed")
    module = model.get_submodule(head)
    caught: list[Tensor] = []
    handle = module.register_forward_pre_hook(
        lambda m, args: caught.append(args[0].detach().flatten(1).float()))
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size])
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(caught)


def probe_accuracy(train_features: Tensor, train_labels: Tensor, eval_features: Tensor,
                   eval_labels: Tensor, *, l2: float = 1e-3, steps: int = 100) -> float:
    """Accuracy on ``eval_*`` of a linear probe: multinomial logistic regression fitted on
    ``train_*`` (features standardised with the train mean and std, loss ``CE + l2/2 |W|^2``,
    full-batch L-BFGS from zero weights: deterministic, no random state used)."""
    classes = int(max(int(train_labels.max()), int(eval_labels.max()))) + 1
    mean, std = train_features.mean(0), train_features.std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    a, b = (train_features - mean) / std, (eval_features - mean) / std
    weight = torch.zeros(a.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = (nn.functional.cross_entropy(a @ weight + bias, train_labels)
                + l2 / 2 * weight.pow(2).sum())
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return float(((b @ weight + bias).argmax(1) == eval_labels).float().mean())


#: ``similar`` in :func:`measure` when the pretrained features' probe removes at least this share
#: of the error of the same probe on a randomly initialised model's features.
SIMILAR_GAIN = 0.25


def measure(pretrained: nn.Module, random_init: nn.Module, x: Tensor, y: Tensor, *,
            held_out: float = 0.3, repeats: int = 5, seed: int = 0,
            gain: float = SIMILAR_GAIN) -> dict[str, Any]:
    """The two measurements of :func:`strategy` on a training set ``x, y``: examples per class
    (the smallest class's count) and the similarity of the domains. A linear probe
    (:func:`probe_accuracy`) is fitted on the head's input of ``pretrained`` and of
    ``random_init`` (the same architecture, untrained) on the same ``1 - held_out`` of the
    data (stratified, drawn with ``seed``) and scored on the rest, ``repeats`` times with other
    draws (accuracies averaged: a few examples per class make one draw noisy); the task counts
    as similar when the pretrained probe removes at least ``gain`` of the random one's error:
    ``(err_random - err_pretrained) / err_random >= gain``."""
    gain = _fraction(gain)
    held_out = _fraction(held_out)
    counts = y.bincount()
    counts = counts[counts > 0]
    if int(counts.min()) < 2:
        raise UserError(f"a class has {int(counts.min())} training example; measuring the "
                        "similarity needs at least 2 per class")
    generator = torch.Generator().manual_seed(seed)
    labels = y.cpu()
    features = {name: head_features(model, x).cpu()
                for name, model in (("pretrained", pretrained), ("random", random_init))}
    accuracy = {name: 0.0 for name in features}
    for _ in range(repeats):
        fit_idx, eval_idx = [], []
        for c in labels.unique():
            members = torch.nonzero(labels == c).flatten()
            members = members[torch.randperm(len(members), generator=generator)]
            cut = min(max(1, round(held_out * len(members))), len(members) - 1)
            eval_idx.append(members[:cut])
            fit_idx.append(members[cut:])
        fit, held = torch.cat(fit_idx), torch.cat(eval_idx)
        for name, f in features.items():
            accuracy[name] += probe_accuracy(f[fit], labels[fit], f[held],
                                             labels[held]) / repeats
    err_p, err_r = 1 - accuracy["pretrained"], 1 - accuracy["random"]
    relative = (err_r - err_p) / err_r if err_r > 0 else 0.0
    return {"examples_per_class": int(counts.min()), "probe_accuracy_pretrained":
            accuracy["pretrained"], "probe_accuracy_random": accuracy["random"],
            "error_removed": relative, "similar": bool(relative >= gain),
            "similar_gain": gain, "held_out": len(held), "repeats": repeats}


def table_text(choice: dict[str, Any]) -> str:
    """The 2x2 table as text with the chosen cell marked, the measurements and the reason.

    ``choice`` is :func:`strategy`'s result, optionally updated with :func:`measure`'s."""
    mark = (choice["data"] == "little", choice["domain"] == "similar")
    width = 30

    def cell(little: bool, similar: bool) -> str:
        text = TABLE[(little, similar)]["action"]
        return (f"[{text}]" if (little, similar) == mark else f" {text} ").ljust(width)

    threshold = f"{choice['threshold']:g}"
    lines = [f"{'':24}{'similar domain'.ljust(width)}different domain",
             f"{'little (< ' + threshold + '/class)':24}{cell(True, True)}{cell(True, False)}",
             f"{'a lot (>= ' + threshold + '/class)':24}{cell(False, True)}{cell(False, False)}"]
    if "probe_accuracy_pretrained" in choice:
        lines.append(f"measured: {choice['n_examples_per_class']:g} examples per class; linear "
                     f"probe {choice['probe_accuracy_pretrained']:.1%} on the pretrained "
                     f"features vs {choice['probe_accuracy_random']:.1%} on random ones "
                     f"({choice['error_removed']:.0%} of the error removed, similar from "
                     f"{choice['similar_gain']:.0%})")
    lines.append(f"chosen: {choice['action']}: {choice['what']}")
    lines.append(f"reason: {choice['reason']}")
    return "\n".join(line.rstrip() for line in lines)
