"""One reader, one writer, one geometry (issue 22 item 1, issue 21 §2, issue 30 §3): every format of
IMAGE_EXTENSIONS is read and written with the grid SimpleITK reads (TorchIO's reader too), a NIfTI
whose qform and sform disagree and a sheared direction in any format are refused by every reader, a
grid the output format cannot store exactly is refused, one tolerance governs every rule, a subject
with files in two formats is an error, and two volumes that must share a grid (the report's
pictures too) are refused when they do not."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torchio as tio
from helpers import a_model, one_line
from synth import blob_case, make_vs_dataset

import inference
from utilities import scores
from utilities.data.grid import Grid, find_subject_file, grid_difference, missing_files
from utilities.data.io import IMAGE_EXTENSIONS, read_image, write_image
from utilities.data.loading import ImageSource, check_subject, make_subjects, preprocess_transform
from utilities.evaluation.report import ReportCase, case_picture
from utilities.workflow.cli import run_main

#: x flipped (LPS direction), and an oblique direction (15° about z, then 10° about x)
FLIPPED = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
_c, _s, _c2, _s2 = np.cos(np.pi / 12), np.sin(np.pi / 12), np.cos(np.pi / 18), np.sin(np.pi / 18)
OBLIQUE = tuple((np.array([[_c, -_s, 0], [_s, _c, 0], [0, 0, 1]]) @
                 np.array([[1, 0, 0], [0, _c2, -_s2], [0, _s2, _c2]])).ravel().tolist())


def _write(array, path, direction, spacing=(0.5, 0.75, 1.5), origin=(3.0, -2.0, 7.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def two_geometries(path, data=None):
    """A NIfTI (16x16x16) whose qform says RAS and whose sform flips x: the same voxels, two worlds."""
    data = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32) if data is None else data
    img = nib.Nifti1Image(data, None)
    qform = np.diag([1.0, 1.0, 1.0, 1.0])
    sform = qform.copy()
    sform[0, 0] = -1.0
    img.set_qform(qform, code=1)
    img.set_sform(sform, code=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


TWO_GEOMETRIES = (r"holds two world geometries: its qform \(RAS, spacing \[1.0, 1.0, 1.0\], origin \[0.0, 0.0, "
                  r"0.0\]\) and its sform \(LAS, spacing \[1.0, 1.0, 1.0\], origin \[0.0, 0.0, 0.0\]\) disagree, "
                  r"and tools differ on which to use; re-save it with one geometry")


def test_qform_sform_disagreement_refused_by_every_reader(tmp_path):
    path = two_geometries(tmp_path / "s1_T2.nii.gz")
    with pytest.raises(ValueError, match=f"image file {path} " + TWO_GEOMETRIES) as err:
        read_image(path)
    one_line(err)
    with pytest.raises(ValueError, match=TWO_GEOMETRIES):
        Grid.read(path, "label")
    # TorchIO's path (training, inference)
    split = tmp_path / "split.csv"
    split.write_text("s1,inference\n")
    subject = make_subjects(split, "inference", [ImageSource("image", tmp_path, "T2", False, "image")])[0]
    with pytest.raises(ValueError, match=TWO_GEOMETRIES):
        check_subject(subject)


@pytest.mark.parametrize("kind", ["pixdim", "micron"])
def test_spacing_the_two_readers_read_differently_is_named_with_a_remedy_that_works(tmp_path, kind, capfd):
    """An sform-only file whose pixdim was left at 1, and a file in microns (SimpleITK converts to
    mm, nibabel does not): one line that shows both spacings, and its remedy, applied as written,
    gives a file every reader accepts with the intended spacing. ITK's own warnings stay off stderr."""
    path = tmp_path / "s1_T2.nii.gz"
    data = np.zeros((8, 8, 4), np.float32)
    if kind == "pixdim":
        img = nib.Nifti1Image(data, None)
        img.set_sform(np.diag([-0.5, 0.5, 1.5, 1.0]), code=2)
        img.set_qform(None, code=0)
        shown, remedy = ("SimpleITK (LAS, spacing [1.0, 1.0, 1.0]", "its voxel sizes (pixdim) contradict its sform")
    else:
        img = nib.Nifti1Image(data, np.diag([500.0, 500.0, 1500.0, 1.0]))
        img.header.set_xyzt_units("micron")
        shown, remedy = ("nibabel (RAS, spacing [500.0, 500.0, 1500.0]", "its spatial unit is micron")
    nib.save(img, str(path))
    capfd.readouterr()
    with pytest.raises(ValueError) as err:
        read_image(path)
    message = one_line(err)
    assert shown in message and remedy in message
    assert capfd.readouterr().err == ""
    f = str(path)   # the remedy's Python, as the message writes it
    if kind == "pixdim":
        img = nib.load(f)
        img.set_qform(img.get_sform())
        nib.save(img, f)
    else:
        img = nib.load(f)
        a = np.diag([0.001, 0.001, 0.001, 1]) @ img.affine
        img.set_sform(a)
        img.set_qform(a)
        img.header.set_xyzt_units("mm")
        nib.save(img, f)
    assert read_image(path).GetSpacing() == pytest.approx((0.5, 0.5, 1.5))


