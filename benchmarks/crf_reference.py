"""Plain unfold-based multi-view 2D gated CRF: the test oracle (``tests/utilities/method/test_losses_mcrf.py``) and the
baseline of the benchmarks (``benchmarks/``); not used in training.

Written the way the published code does it (and deliberately without any of the fast version's
tricks): the volume is cut into 2D slices per view, each slice's features (x/σ_xy, y/σ_xy,
I/σ_rgb) and probabilities are ``F.unfold``-ed with zero padding into every voxel's (2r+1)²
window, the kernel is evaluated explicitly per window position, the centre is dropped, and the
loss is ``Σ K (1 − Σ_c p_i p_j)`` divided by the number of voxels of the (resized) batch.

``padded=True`` keeps the zero-padded out-of-slice neighbours like the published code (they get
the kernel of zero features and multiply zero probabilities: a constant, no gradient);
``padded=False`` drops them, which is our definition.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["unfold_gated_crf_2d", "unfold_multiview_crf"]

# permutations (N, C, X, Y, Z) -> (N, slice axis, C, H, W) for slices along Z, along Y, along X
_VIEW_PERMS = ((0, 4, 1, 2, 3), (0, 3, 1, 2, 4), (0, 2, 1, 3, 4))


def unfold_gated_crf_2d(probs: Tensor, image: Tensor, kernel_radius: int, sigma_xy: float,
                        sigma_rgb: float, weight: float = 1.0, padded: bool = False) -> Tensor:
    """Sum over the batch of 2D slices of ``Σ_i Σ_{j≠i in window} K_ij (1 − Σ_c p_i^c p_j^c)``.

    Args:
        probs: (B, C, H, W) probabilities.
        image: (B, 1, H, W) intensities.

    Returns:
        scalar (not normalised).
    """
    b, c, h, w = probs.shape
    k = 2 * kernel_radius + 1
    ys, xs = torch.meshgrid(torch.arange(h, dtype=probs.dtype, device=probs.device),
                            torch.arange(w, dtype=probs.dtype, device=probs.device), indexing="ij")
    features = torch.cat([(xs / sigma_xy).expand(b, 1, h, w), (ys / sigma_xy).expand(b, 1, h, w),
                          image / sigma_rgb], 1)                                # (B, 3, H, W)
    neighbours = F.unfold(features, k, padding=kernel_radius).view(b, 3, k * k, h, w)
    kernel = weight * torch.exp(-0.5 * ((neighbours - features[:, :, None]) ** 2).sum(1))  # (B, k², H, W)
    kernel[:, k * k // 2] = 0.0                                                # j ≠ i
    if not padded:
        inside = F.unfold(torch.ones_like(image), k, padding=kernel_radius).view(b, k * k, h, w)
        kernel.mul_(inside)                                                     # j in the slice
    probs_neighbours = F.unfold(probs, k, padding=kernel_radius).view(b, c, k * k, h, w)
    agreement = (probs_neighbours * probs[:, :, None]).sum(1)                 # (B, k², H, W)
    return (kernel * (1.0 - agreement)).sum()


def unfold_multiview_crf(logits: Tensor, image: Tensor, down_size: Sequence[int] | None = (64, 64, 48),
                         kernel_radius: int = 5, sigma_xy: float = 6.0, sigma_rgb: float = 0.1,
                         weight: float = 1.0, padded: bool = False) -> Tensor:
    """Per-view values (slices along Z, along Y, along X), (3,).

    Args:
        logits: (N, C, X, Y, Z); image: (N, 1, X, Y, Z).
    """
    if down_size is not None and tuple(logits.shape[2:]) != tuple(down_size):
        logits = F.interpolate(logits, size=tuple(down_size), mode="trilinear", align_corners=True)
        image = F.interpolate(image, size=tuple(down_size), mode="trilinear", align_corners=True)
    probs = logits.softmax(1)
    n, c = probs.shape[:2]
    voxels = probs[:, 0].numel()
    views = []
    for perm in _VIEW_PERMS:
        p = probs.permute(*perm)
        i = image.permute(*perm)
        p2 = p.reshape(-1, c, p.shape[-2], p.shape[-1])
        i2 = i.reshape(-1, 1, i.shape[-2], i.shape[-1])
        views.append(unfold_gated_crf_2d(p2, i2, kernel_radius, sigma_xy, sigma_rgb, weight, padded) / voxels)
    return torch.stack(views)
