"""The random transforms of a training item before its patch is cut (TorchIO): padding to the
patch size, the paper's random flips, and with ``--augmentation nnunet`` nnU-Net v2's default
spatial and intensity augmentation. :class:`utilities.data.loading.PatchDataset` draws them from
the item's seed."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torchio as tio

__all__ = ["FLIP_PROBABILITY", "AUGMENTATIONS", "nnunet_augmentation", "training_transform"]

#: The paper's flips: each axis flipped with this probability.
FLIP_PROBABILITY = 0.2

#: ``--augmentation``: the paper's random flips alone, or before them nnU-Net v2's default
#: augmentation as TorchIO has it (:func:`nnunet_augmentation`).
AUGMENTATIONS = ("flips", "nnunet")


def nnunet_augmentation() -> tio.Transform:
    """nnU-Net v2's default training augmentation, in TorchIO, in nnU-Net's order and with its
    probabilities: rotation in plane (±30° about the trainers' Z axis, S after ``ToCanonical``,
    the slice axis of U_Net2D5 and of the mCRF's views; nnU-Net's choice for anisotropic
    patches) p 0.2; isotropic scaling 0.7–1.4 p 0.2; Gaussian noise (variance up to
    0.1 of the z-normalised image) p 0.1; gamma 0.7–1.5 p 0.3. Labels are resampled nearest and
    padded with 0 (the background outside the points' boxes). Left out: the blur (TorchIO's σ is
    in mm, nnU-Net's in voxels), brightness, contrast and low-resolution simulation (no TorchIO
    transform), and nnU-Net's gamma on the intensities rescaled to [0, 1] (TorchIO's takes
    sign(I)·|I|^γ of the z-scores). The flips follow in :func:`training_transform`."""
    return tio.Compose([
        tio.RandomAffine(scales=0, degrees=(0, 0, 0, 0, -30, 30), p=0.2),
        tio.RandomAffine(scales=(0.7, 1.4), degrees=0, isotropic=True, p=0.2),
        tio.RandomNoise(std=(0.0, 0.1 ** 0.5), p=0.1),
        tio.RandomGamma(log_gamma=(float(np.log(0.7)), float(np.log(1.5))), p=0.3),
    ])


def training_transform(spatial_shape: Sequence[int], augmentation: str = "flips") -> tio.Transform:
    """Random part of training: pad to the patch size (image minimum / label 0), then with
    ``augmentation="nnunet"`` :func:`nnunet_augmentation`, then random flips (the paper)."""
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {augmentation!r}")
    pad = tio.CropOrPad(tuple(spatial_shape), only_pad=True, padding_mode="minimum")
    flips = tio.RandomFlip(axes=(0, 1, 2), flip_probability=FLIP_PROBABILITY)
    return tio.Compose([pad, nnunet_augmentation(), flips] if augmentation == "nnunet" else [pad, flips])
