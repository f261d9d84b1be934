"""The synthetic VS-like demo dataset: files, split, determinism, lesion and annotation validity."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import load_script
from scipy import ndimage

from utilities.data.splits import read_split
from utilities.method.metrics import overlap_metrics

demo = load_script("data/demo/make_demo_data.py")

QUICK_SIZE = (32, 32, 16)          # X, Y, Z
QUICK_SPACING = (0.5, 0.5, 1.5)    # X, Y, Z mm


def read_case(root, subject):
    image = sitk.ReadImage(str(root / "image_crop" / f"{subject}_T2.nii.gz"))
    label = sitk.ReadImage(str(root / "label_crop" / f"{subject}_Label.nii.gz"))
    anno = sitk.ReadImage(str(root / "annotation_7points" / f"{subject}_7points.nii.gz"))
    return image, label, anno


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The --quick dataset (4/2/2 cases of 32 x 32 x 16), seed 0, with a preview."""
    root = tmp_path_factory.mktemp("demo")
    split_file = root / "split_demo.csv"
    demo.main(["--quick", "--output_dir", str(root / "data"), "--split_file", str(split_file),
               "--preview", str(root / "preview.png"), "--no_report"])
    return root / "data", split_file, root / "preview.png"


def test_quick_files_and_split(quick):
    data, split_file, preview = quick
    lines = split_file.read_text().splitlines()
    assert lines[0] == "demo_000,training"  # headerless subject,phase rows
    split = read_split(split_file)
    assert split["subject"].tolist() == [f"demo_{i:03d}" for i in range(8)]
    assert split["phase"].tolist() == ["training"] * 4 + ["validation"] * 2 + ["inference"] * 2
    for folder, postfix in (("image_crop", "T2"), ("label_crop", "Label"), ("annotation_7points", "7points")):
        assert sorted(p.name for p in (data / folder).iterdir()) == [f"demo_{i:03d}_{postfix}.nii.gz" for i in range(8)]
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_cases_geometry_lesion_and_points(quick):
    data, split_file, _ = quick
    for subject in read_split(split_file)["subject"]:
        image, label, anno = read_case(data, subject)
        for img in (image, label, anno):
            assert img.GetSize() == QUICK_SIZE
            assert img.GetSpacing() == pytest.approx(QUICK_SPACING)
        img, lab, pts = (sitk.GetArrayFromImage(x) for x in (image, label, anno))
        assert img.dtype == np.float32 and lab.dtype == np.uint8 and pts.dtype == np.uint8
        assert img.shape == (16, 32, 32)
        assert np.isfinite(img).all() and img.min() >= 0 and img.max() <= demo.DEFAULT_INTENSITY_MAX
        assert set(np.unique(lab)) == {0, 1}
        # exactly one lesion, whatever the connectivity
        assert ndimage.label(lab)[1] == 1
        assert ndimage.label(lab, structure=np.ones((3, 3, 3)))[1] == 1
        # the lesion keeps off the border (2 slices in z, 3 voxels = 1.5 mm in-plane)
        z, y, x = np.nonzero(lab)
        assert z.min() >= 2 and z.max() <= 13 and y.min() >= 3 and y.max() <= 28 and x.min() >= 3 and x.max() <= 28
        # 7 points: six background points (1) outside the label, one foreground point (2) inside
        assert set(np.unique(pts)) == {0, 1, 2}
        assert np.count_nonzero(pts == 1) == 6 and np.count_nonzero(pts == 2) == 1
        assert lab[pts == 2].tolist() == [1]
        assert lab[pts == 1].tolist() == [0] * 6
        # the six background points are the lesion's extremes along each axis, one voxel beyond
        ones = np.argwhere(pts == 1)
        for axis, coords in enumerate((z, y, x)):
            assert sorted(ones[:, axis].tolist())[0] == coords.min() - 1
            assert sorted(ones[:, axis].tolist())[-1] == coords.max() + 1
        # the lesion is brighter than the tissue around it
        away = ndimage.distance_transform_edt(lab == 0, sampling=QUICK_SPACING[::-1])
        assert img[lab == 1].mean() > 1.3 * np.median(img[(away > 2) & (away <= 4)])


def test_same_seed_identical_other_seed_differs(quick, tmp_path):
    data, _, _ = quick
    again, other = tmp_path / "again", tmp_path / "other"
    demo.main(["--quick", "--num_training", "2", "--num_validation", "1", "--num_inference", "0",
               "--output_dir", str(again), "--split_file", str(tmp_path / "a.csv"), "--no_report"])
    demo.main(["--quick", "--num_training", "2", "--num_validation", "1", "--num_inference", "0", "--seed", "1",
               "--output_dir", str(other), "--split_file", str(tmp_path / "b.csv"), "--no_report"])
    assert read_split(tmp_path / "a.csv")["phase"].tolist() == ["training", "training", "validation"]
    for subject in ("demo_000", "demo_001", "demo_002"):
        first = [sitk.GetArrayFromImage(x) for x in read_case(data, subject)]
        second = [sitk.GetArrayFromImage(x) for x in read_case(again, subject)]
        third = [sitk.GetArrayFromImage(x) for x in read_case(other, subject)]
        for a, b in zip(first, second):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
        assert not np.array_equal(first[0], third[0])
        assert not np.array_equal(first[1], third[1])


