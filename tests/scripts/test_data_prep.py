"""Data preparation: VS DICOM conversion and cropping, BraTS gathering, split files."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from helpers import ROOT, load_script, one_line

from utilities.data.splits import read_split
from utilities.workflow.cli import run_main

convert = load_script("data/VS/convert.py")
image_crop = load_script("data/VS/image_crop.py")
merge = load_script("data/BraTS/merge_and_move.py")
make_split = load_script("splits/make_split.py")


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix about x, then y, then z (radians)."""
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


DIRECTION = tuple(rotation(0.3, -0.2, 0.5).ravel())


def make_volume(array_zyx: np.ndarray, spacing=(0.5, 0.7, 1.5), origin=(10.0, -20.0, 30.0),
                direction=DIRECTION) -> sitk.Image:
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


# ----------------------------------------------------------------------------- VS: DICOM -> NIfTI

def write_dicom_series(image: sitk.Image, folder: Path, uid: str, description: str, modality: str = "MR") -> None:
    """One file per slice, file names in scrambled order (the reader must sort by position)."""
    folder.mkdir(parents=True)
    d = image.GetDirection()
    sx, sy, sz = image.GetSpacing()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    depth = image.GetDepth()
    for i in range(depth):
        slice_ = image[:, :, i]
        tags = {
            "0008|0060": modality,
            "0008|103e": description,
            "0020|000e": uid,
            "0008|0018": f"{uid}.{i + 1}",
            "0020|0037": "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0020|0032": "\\".join(f"{v:.10f}" for v in image.TransformIndexToPhysicalPoint((0, 0, i))),
            "0028|0030": f"{sy}\\{sx}",
            "0018|0050": str(sz),
            "0020|0013": str(i + 1),
        }
        for key, value in tags.items():
            slice_.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"IM{(i * 3) % depth:03d}.dcm"))
        writer.Execute(slice_)


def make_patient(root: Path, number: int, t2: bool = True, t1_modality: str = "MR") -> sitk.Image:
    """``VS-SEG-<n>/<study>/<series>`` with a T1 series and (optionally) a T2 series; returns the T2."""
    rng = np.random.default_rng(number)
    study = root / f"VS-SEG-{number:03d}" / "1.000000-NA-12345"
    t2_image = make_volume(rng.integers(0, 2000, (5, 6, 8)).astype(np.int16), origin=(number, -20.0, 30.0))
    t1_image = make_volume(rng.integers(0, 2000, (4, 6, 8)).astype(np.int16))
    write_dicom_series(t1_image, study / "1.000000-t1_se_tra_Gd-111", f"1.2.826.0.1.3680043.2.1125.{number}.1",
                       "t1_se_tra_Gd", t1_modality)
    if t2:
        write_dicom_series(t2_image, study / "2.000000-t2_ci3d_tra-222", f"1.2.826.0.1.3680043.2.1125.{number}.2",
                           "t2_ci3d_tra")
    return t2_image


