"""The BraTS-like ``--preset brats_small`` dataset of make_demo_data.py: layout, naming, lesions, points."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import load_script
from scipy import ndimage

from utilities.data.splits import read_split
from utilities.method.geodesic import expand_seeds

demo = load_script("data/demo/make_demo_data.py")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("brats_small")
    split_file = root / "split.csv"
    demo.main(["--preset", "brats_small", "--quick", "--output_dir", str(root / "data"), "--split_file",
               str(split_file), "--preview", str(root / "preview.png"), "--no_report"])
    return root / "data", split_file


def test_layout_and_split(quick):
    data, split_file = quick
    split = read_split(split_file)
    assert split["subject"].tolist() == [f"bsmall_{i:03d}" for i in range(8)]
    assert split["phase"].tolist() == ["training"] * 4 + ["validation"] * 2 + ["inference"] * 2
    for folder, postfix in (("image", "flair"), ("label", "seg"), ("annotation_7points", "7points")):
        assert sorted(p.name for p in (data / folder).iterdir()) == [f"bsmall_{i:03d}_{postfix}.nii.gz"
                                                                     for i in range(8)]


def test_cases_brain_lesions_points(quick):
    data, split_file = quick
    n_lesions = []
    for subject in read_split(split_file)["subject"]:
        image = sitk.ReadImage(str(data / "image" / f"{subject}_flair.nii.gz"))
        assert image.GetSize() == (32, 32, 32) and image.GetSpacing() == pytest.approx((2.5, 2.5, 3.0))
        img = sitk.GetArrayFromImage(image)
        lab = sitk.GetArrayFromImage(sitk.ReadImage(str(data / "label" / f"{subject}_seg.nii.gz")))
        pts = sitk.GetArrayFromImage(sitk.ReadImage(str(data / "annotation_7points" / f"{subject}_7points.nii.gz")))
        assert img.dtype == np.float32 and lab.dtype == np.uint8 and pts.dtype == np.uint8
        # skull-stripped: background exactly 0 at the corners, brain > 0, lesions inside the brain
        assert img.min() == 0.0 and img[0, 0, 0] == 0.0 and img.max() <= 1.0
        assert (img[lab == 1] > 0).all()
        components, count = ndimage.label(lab, structure=np.ones((3, 3, 3)))
        assert count in (1, 2)
        n_lesions.append(count)
        # lesions are brighter (FLAIR hyperintense) than the brain around them
        assert img[lab == 1].mean() > 1.1 * np.median(img[(lab == 0) & (img > 0)])
        # 7 points per lesion: values 1/2 for the largest, 3/4 for the second
        values = sorted(int(v) for v in np.unique(pts) if v)
        assert values == list(range(1, 2 * count + 1))
        for k in range(1, count + 1):
            assert np.count_nonzero(pts == 2 * k - 1) == 6 and np.count_nonzero(pts == 2 * k) == 1
            assert lab[pts == 2 * k].tolist() == [1] and lab[pts == 2 * k - 1].tolist() == [0] * 6
        # stage 0 in the BraTS way: voxels at the image minimum are background
        seeds, _ = expand_seeds(img, pts, image.GetSpacing()[::-1], 0.5, 0.2, zero_at_min=True)
        assert (seeds[img == 0] == 0).all() and (seeds == 1).any()
    assert len(n_lesions) == 8


def test_default_size_lesions_are_small():
    kind = demo.PRESETS["brats_small"]
    assert kind.size == (64, 64, 48) and kind.counts == (16, 4, 8)
    sizes = []
    for seed in range(3):
        _, lab = demo.make_brats_case(np.random.default_rng(seed), kind.size, kind.spacing)
        components, count = ndimage.label(lab, structure=np.ones((3, 3, 3)))
        sizes += np.bincount(components.ravel())[1:].tolist()
    # a few dozen voxels at 2.5 x 2.5 x 3 mm: a few voxels per axis after 2x in-plane down-sampling
    assert 5 <= min(sizes) and max(sizes) <= 400


def test_bad_preset(tmp_path, capsys):
    with pytest.raises(SystemExit):
        demo.main(["--preset", "nope", "--output_dir", str(tmp_path), "--split_file", str(tmp_path / "s.csv")])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"--preset must be one of \['brats_small', 'vs'\], got 'x'"):
        demo.generate(tmp_path, tmp_path / "s.csv", preset="x")
