"""Param groups for a model: no weight decay on biases and norm layers, per-layer learning rates."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import nn

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
               nn.RMSNorm)


def param_groups(model: nn.Module, *, weight_decay: float = 0.0, lr: float | None = None,
                 lr_multipliers: Mapping[str, float] | Callable[[str], float] | None = None,
                 decay_norm_and_bias: bool = False) -> list[dict]:
    """Split ``model``'s trainable parameters into param groups for any torch optimizer.

    - Weight decay: ``weight_decay`` for weights; 0 for biases and every parameter of a
      normalisation layer (BatchNorm, LayerNorm, GroupNorm, ...), whose scale decay would only
      fight the normalisation (unless ``decay_norm_and_bias=True``).
    - Learning rates: ``lr_multipliers`` maps a module-name prefix to a factor of ``lr``
      (the longest matching prefix wins, others get 1), or is a function of the parameter name.
      Transfer learning uses it for discriminative rates: ``{"features": 0.1, "head": 1.0}``.

    Parameters with ``requires_grad=False`` (frozen) are left out. Each group carries a ``name``
    such as ``"decay"``, ``"no_decay"`` or ``"decay*0.1"``. Groups without multipliers have no
    ``lr`` key, so the optimizer's own ``lr`` applies.

    >>> net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    >>> groups = param_groups(net, weight_decay=5e-4)
    >>> [(g["name"], len(g["params"]), g["weight_decay"]) for g in groups]
    [('decay', 2, 0.0005), ('no_decay', 4, 0.0)]
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay!r} is invalid; it must be >= 0")
    if lr_multipliers is not None and lr is None:
        raise ValueError("lr_multipliers needs lr: a group's rate is lr * multiplier")
    multiplier = _multiplier_fn(lr_multipliers)
    no_decay = set() if decay_norm_and_bias else _no_decay_names(model)
    groups: dict[tuple[bool, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = name not in no_decay
        factor = float(multiplier(name))
        if factor < 0:
            raise ValueError(f"lr multiplier for {name!r} is {factor}; it must be >= 0")
        key = (decay, factor)
        if key not in groups:
            label = "decay" if decay else "no_decay"
            group = {"name": label if lr_multipliers is None else f"{label}*{factor:g}",
                     "params": [], "weight_decay": weight_decay if decay else 0.0}
            if lr is not None and lr_multipliers is not None:  # lr is set: checked above
                group["lr"] = lr * factor
            groups[key] = group
        groups[key]["params"].append(p)
    return list(groups.values())


def _no_decay_names(model: nn.Module) -> set[str]:
    names = set()
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for pname, _ in module.named_parameters(recurse=False):
            if isinstance(module, NORM_LAYERS) or pname == "bias":
                names.add(prefix + pname)
    return names


def _multiplier_fn(spec) -> Callable[[str], float]:
    if spec is None:
        return lambda name: 1.0
    if callable(spec):
        return spec
    prefixes = sorted(spec, key=len, reverse=True)

    def by_prefix(name: str) -> float:
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + ".") or prefix == "":
                return spec[prefix]
        return 1.0

    return by_prefix
