"""The key mapping between the authors' published checkpoints and ours, in both directions.

The published PA-Seg code saves ``torch.save(model.state_dict())`` of its own network classes
(on ``cuda:0``), whose parameter names differ from ours. The parameters are the same tensors:
the published code registers them in another order (listed as ``<Net>_param_shapes`` in the
golden file, ``tests/data/GOLDEN.md``), and every published key maps to one of our parameters
through that order:

* ``U_Net2D5``: final conv first, then the decoder blocks ``conv_blocks_localization.0..3`` (deep
  → shallow), the encoder blocks ``conv_blocks_context.0..3`` (shallow → deep) and the bottleneck
  ``conv_blocks_context.4``. Each block holds conv, norm, conv, norm; the published module keeps
  every one of them under two names (``first_conv`` = ``block.0``, ``first_norm`` = ``block.1``,
  ``second_conv`` = ``block.3``, ``second_norm`` = ``block.4``) that share one tensor.
* ``U_Net`` / ``AttU_Net``: ``Conv1..5`` (encoder), then per decoder level ``Up<k>`` (up-conv),
  ``Att<k>`` (attention gate ``W_g``, ``W_x``, ``psi``) and ``Up_conv<k>`` for k = 5..2, and
  ``Conv_1x1``: the order of our own modules.

The functions are pure (state dict in, state dict out, tensors shared, devices kept); files are
read and written by :mod:`utilities.models.checkpoints` (``load_state_dict``, ``convert_checkpoint``;
the published tensors are CUDA tensors, loaded with ``map_location``) and converted on the
command line by ``convert_checkpoint.py``.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from functools import cache
from typing import cast

import torch
from torch import nn

from networks import NETWORKS, get_network

__all__ = [
    "published_keys",
    "detect_published_network",
    "detect_our_network",
    "WRAPPER_PREFIXES",
    "strip_wrapper_prefix",
    "published_to_ours",
    "ours_to_published",
    "to_our_state_dict",
    "with_article",
]

StateDict = Mapping[str, torch.Tensor]


def with_article(name: str) -> str:
    """``name`` with its indefinite article: ``a U_Net``, ``an AttU_Net``, ``a published U_Net``."""
    return f"{'an' if name[:1].upper() in 'AEIO' else 'a'} {name}"  # U_Net: 'a' (a 'you')

#: Keys that only the published layout of each network has (used to recognise it).
_SIGNATURES = {
    "U_Net2D5": ("final_conv.weight", "conv_blocks_context.0.first_conv.weight"),
    "AttU_Net": ("Conv1.conv.0.weight", "Att5.W_g.0.weight"),
    "U_Net": ("Conv1.conv.0.weight", "Up_conv5.conv.0.weight"),
}


# --------------------------------------------------------------------------------------------
# The published key list, in the published order
# --------------------------------------------------------------------------------------------
def _u_net2d5_keys() -> list[tuple[str, int]]:
    keys = [("final_conv.weight", 0)]
    index = 1
    blocks = [f"conv_blocks_localization.{i}" for i in range(4)] + [f"conv_blocks_context.{i}" for i in range(5)]
    for block in blocks:
        named = []
        aliases = []
        for name, alias in (("first_conv", "block.0"), ("first_norm", "block.1"),
                            ("second_conv", "block.3"), ("second_norm", "block.4")):
            for kind in ("weight", "bias"):
                named.append((f"{block}.{name}.{kind}", index))
                aliases.append((f"{block}.{alias}.{kind}", index))
                index += 1
        keys += named + aliases
    return keys


def _u_net_keys(attention: bool) -> list[tuple[str, int]]:
    names = [f"Conv{k}.conv.{i}" for k in range(1, 6) for i in (0, 3)]
    for k in range(5, 1, -1):
        names.append(f"Up{k}.up.1")
        if attention:
            names += [f"Att{k}.W_g.0", f"Att{k}.W_x.0", f"Att{k}.psi.0"]
        names += [f"Up_conv{k}.conv.0", f"Up_conv{k}.conv.3"]
    names.append("Conv_1x1")
    keys: list[tuple[str, int]] = []
    for name in names:
        for kind in ("weight", "bias"):
            keys.append((f"{name}.{kind}", len(keys)))
    return keys


def _check_network(network: str) -> None:
    if network not in NETWORKS:
        raise ValueError(f"--network must be one of {sorted(NETWORKS)}, got {network!r}")


def published_keys(network: str) -> list[tuple[str, int]]:
    """Every key of a published state dict of ``network``, in the published file's order, with
    the index of its parameter in the published registration order (aliases share an index)."""
    _check_network(network)
    if network == "U_Net2D5":
        return _u_net2d5_keys()
    return _u_net_keys(attention=network == "AttU_Net")


def _published_order(network: str, net: nn.Module) -> list[str]:
    """Our parameter names, listed in the published registration order."""
    def child(name: str) -> nn.Module:
        return cast(nn.Module, getattr(net, name))

    def blocks(name: str) -> list[tuple[str, nn.Module]]:
        return [(f"{name}.{i}", m) for i, m in enumerate(cast(nn.ModuleList, getattr(net, name)))]

    if network == "U_Net2D5":
        modules = [("head", child("head")), *blocks("decoders"), *blocks("encoders"),
                   ("bottleneck", child("bottleneck"))]
    else:
        modules = [*blocks("encoders"), *blocks("decoders"), ("head", child("head"))]
    return [f"{prefix}.{name}" for prefix, module in modules for name, _ in module.named_parameters()]


@cache
def _layout(network: str, in_channels: int, num_classes: int) -> tuple[tuple[str, ...], dict[str, tuple[int, ...]]]:
    """(our parameter names in published order, our state-dict key → shape), built on the meta
    device (no memory, no initialisation cost)."""
    with torch.device("meta"):
        net = get_network(network, in_channels=in_channels, num_classes=num_classes)
    state = net.state_dict()
    order = tuple(_published_order(network, net))
    if sorted(order) != sorted(state):  # the networks keep no buffers; a change here must be mapped
        raise RuntimeError(f"{network}: parameter list and state dict differ; update networks/published.py")
    return order, {k: tuple(v.shape) for k, v in state.items()}


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------
#: Prefixes a wrapper adds to every key: ``DataParallel``/``DistributedDataParallel``, ``torch.compile``.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def strip_wrapper_prefix(state: StateDict) -> dict[str, torch.Tensor]:
    """Drop the prefixes (:data:`WRAPPER_PREFIXES`, nested too: ``module._orig_mod.``) that a
    ``DataParallel``/``DistributedDataParallel`` or ``torch.compile`` wrapper adds to every key."""
    state = dict(state)
    while state:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def detect_published_network(state: StateDict) -> str | None:
    """The network (``"U_Net2D5"``, ``"U_Net"`` or ``"AttU_Net"``) whose published layout
    ``state`` has, recognised by its keys; ``None`` if it is not a published state dict."""
    keys = set(strip_wrapper_prefix(state))
    for network, signature in _SIGNATURES.items():  # AttU_Net before U_Net: it has U_Net's keys too
        if all(k in keys for k in signature):
            return network
    return None


def _channels_of_ours(state: StateDict) -> tuple[int, int] | None:
    first, head = state.get("encoders.0.0.weight"), state.get("head.weight")
    if first is None or head is None or first.ndim != 5 or head.ndim != 5:
        return None
    return int(first.shape[1]), int(head.shape[0])


def detect_our_network(state: StateDict) -> str | None:
    """The network whose state dict in our layout ``state`` is (same keys and shapes, for the
    input and output channels it has); ``None`` if it is none of them."""
    state = strip_wrapper_prefix(state)
    channels = _channels_of_ours(state)
    if channels is None:
        return None
    for network in NETWORKS:
        _, shapes = _layout(network, *channels)
        if set(shapes) == set(state) and all(tuple(state[k].shape) == s for k, s in shapes.items()):
            return network
    return None


def _describe(state: StateDict) -> str:
    published = detect_published_network(state)
    if published is not None:
        return f"a published {published} state dict"
    ours = detect_our_network(state)
    if ours is not None:
        return f"{with_article(ours)} state dict in our layout"
    return "not a state dict of any of " + ", ".join(sorted(NETWORKS))


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------
def _published_channels(network: str, state: StateDict) -> tuple[int, int]:
    if network == "U_Net2D5":
        first, head = state["conv_blocks_context.0.first_conv.weight"], state["final_conv.weight"]
    else:
        first, head = state["Conv1.conv.0.weight"], state["Conv_1x1.weight"]
    return int(first.shape[1]), int(head.shape[0])


def published_to_ours(state: StateDict, network: str) -> OrderedDict[str, torch.Tensor]:
    """Rename a published state dict of ``network`` to our keys (same tensors, same devices).

    Args:
        state: ``torch.save(model.state_dict())`` of the published ``network`` class, loaded
            (a wrapper's ``module.`` or ``_orig_mod.`` prefix on every key is accepted).
        network: the network it must be: ``U_Net2D5``, ``U_Net`` or ``AttU_Net``.

    Returns:
        Our state dict (keys in our ``state_dict()`` order), for ``load_state_dict(strict=True)``.

    Raises:
        ValueError: if ``state`` is not the published layout of ``network`` (naming what it is),
            a key is missing or unexpected, a shape differs, or two aliases of one U_Net2D5
            tensor hold different values.
    """
    _check_network(network)
    state = strip_wrapper_prefix(state)
    found = detect_published_network(state)
    if found != network:
        raise ValueError(f"the checkpoint is {_describe(state)}, not a published {network} state dict; "
                         + (f"use --network {found}" if found else "check the file")
                         + ("" if found or detect_our_network(state) is None else " (it needs no conversion)"))
    keys = published_keys(network)
    expected = {k for k, _ in keys}
    missing = [k for k, _ in keys if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(f"published {network} state dict does not have the published keys: "
                         f"{len(missing)} missing {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}")
    order, shapes = _layout(network, *_published_channels(network, state))
    by_index: dict[int, tuple[str, torch.Tensor]] = {}
    for key, index in keys:
        tensor = state[key]
        if index in by_index:
            first_key, first = by_index[index]
            same = first is tensor or (first.shape == tensor.shape and torch.equal(first, tensor.to(first.device)))
            if not same:
                raise ValueError(f"published {network} state dict: {key} and {first_key} must hold the same "
                                 "tensor (they are two names of one parameter) but differ")
            continue
        ours = order[index]
        if tuple(tensor.shape) != shapes[ours]:
            raise ValueError(f"published {network} state dict: {key} has shape {list(tensor.shape)}, "
                             f"expected {list(shapes[ours])} (for our {ours})")
        by_index[index] = (key, tensor)
    converted = {order[index]: tensor for index, (_, tensor) in by_index.items()}
    return OrderedDict((k, converted[k]) for k in shapes)


def ours_to_published(state: StateDict, network: str) -> OrderedDict[str, torch.Tensor]:
    """Rename our state dict of ``network`` to the published keys, in the published order.

    U_Net2D5's alias keys get the very same tensor object, so ``torch.save`` stores it once, as
    the published code does.

    Raises:
        ValueError: if ``state`` is not our ``network`` (naming what it is).
    """
    _check_network(network)
    state = strip_wrapper_prefix(state)
    found = detect_our_network(state)
    if found != network:
        already = detect_published_network(state) == network
        raise ValueError(f"the checkpoint is {_describe(state)}, not {with_article(network)} state dict in our layout"
                         + (f"; use --network {found}" if found else "")
                         + ("; it needs no conversion" if already else ""))
    channels = _channels_of_ours(state)
    assert channels is not None  # detect_our_network found the network, so the state has its channels
    order, _ = _layout(network, *channels)
    return OrderedDict((key, state[order[index]]) for key, index in published_keys(network))


def to_our_state_dict(state: StateDict, network: str) -> StateDict:
    """``state`` in our layout whichever layout it has: a published state dict is converted with
    :func:`published_to_ours` (wrong network: ValueError naming the network it is); anything
    else is returned as it is (``load_state_dict`` then checks it)."""
    if detect_published_network(state) is not None:
        return published_to_ours(state, network)
    return state
