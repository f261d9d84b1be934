"""data/export_nnunet.py: the expanded seeds (or full labels) as an nnU-Net v2 raw dataset, checked
by nnU-Net's own verify_dataset_integrity, and an nnU-Net prediction folder scored by scores.py."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from helpers import load_script
from synth import make_vs_dataset, write

from utilities import scores
from utilities.evaluation import scoring

EXPORT = load_script("data/export_nnunet.py")


@pytest.fixture
def data(tmp_path):
    return make_vs_dataset(tmp_path / "data", n_train=2, n_val=1, n_inf=1)


def export(data, out, *extra):
    return EXPORT.main(["--dataset_split", str(data["split"]), "--path_images", str(data["image_crop"]),
                        "--image_postfix", "T2", "--path_geodesic_labels", str(data["geodesic_label"]),
                        "--path_labels", str(data["label_crop"]), "--output_dir", str(out),
                        "--dataset_id", "7", "--dataset_name", "VSTiny", *extra])


def verify(folder, capfd):
    """nnU-Net v2's own check; it prints its errors and warnings and raises on errors."""
    module = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity",
                                 reason="nnunetv2 is installed by `make install` (requirements-nnunet.txt)")
    capfd.readouterr()
    module.verify_dataset_integrity(str(folder), 1)
    printed = capfd.readouterr().out
    assert "verify_dataset_integrity Done" in printed
    assert "Error" not in printed and "Warning" not in printed and "mismatch" not in printed, printed


def test_seeds_export_has_nnunet_layout_and_passes_its_check(data, tmp_path, capfd):
    root = export(data, tmp_path / "raw")
    assert root == tmp_path / "raw" / "Dataset007_VSTiny"
    names = {sub: sorted(p.name for p in (root / sub).iterdir()) for sub in ("imagesTr", "labelsTr", "imagesTs")}
    assert names == {"imagesTr": ["vs_gk_1_0000.nii.gz", "vs_gk_2_0000.nii.gz", "vs_gk_3_0000.nii.gz"],
                     "labelsTr": ["vs_gk_1.nii.gz", "vs_gk_2.nii.gz", "vs_gk_3.nii.gz"],
                     "imagesTs": ["vs_gk_4_0000.nii.gz"]}
    dataset = json.loads((root / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "lesion": 1, "ignore": 2}
    assert dataset["channel_names"] == {"0": "T2"} and dataset["numTraining"] == 3
    assert dataset["file_ending"] == ".nii.gz"
    folds = json.loads((root / "splits_final.json").read_text())
    assert folds == [{"train": ["vs_gk_1", "vs_gk_2"], "val": ["vs_gk_3"]}]
    # images byte for byte, labels the expanded seeds (uint8, 0/1/2) on the image's grid
    copied = (root / "imagesTr" / "vs_gk_2_0000.nii.gz").read_bytes()
    assert copied == (data["image_crop"] / "vs_gk_2_T2.nii.gz").read_bytes()
    label = sitk.ReadImage(str(root / "labelsTr" / "vs_gk_2.nii.gz"))
    seeds = sitk.ReadImage(str(data["geodesic_label"] / "vs_gk_2_GeodesicLabel.nii.gz"))
    assert label.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), sitk.GetArrayFromImage(seeds))
    assert set(np.unique(sitk.GetArrayFromImage(label))) == {0, 1, 2}
    verify(root, capfd)


def test_full_labels_export_passes_the_check(data, tmp_path, capfd):
    root = export(data, tmp_path / "raw", "--labels", "full", "--dataset_name", "VSFull", "--channel_name", "MRI")
    dataset = json.loads((root / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "lesion": 1} and dataset["channel_names"] == {"0": "MRI"}
    full = sitk.GetArrayFromImage(sitk.ReadImage(str(data["label_crop"] / "vs_gk_1_Label.nii.gz"))) > 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTr" / "vs_gk_1.nii.gz"))),
                                  full.astype(np.uint8))
    verify(root, capfd)


def test_nnunet_check_catches_a_broken_export(data, tmp_path, capfd):
    """The oracle can fail: a label value outside dataset.json's labels is an nnU-Net error."""
    module = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity")
    root = export(data, tmp_path / "raw")
    path = root / "labelsTr" / "vs_gk_1.nii.gz"
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    array[0, 0, 0] = 3
    broken = sitk.GetImageFromArray(array)
    broken.CopyInformation(image)
    sitk.WriteImage(broken, str(path))
    with pytest.raises(RuntimeError, match="unexpected labels"):
        module.verify_dataset_integrity(str(root), 1)


def test_existing_export_needs_overwrite(data, tmp_path):
    root = export(data, tmp_path / "raw")
    (root / "imagesTr" / "stale_0000.nii.gz").write_bytes(b"")
    with pytest.raises(FileExistsError, match=r"Dataset007_VSTiny exists; pass --overwrite"):
        export(data, tmp_path / "raw")
    export(data, tmp_path / "raw", "--overwrite")
    assert not (root / "imagesTr" / "stale_0000.nii.gz").exists()  # replaced, not mixed


