"""Bad input files stop every script with one line naming the file and what to do, before any
output: the split file, missing files (all listed at once), NaN/Inf voxels, damaged NIfTI files."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import a_model, geodesic_args, inference_args, load_script, one_line, stage1_args
from synth import blob_case, write

import inference
import train_gatedcrfloss3d22d_multiview_varianceloss as stage1

GEODESIC = load_script("data/VS/generate_geodesic_labels.py")

def run_reader(script: str, data, tmp_path) -> None:
    """Run one of the scripts that read the images: stage 1, inference or the geodesic expansion."""
    if script == "stage1":
        stage1.main(stage1_args(data, tmp_path / "run"))
    elif script == "inference":
        inference.main(inference_args(data, a_model(tmp_path / "m").parents[2]))
    else:
        GEODESIC.main(geodesic_args(data, tmp_path / "geo"))


# ------------------------------------------------------------------------ the split file
@pytest.mark.parametrize("content, error, message", [
    (None, FileNotFoundError, r"split file not found: {path} \(pass --dataset_split with an existing CSV\)"),
    (b"\xff\xfe\xfa\x00,training\n", ValueError, r"cannot read split file {path}: .*; expected rows 'subject,phase'"),
    (b"vs_gk_1,training\nvs_gk_2,testing\nvs_gk_3,validation\n", ValueError,
     r"split file {path} has unknown phase\(s\) \['testing'\]; use one of \['training', 'validation', 'inference'\]"),
    (b"vs_gk_1,training\nvs_gk_2,training\nvs_gk_1,validation\n", ValueError,
     r"split file {path} lists subject\(s\) more than once: \['vs_gk_1'\]; keep one row per subject"),
])
def test_bad_split_file_stops_before_any_folder(data, tmp_path, content, error, message):
    split = tmp_path / "bad_split.csv"
    if content is not None:
        split.write_bytes(content)
    args = stage1_args(data, tmp_path / "run")
    args[args.index("--dataset_split") + 1] = str(split)
    with pytest.raises(error) as err:
        stage1.main(args)
    assert re.fullmatch(message.format(path=re.escape(str(split))), one_line(err))
    assert not (tmp_path / "run").exists()  # checked before any folder is made


# ------------------------------------------------------------------------ missing files
def test_missing_files_listed_in_one_error(data, tmp_path):
    gone = [data["image_crop"] / "vs_gk_1_T2.nii.gz", data["geodesic_label"] / "vs_gk_2_GeodesicLabel.nii.gz",
            data["label_crop"] / "vs_gk_3_Label.nii.gz"]  # two training files, one validation file
    kept = {path: path.read_bytes() for path in gone}
    for path in gone:
        path.unlink()
    with pytest.raises(FileNotFoundError) as err:
        stage1.main(stage1_args(data, tmp_path / "run"))
    message = one_line(err)
    assert message.startswith(f"3 file(s) of the subjects listed in {data['split']} are missing: ")
    for what, path in zip(("image", "expanded-seed label", "label"), gone):
        assert f"{what} {path}" in message
    assert message.endswith("Check --path_images/--image_postfix or --path_geodesic_labels/"
                            "--geodesic_label_postfix or --path_labels/--label_postfix or the split. Without full "
                            "masks, pass --val_metric seed_dice (checkpoints chosen by the expanded seeds).")
    assert not (tmp_path / "run").exists()
    # only the seeds missing: no word of the labels
    for path in (gone[0], gone[2]):
        path.write_bytes(kept[path])
    with pytest.raises(FileNotFoundError) as err:
        stage1.main(stage1_args(data, tmp_path / "run"))
    assert one_line(err).endswith("Check --path_geodesic_labels/--geodesic_label_postfix or the split.")
    gone[0].unlink()   # as the checks below expect

    # inference: the missing inference image
    a_model(tmp_path / "m")
    (data["image_crop"] / "vs_gk_4_T2.nii.gz").unlink()
    with pytest.raises(FileNotFoundError) as err:
        inference.main(inference_args(data, tmp_path / "m"))
    assert one_line(err) == (f"1 file(s) of the subjects listed in {data['split']} are missing: image "
                             f"{data['image_crop'] / 'vs_gk_4_T2.nii.gz'}. Check --path_images/--image_postfix "
                             "or the split.")

    # geodesic expansion: a missing image and a missing annotation, named together
    (data["annotation_7points"] / "vs_gk_2_7points.nii.gz").unlink()
    with pytest.raises(FileNotFoundError) as err:
        GEODESIC.main(geodesic_args(data, tmp_path / "geo"))
    assert one_line(err) == (f"2 file(s) missing: image {gone[0]}; annotation "
                             f"{data['annotation_7points'] / 'vs_gk_2_7points.nii.gz'} (check --path_images/"
                             "--image_postfix and --path_anno_7points/--anno_7points_postfix)")


# ------------------------------------------------------------------------ NaN / Inf voxels
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("script", ["stage1", "inference", "geodesic"])
def test_nan_or_inf_voxels_refused(data, tmp_path, bad, script):
    subject = "vs_gk_4" if script == "inference" else "vs_gk_1"
    path = data["image_crop"] / f"{subject}_T2.nii.gz"
    image, _ = blob_case(seed=1)
    image[3, 4, 5] = bad
    image[3, 4, 6] = -bad
    write(image, path)
    with pytest.raises(ValueError) as err:
        run_reader(script, data, tmp_path)
    assert one_line(err) == (f"image file {path} has 2 NaN or Inf voxel(s) (NaN/Inf values are not allowed); "
                             "fix or re-export it")
    assert not (tmp_path / "run").exists() and not list(tmp_path.rglob("*_seg.nii.gz"))
    assert not list((tmp_path / "geo").rglob("*.nii.gz"))


# ------------------------------------------------------------------------ damaged NIfTI files
def _truncate(path: Path) -> None:
    """Cut the last fifth of a file: the header stays readable, voxels are missing."""
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 4 // 5])


@pytest.mark.parametrize("script, folder, name, what", [
    ("stage1", "geodesic_label", "vs_gk_2_GeodesicLabel.nii.gz", "expanded-seed label"),  # integer labels too
    ("stage1", "image_crop", "vs_gk_1_T2.nii.gz", "image"),
    ("inference", "image_crop", "vs_gk_4_T2.nii.gz", "image"),
    ("geodesic", "annotation_7points", "vs_gk_1_7points.nii.gz", "annotation"),
])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
@pytest.mark.filterwarnings("ignore:Error loading image with SimpleITK")
def test_unreadable_or_truncated_nifti_refused(data, tmp_path, script, folder, name, what, damage):
    path = data[folder] / name
    if damage == "truncated":
        _truncate(path)
        assert sitk.ReadImage(str(path)).GetSize() == (32, 32, 16)  # SimpleITK alone reads zeros without a word
        reason = "Compressed file ended before the end-of-stream marker was reached"
    else:
        path.write_bytes(b"\x00" * 100)
        reason = ".+"
    with pytest.raises(ValueError) as err:
        run_reader(script, data, tmp_path)
    assert re.fullmatch(rf"cannot read {what} file {re.escape(str(path))} \(unreadable or truncated: {reason}\); "
                        r"re-create or re-download it", one_line(err))
    assert not (tmp_path / "run").exists() and not list(tmp_path.rglob("*_seg.nii.gz"))
