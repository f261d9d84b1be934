"""Messages of issue 22 that misled (each a one-line error or warning that says what to do)."""
from __future__ import annotations

import pytest
from helpers import load_script, one_line
from synth import make_vs_dataset

P2A = load_script("data/points_to_annotation.py")
EXPORT = load_script("data/export_nnunet.py")

ROWS = "fg,16,16,8\nbg-1,10,16,8\nbg-2,22,16,8\nbg-3,16,10,8\nbg-4,16,22,8\nbg-5,16,16,4\nbg-6,16,16,12\n"


def test_fcsv_with_a_byte_order_mark(tmp_path):
    p = make_vs_dataset(tmp_path, 1, 0, 0)
    lines = ["# Markups fiducial file version = 4.11", "# CoordinateSystem = LPS",
             "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID"]
    import SimpleITK as sitk
    image = sitk.ReadImage(str(p["image_crop"] / "vs_gk_1_T2.nii.gz"))
    for n, row in enumerate(ROWS.splitlines()):
        label, *index = row.split(",")
        x, y, z = image.TransformIndexToPhysicalPoint([int(v) for v in index])
        lines.append(f"vtkMRMLMarkupsFiducialNode_{n},{x!r},{y!r},{z!r},0,0,0,1,1,1,0,{label},,node")
    points = tmp_path / "vs_gk_1.fcsv"
    points.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    out = P2A.main(["--points", str(points), "--path_images", str(p["image_crop"]), "--path_anno_7points",
                    str(tmp_path / "ann")])
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(out[0])))[8, 16, 16] == 2


def test_a_point_file_postfix_is_suggested(tmp_path):
    p = make_vs_dataset(tmp_path, 1, 0, 0)
    points = tmp_path / "vs_gk_1_clicks.csv"
    points.write_text("label,x,y,z\n" + ROWS)
    with pytest.raises(FileNotFoundError) as err:
        P2A.main(["--points", str(points), "--path_images", str(p["image_crop"]), "--path_anno_7points",
                  str(tmp_path / "ann"), "--csv_space", "voxel"])
    assert one_line(err) == (f"image file not found: {p['image_crop']}/vs_gk_1_clicks_T2.nii.gz; the point file "
                             "vs_gk_1_clicks.csv was read as subject 'vs_gk_1_clicks': if 'clicks' is a postfix of "
                             "the point files, pass --points_postfix clicks")


def test_nnunet_export_warns_without_validation_cases(tmp_path, capsys):
    p = make_vs_dataset(tmp_path, 2, 0, 1)
    EXPORT.main(["--dataset_split", str(p["split"]), "--path_images", str(p["image_crop"]),
                 "--path_geodesic_labels", str(p["geodesic_label"]), "--output_dir", str(tmp_path / "raw"),
                 "--dataset_id", "5", "--dataset_name", "NoVal"])
    out = capsys.readouterr()
    assert [line.split(" WARNING ", 1)[1] for line in (out.out + out.err).splitlines() if " WARNING " in line] == [
        f"split {p['split']} has no validation case: splits_final.json gets \"val\": [] and nnU-Net validates on "
        "nothing; add validation cases to the split (splits/make_split.py --ratios)"]


def test_numbered_background_labels_are_explained(tmp_path):
    """``bg1`` ... ``bg6``: the number after bg names the lesion, so bg2-bg6 are lesions 2-6."""
    p = make_vs_dataset(tmp_path, 1, 0, 0)
    points = tmp_path / "vs_gk_1.csv"
    rows = ROWS.replace("bg-", "bg")
    points.write_text("label,x,y,z\n" + rows)
    with pytest.raises(ValueError) as err:
        P2A.main(["--points", str(points), "--path_images", str(p["image_crop"]), "--path_anno_7points",
                  str(tmp_path / "ann"), "--csv_space", "voxel"])
    assert one_line(err) == (
        "vs_gk_1: lesion 1 has 1 background and 1 foreground point(s) (point 1 ('fg'), point 2 ('bg1')); expected "
        "exactly 6 and 1; 'bg2', 'bg3', 'bg4', 'bg5', 'bg6' were read as lesions 2-6 (a number right after bg/fg "
        "names the lesion), which have no foreground point: label the six background points of lesion 1 bg-1 ... "
        f"bg-6 (or bg), those of lesion 2 bg2-1 ... bg2-6 [point file {points}]")
    assert not (tmp_path / "ann").exists()
