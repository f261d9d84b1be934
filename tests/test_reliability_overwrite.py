"""Nothing is replaced without being asked (issue 22 class): every writer of a user's files
refuses an existing output without --overwrite, and replaces it with it."""
from __future__ import annotations

import pytest
from helpers import load_script, one_line
from synth import make_vs_dataset

make_split = load_script("splits/make_split.py")
P2A = load_script("data/points_to_annotation.py")
EXPORT = load_script("data/export_nnunet.py")


def test_make_split_needs_overwrite(tmp_path):
    images = tmp_path / "image"
    images.mkdir()
    for name in ("a", "b", "c"):
        (images / f"{name}_Flair.mha").write_bytes(b"")  # any image format names a subject
    out = tmp_path / "split.csv"
    out.write_text("mine,training\n")
    with pytest.raises(FileExistsError) as err:
        make_split.main(["--images_dir", str(images), "--output", str(out), "--ratios", "0.4", "0.3", "0.3"])
    assert one_line(err) == f"--output {out} exists; pass --overwrite to replace it, or choose another --output"
    assert out.read_text() == "mine,training\n"
    make_split.main(["--images_dir", str(images), "--output", str(out), "--ratios", "0.4", "0.3", "0.3",
                     "--overwrite"])
    assert sorted(line.split(",")[0] for line in out.read_text().splitlines()) == ["a", "b", "c"]


def test_points_to_annotation_needs_overwrite(tmp_path):
    p = make_vs_dataset(tmp_path, 1, 0, 0)
    points = tmp_path / "vs_gk_1.csv"
    points.write_text("label,x,y,z\nfg,16,16,8\nbg-1,10,16,8\nbg-2,22,16,8\nbg-3,16,10,8\nbg-4,16,22,8\n"
                      "bg-5,16,16,4\nbg-6,16,16,12\n")
    target = p["annotation_7points"] / "vs_gk_1_7points.nii.gz"
    before = target.read_bytes()
    args = ["--points", str(points), "--path_images", str(p["image_crop"]), "--path_anno_7points",
            str(p["annotation_7points"]), "--csv_space", "voxel"]
    with pytest.raises(FileExistsError) as err:
        P2A.main(args)
    assert one_line(err) == (f"1 annotation(s) exist already, e.g. {target}; pass --overwrite to replace them, "
                             "or choose another --path_anno_7points")
    assert target.read_bytes() == before
    assert P2A.main([*args, "--overwrite"]) == [target] and target.read_bytes() != before


def test_nnunet_export_refuses_a_second_dataset_of_the_same_id(tmp_path):
    p = make_vs_dataset(tmp_path, 1, 1, 0)
    other = tmp_path / "raw" / "Dataset007_Other"
    other.mkdir(parents=True)
    args = ["--dataset_split", str(p["split"]), "--path_images", str(p["image_crop"]), "--path_geodesic_labels",
            str(p["geodesic_label"]), "--output_dir", str(tmp_path / "raw"), "--dataset_id", "7",
            "--dataset_name", "VSTiny"]
    with pytest.raises(FileExistsError) as err:
        EXPORT.main(args)
    assert one_line(err) == (f"nnU-Net dataset id 7 is taken by {other} (nnU-Net could not tell it from "
                             "Dataset007_VSTiny); pass --overwrite to replace it, or another --dataset_id")
    assert sorted(x.name for x in (tmp_path / "raw").iterdir()) == ["Dataset007_Other"]
    EXPORT.main([*args, "--overwrite"])
    assert sorted(x.name for x in (tmp_path / "raw").iterdir()) == ["Dataset007_VSTiny"]
