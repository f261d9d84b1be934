"""experiments/crf_strength.py: the mCRF's strength at full resolution against stage 1's grid."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from experiments.crf_strength import crf_strength, lesion_patch, main


def _sphere(shape=(24, 24, 12), centre=(12, 11, 6), radius=5.0) -> np.ndarray:
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    return np.sqrt(sum((g[i] - c) ** 2 for i, c in enumerate(centre))) < radius


def _case(seed: int = 0):
    mask = _sphere()
    image = mask * 1.0 + np.random.default_rng(seed).normal(0, 0.2, mask.shape)
    return torch.from_numpy(image.astype(np.float32)), torch.from_numpy(mask)


def test_same_grid_is_the_same_loss():
    image, mask = _case()
    value, grad = crf_strength(image, mask, (24, 24, 12), kernel_radius=2, sigma_xy=3.0)
    assert value == pytest.approx(1.0, abs=1e-6) and grad == pytest.approx(1.0, abs=1e-6)


def test_in_plane_factor_two_makes_it_stronger():
    # the kernel sum per voxel grows with the kernel's area (up to 4x for a factor 2 in both axes
    # of a view); the full-resolution mCRF is several times stage 1's, not the same
    image, mask = _case()
    value, grad = crf_strength(image, mask, (12, 12, 12), kernel_radius=2, sigma_xy=3.0)
    assert 2.0 < value < 4.5
    assert 1.5 < grad < 4.5


def test_lesion_patch_centres_and_clamps():
    label = np.zeros((40, 40, 20), np.uint8)
    label[2:6, 30:34, 8:12] = 1                      # near the edges: the crop moves inside
    image = np.random.default_rng(1).normal(5, 2, label.shape)
    crop, mask = lesion_patch(image, label, (16, 16, 8))
    assert crop.shape == mask.shape == (16, 16, 8)
    assert mask.sum() == label.sum()                  # the whole lesion is inside
    assert abs(crop.mean()) < 1e-5 and crop.std() == pytest.approx(1.0, rel=1e-4)
    assert lesion_patch(image, np.zeros_like(label), (16, 16, 8)) is None
    assert lesion_patch(image, label, (48, 16, 8)) is None


def test_main_on_files(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for k in range(3):
        image, mask = _case(k)
        nib.save(nib.Nifti1Image(image.numpy(), np.eye(4)), tmp_path / "img" / f"c{k}_img.nii.gz")
        nib.save(nib.Nifti1Image(mask.numpy().astype(np.uint8), np.eye(4)), tmp_path / "lab" / f"c{k}_seg.nii.gz")
    rows = main(["--images", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"), "--patch", "24", "24", "12",
                 "--down_size", "12", "12", "12", "--kernel_radius", "2", "--crf_sigma_xy", "3", "--cases", "2",
                 "--erode", "0", "1"])
    assert [(r[0], r[1]) for r in rows] == [("c0_img.nii.gz", 0), ("c0_img.nii.gz", 1),
                                            ("c1_img.nii.gz", 0), ("c1_img.nii.gz", 1)]
    assert all(2.0 < r[2] < 4.5 for r in rows)
    assert "median over 4" in capsys.readouterr().out
    (tmp_path / "lab" / "c2_seg.nii.gz").unlink()
    with pytest.raises(ValueError, match="same number"):
        main(["--images", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"), "--patch", "24", "24", "12",
              "--down_size", "12", "12", "12"])
