"""Models of torchvision and timm by name, and their pretrained weights from the local cache.

``torchvision:NAME`` builds ``torchvision.models.get_model(NAME, num_classes=K)`` and
``timm:NAME`` builds ``timm.create_model(NAME, num_classes=K, in_chans=C)``, both with random
weights; :func:`hub_weights` reads pretrained weights (``DEFAULT`` or a weights name) from the
files those libraries keep after a download. gradwise never downloads: where the file is not
there, the error names its path and a command that fills it on a machine with network. Load
the weights with :func:`gradwise.transfer.load_weights`, which matches names and shapes, so the
1000-class head stays the model's own and a first conv of another channel count is adapted::

    model = build_model("torchvision:resnet18", (3, 32, 32), 7)
    state, where = hub_weights("torchvision:resnet18", "DEFAULT")
    load_weights(model, state)
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from .. import _io
from ..errors import UserError

#: Name prefix -> the package that provides those models.
PREFIXES = {"torchvision:": "torchvision", "timm:": "timm"}


def is_hub_model(name: object) -> bool:
    """Whether ``name`` is a ``torchvision:NAME`` or ``timm:NAME`` model."""
    return isinstance(name, str) and name.startswith(tuple(PREFIXES))


def _split(name: str) -> tuple[str, str, Any]:
    """``(prefix, architecture, package module)``; a missing package is a UserError."""
    prefix = next(p for p in PREFIXES if name.startswith(p))
    arch = name[len(prefix):]
    if not arch:
        raise UserError(f"model {name!r} names no architecture; write {prefix}NAME, e.g. "
                        f"{prefix}resnet18")
    package = PREFIXES[prefix]
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise UserError(f"model {name!r} needs the {package} package, which is not installed "
                        f"here (pip install {package})") from None
    return prefix, arch, module


def build_hub_model(name: str, input_shape: Sequence[int], num_classes: int,
                    **options: Any) -> nn.Module:
    """A torchvision or timm model for ``input_shape`` ``(C, H, W)`` and ``num_classes``, with
    random weights; ``options`` go to the library's builder. A torchvision model's first conv
    is rebuilt for ``C`` input channels where ``C != 3`` (timm takes ``in_chans``)."""
    prefix, arch, module = _split(name)
    if len(input_shape) != 3:
        raise UserError(f"model {name!r} needs an image shape (C, H, W); got "
                        f"input_shape={tuple(input_shape)}")
    channels = int(input_shape[0])
    try:
        if prefix == "timm:":
            if arch not in module.list_models():
                raise UserError(f"timm has no model {arch!r}; see timm.list_models()")
            return module.create_model(arch, pretrained=False, num_classes=num_classes,
                                       in_chans=channels, **options)
        models = importlib.import_module("torchvision.models")
        if arch not in models.list_models():
            shown = ", ".join(models.list_models()[:8])
            raise UserError(f"torchvision has no model {arch!r}; e.g. {shown}, ... "
                            "(torchvision.models.list_models())")
        model = models.get_model(arch, weights=None, num_classes=num_classes, **options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"model {name!r}: {_io.reason(exc)}") from None
    if channels != 3:
        _set_input_channels(model, channels)
    return model


def _set_input_channels(model: nn.Module, channels: int) -> None:
    """Replace the first Conv2d by one with ``channels`` inputs (otherwise the same)."""
    for name, child in model.named_modules():
        if isinstance(child, nn.Conv2d):
            parent_name, _, child_name = name.rpartition(".")
            conv = nn.Conv2d(channels, child.out_channels, child.kernel_size,  # type: ignore[arg-type]
                             child.stride, child.padding, child.dilation,  # type: ignore[arg-type]
                             child.groups, bias=child.bias is not None,
                             padding_mode=child.padding_mode)
            setattr(model.get_submodule(parent_name), child_name, conv)
            return
    raise UserError(f"{type(model).__name__} has no Conv2d whose input channels could be set")


def hub_weights(name: str, weights: str) -> tuple[Mapping[str, Any], str]:
    """The state dict of ``weights`` (``DEFAULT`` or a weights name such as ``IMAGENET1K_V1``,
    for timm a pretrained tag such as ``a1_in1k``) of model ``name``, read from the local
    cache (``weights_only``), and its path for messages. A file not in the cache is a UserError
    naming the path and how to fill it."""
    prefix, arch, module = _split(name)
    if prefix == "torchvision:":
        path, fill = _torchvision_file(arch, weights)
    else:
        path, fill = _timm_file(module, arch, weights)
    if not path.is_file():
        raise UserError(f"weights {weights!r} of {name} are not in the local cache: "
                        f"{path} is missing. gradwise does not download; fill it on a machine "
                        f"with network: {fill}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise UserError(f"{path} is a safetensors file and the safetensors package is not "
                            "installed here (pip install safetensors)") from None
        return load_file(str(path)), str(path)
    return _io.load(path, map_location="cpu"), str(path)


def _torchvision_file(arch: str, weights: str) -> tuple[Path, str]:
    """Where torchvision keeps ``weights`` of ``arch`` (torch.hub's checkpoints folder)."""
    models = importlib.import_module("torchvision.models")
    try:
        enum = models.get_model_weights(arch)
        entry = enum[weights] if "." not in weights else models.get_weight(weights)
    except (KeyError, ValueError):
        names = ", ".join(["DEFAULT", *(w.name for w in models.get_model_weights(arch))])
        raise UserError(f"torchvision model {arch!r} has no weights {weights!r}; accepted: "
                        f"{names}") from None
    url = entry.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    fill = (f"python -c \"import torchvision; torchvision.models.get_model('{arch}', "
            f"weights='{weights}')\" (it saves the file there; TORCH_HOME moves the cache), or "
            f"download {url} to {path}")
    return path, fill


def _timm_file(timm: Any, arch: str, weights: str) -> tuple[Path, str]:
    """Where timm keeps ``weights`` of ``arch``: the Hugging Face hub cache, or torch.hub's."""
    full = arch if weights == "DEFAULT" else f"{arch}.{weights}"
    try:
        lookup = getattr(timm, "get_pretrained_cfg", None) or timm.models.get_pretrained_cfg
        cfg = lookup(full)
    except (RuntimeError, ValueError, KeyError):
        cfg = None
    if cfg is None:
        raise UserError(f"timm has no pretrained weights {full!r}; weights is DEFAULT or a tag "
                        "of timm.list_pretrained()")
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    fill = (f"python -c \"import timm; timm.create_model('{full}', pretrained=True)\" "
            "(HF_HOME or TORCH_HOME move the caches)")
    repo = cfg.get("hf_hub_id")
    if repo:
        home = Path(os.environ.get("HF_HUB_CACHE") or Path(
            os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
        folder = home / f"models--{repo.replace('/', '--')}"
        snapshots = sorted((folder / "snapshots").glob("*/")) if folder.is_dir() else []
        for snapshot in snapshots:
            for file in (cfg.get("hf_hub_filename") or "model.safetensors",
                         "model.safetensors", "pytorch_model.bin"):
                if (snapshot / file).is_file():
                    return snapshot / file, fill
        return folder / "snapshots" / "REVISION" / "model.safetensors", fill
    url = cfg.get("url")
    if not url:
        raise UserError(f"timm's weights {full!r} name no file (neither hf_hub_id nor url)")
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path), fill
