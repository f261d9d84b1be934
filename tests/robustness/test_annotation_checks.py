"""7-point annotations and expanded seeds with values or points that cannot be right are refused."""
from __future__ import annotations

import re

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import geodesic_args, load_script, one_line, stage1_args
from synth import write

import train_gatedcrfloss3d22d_multiview_varianceloss as stage1

GEODESIC = load_script("data/VS/generate_geodesic_labels.py")

# ------------------------------------------------------------------------ annotations
def _annotation(p):
    path = p["annotation_7points"] / "vs_gk_1_7points.nii.gz"
    return path, sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.mark.parametrize("case, message", [
    ("unexpected", r"vs_gk_1: annotation {path}: annotation holds unexpected values \[1\.5\]; expected only "
                   r"0 \(unlabelled\), 1/3 \(background extreme points\), 2/4 \(foreground point\)"),
    ("no_foreground", r"vs_gk_1: annotation {path}: lesion 1 has background points \(value 1\) but no foreground "
                      r"point \(value 2\); add its foreground point"),
    ("outside", r"image {image} has size \[32, 32, 16\] but annotation {path} has \[32, 32, 20\]; they "
                r"must be on the same voxel grid \(annotated points may lie outside the image\): resample one "
                r"of them onto the other's grid"),
    ("lesions", r"vs_gk_1: annotation {path}: annotation holds values \[5\]: more lesions than supported "
                r"\(at most 2: points 1,2 and 3,4\)"),
])
def test_bad_annotation_named_with_its_subject(data, tmp_path, case, message):
    path, anno = _annotation(data)
    if case == "unexpected":
        anno = anno.astype(np.float32)
        anno[0, 0, 0] = 1.5
    elif case == "no_foreground":
        anno[anno == 2] = 0
    elif case == "outside":  # a grid 4 slices longer, the foreground point beyond the image's last slice
        anno = np.concatenate([anno, np.zeros((4, 32, 32), anno.dtype)])
        anno[anno == 2] = 0
        anno[18, 16, 16] = 2
    else:
        anno[0, 0, 0] = 5
    write(anno, path)
    with pytest.raises(ValueError) as err:
        GEODESIC.main(geodesic_args(data, tmp_path / "geo"))
    image = data["image_crop"] / "vs_gk_1_T2.nii.gz"
    assert re.fullmatch(message.format(path=re.escape(str(path)), image=re.escape(str(image))), one_line(err))


def test_expanded_seeds_hold_only_0_1_2(data, tmp_path):
    """The expanded seeds the training reads are checked too: only 0, 1 and 2."""
    path = data["geodesic_label"] / "vs_gk_2_GeodesicLabel.nii.gz"
    seeds = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    seeds[0, 0, :3] = (3, 7, 255)
    write(seeds, path)
    with pytest.raises(ValueError) as err:
        stage1.main(stage1_args(data, tmp_path / "run"))
    assert one_line(err) == (f"expanded-seed label {path} holds values [3, 7, 255]; expected only [0, 1, 2] "
                             "(background, foreground, unknown): re-run the geodesic expansion")
