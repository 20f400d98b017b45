"""Network registry: ``create_network(name, **config)`` and ``list_networks()``.

Every 3D network takes ``(B, 4, X, Y, Z)`` (the four modalities) and returns
``(B, out_channels, X, Y, Z)`` logits: by default 3 sigmoid region channels (WT, TC, ET).
2D networks take ``(B, C, H, W)``. Architectures live one per module and register
themselves with :func:`register`; modules are imported lazily on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_INFO: dict[str, dict[str, Any]] = {}

#: modules that define networks (imported on first registry access)
_MODULES = (
    "braintumor.networks.monai_nets",
    "braintumor.networks.compact",
    "braintumor.networks.unet2d",
)
_loaded = False


def register(name: str, dims: int = 3, **info: Any) -> Callable[[Callable[..., nn.Module]],
                                                                  Callable[..., nn.Module]]:
    """Decorator: register a factory ``fn(**config) -> nn.Module`` under ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = fn
        _INFO[name] = {"dims": dims, **info}
        return fn

    return deco


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for mod in _MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
    _loaded = True


def list_networks(dims: int | None = None) -> list[str]:
    """Registered network names (optionally only 2D or 3D ones)."""
    _load()
    return sorted(n for n in _REGISTRY if dims is None or _INFO[n]["dims"] == dims)


def network_info(name: str) -> dict[str, Any]:
    """Static facts about a registered network (``dims``, notes)."""
    _load()
    return dict(_INFO[name])


def create_network(name: str, **config: Any) -> nn.Module:
    """Build a registered network; unknown names raise a one-sentence error."""
    _load()
    if name not in _REGISTRY:
        from braintumor.errors import InputError

        raise InputError(f"Unknown network {name!r}; registered: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name](**config)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
