"""Segmentation networks and the name → class registry used by the scripts' ``--net`` choices."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from networks.blocks import AttentionGate, ConvBlock, UpBlock, UpConv, UpConvBlock, check_network_input
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
]

NETWORKS: dict[str, type[nn.Module]] = {
    "U_Net2D5": U_Net2D5,
    "U_Net": U_Net,
    "AttU_Net": AttU_Net,
}

#: The project's networks segment one image (one input channel) into background and lesion.
NUM_CLASSES = 2
IN_CHANNELS = 1


def get_network(name: str, in_channels: int = 1, num_classes: int = 2) -> nn.Module:
    """Build the network registered as ``name`` (one of ``sorted(NETWORKS)``)."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETWORKS)}")
    return NETWORKS[name](in_channels=in_channels, num_classes=num_classes)


def check_network_shape(network: str, shape: Sequence[int], flag: str = "--spatial_shape") -> None:
    """Run ``network`` on an input of ``shape`` on the meta device (no memory, no compute) so an
    input too small for its poolings is refused with the flag named, before anything is written."""
    with torch.device("meta"):
        model = get_network(network, 1, 2)
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, *shape, device="meta"))
    except (ValueError, RuntimeError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{flag} {list(shape)} does not fit {network}: {reason}; use larger sizes "
                         "(e.g. at least 32 in two axes)") from None
