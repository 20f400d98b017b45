"""Network registry: ``create_network(name, **config)`` and ``list_networks()``.

Every 3D network takes ``(B, 4, X, Y, Z)`` (the four modalities) and returns
``(B, out_channels, X, Y, Z)`` logits: by default 3 sigmoid region channels (WT, TC, ET).
2D networks take ``(B, C, H, W)``. Architectures live one per module and register
themselves with :func:`register`; modules are imported lazily on first use.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
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
    """Decorator: register a factory ``fn(**config) -> nn.Module`` under ``name``.

    ``patch_rule(**args) -> (multiple, minimum)``, optional: the input sides (x, y, z)
    the network takes with the factory arguments ``args`` (defaults filled in): each a
    multiple of ``multiple`` and at least ``minimum`` (downsampling steps must divide the
    side, and normalisation needs more than one voxel at the coarsest level).
    """

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
    """Build a registered network; an unknown name, or an argument its factory does not
    take (a misspelling would build the default network), raises a one-sentence error.

    The arguments a training config sets for every network (:data:`_SET_BY_CONFIG`:
    ``in_channels``, ``out_channels``, ``dropout``, ``deep_supervision``) are passed only
    to a factory that takes them: asking a network without deep supervision for it
    builds it without. A factory with a ``**`` catch-all of its own takes anything."""
    from braintumor.errors import InputError

    _load()
    if name not in _REGISTRY:
        raise InputError(f"Unknown network {name!r}; registered: {', '.join(sorted(_REGISTRY))}.")
    fn = _REGISTRY[name]
    params = inspect.signature(fn).parameters.values()
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return fn(**config)
    takes = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(k for k in config if k not in takes and k not in _SET_BY_CONFIG)
    if unknown:
        raise InputError(f"Network {name} takes no argument{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(unknown)}; it takes: {', '.join(takes) or 'nothing'}.")
    return fn(**{k: v for k, v in config.items() if k in takes})


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


#: factory arguments that a training config sets through fields of its own
_SET_BY_CONFIG = {"in_channels": "the four modalities", "out_channels": "output",
                  "dropout": "dropout", "deep_supervision": "deep_supervision"}


def network_arguments(name: str) -> list[str]:
    """The ``network_args`` a registered network takes (its factory's named arguments,
    less those a training config sets through its own fields)."""
    _load()
    sig = inspect.signature(_REGISTRY[name])
    return [p.name for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name not in _SET_BY_CONFIG]


def patch_rule(name: str, network_args: dict[str, Any]
               ) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """``(multiple, minimum)`` per side (x, y, z) of the patches ``name`` takes with
    ``network_args``; None when the network states no rule or the arguments are not of
    a kind the rule can read (the factory then says what is wrong)."""
    _load()
    rule = _INFO[name].get("patch_rule")
    if rule is None:
        return None
    params = inspect.signature(_REGISTRY[name]).parameters
    args = {k: p.default for k, p in params.items() if p.default is not p.empty}
    args.update(network_args)
    try:
        multiple, minimum = rule(**{k: v for k, v in args.items() if k in params})
    except (TypeError, ValueError):
        return None
    return tuple(int(m) for m in multiple), tuple(int(m) for m in minimum)  # type: ignore


def check_network(name: str, network_args: dict[str, Any],
                  patch: Sequence[int] | None = None) -> None:
    """Refuse, in one sentence, a 3D training network the factory would misread: an
    unknown name, a 2D network, an argument it does not take (a misspelling would
    otherwise be ignored), a patch its downsampling does not divide."""
    from braintumor.errors import InputError

    _load()
    if name not in _REGISTRY:
        raise InputError(f"Unknown network {name!r}; registered 3D networks: "
                         f"{', '.join(list_networks(dims=3))}.")
    if _INFO[name]["dims"] != 3:
        raise InputError(f"network {name} is a 2D network (see braintumor.training2d); this "
                         f"trainer takes a 3D one: {', '.join(list_networks(dims=3))}.")
    if not isinstance(network_args, dict):
        return  # the config check names this
    takes = network_arguments(name)
    config_set = sorted(k for k in network_args if k in _SET_BY_CONFIG)
    if config_set:
        k = config_set[0]
        where = ("is fixed by the data (the four modalities)" if k == "in_channels" else
                 f"comes from the config field {_SET_BY_CONFIG[k]}")
        raise InputError(f"network_args {k} {where}, not from network_args (network {name} "
                         f"takes: {', '.join(takes) or 'nothing'}).")
    unknown = sorted(set(map(str, network_args)) - set(takes))
    if unknown:
        raise InputError(f"network_args {', '.join(unknown)}: not an argument of network "
                         f"{name}, which takes: {', '.join(takes) or 'nothing'}.")
    rule = patch_rule(name, network_args) if patch is not None else None
    if rule is None or patch is None:
        return
    multiple, minimum = rule
    if all(s % m == 0 and s >= lo for s, m, lo in zip(patch, multiple, minimum, strict=True)):
        return
    fit = [max(lo, -(-s // m) * m) for s, m, lo in zip(patch, multiple, minimum, strict=True)]
    if len(set(multiple)) == 1 and len(set(minimum)) == 1:
        need = f"each side must be a multiple of {multiple[0]} and at least {minimum[0]}"
    else:
        need = (f"its sides (x, y, z) must be multiples of {list(multiple)} and at least "
                f"{list(minimum)}")
    raise InputError(f"patch {list(patch)} does not fit network {name} with its "
                     f"network_args: {need} (e.g. patch {fit}).")
