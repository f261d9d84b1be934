"""Small named building blocks shared by the segmentation networks.

Tensors are (N, C, X, Y, Z), Z the through-plane (slice) axis. Every block keeps the spatial size
except the upsampling blocks, which double it. Nothing here fixes a dtype or a device, so the
blocks run under ``torch.autocast``, with ``torch.channels_last_3d`` inputs and on any device.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DIVISOR",
    "check_spatial_shape",
    "check_network_input",
    "check_channels",
    "ConvBlock",
    "UpBlock",
    "UpConv",
    "AttentionGate",
    "UpConvBlock",
]

DIVISOR = 16
"""Spatial sizes must be multiples of this: every network pools four times by 2."""

KernelSize = int | Sequence[int]


def _triple(kernel_size: KernelSize) -> tuple[int, int, int]:
    kernel: tuple[int, ...]
    if isinstance(kernel_size, int):
        kernel = (kernel_size,) * 3
    else:
        kernel = tuple(int(k) for k in kernel_size)
    if len(kernel) != 3 or any(k <= 0 or k % 2 == 0 for k in kernel):
        raise ValueError(f"kernel_size must be one odd positive size or three of them, got {kernel_size}")
    return kernel[0], kernel[1], kernel[2]


def check_channels(name: str, value: int) -> int:
    """Return ``value`` if it is a positive int, else raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_spatial_shape(spatial: Sequence[int], multiple: int = DIVISOR) -> None:
    """Raise ValueError unless every size of ``spatial`` (X, Y, Z) is a positive multiple of
    ``multiple`` and the bottleneck (X, Y, Z) / ``multiple`` holds more than one voxel:
    InstanceNorm cannot normalise a single value (PyTorch raises, and the output would carry no
    information). What every network of this package needs of its input's spatial shape."""
    spatial = tuple(int(s) for s in spatial)
    if any(s <= 0 or s % multiple for s in spatial):
        raise ValueError(f"input spatial shape {spatial} must be divisible by {multiple} in every axis; "
                         "pad or choose --spatial_shape accordingly")
    if math.prod(s // multiple for s in spatial) < 2:
        raise ValueError(f"input spatial shape {spatial} leaves a single bottleneck voxel, which instance "
                         f"normalisation cannot normalise; use at least {2 * multiple} voxels in one axis")


def check_network_input(x: torch.Tensor, in_channels: int, multiple: int = DIVISOR) -> None:
    """Raise ValueError unless ``x`` is (N, in_channels, X, Y, Z) with a spatial shape
    :func:`check_spatial_shape` accepts."""
    if x.ndim != 5:
        raise ValueError(f"expected a 5D input (N, C, X, Y, Z), got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(f"expected {in_channels} input channel(s), got shape {tuple(x.shape)}")
    check_spatial_shape(x.shape[2:], multiple)


class ConvBlock(nn.Sequential):
    """(Conv3d → InstanceNorm3d → ReLU or LeakyReLU) × 2, padded to keep the spatial size.

    Args:
        in_channels: input feature channels.
        out_channels: output feature channels (of both convolutions).
        kernel_size: one size or (kx, ky, kz); (3, 3, 1) gives in-plane 2D convolutions.
        affine: learnable InstanceNorm scale and shift.
        negative_slope: 0 for ReLU, otherwise the LeakyReLU slope.

    Shape: (N, in_channels, X, Y, Z) → (N, out_channels, X, Y, Z).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: KernelSize = 3,
                 affine: bool = False, negative_slope: float = 0.0) -> None:
        check_channels("in_channels", in_channels)
        check_channels("out_channels", out_channels)
        if negative_slope < 0:
            raise ValueError(f"negative_slope must be >= 0, got {negative_slope}")
        kernel = _triple(kernel_size)
        padding = (kernel[0] // 2, kernel[1] // 2, kernel[2] // 2)
        layers: list[nn.Module] = []
        for cin in (in_channels, out_channels):
            layers.append(nn.Conv3d(cin, out_channels, kernel, padding=padding, bias=True))
            layers.append(nn.InstanceNorm3d(out_channels, eps=1e-5, affine=affine))
            layers.append(nn.LeakyReLU(negative_slope) if negative_slope > 0 else nn.ReLU())
        super().__init__(*layers)


def _upsample2(x: torch.Tensor, mode: str, align_corners: bool | None) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode=mode, align_corners=align_corners)


class UpBlock(nn.Module):
    """Parameter-free ×2 upsampling of the deeper features, concatenation [up, skip], ConvBlock.

    Args:
        in_channels: channels of the deeper features.
        skip_channels: channels of the skip connection.
        out_channels: output channels.
        kernel_size: ConvBlock kernel.
        mode: ``"trilinear"`` or ``"nearest"``.
        align_corners: passed to the interpolation (trilinear only).
        affine, negative_slope: as in :class:`ConvBlock`.

    Shape: deep (N, in_channels, X/2, Y/2, Z/2), skip (N, skip_channels, X, Y, Z)
    → (N, out_channels, X, Y, Z).
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int,
                 kernel_size: KernelSize = 3, mode: str = "trilinear", align_corners: bool = False,
                 affine: bool = False, negative_slope: float = 0.0) -> None:
        super().__init__()
        if mode not in ("trilinear", "nearest"):
            raise ValueError(f"mode must be 'trilinear' or 'nearest', got {mode!r}")
        check_channels("skip_channels", skip_channels)
        self.mode = mode
        self.align_corners = align_corners if mode == "trilinear" else None
        self.conv = ConvBlock(in_channels + skip_channels, out_channels, kernel_size, affine, negative_slope)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """deep (N, in_channels, X/2, Y/2, Z/2), skip (N, skip_channels, X, Y, Z) → (N, out, X, Y, Z)."""
        up = _upsample2(deep, self.mode, self.align_corners)
        return self.conv(torch.cat([up, skip], dim=1))


class UpConv(nn.Sequential):
    """Nearest ×2 upsampling → Conv3d k3 → InstanceNorm3d → ReLU.

    Shape: (N, in_channels, X, Y, Z) → (N, out_channels, 2X, 2Y, 2Z).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        check_channels("in_channels", in_channels)
        check_channels("out_channels", out_channels)
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=True),
            nn.InstanceNorm3d(out_channels),
            nn.ReLU(),
        )


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018) with InstanceNorm in place of BatchNorm.

    ``alpha = sigmoid(IN(psi(relu(IN(W_g g) + IN(W_x x)))))``, all 1×1×1 convs with bias;
    returns ``x * alpha``.

    Args:
        gate_channels: channels of the gating signal ``g`` (the upsampled deeper features).
        skip_channels: channels of the skip features ``x``.
        inter_channels: F_int, channels of the intermediate map.

    Shape: g (N, gate_channels, X, Y, Z), x (N, skip_channels, X, Y, Z) → like x.
    """

    def __init__(self, gate_channels: int, skip_channels: int, inter_channels: int) -> None:
        super().__init__()
        check_channels("gate_channels", gate_channels)
        check_channels("skip_channels", skip_channels)
        check_channels("inter_channels", inter_channels)
        self.gate = nn.Sequential(nn.Conv3d(gate_channels, inter_channels, 1, bias=True),
                                  nn.InstanceNorm3d(inter_channels))
        self.skip = nn.Sequential(nn.Conv3d(skip_channels, inter_channels, 1, bias=True),
                                  nn.InstanceNorm3d(inter_channels))
        self.psi = nn.Sequential(nn.Conv3d(inter_channels, 1, 1, bias=True), nn.InstanceNorm3d(1),
                                 nn.Sigmoid())
        self.relu = nn.ReLU()

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """g: (N, gate_channels, X, Y, Z), x: (N, skip_channels, X, Y, Z) → gated x."""
        alpha = self.psi(self.relu(self.gate(g) + self.skip(x)))
        return x * alpha


class UpConvBlock(nn.Module):
    """One decoder level of U_Net / AttU_Net: UpConv, optional AttentionGate on the skip,
    concatenation [skip, up], ConvBlock (k3, InstanceNorm without affine, ReLU).

    Args:
        in_channels: channels of the deeper features.
        out_channels: channels of the skip and of the output (the up-conv maps to this too).
        attention_channels: F_int of the attention gate; None for no gate.

    Shape: deep (N, in_channels, X/2, Y/2, Z/2), skip (N, out_channels, X, Y, Z)
    → (N, out_channels, X, Y, Z).
    """

    def __init__(self, in_channels: int, out_channels: int, attention_channels: int | None = None) -> None:
        super().__init__()
        self.up = UpConv(in_channels, out_channels)
        self.gate = (AttentionGate(out_channels, out_channels, attention_channels)
                     if attention_channels is not None else None)
        self.conv = ConvBlock(2 * out_channels, out_channels, 3)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """deep: (N, in_channels, X/2, Y/2, Z/2), skip: (N, out_channels, X, Y, Z) → like skip."""
        up = self.up(deep)
        if self.gate is not None:
            skip = self.gate(up, skip)
        return self.conv(torch.cat([skip, up], dim=1))