def test_qform_sform_agreeing_or_single_accepted(tmp_path):
    data = np.zeros((16, 16, 16), np.float32)
    data[0, 0, 0] = 1
    for name, qcode, scode, flip_s in (("same", 1, 2, False), ("sform_only", 0, 2, True), ("qform_only", 1, 0, True)):
        img = nib.Nifti1Image(data, None)
        q = np.eye(4)
        s = q.copy()
        if flip_s:
            s[0, 0] = -1
        img.set_qform(q, code=qcode)
        img.set_sform(s, code=scode)
        nib.save(img, str(tmp_path / f"{name}.nii.gz"))
        assert read_image(tmp_path / f"{name}.nii.gz").GetSize() == (16, 16, 16)


def test_inference_refuses_two_geometries_in_one_line(tmp_path, capsys):
    """The probe of issue 22: inference used to exit 0 with a mask mirrored against its image."""
    p = make_vs_dataset(tmp_path, 1, 0, 1)
    image, _ = blob_case((16, 32, 32), seed=3)
    target = p["image_crop"] / "vs_gk_2_T2.nii.gz"
    two_geometries(target, image.transpose(2, 1, 0).copy())
    a_model(tmp_path / "m")
    code = run_main(inference.main, ["--model_dir", str(tmp_path / "m"), "--dataset_split", str(p["split"]),
                                     "--path_images", str(p["image_crop"]), "--spatial_shape", "32", "32", "16",
                                     "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: image file {target} holds two world geometries")
    assert not (tmp_path / "m" / "U_Net2D5" / "output_pred").exists()


def test_scores_refuse_two_geometries(tmp_path):
    split = tmp_path / "split.csv"
    split.write_text("s1,inference\n")
    label = np.zeros((16, 16, 16), np.uint8)
    label[2:6, 3:9, 4:8] = 1
    two_geometries(tmp_path / "labels" / "s1_Label.nii.gz", label)
    pred = sitk.GetImageFromArray(label.transpose(2, 1, 0).copy())
    (tmp_path / "pred").mkdir()
    sitk.WriteImage(pred, str(tmp_path / "pred" / "s1.nii.gz"))
    with pytest.raises(ValueError, match=TWO_GEOMETRIES):
        scores.main(["--dataset_split", str(split), "--path_labels", str(tmp_path / "labels"),
                     "--prediction_dir", str(tmp_path / "pred")])


@pytest.mark.parametrize("direction", [FLIPPED, OBLIQUE], ids=["flipped", "oblique"])
@pytest.mark.parametrize("ext", IMAGE_EXTENSIONS)
def test_every_format_read_and_written_on_one_grid(tmp_path, ext, direction):
    """What inference does: read through TorchIO (canonical order), write back with the one
    writer; the written mask is the label, voxel for voxel, on the image's grid, in any format."""
    image, label = blob_case((16, 16, 16), seed=1, radius=4)
    label[3, 2:5, 9:14] = 1  # asymmetric, so a flip shows
    _write(image, tmp_path / f"s1_T2{ext}", direction)
    _write(label, tmp_path / f"s1_Label{ext}", direction)
    subject = tio.Subject(image=tio.ScalarImage(find_subject_file(tmp_path, "s1", "T2")),
                          label=tio.LabelMap(find_subject_file(tmp_path, "s1", "Label")))
    canonical = preprocess_transform()(subject)
    out = tmp_path / "out" / f"s1_seg{ext}"
    inference.write_prediction(canonical["label"].data[0].numpy(), tmp_path / f"s1_T2{ext}", out)
    written = read_image(out, "prediction")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), label)
    assert grid_difference(Grid.read(tmp_path / f"s1_T2{ext}"), Grid.of(written)) is None
    assert sitk.GetArrayFromImage(written).dtype == np.uint8


