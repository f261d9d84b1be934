"""Stage 0 at raw intensities: the normalisations of utilities/method/intensity.py by hand, the
negligible-geodesic-term test and its warning, the family's raw-intensity option and the
summary of experiments/stage0_intensity.py."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from helpers import load_script
from test_geodesic import blob_case

from utilities.method.geodesic import euclidean_step_fraction, expand_seeds
from utilities.method.intensity import NORMALISATIONS, euclidean_limit, euclidean_step_counts, normalisation
from utilities.workflow.stage0 import generate_geodesic_labels

NEW = load_script("data/generate_geodesic_labels.py")
FAMILY = load_script("data/family/make_family_data.py")
STUDY = load_script("experiments/stage0_intensity.py")

WHOLE = (slice(None),) * 3


# ------------------------------------------------------------------------------ the normalisations by hand
# image (1, 1, 4) = [0, 0, 2, 4]; the box is its last three voxels [0, 2, 4]
TINY = np.array([0.0, 0.0, 2.0, 4.0]).reshape(1, 1, 4)
BOX = (slice(0, 1), slice(0, 1), slice(1, 4))


@pytest.mark.parametrize("name, expected", [
    ("none", [0.0, 2.0, 4.0]),
    ("minmax", [0.0, 0.5, 1.0]),                              # (I - 0) / (4 - 0) over the whole image
    ("zscore_fg", [-3.0, -1.0, 1.0]),                         # foreground {2, 4}: mean 3, std 1
    ("box_zscore", [-2 / np.sqrt(8 / 3), 0.0, 2 / np.sqrt(8 / 3)]),  # box {0, 2, 4}: mean 2, std sqrt(8/3)
])
def test_each_normalisation_by_hand(name, expected):
    crop = normalisation(name).crop(TINY, BOX)
    assert crop.dtype == np.float32 and crop.flags["C_CONTIGUOUS"] and crop.shape == (1, 1, 3)
    np.testing.assert_allclose(crop.ravel(), expected, rtol=1e-6)


def test_box_percentile_by_hand():
    image = np.arange(101, dtype=np.int16).reshape(1, 1, 101)   # percentiles 1 and 99 are 1 and 99
    crop = normalisation("box_percentile").crop(image, WHOLE)
    np.testing.assert_allclose(crop.ravel()[[0, 1, 50, 99, 100]], [-1 / 98, 0.0, 49 / 98, 1.0, 1 + 1 / 98], rtol=1e-6)


def test_none_is_the_raw_crop_and_a_flat_box_stays_flat():
    image = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    box = (slice(0, 2), slice(1, 3), slice(0, 2))
    crop = normalisation("none").crop(image, box)
    assert crop.dtype == np.float32 and np.array_equal(crop, image[box].astype(np.float32))
    flat = np.full((2, 2, 2), 7, dtype=np.int16)
    for name in NORMALISATIONS:
        out = normalisation(name).crop(flat, WHOLE)
        assert np.all(np.isfinite(out)) and np.ptp(out) == 0, name


@pytest.mark.parametrize("name", sorted(set(NORMALISATIONS) - {"none"}))
def test_normalisations_ignore_a_scanner_gain_and_offset(name):
    image, _, _ = blob_case(noise=3.0)
    box = (slice(2, 10), slice(4, 20), slice(5, 17))
    scanned = image.astype(np.float64) * 23.0 + 450.0
    np.testing.assert_allclose(normalisation(name).crop(scanned, box), normalisation(name).crop(image, box),
                               atol=1e-4)
    assert not np.allclose(normalisation("none").crop(scanned, box), normalisation("none").crop(image, box))


def test_unknown_normalisation_is_one_line():
    with pytest.raises(ValueError, match=r"^--intensity must be one of \[.*'box_percentile'.*\], got 'z'$"):
        normalisation("z")


# ------------------------------------------------------------------------------ the Euclidean-regime test
def test_euclidean_limit_and_step_counts_by_hand():
    assert euclidean_limit(0.5) == pytest.approx(9.0)          # 0.9 / 0.1 * 0.5 / 0.5
    assert euclidean_limit(0.8) == pytest.approx(36.0)
    assert euclidean_limit(1.0) == float("inf")
    # a row of three voxels: steps |10| (Euclidean regime at lambda 0.5) and |0.5| (geodesic)
    assert euclidean_step_counts(np.array([0.0, 10.0, 10.5]).reshape(1, 1, 3), 0.5) == (1, 2)
    # a 2x2x2 cube: every pair of its 8 voxels is a 26-neighbour pair, counted once
    assert euclidean_step_counts(np.zeros((2, 2, 2)), 0.5) == (0, 28)
    cube = np.arange(8, dtype=np.float32).reshape(2, 2, 2) * 100.0   # every difference >= 100
    assert euclidean_step_counts(cube, 0.5) == (28, 28)
    assert euclidean_step_counts(cube, 0.999) == (0, 28)           # limit 8991: no step reaches it


def test_the_share_matches_geodesis_step_cost():
    # GeodisTK's cost of one step of length l: l / ((1 - lam) + lam / (|dI| + 1e-5)); at the
    # limit it is 90 % of l / (1 - lam), whatever l (the spacing) is.
    for lam in (0.2, 0.5, 0.9):
        d = euclidean_limit(lam) - 1e-5
        for length in (0.5, 3.0):
            cost = length / ((1 - lam) + lam / (d + 1e-5))
            assert cost / (length / (1 - lam)) == pytest.approx(0.9)


def raw_blob(seed=0):
    """The blob case at scanner-like values: int16 around 1000 (lesion 1800), noise sd 30."""
    image, annotation, inside = blob_case(seed=seed)
    rng = np.random.default_rng(seed)
    raw = np.where(inside, 1800.0, 1000.0) + rng.normal(0, 30.0, inside.shape)
    return np.round(raw).astype(np.int16), annotation, inside


def test_fraction_is_high_on_raw_values_and_low_once_normalised():
    raw, annotation, inside = raw_blob()
    assert euclidean_step_fraction(raw, annotation, 0.5) > 0.8      # |dI| ~ 42 >> 9 mostly
    for name in sorted(set(NORMALISATIONS) - {"none"}):
        assert euclidean_step_fraction(raw, annotation, 0.5, name) < 0.05, name
    assert euclidean_step_fraction(raw, annotation, 0.0) == 0.0     # Euclidean by choice
    assert euclidean_step_fraction(raw, annotation, 1.0) == 0.0     # intensity only
    # what the fraction predicts: raw values give a small ball, the normalised box the blob
    sp = (2.0, 1.0, 1.0)
    ball, _ = expand_seeds(raw, annotation, sp, 0.5, 0.2)
    fitted, _ = expand_seeds(raw, annotation, sp, 0.5, 0.2, intensity="box_percentile")
    assert (ball[inside] == 1).mean() < 0.2 and (fitted[inside] == 1).mean() > 0.9
    assert (fitted[~inside] == 1).sum() == 0


def write_case(root, subject, image, annotation, label):
    for folder, postfix, array in (("img", "T1", image), ("ann", "7points", annotation), ("lab", "Label", label)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        img = sitk.GetImageFromArray(array)
        img.SetSpacing((1.0, 1.0, 2.0))
        sitk.WriteImage(img, str(root / folder / f"{subject}_{postfix}.nii.gz"))


def run_new(root, out, *extra):
    return NEW.main(["--dataset_split", str(root / "split.csv"), "--path_images", str(root / "img"),
                     "--image_postfix", "T1", "--path_anno_7points", str(root / "ann"), "--path_labels",
                     str(root / "lab"), "--path_geodesic", str(root / out), "--num_workers", "1", *extra])


def test_warning_fires_on_raw_int16_and_not_on_normalised(tmp_path):
    for k, subject in enumerate(("r1", "r2")):
        raw, annotation, inside = raw_blob(seed=k)
        write_case(tmp_path, subject, raw, annotation, inside.astype(np.uint8))
    (tmp_path / "split.csv").write_text("r1,training\nr2,training\n")
    out = run_new(tmp_path, "raw", "--intensity", "none")
    log = next(out.glob("generate_geodesic_labels_*.txt")).read_text()
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    assert len(warnings) == 1
    assert "the geodesic term is negligible for 2 of 2 subject(s) (r1; r2): with --intensity none, " in warnings[0]
    assert "(9 lambda/(1-lambda) at --geodesic_weight 0.5)" in warnings[0]
    assert "--intensity box_percentile, data/generate_geodesic_labels.py's default" in warnings[0]
    settings = json.loads((out / "stage0_settings.json").read_text())
    assert settings["geodesic_term_negligible"] == ["r1", "r2"] and settings["intensity"] == "none"
    assert min(settings["euclidean_step_fraction"].values()) > 0.8

    out = run_new(tmp_path, "fitted")     # the entry point's default: box_percentile
    assert "WARNING" not in next(out.glob("generate_geodesic_labels_*.txt")).read_text()
    settings = json.loads((out / "stage0_settings.json").read_text())
    assert settings["geodesic_term_negligible"] == [] and settings["intensity"] == "box_percentile"
    dice = pd.read_csv(out / "results_training.csv")["dice"]
    assert dice.iloc[0] > 0.9 > pd.read_csv(tmp_path / "raw" / out.name / "results_training.csv")["dice"].iloc[0]


def test_weight_zero_never_warns(tmp_path):
    raw, annotation, inside = raw_blob()
    write_case(tmp_path, "r1", raw, annotation, inside.astype(np.uint8))
    (tmp_path / "split.csv").write_text("r1,training\n")
    out = generate_geodesic_labels(tmp_path / "split.csv", tmp_path / "img", "T1", None, "Label", tmp_path / "ann",
                                   "7points", tmp_path / "geo", 0.0, 0.2)
    assert "WARNING" not in next(out.glob("generate_geodesic_labels_*.txt")).read_text()
    assert json.loads((out / "stage0_settings.json").read_text())["euclidean_step_fraction"] == {"r1": 0.0}


# ------------------------------------------------------------------------------ the family at raw intensities
def test_family_raw_intensities_are_the_same_case_at_a_gain_and_offset(tmp_path):
    member = dataclasses.replace(FAMILY.draw_member(5), counts=(1, 1, 0))
    FAMILY.generate_member(member, tmp_path / "plain")
    FAMILY.generate_member(member, tmp_path / "raw", raw=True)
    scales = pd.read_csv(tmp_path / "raw" / "intensities.csv")
    assert not (tmp_path / "plain" / "intensities.csv").exists()
    assert scales["subject"].tolist() == ["fam005_000", "fam005_001"]
    for row in scales.itertuples():
        assert 1500 <= row.gain <= 3000 and 0 <= row.offset <= 100
        plain = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "plain" / "image" / f"{row.subject}_img.nii.gz")))
        raw_img = sitk.ReadImage(str(tmp_path / "raw" / "image" / f"{row.subject}_img.nii.gz"))
        assert raw_img.GetPixelID() == sitk.sitkInt16
        raw = sitk.GetArrayFromImage(raw_img)
        np.testing.assert_array_equal(raw, np.round(plain.astype(np.float64) * row.gain) + row.offset)
        assert raw.min() == row.offset                                        # the background
        for folder, postfix in (("label", "seg"), ("annotation_7points", "7points")):
            name = f"{row.subject}_{postfix}.nii.gz"
            a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / d / folder / name))) for d in ("plain", "raw"))
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ the study's summary
def test_study_summary_by_hand():
    rows = [(0, "a", "none", 0.2, 1.0, 0.1, 0.95), (0, "b", "none", 0.4, 1.0, 0.3, 0.2),
            (1, "c", "none", 0.6, 0.5, 0.7, 0.7)]
    per_case = pd.DataFrame([{"member": m, "subject": s, "style": "brats", "intensity": i, "dice": d,
                              "precision": p, "recall": r, "euclidean_fraction": f} for m, s, i, d, p, r, f in rows])
    table = STUDY.summarize(per_case)
    assert table["member"].tolist() == [0, 1, "mean"]
    assert table["cases"].tolist() == [2, 1, 3]
    np.testing.assert_allclose(table["dice"], [0.3, 0.6, 0.45])            # the mean over members, not cases
    np.testing.assert_allclose(table["precision"], [1.0, 0.5, 0.75])
    assert table["negligible"].tolist() == [1, 1, 2]
