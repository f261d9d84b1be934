"""Segmentation networks and the name → class registry used by the scripts' ``--net`` choices."""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from networks.blocks import (
    AttentionGate,
    ConvBlock,
    UpBlock,
    UpConv,
    UpConvBlock,
    check_network_input,
    check_spatial_shape,
)
from networks.unet import AttU_Net, U_Net
from networks.unet2d5 import U_Net2D5

__all__ = [
    "NETWORKS",
    "NUM_CLASSES",
    "IN_CHANNELS",
    "get_network",
    "check_network_shape",
    "U_Net2D5",
    "U_Net",
    "AttU_Net",
    "ConvBlock",
    "UpBlock",
    "UpConv",
    "UpConvBlock",
    "AttentionGate",
    "check_network_input",
    "check_spatial_shape",
]

NETWORKS: dict[str, type[U_Net] | type[U_Net2D5]] = {
    "U_Net2D5": U_Net2D5,
    "U_Net": U_Net,
    "AttU_Net": AttU_Net,
}

#: The project's networks segment one image (one input channel) into background and lesion.
NUM_CLASSES = 2
IN_CHANNELS = 1


def _network_class(name: str) -> type[U_Net] | type[U_Net2D5]:
    """The class registered as ``name``; ValueError naming the choices for any other name."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETWORKS)}")
    return NETWORKS[name]


def get_network(name: str, in_channels: int = 1, num_classes: int = 2) -> nn.Module:
    """Build the network registered as ``name`` (one of ``sorted(NETWORKS)``)."""
    return _network_class(name)(in_channels=in_channels, num_classes=num_classes)


def check_network_shape(network: str, shape: Sequence[int], flag: str = "--spatial_shape") -> None:
    """Refuse an input ``shape`` too small for ``network``'s poolings, or not divisible by them,
    with the flag named, before anything is written: the network's own input rule
    (:func:`networks.blocks.check_spatial_shape` with its ``input_multiple``), checked without
    building or running it. ``tests/networks/test_networks.py`` holds the rule against each
    network's forward pass."""
    multiple = _network_class(network).input_multiple
    try:
        check_spatial_shape(shape, multiple)
    except ValueError as e:
        raise ValueError(f"{flag} {list(shape)} does not fit {network}: {e}") from None