def test_two_formats_of_one_subject_refused(tmp_path):
    image, _ = blob_case((16, 16, 16))
    _write(image, tmp_path / "s1_T2.nii.gz", FLIPPED)
    _write(image, tmp_path / "s1_T2.nrrd", FLIPPED)
    _write(image, tmp_path / "s2_T2.mha", FLIPPED)
    with pytest.raises(ValueError) as err:
        find_subject_file(tmp_path, "s1", "T2")
    assert one_line(err) == (f"image of subject 's1' exists in 2 formats: {tmp_path}/s1_T2.nii.gz and "
                             f"{tmp_path}/s1_T2.nrrd; keep one of them")
    assert find_subject_file(tmp_path, "s2", "T2") == tmp_path / "s2_T2.mha"
    assert find_subject_file(tmp_path, "s3", "T2") == tmp_path / "s3_T2.nii.gz"
    assert missing_files(["s2", "s3"], tmp_path, "T2", "image") == [f"image {tmp_path}/s3_T2.nii.gz"]


# --- issue 30 §3: one geometry rule for every format, grids a format cannot store, one tolerance ---

#: x leaning into y by 0.3: the axes are not at right angles (row-major, as SimpleITK sets it)
SHEARED = (1.0, 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
#: an origin far from 0: float32 (NIfTI's header fields) holds 100000.125, 2 µm away, more than
#: the grid tolerance of 1e-3 x 1.5 mm (the largest voxel size)
FAR = (100000.123, -2.0, 7.0)


def _folder_argv(model_dir, images, out, *extra):
    return ["--model_dir", str(model_dir), "--input_folder", str(images), "--output_folder", str(out),
            "--spatial_shape", "32", "32", "16", "--device", "cpu", *extra]


@pytest.mark.parametrize("ext", [".mha", ".nrrd", ".nhdr"])
def test_sheared_direction_refused_in_every_format(tmp_path, capsys, ext):
    """The probe of issue 30: a sheared .mha was read and its mask written with another
    direction (ITK's NIfTI writer coerces it); now every reader refuses it, as the NIfTI reader
    refuses a sheared qform/sform, and nothing is written."""
    image, _ = blob_case((16, 32, 32), seed=2)
    path = tmp_path / "in" / f"s1_T2{ext}"
    _write(image, path, SHEARED)
    # NRRD stores spacing x direction; read back, its columns are normalised (still sheared)
    stored = [round(v, 4) + 0.0 for v in sitk.ReadImage(str(path)).GetDirection()]
    assert stored == (list(SHEARED) if ext == ".mha" else [1.0, 0.2873, 0.0, 0.0, 0.9578, 0.0, 0.0, 0.0, 1.0])
    message = (f"image file {path} has a sheared direction {stored} (its axes are not at right angles or not "
               "of unit length), which NIfTI cannot store and tools resample differently; resample it onto a grid "
               "with an orthonormal direction and save it again")
    with pytest.raises(ValueError) as err:
        read_image(path)
    assert one_line(err) == message
    with pytest.raises(ValueError) as err:
        Grid.read(path)
    assert one_line(err) == message
    code = run_main(inference.main, _folder_argv(a_model(tmp_path / "m").parents[2], tmp_path / "in",
                                                 tmp_path / "out"))
    assert (code, capsys.readouterr().err) == (2, f"error: {message}\n")
    assert not list((tmp_path / "out").glob("*"))


def test_an_orthonormal_direction_passes(tmp_path):
    image, _ = blob_case((16, 16, 16), seed=2)
    for name, direction in (("flipped", FLIPPED), ("oblique", OBLIQUE)):
        _write(image, tmp_path / f"{name}.mha", direction)
        assert Grid.read(tmp_path / f"{name}.mha").direction == pytest.approx(direction, abs=1e-12)


def test_far_origin_refused_for_nifti_and_written_exactly_as_mha(tmp_path, capsys):
    """The probe of issue 30: a .mha origin far from 0 came back rounded in a .nii.gz mask.
    The NIfTI output is refused before any case is computed, naming the format to use; the
    .mha output keeps the grid to the last bit."""
    image, _ = blob_case((16, 32, 32), seed=2)
    source = tmp_path / "in" / "s1_T2.mha"
    _write(image, source, FLIPPED, spacing=(0.5, 0.75, 1.5), origin=FAR)
    model_dir = a_model(tmp_path / "m").parents[2]
    out = tmp_path / "out"
    code = run_main(inference.main, _folder_argv(model_dir, tmp_path / "in", out))
    assert (code, capsys.readouterr().err) == (
        2, f"error: cannot write {out / 's1_T2.nii.gz'} exactly: its origin would read back as [100000.125, -2.0, "
           "7.0] instead of [100000.123, -2.0, 7.0] (NIfTI stores float32 numbers), beyond the grid tolerance; write "
           "it as .mha or .nrrd, which store the grid exactly (inference.py: --output_format mha)\n")
    assert not list(out.glob("*"))
    written = inference.main(_folder_argv(model_dir, tmp_path / "in", out, "--output_format", "mha"))
    assert written == [out / "s1_T2.mha"]
    assert Grid.read(written[0]) == Grid.read(source)  # exactly: no tolerance needed


def test_the_one_writer_refuses_an_inexact_grid_and_keeps_the_old_file(tmp_path):
    image = sitk.GetImageFromArray(np.ones((4, 5, 6), np.uint8))
    image.SetSpacing((0.5, 0.75, 1.5))
    image.SetOrigin(FAR)
    target = tmp_path / "mask.nii.gz"
    target.write_bytes(b"before")
    with pytest.raises(ValueError) as err:
        write_image(image, target)
    assert one_line(err).startswith(f"cannot write {target} exactly: its origin would read back as [100000.125, ")
    assert target.read_bytes() == b"before" and sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]
    write_image(image, tmp_path / "mask.nrrd")
    assert Grid.read(tmp_path / "mask.nrrd").origin == FAR
    image.SetOrigin((100.123, -2.0, 7.0))  # near 0: float32 rounding far below the tolerance
    write_image(image, target)
    assert Grid.read(target).origin == pytest.approx((100.123, -2.0, 7.0), abs=1e-5)


