"""utilities/workflow/stage0.py: stage 0 over files, from a split to the expanded seeds, their
distances, the metrics tables, the log and the settings record; the error paths; the paper's
scripts (data/VS, data/BraTS) and the user's entry point (data/generate_geodesic_labels.py) that
call it. The expansion on arrays: tests/utilities/method/test_geodesic.py."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from helpers import load_script, one_line
from synth import ellipsoid_case as blob_case

from utilities.method.geodesic import euclidean_step_fraction, expand_seeds
from utilities.workflow.stage0 import NEGLIGIBLE_FRACTION, SETTINGS_NAME, generate_geodesic_labels, output_folder

VS = load_script("data/VS/generate_geodesic_labels.py")
BRATS = load_script("data/BraTS/generate_geodesic_labels.py")

SHAPE = (12, 24, 24)  # (z, y, x), as SimpleITK arrays are


# ------------------------------------------------------------------------------ files
SPACING_XYZ = (0.8, 0.9, 2.0)
ORIGIN = (10.0, -20.0, 5.0)
DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def write(array, path, spacing=SPACING_XYZ, origin=ORIGIN, direction=DIRECTION):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def make_dataset(root: Path, subjects=(("s1", "training"), ("s2", "training"), ("s3", "validation")),
                 without_label=("s3",)):
    for k, (subject, _) in enumerate(subjects):
        center = (5 + k % 2, 11 + k, 10 + k)
        image, annotation, inside = blob_case(center=center, radii=(3, 5 + k % 2, 4), seed=k)
        write(image, root / "img" / f"{subject}_T2.nii.gz")
        write(annotation, root / "ann" / f"{subject}_7points.nii.gz")
        if subject not in without_label:
            label = inside.copy()
            label[center[0], :, :] |= np.roll(inside[center[0]], 1, axis=0)  # not exactly the blob
            write(label.astype(np.uint8), root / "lab" / f"{subject}_Label.nii.gz")
    (root / "split.csv").write_text("".join(f"{s},{p}\n" for s, p in subjects))
    return root


def vs_args(root: Path, out: str = "geo", *extra: str) -> list[str]:
    return ["--dataset_split", str(root / "split.csv"), "--path_images", str(root / "img"),
            "--path_labels", str(root / "lab"), "--path_anno_7points", str(root / "ann"),
            "--path_geodesic", str(root / out), *extra]


def read(path):
    image = sitk.ReadImage(str(path))
    return image, sitk.GetArrayFromImage(image)


def test_end_to_end_vs_script(tmp_path):
    root = make_dataset(tmp_path)
    out = VS.main(vs_args(root, "geo", "--num_workers", "1"))
    assert out == root / "geo" / "weight0.5_threshold0.2"
    for subject in ("s1", "s2", "s3"):
        ann_img, ann = read(root / "ann" / f"{subject}_7points.nii.gz")
        lab_img, lab = read(out / "geodesic_label" / f"{subject}_GeodesicLabel.nii.gz")
        dist_img, dist = read(out / "geodesic_distance" / f"{subject}_GeodesicDistance.nii.gz")
        assert lab.dtype == np.uint8 and dist.dtype == np.float32
        for img in (lab_img, dist_img):
            assert img.GetSize() == ann_img.GetSize()
            np.testing.assert_allclose(img.GetSpacing(), ann_img.GetSpacing())
            np.testing.assert_allclose(img.GetOrigin(), ann_img.GetOrigin())
            np.testing.assert_allclose(img.GetDirection(), ann_img.GetDirection())
        _, image = read(root / "img" / f"{subject}_T2.nii.gz")
        expected, expected_d = expand_seeds(image, ann, SPACING_XYZ[::-1], 0.5, 0.2)
        np.testing.assert_array_equal(lab, expected)
        np.testing.assert_array_equal(dist, expected_d)
    results = pd.read_csv(out / "results_training.csv")
    assert results["subject"].tolist() == ["s1", "s2", "mean", "std"]
    metrics = results[["precision", "recall", "dice", "jaccard"]].to_numpy()
    assert np.all((metrics >= 0) & (metrics <= 1))
    assert metrics[:2, 0] == pytest.approx([1.0, 1.0])  # the expansion stays inside the label
    assert np.all(metrics[:2, 1] < 1.0)  # ... and misses the added rim
    np.testing.assert_allclose(metrics[2], metrics[:2].mean(0))
    np.testing.assert_allclose(metrics[3], metrics[:2].std(0))
    assert not (out / "results_validation.csv").exists()  # s3 has no full label
    logs = list(out.glob("generate_geodesic_labels_*.txt"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert "--geodesic_weight 0.5" in text and "s3: no full label" in text
    assert not list(out.rglob(".*"))  # no temporary files left behind

    out2 = VS.main(vs_args(root, "geo2", "--num_workers", "2"))
    for sub, pattern in (("geodesic_label", "*_GeodesicLabel.nii.gz"),
                         ("geodesic_distance", "*_GeodesicDistance.nii.gz")):
        files = sorted((out / sub).glob(pattern))
        assert len(files) == 3
        for f in files:
            np.testing.assert_array_equal(read(f)[1], read(out2 / sub / f.name)[1])
    pd.testing.assert_frame_equal(results, pd.read_csv(out2 / "results_training.csv"))


def test_phase_restriction_and_folder_name(tmp_path):
    root = make_dataset(tmp_path)
    out = VS.main(vs_args(root, "geo", "--phase", "validation", "--geodesic_weight", "0.50",
                          "--geodesic_threshold", "1", "--num_workers", "1"))
    assert out.name == "weight0.5_threshold1.0"
    assert sorted(p.name for p in (out / "geodesic_label").iterdir()) == ["s3_GeodesicLabel.nii.gz"]
    assert not list(out.glob("results_*.csv"))


def test_file_spacing_is_reversed_to_array_order(tmp_path):
    # Euclidean distance (weight 0) on a file with spacing (x, y, z) = (0.8, 0.9, 2.0).
    root = make_dataset(tmp_path, subjects=(("s1", "training"),))
    out = VS.main(vs_args(root, "geo", "--geodesic_weight", "0", "--num_workers", "1"))
    assert out.name == "weight0.0_threshold0.2"
    _, dist = read(out / "geodesic_distance" / "s1_GeodesicDistance.nii.gz")
    z, y, x = 5, 11, 10  # the foreground point of subject 0
    assert dist[z, y, x] == 0
    assert dist[z + 1, y, x] == pytest.approx(2.0)
    assert dist[z, y + 1, x] == pytest.approx(0.9)
    assert dist[z, y, x + 1] == pytest.approx(0.8)


def test_brats_script_sets_zero_at_min(tmp_path):
    root = make_dataset(tmp_path, subjects=(("b1", "training"),))
    image_path = root / "img" / "b1_T2.nii.gz"
    image_img, image = read(image_path)
    image[:, :, :9] = 0.0  # the minimum, inside the lesion box
    write(image, root / "img" / "b1_Flair.nii.gz")
    out = BRATS.main(vs_args(root, "geo", "--image_postfix", "Flair", "--num_workers", "1"))
    _, lab = read(out / "geodesic_label" / "b1_GeodesicLabel.nii.gz")
    _, ann = read(root / "ann" / "b1_7points.nii.gz")
    np.testing.assert_array_equal(lab, expand_seeds(image, ann, SPACING_XYZ[::-1], 0.5, 0.2, zero_at_min=True)[0])
    assert np.all(lab[:, :, :9] == 0) and (lab[:, :, 9:] == 1).any()
    assert pd.read_csv(out / "results_training.csv")["subject"].tolist() == ["b1", "mean", "std"]


# ------------------------------------------------------------------------------ error paths
@pytest.fixture
def one_subject(tmp_path):
    return make_dataset(tmp_path, subjects=(("s1", "training"), ("s2", "training")))


def run_vs(root, *extra):
    return VS.main(vs_args(root, "geo", "--num_workers", "1", *extra))


def test_missing_inputs_are_listed_together(one_subject):
    (one_subject / "img" / "s1_T2.nii.gz").unlink()
    (one_subject / "ann" / "s2_7points.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="s1_T2.nii.gz.*s2_7points.nii.gz"):
        run_vs(one_subject)
    assert not (one_subject / "geo").exists()  # nothing done


def test_missing_label_still_expands(one_subject):
    (one_subject / "lab" / "s2_Label.nii.gz").unlink()
    out = run_vs(one_subject)
    assert (out / "geodesic_label" / "s2_GeodesicLabel.nii.gz").is_file()
    assert pd.read_csv(out / "results_training.csv")["subject"].tolist() == ["s1", "mean", "std"]


@pytest.mark.parametrize("change, message", [
    (dict(shape=(12, 24, 20)), "size"),
    (dict(spacing=(0.8, 0.9, 2.5)), "spacing"),
    (dict(direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)), "orientation"),
])
def test_image_annotation_geometry_mismatch(one_subject, change, message):
    path = one_subject / "img" / "s2_T2.nii.gz"
    _, image = read(path)
    if "shape" in change:
        image = image[:, :, :20]
    write(image, path, spacing=change.get("spacing", SPACING_XYZ), direction=change.get("direction", DIRECTION))
    with pytest.raises(ValueError, match=f"s2_T2.nii.gz.*{message}"):
        run_vs(one_subject)
    assert not list((one_subject / "geo").rglob("*.nii.gz"))  # checked before any work


def test_spacing_within_tolerance_is_accepted(one_subject):
    path = one_subject / "img" / "s2_T2.nii.gz"
    write(read(path)[1], path, spacing=(0.8 * (1 + 2e-5), 0.9, 2.0))
    run_vs(one_subject)


def test_label_geometry_mismatch(one_subject):
    path = one_subject / "lab" / "s1_Label.nii.gz"
    write(read(path)[1][:, :, :20], path)
    with pytest.raises(ValueError, match="s1_Label.nii.gz.*size"):
        run_vs(one_subject)


def edit_annotation(root, subject, edit, dtype=None):
    path = root / "ann" / f"{subject}_7points.nii.gz"
    _, ann = read(path)
    ann = ann.astype(dtype or ann.dtype)
    edit(ann)
    write(ann, path)


@pytest.mark.parametrize("edit, dtype, message", [
    (lambda a: a.__setitem__((0, 0, 0), 1.5), np.float32, "unexpected values"),
    (lambda a: a.__setitem__((0, 0, 0), 255), None, "more lesions than supported"),
    (lambda a: a.__setitem__((0, 0, 0), 5), None, "more lesions than supported"),
    (lambda a: a.__setitem__(a == 2, 0), None, "no foreground point"),
    (lambda a: a.__setitem__(a == 1, 0), None, "no background points"),
    (lambda a: a.__setitem__((0, 0, 0), 4), None, "lesion 2 has a foreground point"),
    (lambda a: a.__setitem__((0, 0, 0), 3), None, "lesion 2 has background points"),
    (lambda a: a.fill(0), None, "no annotated points"),
])
def test_bad_annotation(one_subject, edit, dtype, message):
    edit_annotation(one_subject, "s2", edit, dtype)
    with pytest.raises(ValueError, match=f"s2_7points.nii.gz.*{message}"):
        run_vs(one_subject)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_image(one_subject, bad):
    path = one_subject / "img" / "s1_T2.nii.gz"
    _, image = read(path)
    image[0, 0, 0] = bad
    write(image, path)
    with pytest.raises(ValueError, match="s1_T2.nii.gz.*NaN/Inf"):
        run_vs(one_subject)


@pytest.mark.parametrize("flag, value", [
    ("--geodesic_weight", "-0.1"), ("--geodesic_weight", "1.5"), ("--geodesic_weight", "nan"),
    ("--geodesic_threshold", "0"), ("--geodesic_threshold", "1.01"), ("--geodesic_threshold", "-1"),
])
def test_weight_and_threshold_are_checked(one_subject, flag, value):
    with pytest.raises(ValueError, match=f"{flag} must be in .*got {value}"):
        run_vs(one_subject, flag, value)


def test_num_workers_must_be_positive(one_subject):
    with pytest.raises(SystemExit):
        run_vs(one_subject, "--num_workers", "0")
    with pytest.raises(ValueError, match="--num_workers"):
        generate_geodesic_labels(one_subject / "split.csv", one_subject / "img", "T2", None, "Label",
                                 one_subject / "ann", "7points", one_subject / "geo", 0.5, 0.2,
                                 num_workers=0)


def test_output_folder_uses_str_float():
    assert output_folder("g", 0.5, 0.2) == Path("g/weight0.5_threshold0.2")
    assert output_folder("g", 1, 0.25) == Path("g/weight1.0_threshold0.25")


def test_settings_record_and_the_negligible_warning(one_subject):
    """s2's image times 10^4: its noise (sigma 100) makes nearly every step inside the lesion box
    change the intensity by more than 9 lambda / (1 - lambda) = 3 at lambda 0.25, so its geodesic
    term is negligible; s1's steps change it by ~0.01 except at the blob's edge (an eighth of them)."""
    path = one_subject / "img" / "s2_T2.nii.gz"
    write(read(path)[1] * 1e4, path)
    out = generate_geodesic_labels(one_subject / "split.csv", one_subject / "img", "T2", None, "Label",
                                   one_subject / "ann", "7points", one_subject / "geo", 0.25, 0.3, zero_at_min=True)
    assert out == one_subject / "geo" / "weight0.25_threshold0.3"
    settings = json.loads((out / SETTINGS_NAME).read_text())
    fractions = settings.pop("euclidean_step_fraction")
    assert settings == {"style": "brats", "intensity": "none", "geodesic_weight": 0.25, "geodesic_threshold": 0.3,
                        "geodesic_term_negligible": ["s2"]}
    assert list(fractions) == ["s1", "s2"]
    assert fractions["s1"] < 0.2 and fractions["s2"] >= NEGLIGIBLE_FRACTION
    for subject in ("s1", "s2"):
        _, image = read(one_subject / "img" / f"{subject}_T2.nii.gz")
        _, ann = read(one_subject / "ann" / f"{subject}_7points.nii.gz")
        assert fractions[subject] == round(euclidean_step_fraction(image, ann, 0.25), 4)
    log = next(out.glob("generate_geodesic_labels_*.txt")).read_text()
    assert "the geodesic term is negligible for 1 of 2 subject(s) (s2): with --intensity none" in log



@pytest.mark.parametrize("edit, message", [
    (lambda a: a.__setitem__(tuple(np.argwhere(a == 1)[0]), 0), r"lesion 1 has 5 background point\(s\)"),
    (lambda a: (a.__setitem__(a == 2, 0), a.__setitem__((1, 12, 11), 2)),
     r"lesion 1: the foreground point .* lies outside the box"),
])
def test_script_refuses_partial_points_unless_allowed(one_subject, edit, message):
    edit_annotation(one_subject, "s2", edit)
    with pytest.raises(ValueError, match=rf"^s2: annotation .*s2_7points.nii.gz: {message}"):
        run_vs(one_subject)
    out = VS.main(vs_args(one_subject, "geo_partial", "--num_workers", "1", "--allow_partial_points"))
    _, ann = read(one_subject / "ann" / "s2_7points.nii.gz")
    _, image = read(one_subject / "img" / "s2_T2.nii.gz")
    expected, _ = expand_seeds(image, ann, SPACING_XYZ[::-1], 0.5, 0.2, allow_partial_points=True)
    np.testing.assert_array_equal(read(out / "geodesic_label" / "s2_GeodesicLabel.nii.gz")[1], expected)
    assert "--allow_partial_points True" in next(out.glob("generate_geodesic_labels_*.txt")).read_text()


@pytest.mark.parametrize("code", ["SPL", "LPI", "RAS"])
def test_annotation_with_permuted_or_reversed_axes_is_reordered_exactly(one_subject, code, capsys):
    reference = run_vs(one_subject)
    path = one_subject / "ann" / "s2_7points.nii.gz"
    original = sitk.ReadImage(str(path))
    reoriented = sitk.DICOMOrient(original, code)  # same voxels, other index order (SimpleITK's own)
    assert reoriented.GetDirection() != original.GetDirection()
    sitk.WriteImage(reoriented, str(path))
    with pytest.raises(ValueError) as err:
        VS.main(vs_args(one_subject, "geo_refused", "--num_workers", "1"))  # refused unless asked for
    assert re.fullmatch(rf"s2: annotation {re.escape(str(path))} holds the image's voxels in another index order "
                        r"\(axes \[\d, \d, \d\], reversed \[(True|False), (True|False), (True|False)\]\), as when it "
                        r"was saved reoriented; pass --reorder_annotation to reorder it exactly \(no resampling\)",
                        one_line(err))
    out = VS.main(vs_args(one_subject, "geo_reordered", "--num_workers", "1", "--reorder_annotation"))
    image_img, _ = read(one_subject / "img" / "s2_T2.nii.gz")
    for sub, name in (("geodesic_label", "s2_GeodesicLabel.nii.gz"),
                      ("geodesic_distance", "s2_GeodesicDistance.nii.gz")):
        got_img, got = read(out / sub / name)
        np.testing.assert_array_equal(got, read(reference / sub / name)[1])
        assert got_img.GetSize() == image_img.GetSize()
        np.testing.assert_allclose(got_img.GetDirection(), image_img.GetDirection())
        np.testing.assert_allclose(got_img.GetOrigin(), image_img.GetOrigin())


def test_annotation_on_a_shifted_grid_is_refused(one_subject):
    path = one_subject / "ann" / "s2_7points.nii.gz"
    _, ann = read(path)
    write(ann, path, origin=(ORIGIN[0] + 0.8, ORIGIN[1], ORIGIN[2]))  # one voxel away: another grid
    with pytest.raises(ValueError, match=r"^s2: image .*s2_T2.nii.gz has origin .* but annotation .*s2_7points.nii.gz "
                                         r"has .*: the annotation is on another grid than the image"):
        run_vs(one_subject)
    assert not list((one_subject / "geo").rglob("*.nii.gz"))  # checked before any work
    with pytest.raises(ValueError, match="another grid"):  # neither flag lifts the grid check
        run_vs(one_subject, "--allow_partial_points", "--reorder_annotation")


def test_grid_errors_name_the_files(one_subject):
    path = one_subject / "img" / "s2_T2.nii.gz"
    write(read(path)[1][:, :, :20], path)
    with pytest.raises(ValueError, match=r"^image .*s2_T2.nii.gz has size \[20, 24, 12\] but annotation"):
        run_vs(one_subject)


# ------------------------------------------------------------------------------ the paper's scripts, unchanged
NEW = load_script("data/generate_geodesic_labels.py")

#: SHA-256 of the files the paper's scripts write on :func:`paper_fixture`, taken before stage 0
#: had an intensity option; they pin the bytes (SimpleITK's NIfTI writer included: a SimpleITK
#: upgrade that changes its gzip output would change them, with the arrays unchanged).
PAPER_OUTPUT_SHA256 = {
    "vs/s1_GeodesicDistance": "7242d2acb6fa0dd63c85fe03e4889c8d7a832b221d84374f8640f0068728ce19",
    "vs/s2_GeodesicDistance": "79a333dee2b297a4a4ca8c54dcfa7df4f5f1b2fa502e05cab5f7f150fd893d55",
    "vs/s3_GeodesicDistance": "cb256880f6c606758879348b4fbd774e0d8168d039a1f2001974753f69e1785b",
    "vs/s1_GeodesicLabel": "08f4ee8f7cd4d186e84063f6b933407e3c99745fd2b2a61cb806d997d2e778d3",
    "vs/s2_GeodesicLabel": "f403f980f7aabd8b2cb2e5f4c45507f14f7d822d74977e66fe2ae2549f28270f",
    "vs/s3_GeodesicLabel": "b9a5d0f34610808b87df2b0b691014f0320d1f563e1c4af40dfbbd0d122dbab9",
    "b/s1_GeodesicDistance": "51f68e76a47446bd847262f2e0bd1d4d0e487fc45efe2d55d158d99827eb41a3",
    "b/s2_GeodesicDistance": "2dc5065f628bc4ea60ab71972f7eec24aacd2b4388e5a3b1b4402a39778d9eb0",
    "b/s3_GeodesicDistance": "927db7219d875b16ce4b971194f094397a8b3957575cf0745a2aaeefc0455d98",
    "b/s1_GeodesicLabel": "47471e4ed13f8daa9c2d1214b4bd634011c2a5a3aee28d09bed481ffe1c57466",
    "b/s2_GeodesicLabel": "a2e9a95aa6a54d13d56762151adebca0d5ad214885b4f7226f36a02a5c09c1a7",
    "b/s3_GeodesicLabel": "b91200a05cc6d91f25d6a56146a675343f14d480b5db4d988d2e4e207c1508f4",
}


def paper_fixture(root: Path) -> Path:
    """:func:`make_dataset`'s three subjects, plus a ``Flair`` copy of each image whose first
    nine columns are 0 (the image's minimum, inside the lesion boxes) for the BraTS script."""
    make_dataset(root)
    for subject in ("s1", "s2", "s3"):
        _, image = read(root / "img" / f"{subject}_T2.nii.gz")
        image[:, :, :9] = 0.0
        write(image, root / "img" / f"{subject}_Flair.nii.gz")
    return root


def test_paper_scripts_write_the_same_bytes_as_before_the_intensity_option(tmp_path):
    root = paper_fixture(tmp_path)
    outputs = {"vs": VS.main(vs_args(root, "geo_vs", "--num_workers", "1")),
               "b": BRATS.main(vs_args(root, "geo_b", "--image_postfix", "Flair", "--num_workers", "1"))}
    written = {f"{name}/{f.name.removesuffix('.nii.gz')}": hashlib.sha256(f.read_bytes()).hexdigest()
               for name, out in outputs.items() for f in sorted(out.rglob("*.nii.gz"))}
    assert written == PAPER_OUTPUT_SHA256
    for out, style in ((outputs["vs"], "vs"), (outputs["b"], "brats")):
        settings = json.loads((out / "stage0_settings.json").read_text())
        assert (settings["style"], settings["intensity"], settings["geodesic_term_negligible"]) == (style, "none", [])
        assert "--intensity none" in next(out.glob("generate_geodesic_labels_*.txt")).read_text()


@pytest.mark.parametrize("style, script, postfix", [("brats", BRATS, "Flair"), ("vs", VS, "T2")])
def test_entry_point_without_normalisation_equals_the_paper_script(tmp_path, style, script, postfix):
    root = paper_fixture(tmp_path)
    paper = script.main(vs_args(root, "paper", "--image_postfix", postfix, "--num_workers", "1"))
    new = NEW.main(vs_args(root, "new", "--image_postfix", postfix, "--num_workers", "1", "--style", style,
                           "--intensity", "none", "--dataset_split", str(root / "split.csv")))
    files = sorted(str(f.relative_to(paper)) for f in paper.rglob("*") if f.is_file() and f.suffix != ".txt")
    assert len(files) == 8   # 3 labels, 3 distances, results_training.csv, stage0_settings.json
    for name in files:
        assert (new / name).read_bytes() == (paper / name).read_bytes(), name


def test_entry_point_defaults_to_the_chosen_normalisation_and_requires_the_data_flags(tmp_path, capsys):
    root = paper_fixture(tmp_path)
    out = NEW.main(vs_args(root, "new", "--image_postfix", "T2", "--num_workers", "1"))
    settings = json.loads((out / "stage0_settings.json").read_text())
    assert (settings["style"], settings["intensity"]) == ("vs", "box_percentile")
    _, image = read(root / "img" / "s1_T2.nii.gz")
    _, ann = read(root / "ann" / "s1_7points.nii.gz")
    expected, _ = expand_seeds(image, ann, SPACING_XYZ[::-1], 0.5, 0.2, intensity="box_percentile")
    np.testing.assert_array_equal(read(out / "geodesic_label" / "s1_GeodesicLabel.nii.gz")[1], expected)
    with pytest.raises(SystemExit):
        NEW.main(["--dataset_split", str(root / "split.csv")])
    assert ("the following arguments are required: --path_images, --image_postfix, --path_anno_7points, "
            "--path_geodesic") in capsys.readouterr().err
    with pytest.raises(SystemExit):
        NEW.main(vs_args(root, "new", "--image_postfix", "T2", "--intensity", "percentile"))
    assert "argument --intensity: invalid choice: 'percentile'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"^--intensity must be one of \['box_percentile', 'box_zscore', 'minmax', "
                                         r"'none', 'zscore_fg'\], got 'percentile'$"):
        generate_geodesic_labels(root / "split.csv", root / "img", "T2", None, "Label", root / "ann", "7points",
                                 root / "geo", 0.5, 0.2, intensity="percentile")
    assert not (root / "geo").exists()   # refused before any work


# ------------------------------------------------------------------------------ replacing earlier seeds
def seed_files(out: Path) -> dict[str, bytes]:
    """Every seed and distance file of a stage-0 folder, by its path in the folder."""
    return {str(p.relative_to(out)): p.read_bytes() for sub in ("geodesic_label", "geodesic_distance")
            for p in sorted((out / sub).glob("*")) if p.is_file()}


def test_a_run_that_stops_on_a_bad_annotation_leaves_the_folder_as_it_was(one_subject):
    """The last subject's annotation is bad: the subjects before it are computed but nothing
    reaches the output folder, neither over an earlier run's seeds (other settings, --overwrite)
    nor into an empty folder."""
    out = run_vs(one_subject)
    before, record = seed_files(out), (out / SETTINGS_NAME).read_text()
    edit_annotation(one_subject, "s2", lambda a: a.__setitem__(tuple(np.argwhere(a == 1)[0]), 0))
    with pytest.raises(ValueError, match=r"^s2: annotation .*lesion 1 has 5 background point\(s\)"):
        NEW.main(vs_args(one_subject, "geo", "--num_workers", "1", "--image_postfix", "T2", "--overwrite"))
    assert seed_files(out) == before and (out / SETTINGS_NAME).read_text() == record
    with pytest.raises(ValueError, match="lesion 1 has 5 background point"):
        VS.main(vs_args(one_subject, "fresh", "--num_workers", "2"))
    fresh = one_subject / "fresh" / "weight0.5_threshold0.2"
    assert seed_files(fresh) == {} and not (fresh / SETTINGS_NAME).exists()
    assert [p for p in (*out.rglob(".*"), *fresh.rglob(".*"))] == []   # no staging folder left


def test_seeds_of_other_settings_are_replaced_only_with_overwrite(one_subject):
    out = run_vs(one_subject)   # style vs, intensity none
    before = seed_files(out)
    args = vs_args(one_subject, "geo", "--num_workers", "1", "--image_postfix", "T2", "--style", "brats")
    with pytest.raises(FileExistsError, match=r"^.*weight0.5_threshold0.2 holds 4 seed file\(s\) made with other "
                                              r"settings \(style 'vs', now 'brats'; intensity 'none', now "
                                              r"'box_percentile'\); .*pass --overwrite to replace them all$"):
        NEW.main(args)
    assert seed_files(out) == before
    # with --overwrite and one phase only, the other subjects' seeds of the old settings go too
    split = one_subject / "split.csv"
    split.write_text("s1,training\ns2,validation\n")
    assert NEW.main(args + ["--overwrite", "--phase", "training"]) == out
    assert sorted(seed_files(out)) == ["geodesic_distance/s1_GeodesicDistance.nii.gz",
                                       "geodesic_label/s1_GeodesicLabel.nii.gz"]
    settings = json.loads((out / SETTINGS_NAME).read_text())
    assert (settings["style"], settings["intensity"], list(settings["euclidean_step_fraction"])) == \
        ("brats", "box_percentile", ["s1"])
    # the earlier run's table (s1 and s2, both in training then) is replaced by this run's
    assert pd.read_csv(out / "results_training.csv")["subject"].tolist() == ["s1", "mean", "std"]


def test_runs_of_the_same_settings_join_and_seeds_without_a_record_need_overwrite(one_subject):
    (one_subject / "split.csv").write_text("s1,training\ns2,validation\n")
    out = run_vs(one_subject, "--phase", "training")
    first = seed_files(out)
    run_vs(one_subject, "--phase", "validation")   # same settings: s2 joins s1, no --overwrite needed
    both = seed_files(out)
    assert sorted(both) == sorted([*first, "geodesic_distance/s2_GeodesicDistance.nii.gz",
                                   "geodesic_label/s2_GeodesicLabel.nii.gz"])
    assert all(both[k] == v for k, v in first.items())
    assert list(json.loads((out / SETTINGS_NAME).read_text())["euclidean_step_fraction"]) == ["s1", "s2"]
    (out / SETTINGS_NAME).unlink()   # seeds of unknown settings (another program's)
    with pytest.raises(FileExistsError, match=r"holds 4 seed file\(s\) made with other settings \(no "
                                              r"stage0_settings.json\)"):
        run_vs(one_subject)
    run_vs(one_subject, "--overwrite")
    assert sorted(seed_files(out)) == sorted(both) and (out / SETTINGS_NAME).is_file()


def test_seeds_on_a_grid_nifti_cannot_hold_are_written_as_mha(one_subject):
    """A 10 µm scan with its origin far from 0 (NIfTI's float32 would move it): its seeds and
    distances are written as .mha on its exact grid, where the readers find them."""
    for subject in ("s1", "s2"):
        for folder, postfix in (("img", "T2"), ("ann", "7points")):
            path = one_subject / folder / f"{subject}_{postfix}.nii.gz"
            write(read(path)[1], path.with_name(f"{subject}_{postfix}.mha"), spacing=(0.01, 0.01, 0.01),
                  origin=(-512.3, -480.7, 20.0))
            path.unlink()
    out = VS.main(vs_args(one_subject, "geo", "--num_workers", "1", "--path_labels", ""))
    for sub, postfix in (("geodesic_label", "GeodesicLabel"), ("geodesic_distance", "GeodesicDistance")):
        assert sorted(p.name for p in (out / sub).iterdir()) == [f"s1_{postfix}.mha", f"s2_{postfix}.mha"]
        written = sitk.ReadImage(str(out / sub / f"s1_{postfix}.mha"))
        assert written.GetOrigin() == sitk.ReadImage(str(one_subject / "img" / "s1_T2.mha")).GetOrigin()


def test_a_4d_image_is_named_as_such(one_subject):
    """Two volumes in one file (e.g. two echoes): not 'resample one of them', but what it is."""
    path = one_subject / "img" / "s2_T2.nii.gz"
    volume = sitk.ReadImage(str(path))
    sitk.WriteImage(sitk.JoinSeries([volume, volume]), str(path))
    with pytest.raises(ValueError) as err:
        run_vs(one_subject)
    assert one_line(err) == (f"s2: image {path} is 4D (size {list(volume.GetSize()) + [2]}); stage 0 needs a 3D "
                             "volume of one channel: save the channel the points were clicked on")


def test_a_labels_folder_that_gives_no_label_is_a_warning(one_subject, capsys):
    """Labels asked for but none found (a mistyped folder or postfix): one warning, not only an
    INFO line per subject; labels found for some subjects only: no warning."""
    missing = one_subject / "no_labels"
    VS.main(vs_args(one_subject, "geo_a", "--num_workers", "1", "--path_labels", str(missing)))
    out = capsys.readouterr().out
    assert f"WARNING --path_labels {missing} does not exist: the expanded seeds are not scored" in out
    VS.main(vs_args(one_subject, "geo_b", "--num_workers", "1", "--label_postfix", "label"))
    out = capsys.readouterr().out
    assert (f"WARNING --path_labels {one_subject / 'lab'} holds no <subject>_label label of any of the 2 subject(s) "
            "(check --label_postfix; the names are case-sensitive)") in out
    (one_subject / "lab" / "s1_Label.nii.gz").unlink()
    VS.main(vs_args(one_subject, "geo_c", "--num_workers", "1"))
    out = capsys.readouterr().out
    assert "WARNING" not in out and "s1: no full label" in out


def test_a_file_given_as_a_folder_is_named_as_such(one_subject):
    with pytest.raises(FileNotFoundError, match=r"annotation folder .*s1_7points.nii.gz is a file, not a folder "
                                                r"\(2 subject\(s\) need it\)"):
        VS.main(vs_args(one_subject, "geo", "--num_workers", "1", "--path_anno_7points",
                        str(one_subject / "ann" / "s1_7points.nii.gz")))