def test_convert_writes_t2_with_source_geometry(tmp_path):
    source = tmp_path / "Vestibular-Schwannoma-SEG"
    expected = {n: make_patient(source, n) for n in (1, 12)}
    (source / "LICENSE").write_text("licence text")
    out = tmp_path / "image"
    result = convert.main(["--input", str(source), "--output", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["vs_gk_12_T2.nii.gz", "vs_gk_1_T2.nii.gz"]
    assert [p.name for p in result.written] == ["vs_gk_1_T2.nii.gz", "vs_gk_12_T2.nii.gz"]
    for n, reference in expected.items():
        nifti = sitk.ReadImage(str(out / f"vs_gk_{n}_T2.nii.gz"))
        assert nifti.GetSize() == (8, 6, 5)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(nifti), sitk.GetArrayFromImage(reference))
        np.testing.assert_allclose(nifti.GetSpacing(), reference.GetSpacing(), atol=1e-4)
        np.testing.assert_allclose(nifti.GetDirection(), reference.GetDirection(), atol=1e-5)
        np.testing.assert_allclose(nifti.GetOrigin(), reference.GetOrigin(), atol=1e-4)


def test_convert_rejects_non_mr_series(tmp_path):
    source = tmp_path / "VS"
    make_patient(source, 1)
    make_patient(source, 2, t1_modality="CT")
    with pytest.raises(ValueError, match=r"VS-SEG-002.*1.000000-t1_se_tra_Gd-111.*not an MR series"):
        convert.main(["--input", str(source), "--output", str(tmp_path / "out")])


def test_convert_missing_t2_is_an_error_or_skipped(tmp_path, capsys):
    source = tmp_path / "VS"
    make_patient(source, 1)
    make_patient(source, 2, t2=False)
    make_patient(source, 3, t1_modality="SEG")
    with pytest.raises(ValueError, match=r"VS-SEG-002 has no T2 series"):
        convert.main(["--input", str(source), "--output", str(tmp_path / "out")])

    capsys.readouterr()
    result = convert.main(["--input", str(source), "--output", str(tmp_path / "out"), "--skip_invalid"])
    assert [p.name for p in result.written] == ["vs_gk_1_T2.nii.gz"]
    assert [folder.name for folder, _ in result.invalid] == ["VS-SEG-002", "VS-SEG-003"]
    assert "not an MR series" in result.invalid[1][1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["vs_gk_1_T2.nii.gz"]
    log = capsys.readouterr().out  # the console log handler writes to stdout
    assert "skipped 2 invalid patient(s)" in log and "VS-SEG-003" in log


def test_convert_rejects_unexpected_folder(tmp_path):
    source = tmp_path / "VS"
    make_patient(source, 1)
    (source / "notes").mkdir()
    with pytest.raises(ValueError, match="notes"):
        convert.main(["--input", str(source), "--output", str(tmp_path / "out")])


# ----------------------------------------------------------------------------- VS: cropping

def write_vs_case(data_dir: Path, subject: str, shape_zyx, box_zyx, seed: int = 0) -> tuple[sitk.Image, sitk.Image]:
    """Image (float32 noise) and label (box of ones, slices ``box_zyx``) with non-identity geometry."""
    rng = np.random.default_rng(seed)
    image = make_volume(rng.uniform(5.0, 100.0, shape_zyx).astype(np.float32), spacing=(0.4, 0.5, 1.5))
    label_arr = np.zeros(shape_zyx, np.uint8)
    label_arr[box_zyx] = 1
    label = make_volume(label_arr, spacing=(0.4, 0.5, 1.5))
    for sub, img, postfix in (("image", image, "T2"), ("label", label, "Label")):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(img, str(data_dir / sub / f"{subject}_{postfix}.nii.gz"))
    return image, label


def write_split(path: Path, subjects) -> Path:
    path.write_text("".join(f"{s},training\n" for s in subjects))
    return path


def test_crop_box_start_is_centred_and_clamped():
    assert image_crop.crop_box_start([10], [13], [100], [8]) == (7,)     # centre 11 -> 11 - 4
    assert image_crop.crop_box_start([0], [1], [100], [8]) == (0,)      # clamped low
    assert image_crop.crop_box_start([97], [99], [100], [8]) == (92,)   # clamped high
    with pytest.raises(ValueError, match="smaller than the crop"):
        image_crop.crop_box_start([0], [1], [4], [8])


def test_image_crop_shapes_tumour_and_world_coordinates(tmp_path):
    data = tmp_path / "VS"
    crop = (6, 10, 12)  # z y x
    # larger than the box on every axis, tumour near the high x border (clamped box)
    big_img, big_lab = write_vs_case(data, "big", (9, 14, 20), np.s_[2:5, 3:7, 15:19], seed=1)
    # smaller than the box on z and x: padded
    small_img, small_lab = write_vs_case(data, "small", (4, 12, 7), np.s_[1:3, 5:8, 2:5], seed=2)
    split = write_split(tmp_path / "split.csv", ["big", "small"])
    stats = image_crop.main(["--data_dir", str(data), "--dataset_split", str(split), "--crop_size", *map(str, crop)])
    assert stats.min_image_shape == (4, 12, 7)
    assert stats.max_tumour_extent == (3, 4, 4)

    for subject, image, label, probe in (("big", big_img, big_lab, (16, 4, 3)),
                                         ("small", small_img, small_lab, (3, 6, 2))):
        image_c = sitk.ReadImage(str(data / "image_crop" / f"{subject}_T2.nii.gz"))
        label_c = sitk.ReadImage(str(data / "label_crop" / f"{subject}_Label.nii.gz"))
        assert image_c.GetSize() == label_c.GetSize() == crop[::-1]
        np.testing.assert_allclose(image_c.GetDirection(), DIRECTION, atol=1e-6)
        np.testing.assert_allclose(image_c.GetSpacing(), (0.4, 0.5, 1.5), atol=1e-6)
        # the whole tumour is inside the crop
        assert sitk.GetArrayFromImage(label_c).sum() == sitk.GetArrayFromImage(label).sum()
        # a voxel keeps its world coordinates and its value
        point = image.TransformIndexToPhysicalPoint(probe)
        index = image_c.TransformPhysicalPointToIndex(point)
        np.testing.assert_allclose(image_c.TransformIndexToPhysicalPoint(index), point, atol=1e-4)
        assert image_c[index] == pytest.approx(image[probe])
        assert label_c[index] == label[probe]

    # big: x box clamped to the high border: starts at 20 - 12 = 8; z centre (2+4)//2 = 3 -> 0
    big_c = sitk.ReadImage(str(data / "image_crop" / "big_T2.nii.gz"))
    np.testing.assert_allclose(big_c.GetOrigin(), big_img.TransformIndexToPhysicalPoint((8, 0, 0)), atol=1e-4)
    # small: padded by (z 1 low, 1 high), (x 2 low, 3 high); y centre (5+7)//2 = 6 -> start 1
    small_c = sitk.ReadImage(str(data / "image_crop" / "small_T2.nii.gz"))
    small_c_arr = sitk.GetArrayFromImage(small_c)
    assert small_c_arr[0].max() == pytest.approx(sitk.GetArrayFromImage(small_img).min())  # padded with the minimum
    np.testing.assert_allclose(small_c.GetOrigin(),
                               small_img.TransformContinuousIndexToPhysicalPoint((-2.0, 1.0, -1.0)), atol=1e-4)


def test_image_crop_default_size(tmp_path):
    data = tmp_path / "VS"
    image, label = write_vs_case(data, "vs_gk_1", (20, 140, 100), np.s_[5:15, 60:80, 40:60])
    split = write_split(tmp_path / "split.csv", ["vs_gk_1"])
    image_crop.main(["--data_dir", str(data), "--dataset_split", str(split)])
    label_c = sitk.ReadImage(str(data / "label_crop" / "vs_gk_1_Label.nii.gz"))
    assert label_c.GetSize() == (128, 128, 48)
    assert sitk.GetArrayFromImage(label_c).sum() == 10 * 20 * 20


def test_image_crop_lists_all_missing_files(tmp_path):
    data = tmp_path / "VS"
    write_vs_case(data, "a", (4, 5, 6), np.s_[1:2, 1:2, 1:2])
    (data / "label" / "a_Label.nii.gz").unlink()
    split = write_split(tmp_path / "split.csv", ["a", "b"])
    with pytest.raises(FileNotFoundError, match=r"3 file\(s\).*a_Label.*b_T2.*b_Label"):
        image_crop.main(["--data_dir", str(data), "--dataset_split", str(split), "--crop_size", "2", "2", "2"])


# ----------------------------------------------------------------------------- BraTS

def write_brats_case(root: Path, grade: str, case: str, shape_zyx=(5, 6, 7), seed: int = 0,
                     files=("flair", "seg")) -> tuple[sitk.Image, sitk.Image]:
    rng = np.random.default_rng(seed)
    flair = make_volume(rng.uniform(0, 500, shape_zyx).astype(np.float32), spacing=(1.0, 1.0, 1.0),
                        origin=(0.0, -239.0, 0.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    seg = make_volume(rng.choice(np.array([0, 0, 0, 1, 2, 4], np.uint8), shape_zyx), spacing=(1.0, 1.0, 1.0),
                      origin=(0.0, -239.0, 0.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    folder = root / grade / case
    folder.mkdir(parents=True)
    for kind, img in (("flair", flair), ("seg", seg)):
        if kind in files:
            sitk.WriteImage(img, str(folder / f"{case}_{kind}.nii.gz"))
    return flair, seg


def test_merge_and_move(tmp_path):
    root = tmp_path / "MICCAI_BraTS_2019_Data_Training"
    cases = {"BraTS19_A_1": write_brats_case(root, "HGG", "BraTS19_A_1", seed=1),
             "BraTS19_B_2": write_brats_case(root, "LGG", "BraTS19_B_2", seed=2)}
    (root / "HGG" / "notes.txt").write_text("not a case")
    dest = tmp_path / "BraTS"
    done = merge.main(["--original_dir", str(root), "--destination_dir", str(dest), "--expected_shape", "7", "6", "5"])
    assert done == ["BraTS19_A_1", "BraTS19_B_2"]
    assert sorted(p.name for p in (dest / "image").iterdir()) == ["BraTS19_A_1_Flair.nii.gz",
                                                                   "BraTS19_B_2_Flair.nii.gz"]
    assert sorted(p.name for p in (dest / "label").iterdir()) == ["BraTS19_A_1_Label.nii.gz",
                                                                   "BraTS19_B_2_Label.nii.gz"]
    for case, (_flair, seg) in cases.items():
        grade = "HGG" if case == "BraTS19_A_1" else "LGG"
        copied = dest / "image" / f"{case}_Flair.nii.gz"
        assert copied.read_bytes() == (root / grade / case / f"{case}_flair.nii.gz").read_bytes()
        label = sitk.ReadImage(str(dest / "label" / f"{case}_Label.nii.gz"))
        assert label.GetPixelID() == sitk.sitkUInt8
        np.testing.assert_array_equal(sitk.GetArrayFromImage(label),
                                      (sitk.GetArrayFromImage(seg) != 0).astype(np.uint8))
        assert label.GetOrigin() == seg.GetOrigin() and label.GetDirection() == seg.GetDirection()
        assert label.GetSpacing() == seg.GetSpacing()


def test_merge_and_move_errors(tmp_path):
    root = tmp_path / "orig"
    write_brats_case(root, "HGG", "BraTS19_A_1")
    write_brats_case(root, "LGG", "BraTS19_B_2", shape_zyx=(5, 6, 8))
    dest = tmp_path / "BraTS"
    with pytest.raises(ValueError, match=r"case BraTS19_B_2: BraTS19_B_2_flair.nii.gz has size \[8, 6, 5\], "
                                         r"expected \[7, 6, 5\]"):
        merge.main(["--original_dir", str(root), "--destination_dir", str(dest), "--expected_shape", "7", "6", "5"])
    assert not dest.exists()  # checked before anything is written
    with pytest.raises(ValueError, match=r"expected \[240, 240, 155\]"):
        merge.main(["--original_dir", str(root), "--destination_dir", str(dest)])

    root2 = tmp_path / "orig2"
    write_brats_case(root2, "HGG", "BraTS19_C_3", files=("flair",))
    (root2 / "LGG").mkdir()
    with pytest.raises(FileNotFoundError, match=r"case BraTS19_C_3 .* lacks BraTS19_C_3_seg.nii.gz"):
        merge.main(["--original_dir", str(root2), "--destination_dir", str(dest), "--expected_shape", "7", "6", "5"])
    with pytest.raises(FileNotFoundError, match="nowhere/HGG not found"):
        merge.main(["--original_dir", str(tmp_path / "nowhere"), "--destination_dir", str(dest)])


# ----------------------------------------------------------------------------- splits

@pytest.mark.parametrize("name, counts", [("split_VS.csv", {"training": 176, "validation": 20, "inference": 46}),
                                          ("split_BraTS.csv", {"training": 244, "validation": 27, "inference": 1})])
def test_published_split_counts(name, counts):
    split = read_split(ROOT / "splits" / name)
    assert split["phase"].value_counts().to_dict() == counts
    assert split["subject"].is_unique


@pytest.mark.parametrize("n, ratios, expected", [(10, (0.7, 0.1, 0.2), (7, 1, 2)),
                                                 (335, (0.7, 0.1, 0.2), (235, 33, 67)),
                                                 (3, (1 / 3, 1 / 3, 1 / 3), (1, 1, 1)),
                                                 (5, (0.5, 0.5, 0.0), (3, 2, 0)),
                                                 (0, (0.7, 0.1, 0.2), (0, 0, 0))])
def test_split_counts(n, ratios, expected):
    assert make_split.split_counts(n, ratios) == expected


def test_split_counts_rejects_bad_ratios():
    with pytest.raises(ValueError, match="sum to 1"):
        make_split.split_counts(10, (0.5, 0.1, 0.2))
    with pytest.raises(ValueError, match="non-negative"):
        make_split.split_counts(10, (1.2, -0.2, 0.0))


def touch_images(folder: Path, subjects, postfix: str = "Flair") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for s in subjects:
        (folder / f"{s}_{postfix}.nii.gz").write_bytes(b"")
    (folder / "README.txt").write_text("not an image")
    return folder


def test_make_split_random_is_deterministic(tmp_path):
    subjects = [f"case_{i:02d}" for i in range(20)]
    images = touch_images(tmp_path / "image", subjects)
    args = ["--images_dir", str(images), "--image_postfix", "Flair", "--ratios", "0.6", "0.15", "0.25"]
    make_split.main([*args, "--seed", "3", "--output", str(tmp_path / "a.csv")])
    make_split.main([*args, "--seed", "3", "--output", str(tmp_path / "b.csv")])
    make_split.main([*args, "--seed", "4", "--output", str(tmp_path / "c.csv")])
    a = (tmp_path / "a.csv").read_text()
    assert a == (tmp_path / "b.csv").read_text()
    assert a != (tmp_path / "c.csv").read_text()
    assert not a.startswith("subject")  # no header
    split = read_split(tmp_path / "a.csv")
    assert sorted(split["subject"]) == subjects
    assert split["phase"].value_counts().to_dict() == {"training": 12, "inference": 5, "validation": 3}


def test_make_split_completes_existing(tmp_path):
    existing = tmp_path / "published.csv"
    existing.write_text("c3,training\nc1,validation\ngone,inference\n")
    images = touch_images(tmp_path / "image", ["c1", "c2", "c3", "c4"])
    out = tmp_path / "completed.csv"
    make_split.main(["--complete", str(existing), "--images_dir", str(images), "--image_postfix", "Flair",
                     "--output", str(out)])
    assert out.read_text() == "c3,training\nc1,validation\ngone,inference\nc2,inference\nc4,inference\n"
    make_split.main(["--complete", str(existing), "--images_dir", str(images), "--image_postfix", "Flair",
                     "--phase", "training", "--output", str(out), "--overwrite"])
    assert read_split(out).iloc[3:].to_dict("list") == {"subject": ["c2", "c4"], "phase": ["training", "training"]}
    with pytest.raises(ValueError, match=r"no \*_T2.nii.gz files"):
        make_split.main(["--complete", str(existing), "--images_dir", str(images), "--image_postfix", "T2",
                         "--output", str(out)])


def test_random_split_ignores_input_order():
    a = make_split.random_split(["x", "y", "z", "w"], (0.5, 0.25, 0.25), seed=1)
    b = make_split.random_split(["w", "z", "y", "x"], (0.5, 0.25, 0.25), seed=1)
    pd.testing.assert_frame_equal(a, b)


def test_image_crop_that_stops_on_a_subject_writes_no_crop(tmp_path):
    """The second subject's label is on another grid: the first subject's crops, computed, are not
    left behind, so the run goes again without --overwrite once the label is mended."""
    data = tmp_path / "VS"
    write_vs_case(data, "a", (9, 14, 20), np.s_[2:5, 3:7, 5:9])
    _, label = write_vs_case(data, "b", (9, 14, 20), np.s_[2:5, 3:7, 5:9])
    label.SetSpacing((0.4, 0.5, 3.0))
    sitk.WriteImage(label, str(data / "label" / "b_Label.nii.gz"))
    split = write_split(tmp_path / "split.csv", ["a", "b"])
    argv = ["--data_dir", str(data), "--dataset_split", str(split), "--crop_size", "6", "10", "12"]
    with pytest.raises(ValueError, match="of b"):
        image_crop.main(argv)
    assert not [p for p in data.rglob("*") if "crop" in str(p.relative_to(data))]  # not even the empty folders
    label.SetSpacing((0.4, 0.5, 1.5))
    sitk.WriteImage(label, str(data / "label" / "b_Label.nii.gz"))
    assert image_crop.main(argv).subjects == 2
    assert sorted(p.name for p in (data / "label_crop").iterdir()) == ["a_Label.nii.gz", "b_Label.nii.gz"]


def test_make_split_names_images_whose_extension_no_reader_takes(tmp_path):
    """Three of five scans exported as .NII.GZ: not left out of the split without a word."""
    images = touch_images(tmp_path / "image", ["a", "b"])
    for name in ("c_Flair.NII.GZ", "d_Flair.Nii", "e_Flair.MHA"):
        (images / name).write_bytes(b"")
    with pytest.raises(ValueError) as err:
        make_split.main(["--images_dir", str(images), "--image_postfix", "Flair", "--output", str(tmp_path / "s.csv")])
    assert one_line(err) == (f"--images_dir {images} holds 3 file(s) whose extension is not in lower case, which no "
                             "reader takes: c_Flair.NII.GZ; d_Flair.Nii; e_Flair.MHA; rename them (e.g. .NII.GZ to "
                             ".nii.gz)")
    assert not (tmp_path / "s.csv").exists()


def test_make_split_names_every_image_it_leaves_out(tmp_path, capsys):
    """No image file drops out of the split without a word: a scan of a subject without an image
    of --image_postfix (no postfix, another postfix, an empty subject name) is a warning naming
    it; other images of listed subjects and files that are no image are counted (INFO); the
    split lists exactly the <subject>_<postfix> images."""
    images = touch_images(tmp_path / "image", ["a", "b.1"])        # + README.txt
    for name in ("a_T1.nii.gz", "b.1_Label.mha", "case9.nii.gz", "x_T1.nii.gz", "_Flair.nii.gz"):
        (images / name).write_bytes(b"")
    (images / "sub").mkdir()
    split = make_split.main(["--images_dir", str(images), "--image_postfix", "Flair", "--ratios", "1", "0", "0",
                             "--output", str(tmp_path / "s.csv")])
    assert sorted(split["subject"]) == ["a", "b.1"]
    lines = [line.split(" ", 2)[2] for line in capsys.readouterr().out.splitlines()]
    assert (f"WARNING --images_dir {images}: 3 image file(s) left out of the split, named neither "
            "<subject>_Flair<ext> nor <listed subject>_<other postfix><ext>: _Flair.nii.gz; case9.nii.gz; "
            "x_T1.nii.gz (name a scan of this modality <subject>_Flair<ext> to list it)") in lines
    assert f"INFO --images_dir {images}: 2 image(s) of listed subjects under other postfixes not listed " \
           "(Label 1, T1 1)" in lines
    assert f"INFO --images_dir {images}: 2 entry(ies) without an image extension ignored, e.g. README.txt" in lines


def test_make_split_refuses_a_postfix_in_another_letter_case(tmp_path):
    """case10_flair.nii.gz beside *_Flair images: every reader would miss it, so the split is
    refused (nothing written) with the files named; with no *_Flair image at all the error asks
    whether the other spelling is meant."""
    images = touch_images(tmp_path / "image", ["a", "b"])
    (images / "case10_flair.nii.gz").write_bytes(b"")
    (images / "case11_FLAIR.mha").write_bytes(b"")
    out = tmp_path / "s.csv"
    with pytest.raises(ValueError) as err:
        make_split.main(["--images_dir", str(images), "--image_postfix", "Flair", "--output", str(out)])
    assert one_line(err) == (f"--images_dir {images} holds 2 image(s) whose postfix differs from --image_postfix "
                             "Flair only in letter case (FLAIR, flair): case10_flair.nii.gz; case11_FLAIR.mha; no "
                             "reader finds them under Flair: rename them to <subject>_Flair<ext>")
    assert not out.exists()
    only = touch_images(tmp_path / "only", ["c", "d", "e"], postfix="t2")
    with pytest.raises(ValueError) as err:
        make_split.main(["--images_dir", str(only), "--image_postfix", "T2", "--output", str(out)])
    assert one_line(err) == (f"no *_T2 images in {only}, but 3 named *_t2 (c_t2.nii.gz; d_t2.nii.gz; e_t2.nii.gz): "
                             "did you mean --image_postfix t2? (postfixes are case-sensitive)")
    assert not out.exists()
    split = make_split.main(["--images_dir", str(only), "--image_postfix", "t2", "--ratios", "1", "0", "0",
                             "--output", str(out)])
    assert sorted(split["subject"]) == ["c", "d", "e"]


def test_make_split_refuses_two_of_its_files_that_are_one(tmp_path, capsys):
    """--output and --write_dataset naming one file (also through a symlinked folder), the split
    written over the --dataset it reads, or the dataset file written over the --complete split:
    one error line before anything is written."""
    images = touch_images(tmp_path / "image", ["a", "b", "c"])
    link = tmp_path / "link"
    link.symlink_to(tmp_path, target_is_directory=True)
    base = ["--images_dir", str(images), "--image_postfix", "Flair", "--ratios", "1", "0", "0"]
    same = tmp_path / "ds.json"
    cases = [
        (["--output", str(same), "--write_dataset", str(same)],
         f"--output (the split written) and --write_dataset (the dataset file written) are one file ({same})"),
        (["--output", str(same), "--write_dataset", str(link / "ds.json")],
         f"--output (the split written) and --write_dataset (the dataset file written) are one file ({same} and "
         f"{link / 'ds.json'})"),
    ]
    for flags, message in cases:
        assert run_main(make_split.main, [*base, *flags]) == 2
        assert capsys.readouterr().err == f"error: {message}: one would replace the other; give them different paths\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["image", "link"]
    make_split.main([*base, "--output", str(tmp_path / "s.csv"), "--write_dataset", str(same)])
    before = same.read_text(), (tmp_path / "s.csv").read_text()
    with pytest.raises(ValueError) as err:
        make_split.main(["--dataset", str(same), "--output", str(link / "ds.json"), "--overwrite"])
    assert one_line(err) == (f"--output (the split written) and --dataset (the dataset file read) are one file "
                             f"({link / 'ds.json'} and {same}): one would replace the other; give them different paths")
    with pytest.raises(ValueError) as err:
        make_split.main([*base, "--complete", str(tmp_path / "s.csv"), "--output", str(tmp_path / "t.csv"),
                         "--write_dataset", str(tmp_path / "s.csv"), "--overwrite"])
    assert one_line(err).startswith("--write_dataset (the dataset file written) and --complete (the split read) are "
                                    f"one file ({tmp_path / 's.csv'}): ")
    assert (same.read_text(), (tmp_path / "s.csv").read_text()) == before
    # completing a split in place, and a dataset file rewritten in place, are no collision
    make_split.main(["--dataset", str(same), "--complete", str(tmp_path / "s.csv"), "--output",
                     str(tmp_path / "s.csv"), "--write_dataset", str(same), "--overwrite"])
    assert sorted(read_split(tmp_path / "s.csv")["subject"]) == ["a", "b", "c"]