def test_one_tolerance_for_every_geometry_rule(tmp_path, monkeypatch):
    """The qform/sform agreement and the comparison of two grids use the one GRID_TOLERANCE:
    a 0.01 mm difference (1 mm voxels) is refused by both at 1e-3 and accepted by both at 0.1."""
    from utilities.data import grid, io

    assert io.GRID_TOLERANCE is grid.GRID_TOLERANCE and not hasattr(io, "GEOMETRY_TOLERANCE")
    img = nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32), None)
    qform = np.eye(4)
    sform = qform.copy()
    sform[0, 3] = 0.01
    img.set_qform(qform, code=1)
    img.set_sform(sform, code=2)
    path = tmp_path / "two.nii.gz"
    nib.save(img, str(path))
    a = Grid((8, 8, 8), (1.0, 1.0, 1.0), FLIPPED, (0.0, 0.0, 0.0))
    b = Grid((8, 8, 8), (1.0, 1.0, 1.0), FLIPPED, (0.01, 0.0, 0.0))
    with pytest.raises(ValueError, match="holds two world geometries"):
        read_image(path)
    assert grid_difference(a, b) == ("origin", [0.01, 0.0, 0.0], [0.0, 0.0, 0.0])
    monkeypatch.setattr(grid, "GRID_TOLERANCE", 0.1)
    assert read_image(path).GetSize() == (8, 8, 8)
    assert grid_difference(a, b) is None


def test_report_pictures_run_the_one_grid_check(tmp_path):
    """A label on another grid was drawn over the image by index (only the shapes were
    compared); now the report refuses it, naming both files, and draws nothing."""
    image, label = blob_case((16, 16, 16), seed=1, radius=4)
    _write(image, tmp_path / "s1_T2.nii.gz", FLIPPED)
    _write(label, tmp_path / "s1_Label.nii.gz", FLIPPED, origin=(3.0, -2.0, 12.0))  # 5 mm along z
    _write(label, tmp_path / "s1_seg.nii.gz", FLIPPED)
    case = ReportCase("s1", tmp_path / "s1_T2.nii.gz", tmp_path / "s1_Label.nii.gz", tmp_path / "s1_seg.nii.gz")
    with pytest.raises(ValueError) as err:
        case_picture(case, tmp_path / "c.png")
    assert one_line(err) == (f"label {tmp_path / 's1_Label.nii.gz'} has origin [3.0, -2.0, 12.0] but image "
                             f"{tmp_path / 's1_T2.nii.gz'} has [3.0, -2.0, 7.0]; the report draws it over the image "
                             "voxel by voxel: pass the --path_images it belongs to")
    assert not (tmp_path / "c.png").exists()
    _write(label, tmp_path / "s1_Label.nii.gz", FLIPPED)
    assert len(case_picture(case, tmp_path / "c.png")) == 3 and (tmp_path / "c.png").is_file()
