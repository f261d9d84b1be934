"""The training transforms (utilities/data/augmentation.py) on a tiny VS case."""
from __future__ import annotations

import pytest
import torch
import torchio as tio
from synth import make_vs_dataset

from utilities.data.augmentation import AUGMENTATIONS, training_transform
from utilities.data.loading import ImageSource, PatchDataset, load_phase


def _sources(p):
    return [ImageSource("image", p["image_crop"], "T2", False, "image"),
            ImageSource("seeds", p["geodesic_label"], "GeodesicLabel", True, "expanded-seed label")]


def test_nnunet_augmentation_moves_image_and_seeds_together(tmp_path):
    """``--augmentation nnunet``: the same draw for the same item seed; every transform it adds is
    drawn over the items; labels stay {0, 1, 2} (resampled nearest, padded with background); a
    rotation or scaling moves the seeds with the image (the foreground seed's intensities go
    with it); ``flips`` (the default) adds nothing but the flips."""
    p = make_vs_dataset(tmp_path, 2, 1, 1)
    cache = load_phase(p["split"], "training", _sources(p))
    assert AUGMENTATIONS == ("flips", "nnunet")
    plain = [type(t).__name__ for t in training_transform((32, 32, 16))]
    assert plain == ["CropOrPad", "RandomFlip"]
    ds = PatchDataset(cache, (32, 32, 16), seed=5, augmentation="nnunet")
    first = ds[0]
    assert torch.equal(first["image"], ds[0]["image"]) and torch.equal(first["seeds"], ds[0]["seeds"])
    subject = cache.get(0)
    image, seeds = subject["image"].data, subject["seeds"].data
    fg_mean = float(image[seeds == 1].mean())
    names: set[str] = set()
    moved = 0
    for i in range(40):
        torch.manual_seed(i)
        out = training_transform((32, 32, 16), "nnunet")(subject)
        applied = {type(t).__name__ for t in out.get_applied_transforms()}
        names |= applied
        assert out["image"].data.shape == image.shape
        assert set(out["seeds"].data.unique().tolist()) <= {0, 1, 2}
        if "Affine" in applied and not {"Noise", "Gamma"} & applied and (out["seeds"].data == 1).any():
            moved += not torch.equal(out["seeds"].data, seeds)
            # the foreground seed still lies on the lesion's intensities (flips move both alike)
            assert float(out["image"].data[out["seeds"].data == 1].mean()) == pytest.approx(fg_mean, abs=0.5)
    assert {"Affine", "Noise", "Gamma", "Flip"} <= names
    assert moved >= 1
    with pytest.raises(ValueError, match="augmentation must be one of"):
        training_transform((32, 32, 16), "elastic")
    assert isinstance(training_transform((32, 32, 16), "nnunet"), tio.Compose)
