"""3D U-Net and Attention U-Net with InstanceNorm (no affine) and ReLU.

Tensors are (N, C, X, Y, Z), Z the through-plane (slice) axis.
"""
from __future__ import annotations

import torch
from torch import nn

from networks.blocks import DIVISOR, ConvBlock, UpConvBlock, check_channels, check_network_input

__all__ = ["U_Net", "AttU_Net"]

FEATURES = (16, 32, 64, 128, 256)


class U_Net(nn.Module):
    """3D U-Net: features 16/32/64/128/256, 4 max-poolings, PyTorch default initialisation.

    Encoder level: (Conv3d k3 → InstanceNorm3d → ReLU) × 2. Decoder level: nearest ×2
    upsampling → Conv3d k3 → InstanceNorm3d → ReLU, concatenation with the skip (optionally
    attention-gated), the same double block. A final 1×1×1 conv with bias gives the logits.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits).

    Shape: (N, in_channels, X, Y, Z) → (N, num_classes, X, Y, Z); X, Y, Z divisible by 16.
    """

    attention = False
    #: Every spatial size of the input a multiple of this (four poolings by 2).
    input_multiple = DIVISOR

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        self.in_channels = check_channels("in_channels", in_channels)
        self.num_classes = check_channels("num_classes", num_classes)
        self.encoders = nn.ModuleList()
        cin = in_channels
        for features in FEATURES:
            self.encoders.append(ConvBlock(cin, features, 3))
            cin = features
        self.pool = nn.MaxPool3d(2)
        self.decoders = nn.ModuleList()  # deep → shallow
        for features in FEATURES[-2::-1]:
            f_int = features // 2 if self.attention else None
            self.decoders.append(UpConvBlock(cin, features, attention_channels=f_int))
            cin = features
        self.head = nn.Conv3d(cin, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, in_channels, X, Y, Z) → logits (N, num_classes, X, Y, Z)."""
        check_network_input(x, self.in_channels, self.input_multiple)
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level > 0:
                x = self.pool(x)
            x = encoder(x)
            skips.append(x)
        x = skips.pop()
        for decoder, skip in zip(self.decoders, reversed(skips)):
            x = decoder(x, skip)
        return self.head(x)


class AttU_Net(U_Net):
    """:class:`U_Net` with an additive attention gate on every skip (F_int = 64, 32, 16, 8
    from deep to shallow, i.e. half the skip's channels).

    Shape: (N, in_channels, X, Y, Z) → (N, num_classes, X, Y, Z); X, Y, Z divisible by 16.
    """

    attention = True
