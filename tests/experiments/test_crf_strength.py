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
    np.testing.assert_allclose(crop, image[0:16, 23:39, 5:13])   # centred on (3, 31, 9), moved inside
    assert lesion_patch(image, np.zeros_like(label), (16, 16, 8)) is None
    assert lesion_patch(image, label, (48, 16, 8)) is None


def _write_cases(root, n=3):
    for k in range(n):
        image, mask = _case(k)
        for folder, array, postfix in (("img", image.numpy(), "T2"), ("lab", mask.numpy().astype(np.uint8), "Label")):
            (root / folder).mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(array, np.eye(4)), root / folder / f"c{k}_{postfix}.nii.gz")
    (root / "split.csv").write_text("".join(f"c{k},training\n" for k in range(n)) + "c9,inference\n")


def _argv(root, *more, patch=("24", "24", "12"), down_size=("12", "12", "12")):
    return ["--dataset_split", str(root / "split.csv"), "--path_images", str(root / "img"), "--path_labels",
            str(root / "lab"), "--patch", *patch, "--down_size", *down_size, "--kernel_radius", "2",
            "--crf_sigma_xy", "3", *more]


def test_main_on_files(tmp_path, capsys):
    _write_cases(tmp_path)
    rows = main(_argv(tmp_path, "--cases", "2", "--erode", "0", "1"))
    assert [(r[0], r[1]) for r in rows] == [("c0", 0), ("c0", 1), ("c1", 0), ("c1", 1)]
    assert all(2.0 < r[2] < 4.5 for r in rows)
    assert "median over 4" in capsys.readouterr().out
    rows = main(_argv(tmp_path, "--cases", "1", "--erode", "0", "9"))     # a radius-5 lesion: gone at 9
    assert [r[1] for r in rows] == [0]
    assert "c0 erode 9: nothing of the lesion is left; not measured" in capsys.readouterr().out


def test_main_user_errors(tmp_path, capsys):
    _write_cases(tmp_path)
    with pytest.raises(ValueError, match="--erode"):
        main(_argv(tmp_path, "--erode", "-1"))
    with pytest.raises(ValueError, match="--down_size 48 12 12: each axis"):
        main(_argv(tmp_path, down_size=("48", "12", "12")))
    with pytest.raises(ValueError, match="at least --patch 48 24 12 and a lesion left"):
        main(_argv(tmp_path, patch=("48", "24", "12"), down_size=("24", "12", "12")))
    assert "c0: no lesion, or the volume is smaller than --patch; not measured" in capsys.readouterr().out
    (tmp_path / "lab" / "c2_Label.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="c2_Label"):
        main(_argv(tmp_path))