def test_an_export_that_fails_midway_leaves_the_earlier_one(data, tmp_path, monkeypatch):
    """The export is written whole or not at all: an --overwrite whose third label cannot be
    written leaves the earlier export file for file (its stale file too, its dataset.json) and no
    staging folder; a first export that fails leaves no dataset folder."""
    root = export(data, tmp_path / "raw")
    (root / "imagesTr" / "stale_0000.nii.gz").write_bytes(b"")
    before = {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    written = []
    real = EXPORT.write_image

    def third_fails(image, path, *args, **kwargs):
        written.append(path)
        if len(written) == 3:
            raise OSError(28, "No space left on device")
        return real(image, path, *args, **kwargs)

    monkeypatch.setattr(EXPORT, "write_image", third_fails)
    with pytest.raises(OSError, match="No space left"):
        export(data, tmp_path / "raw", "--overwrite")
    assert len(written) == 3
    assert {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} == before
    assert sorted(p.name for p in root.iterdir()) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr",
                                                      "splits_final.json"]
    written.clear()
    with pytest.raises(OSError, match="No space left"):
        export(data, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


@pytest.mark.parametrize("damage, message", [
    ("value", r"expanded-seed label .*vs_gk_2_GeodesicLabel.nii.gz holds values \[5\]; expected only 0"),
    ("grid", r"label .*vs_gk_2_GeodesicLabel.nii.gz has spacing \[0.5, 0.5, 3.0\] but image .*vs_gk_2_T2.nii.gz"),
    ("missing", r"1 file\(s\) missing: label .*vs_gk_2_GeodesicLabel.nii.gz"),
])
def test_bad_inputs_stop_before_writing(data, tmp_path, damage, message):
    path = data["geodesic_label"] / "vs_gk_2_GeodesicLabel.nii.gz"
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    if damage == "value":
        array[0, 0, 0] = 5
        write(array, path)
    elif damage == "grid":
        write(array, path, spacing=(0.5, 0.5, 3.0))
    else:
        path.unlink()
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        export(data, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--dataset_id", "1000", r"--dataset_id must be an integer in 1..999"),
    ("--dataset_name", "VS Tiny", r"--dataset_name must be letters, digits"),
])
def test_bad_flags(data, tmp_path, flag, value, message):
    with pytest.raises(ValueError, match=message):
        export(data, tmp_path / "raw", flag, value)


def test_scores_an_nnunet_prediction_folder(data, tmp_path):
    """nnU-Net writes <case>.nii.gz per test case; scores.py reads that folder with --prediction_dir."""
    (tmp_path / "split.csv").write_text("vs_gk_1,inference\nvs_gk_2,inference\nvs_gk_3,training\n")
    folder = tmp_path / "nnunet_pred"
    label1 = sitk.GetArrayFromImage(sitk.ReadImage(str(data["label_crop"] / "vs_gk_1_Label.nii.gz")))
    label2 = sitk.GetArrayFromImage(sitk.ReadImage(str(data["label_crop"] / "vs_gk_2_Label.nii.gz")))
    half = label2.copy()
    half[: half.shape[0] // 2] = 0  # keep the lesion's upper half: recall = kept / all
    write(label1, folder / "vs_gk_1.nii.gz")
    write(half, folder / "vs_gk_2.nii.gz")
    out = scores.main(["--prediction_dir", str(folder), "--dataset_split", str(tmp_path / "split.csv"),
                       "--phase", "inference", "--path_labels", str(data["label_crop"]), "--label_postfix", "Label"])
    assert out == folder / "results_inference.csv"
    table = pd.read_csv(out).set_index("subject")
    assert list(table.index) == ["vs_gk_1", "vs_gk_2", "mean", "std"]
    assert table.loc["vs_gk_1", "dice"] == 1.0 and table.loc["vs_gk_1", "hd95"] == 0.0
    recall = half.sum() / label2.sum()
    assert 0 < recall < 1
    assert table.loc["vs_gk_2", "precision"] == pytest.approx(1.0)
    assert table.loc["vs_gk_2", "recall"] == pytest.approx(recall)
    assert table.loc["vs_gk_2", "dice"] == pytest.approx(2 * recall / (1 + recall))
    # the same columns as inference.py's results, so both go in one table
    reference = scoring.summarize(scoring.score_cases([("x", folder / "vs_gk_1.nii.gz",
                                                       data["label_crop"] / "vs_gk_1_Label.nii.gz")]))[0]
    assert list(pd.read_csv(out).columns) == list(reference.columns)
    with pytest.raises(FileNotFoundError, match=r"1 file\(s\) to score are missing: .*vs_gk_2.nii.gz"):
        (folder / "vs_gk_2.nii.gz").unlink()
        scores.main(["--prediction_dir", str(folder), "--dataset_split", str(tmp_path / "split.csv"),
                     "--path_labels", str(data["label_crop"])])
    with pytest.raises(FileNotFoundError, match=r"--prediction_dir .*nowhere does not exist"):
        scores.main(["--prediction_dir", str(tmp_path / "nowhere"), "--dataset_split", str(tmp_path / "split.csv"),
                     "--path_labels", str(data["label_crop"])])


def test_full_labels_beyond_0_and_1_are_exported_binarised_with_a_warning(data, tmp_path, capsys):
    """Stage 0's seeds (0/1/2) given as full labels: binarised (the unknown voxels become lesion),
    and one warning says so and names --labels seeds; 0/1 labels say nothing."""
    export(data, tmp_path / "raw", "--labels", "full", "--dataset_name", "VSFull")
    assert "WARNING" not in capsys.readouterr().out
    export(data, tmp_path / "raw2", "--labels", "full", "--dataset_name", "VSSeeds", "--path_labels",
           str(data["geodesic_label"]), "--label_postfix", "GeodesicLabel")
    warnings = [line.split(" WARNING ", 1)[1] for line in capsys.readouterr().out.splitlines() if " WARNING " in line]
    first = data["geodesic_label"] / "vs_gk_1_GeodesicLabel.nii.gz"
    assert warnings == [f"3 of 3 full label(s) hold values other than 0 and 1 (e.g. {first}: [0, 1, 2]); they are "
                        "exported binarised, every value above 0 the lesion; if these are stage 0's expanded seeds "
                        "(0/1/2), pass --labels seeds"]
