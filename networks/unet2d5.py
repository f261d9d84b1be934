"""U_Net2D5: a 2.5D U-Net for anisotropic volumes (in-plane 2D convolutions at the finest levels).

Tensors are (N, C, X, Y, Z), Z the through-plane (slice) axis. The two finest levels, where the
slice spacing is much coarser than the in-plane spacing, use (3, 3, 1) kernels; the deeper levels
(after pooling has made the voxels closer to isotropic) use (3, 3, 3).
"""
from __future__ import annotations

import torch
from torch import nn

from networks.blocks import DIVISOR, ConvBlock, UpBlock, check_channels, check_network_input

__all__ = ["U_Net2D5"]

NEGATIVE_SLOPE = 0.01
KERNEL_2D = (3, 3, 1)
KERNEL_3D = (3, 3, 3)
FEATURES = (16, 32, 64, 128)
BOTTLENECK = 128
DECODER = (64, 32, 16, 16)  # deep → shallow
ENCODER_KERNELS = (KERNEL_2D, KERNEL_2D, KERNEL_3D, KERNEL_3D)  # shallow → deep
DECODER_KERNELS = (KERNEL_3D, KERNEL_3D, KERNEL_3D, KERNEL_2D)  # deep → shallow, as published


class U_Net2D5(nn.Module):
    """2.5D U-Net: 4 max-poolings, features 16/32/64/128, 128-feature bottleneck.

    Blocks are (conv → InstanceNorm3d(affine) → LeakyReLU(0.01)) × 2; kernels (3, 3, 1) at the
    two finest encoder levels and the finest decoder level, (3, 3, 3) elsewhere. The decoder
    upsamples trilinearly (align_corners=False), concatenates [upsampled, skip] and applies a
    block with 64, 32, 16, 16 features (deep → shallow); a final 1×1×1 conv without bias gives
    the logits. Convolutions get He initialisation (a = 0.01), biases 0.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits).

    Shape: (N, in_channels, X, Y, Z) → (N, num_classes, X, Y, Z); X, Y, Z divisible by 16.
    """

    #: Every spatial size of the input a multiple of this (four poolings by 2).
    input_multiple = DIVISOR

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        self.in_channels = check_channels("in_channels", in_channels)
        self.num_classes = check_channels("num_classes", num_classes)
        self.encoders = nn.ModuleList()
        cin = in_channels
        for features, kernel in zip(FEATURES, ENCODER_KERNELS):
            self.encoders.append(ConvBlock(cin, features, kernel, affine=True, negative_slope=NEGATIVE_SLOPE))
            cin = features
        self.pool = nn.MaxPool3d(2)
        self.bottleneck = ConvBlock(cin, BOTTLENECK, KERNEL_3D, affine=True, negative_slope=NEGATIVE_SLOPE)
        self.decoders = nn.ModuleList()  # deep → shallow
        cin = BOTTLENECK
        for skip, features, kernel in zip(FEATURES[::-1], DECODER, DECODER_KERNELS):
            self.decoders.append(UpBlock(cin, skip, features, kernel, mode="trilinear", align_corners=False,
                                         affine=True, negative_slope=NEGATIVE_SLOPE))
            cin = features
        self.head = nn.Conv3d(cin, num_classes, 1, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (Kaiming normal, a = 0.01) for conv weights, 0 for conv biases, (1, 0) for norms.
        Nothing on the meta device (a shape check: no values, and the normal draw there costs 0.3 s)."""
        for module in self.modules():
            if any(p.is_meta for p in module.parameters(recurse=False)):
                continue
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, a=NEGATIVE_SLOPE)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.InstanceNorm3d) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, in_channels, X, Y, Z) → logits (N, num_classes, X, Y, Z)."""
        check_network_input(x, self.in_channels, self.input_multiple)
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for decoder, skip in zip(self.decoders, reversed(skips)):
            x = decoder(x, skip)
        return self.head(x)
