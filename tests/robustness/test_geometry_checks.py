"""Files that are not on their image's voxel grid are refused, in training, stage 0 and scoring."""
from __future__ import annotations

import re

import pytest
import SimpleITK as sitk
from helpers import geodesic_args, load_script, one_line, stage1_args
from synth import write

import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
from utilities import scores
from utilities.data.layout import RunLayout

GEODESIC = load_script("data/VS/generate_geodesic_labels.py")

# ------------------------------------------------------------------------ geometry
PERMUTED = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize("which, change, message", [
    # one check (utilities.data.grid.check_same_grid), one message:
    # "<file> has <property> <value> but image <file> has ..."
    ("seeds", "shape", r"expanded-seed label {path} has size \[32, 32, 12\] but image {image} has \[32, 32, 16\]; "
                       r"resample it onto the image's voxel grid"),
    ("seeds", "spacing", r"expanded-seed label {path} has spacing \[0\.5, 0\.5, 3\.0\] but image {image} has "
                         r"\[0\.5, 0\.5, 1\.5\]; resample it onto the image's voxel grid"),
    ("label", "orientation", r"label {path} has orientation \[0\.0, 1\.0, 0\.0, 1\.0, 0\.0, 0\.0, 0\.0, 0\.0, 1\.0\] "
                             r"but image {image} has \[1\.0, 0\.0, 0\.0, 0\.0, 1\.0, 0\.0, 0\.0, 0\.0, 1\.0\]; "
                             r"resample it onto the image's voxel grid"),
    ("label", "origin", r"label {path} has origin \[1\.0, -2\.0, 9\.0\] but image {image} has \[1\.0, -2\.0, 3\.0\]; "
                        r"resample it onto the image's voxel grid"),
    ("anno", "shape", r"image {image} has size \[32, 32, 16\] but annotation {path} has \[32, 32, 12\]; they must "
                      r"be on the same voxel grid \(annotated points may lie outside the image\): resample one of "
                      r"them onto the other's grid"),
    ("anno", "spacing", r"image {image} has spacing \[0\.5, 0\.5, 1\.5\] but annotation {path} has "
                        r"\[0\.5, 0\.5, 3\.0\]; resample one of them"),
    # x and y swapped on a square grid: the image's own voxels in another index order, reordered exactly
    ("anno", "orientation", r"vs_gk_1: annotation {path} holds the image's voxels in another index order \(axes "
                            r"\[1, 0, 2\], reversed \[False, False, False\]\), as when it was saved reoriented; pass "
                            r"--reorder_annotation to reorder it exactly \(no resampling\)"),
])
def test_files_on_another_grid_refused(data, tmp_path, which, change, message):
    folder, postfix, subject = {"seeds": ("geodesic_label", "GeodesicLabel", "vs_gk_1"),
                                "label": ("label_crop", "Label", "vs_gk_3"),
                                "anno": ("annotation_7points", "7points", "vs_gk_1")}[which]
    path = data[folder] / f"{subject}_{postfix}.nii.gz"
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    kwargs = {"shape": {}, "spacing": {"spacing": (0.5, 0.5, 3.0)}, "orientation": {"direction": PERMUTED},
              "origin": {"origin": (1.0, -2.0, 9.0)}}[change]
    write(array[:12] if change == "shape" else array, path, **kwargs)
    image = data["image_crop"] / f"{subject}_T2.nii.gz"
    with pytest.raises(ValueError) as err:
        if which == "anno":
            GEODESIC.main(geodesic_args(data, tmp_path / "geo"))
        else:
            stage1.main(stage1_args(data, tmp_path / "run"))
    assert re.fullmatch(message.format(path=re.escape(str(path)), image=re.escape(str(image))), one_line(err))
    assert not (tmp_path / "run").exists() and not list((tmp_path / "geo").rglob("*.nii.gz"))


def test_scoring_refuses_prediction_on_another_grid(data, tmp_path):
    """Scoring: a prediction on another grid than its label would give wrong distances in mm."""
    label = data["label_crop"] / "vs_gk_4_Label.nii.gz"
    pred = RunLayout(tmp_path / "m", "U_Net2D5").prediction("vs_gk_4", "T2")
    write(sitk.GetArrayFromImage(sitk.ReadImage(str(label))), pred, spacing=(0.5, 0.5, 3.0))
    with pytest.raises(ValueError) as err:
        scores.main(["--model_dir", str(tmp_path / "m"), "--network", "U_Net2D5", "--dataset_split",
                     str(data["split"]), "--path_labels", str(data["label_crop"])])
    assert one_line(err) == (f"prediction {pred} has spacing [0.5, 0.5, 3.0] but label {label} has [0.5, 0.5, 1.5]; "
                             "predict on the images that match the labels")
    assert not (tmp_path / "m" / "U_Net2D5" / "results_inference.csv").exists()