def test_make_case_is_pure_and_honours_size_and_spacing():
    size, spacing = (48, 32, 16), (0.6, 0.5, 2.0)
    a_img, a_lab = demo.make_case(np.random.default_rng(5), size, spacing)
    b_img, b_lab = demo.make_case(np.random.default_rng(5), size, spacing)
    assert a_img.shape == a_lab.shape == (16, 32, 48)
    assert a_img.tobytes() == b_img.tobytes() and a_lab.tobytes() == b_lab.tobytes()
    # raw T2-like levels: integers in 0..1000, the default scale divides them by 1000
    raw, raw_lab = demo.make_case(np.random.default_rng(5), size, spacing, intensity_max=1000.0)
    np.testing.assert_array_equal(raw_lab, a_lab)
    assert np.array_equal(raw, np.round(raw)) and raw.max() <= 1000
    np.testing.assert_allclose(a_img, raw / 1000.0, rtol=0, atol=1e-7)


def test_default_size_lesions_vary_in_size_and_stay_inside():
    extents = []
    for seed in range(4):
        _, lab = demo.make_case(np.random.default_rng(seed), (64, 64, 32), (0.5, 0.5, 1.5))
        z, y, x = np.nonzero(lab)
        assert z.min() >= 2 and z.max() <= 29 and min(y.min(), x.min()) >= 3 and max(y.max(), x.max()) <= 60
        extents.append(max(np.ptp(y), np.ptp(x)) * 0.5)
        # equivalent-sphere diameter within the nominal 6-14 mm range widened by the deformation
        diameter = (6 * lab.sum() * 0.5 * 0.5 * 1.5 / np.pi) ** (1 / 3)
        assert 4.0 < diameter < 18.0
    assert max(extents) - min(extents) > 1.0


def test_threshold_curves_match_brute_force():
    rng = np.random.default_rng(0)
    images = [np.round(rng.uniform(0, 1000, (4, 5, 6))).astype(np.float32) for _ in range(2)]
    images[0].flat[0] = 1000.0  # top = 1000: the thresholds are the integers 0..1000
    labels = [rng.random((4, 5, 6)) < 0.3 for _ in range(2)]
    thresholds, curves = demo._threshold_curves(images, labels)
    np.testing.assert_array_equal(thresholds, np.arange(1001))
    for t in (0, 1, 250, 499, 1000):
        for i in range(2):
            assert curves[i, t] == pytest.approx(overlap_metrics(images[i] >= t, labels[i])["dice"])


def test_seed_dice_report(quick):
    data, split_file, _ = quick
    report = demo.seed_dice_report(data, split_file)
    assert report["subjects"] == [f"demo_{i:03d}" for i in range(8)]
    for key in ("seed_dice", "threshold_dice", "oracle_threshold_dice"):
        assert len(report[key]) == 8 and all(0.0 <= v <= 1.0 for v in report[key])
        assert report[f"{key}_mean"] == pytest.approx(np.mean(report[key]))
    # the dataset-wide threshold is never better than the per-case best one
    assert all(a <= b + 1e-12 for a, b in zip(report["threshold_dice"], report["oracle_threshold_dice"]))
    # independent recomputation of the dataset-wide threshold's Dice on one case
    image, label, _ = read_case(data, "demo_003")
    img, lab = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(label)
    assert report["threshold_dice"][3] == pytest.approx(
        overlap_metrics(img >= report["best_threshold"] - 1e-7, lab)["dice"], abs=1e-6)
    # the expanded seeds lie (almost) inside the lesion
    assert report["seed_precision_mean"] > 0.9
    assert report["cnr_noise_mean"] > 3.0


@pytest.mark.parametrize("argv, message", [
    (["--size", "32", "32", "20"], "--size must be divisible by 16 in every axis, got [32, 32, 20]"),
    (["--size", "0", "32", "16"], "--size needs three positive sizes, got [0, 32, 16]"),
    (["--num_training", "0", "--quick"], None),
    (["--spacing", "0.5", "-1", "1.5"], None),
])
def test_bad_arguments(tmp_path, argv, message, capsys):
    args = argv + ["--output_dir", str(tmp_path / "d"), "--split_file", str(tmp_path / "s.csv"), "--no_report"]
    if message is None:  # rejected by argparse
        with pytest.raises(SystemExit):
            demo.main(args)
        assert "must be a positive" in capsys.readouterr().err
    else:
        with pytest.raises(ValueError) as info:
            demo.main(args)
        assert str(info.value) == message
    assert not (tmp_path / "s.csv").exists()


def test_make_case_bad_size_and_scale():
    with pytest.raises(ValueError, match=r"divisible by 16 .*\[40, 32, 16\]"):
        demo.make_case(np.random.default_rng(0), (40, 32, 16), (0.5, 0.5, 1.5))
    with pytest.raises(ValueError, match="--intensity_max must be a positive number, got 0"):
        demo.make_case(np.random.default_rng(0), (32, 32, 16), (0.5, 0.5, 1.5), intensity_max=0)
