"""A subject name is a file-name part (issue 22 class): names that would read or write outside
their folder, or that a split cannot keep, are refused in one line; a name long enough that a
temporary file name would pass 255 bytes still works when the final name is legal."""
from __future__ import annotations

import os

import pytest
from helpers import a_model, load_script, one_line
from synth import make_vs_dataset

import inference
from utilities.grid import check_subject_name, find_subject_file, subject_path
from utilities.io import save_text

make_split = load_script("splits/make_split.py")
EXPORT = load_script("data/export_nnunet.py")


@pytest.mark.parametrize("name, message", [
    ("../evil", r"subject name '../evil' holds '/', which cannot be part of a file name \(a path separator would "
                r"read or write outside the folder\); rename the subject"),
    ("a\\b", r"holds '\\\\', which cannot be part"),
    ("..", r"subject name '..' cannot be part of a file name; rename the subject"),
    (" s1", r"subject name ' s1' has a leading or trailing space, which split files cannot keep"),
    ("s1\n", r"holds '\\n'"),
])
def test_unsafe_names_refused_by_every_path_builder(tmp_path, name, message):
    for build in (lambda: check_subject_name(name), lambda: subject_path(tmp_path, name, "T2"),
                  lambda: find_subject_file(tmp_path, name, "T2")):
        with pytest.raises(ValueError, match=message) as err:
            build()
        one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_long_name_written_atomically(tmp_path):
    name = "s" * 230 + "_T2_seg.nii.gz"  # 244 bytes: legal; its temporary name would have been 270
    save_text("x", tmp_path / name)
    assert os.listdir(tmp_path) == [name]
    with pytest.raises(ValueError, match=r"is 256 bytes long, more than the 255 a file system allows"):
        save_text("x", tmp_path / ("s" * 249 + ".nii.gz"))


def test_inference_and_export_with_230_character_subjects(tmp_path):
    p = make_vs_dataset(tmp_path, 1, 1, 1)
    long = "v" * 230
    for folder, postfix in (("image_crop", "T2"), ("label_crop", "Label"), ("geodesic_label", "GeodesicLabel")):
        (p[folder] / f"vs_gk_3_{postfix}.nii.gz").rename(p[folder] / f"{long}_{postfix}.nii.gz")
    p["split"].write_text(f"vs_gk_1,training\nvs_gk_2,validation\n{long},inference\n")
    a_model(tmp_path / "m")
    written = inference.main(["--model_dir", str(tmp_path / "m"), "--dataset_split", str(p["split"]),
                              "--path_images", str(p["image_crop"]), "--spatial_shape", "32", "32", "16",
                              "--device", "cpu"])
    assert [w.name for w in written] == [f"{long}_T2_seg.nii.gz"] and written[0].is_file()
    root = EXPORT.main(["--dataset_split", str(p["split"]), "--path_images", str(p["image_crop"]),
                        "--path_geodesic_labels", str(p["geodesic_label"]), "--output_dir", str(tmp_path / "raw"),
                        "--dataset_id", "3", "--dataset_name", "Long"])
    assert (root / "imagesTs" / f"{long}_0000.nii.gz").is_file()


def test_make_split_refuses_names_a_split_cannot_keep(tmp_path):
    images = tmp_path / "image"
    images.mkdir()
    for name in ("a", " b"):
        (images / f"{name}_Flair.nii.gz").write_bytes(b"")
    with pytest.raises(ValueError) as err:
        make_split.main(["--images_dir", str(images), "--output", str(tmp_path / "split.csv")])
    assert one_line(err) == (f"--images_dir {images}: subject name ' b' has a leading or trailing space, which split "
                             "files cannot keep; rename the subject (and its files)")
    assert not (tmp_path / "split.csv").exists()
