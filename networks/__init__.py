"""Segmentation networks and the name → class registry used by the scripts' ``--net`` choices."""
from __future__ import annotations

from torch import nn

from networks.blocks import AttentionGate, ConvBlock, UpBlock, UpConv, UpConvBlock, check_network_input
from networks.unet import AttU_Net, U_Net
from networks.unet2d5 import U_Net2D5

__all__ = [
    "NETWORKS",
    "get_network",
    "U_Net2D5",
    "U_Net",
    "AttU_Net",
    "ConvBlock",
    "UpBlock",
    "UpConv",
    "UpConvBlock",
    "AttentionGate",
    "check_network_input",
]

NETWORKS: dict[str, type[nn.Module]] = {
    "U_Net2D5": U_Net2D5,
    "U_Net": U_Net,
    "AttU_Net": AttU_Net,
}


def get_network(name: str, in_channels: int = 1, num_classes: int = 2) -> nn.Module:
    """Build the network registered as ``name`` (one of ``sorted(NETWORKS)``)."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETWORKS)}")
    return NETWORKS[name](in_channels=in_channels, num_classes=num_classes)
