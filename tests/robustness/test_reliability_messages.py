"""Messages of issues 22 and 30 that misled (each a one-line error or warning that says what to do):
images in every format (NaN/Inf, complex values, a header's missing data file, a missing read
permission) and running out of memory."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import a_model, inference_args, load_script, one_line, stage1_args
from synth import make_vs_dataset

import inference
import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
from utilities.data.grid import Grid, find_subject_file
from utilities.data.io import read_image
from utilities.data.layout import RunLayout
from utilities.workflow.cli import run_main

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


# --- issue 30 §6: image messages in every format, out of memory ---

def _image_file(path, array=None, **write):
    image = sitk.GetImageFromArray(np.random.default_rng(0).random((16, 32, 32)).astype(np.float32)
                                   if array is None else array)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), **write)
    return path


def _folder_inference(tmp_path, capsys):
    """``inference.py --input_folder`` on ``tmp_path/in`` (TorchIO's reader): (exit code, stderr)."""
    model_dir = a_model(tmp_path / "m").parents[2]
    code = run_main(inference.main, ["--model_dir", str(model_dir), "--input_folder", str(tmp_path / "in"),
                                     "--output_folder", str(tmp_path / "out"), "--spatial_shape", "32", "32", "16",
                                     "--device", "cpu"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
def test_nonfinite_voxels_named_in_every_format(tmp_path, capsys, ext):
    """The probe of issue 30: NaN/Inf in .nrrd/.mha were refused as "too large to normalise"
    (the check read NIfTI only)."""
    array = np.random.default_rng(0).random((16, 32, 32)).astype(np.float32)
    array[3, 4, 5], array[6, 7, 8] = np.nan, np.inf
    path = _image_file(tmp_path / "in" / f"s1_T2{ext}", array)
    message = f"image file {path} has 2 NaN or Inf voxel(s) (NaN/Inf values are not allowed); fix or re-export it"
    with pytest.raises(ValueError) as err:
        read_image(path)
    assert one_line(err) == message
    assert _folder_inference(tmp_path, capsys) == (2, f"error: {message}\n")
    assert not list((tmp_path / "out").glob("*"))


@pytest.mark.parametrize("ext, type_name", [(".nrrd", "complex of 32-bit float"), (".nii.gz", "complex64")])
def test_complex_images_refused_in_one_line(tmp_path, capsys, ext, type_name):
    """The probe of issue 30: a complex-valued image gave a traceback."""
    rng = np.random.default_rng(0)
    array = (rng.random((16, 32, 32)) + 1j * rng.random((16, 32, 32))).astype(np.complex64)
    path = _image_file(tmp_path / "in" / f"s1_T2{ext}", array)
    message = (f"image file {path} holds complex values ({type_name}); the project reads real intensities: save the "
               "magnitude (e.g. numpy.abs of the data) as a real-valued image")
    with pytest.raises(ValueError) as err:
        read_image(path)
    assert one_line(err) == message
    assert _folder_inference(tmp_path, capsys) == (2, f"error: {message}\n")


@pytest.mark.parametrize("ext", [".nhdr", ".mhd"])
def test_a_header_without_its_data_file_names_it(tmp_path, capsys, ext):
    """The probe of issue 30: an .nhdr whose data file is missing did not name it."""
    header = _image_file(tmp_path / "in" / f"s1_T2{ext}", useCompression=False)
    data = tmp_path / "in" / "s1_T2.raw"
    assert data.is_file()
    data.unlink()
    message = (f"image file {header} is a header whose data file {data} does not exist; put the data file beside the "
               "header (or correct the header's data file line)")
    for read in (read_image, Grid.read, lambda p: find_subject_file(p.parent, "s1", "T2")):
        with pytest.raises(FileNotFoundError) as err:
            read(header)
        assert one_line(err) == message
    assert _folder_inference(tmp_path, capsys) == (2, f"error: {message}\n")


def _without_root(function):
    """``function()``'s error as ``"<type>: <message>"`` ('' if none), run where a missing read
    permission counts: root may read anything, so as root it runs in a forked child that gave
    root up (user nobody)."""
    def outcome():
        try:
            function()
        except Exception as e:
            return f"{type(e).__name__}: {e}"
        return ""
    if os.geteuid() != 0:
        return outcome()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: give root up, report, leave without running pytest's teardown
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, outcome().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        text = f.read().decode()
    os.waitpid(pid, 0)
    return text


def test_a_file_without_read_permission_is_not_called_truncated():
    """The probe of issue 30: a file without read permission was called truncated ("re-download
    it"); now every reader says permission denied, naming the file (a header's data file too)."""
    folder = Path(tempfile.mkdtemp(prefix="paseg-perm-"))  # /tmp: a folder user nobody may search
    try:
        folder.chmod(0o755)
        image = _image_file(folder / "s1_T2.nii.gz")
        header = _image_file(folder / "s2_T2.nhdr", useCompression=False)
        for path in (image, folder / "s2_T2.raw"):
            path.chmod(0)
        denied = ("PermissionError: image file {} cannot be read: permission denied; give this user read permission "
                  "(chmod a+r {}) or copy the file somewhere readable")
        assert _without_root(lambda: read_image(image)) == denied.format(image, image)
        assert _without_root(lambda: find_subject_file(folder, "s1", "T2")) == denied.format(image, image)
        data = folder / "s2_T2.raw"
        assert _without_root(lambda: Grid.read(header)) == denied.format(data, data)
    finally:
        shutil.rmtree(folder)


#: The advice of the one-line out-of-memory error (utilities.workflow.cli.run_main).
OOM_ADVICE = "lower --batch_size, --spatial_shape or --sw_batch_size, pass --amp on a GPU, or lower --cache_gb"
MEMORY_GIB = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
IMPOSSIBLE = (f"error: --spatial_shape [4096, 4096, 4096] cannot fit in memory: one patch in float32 alone needs "
              f"256.0 GiB, more than the {MEMORY_GIB:.1f} GiB of this machine; lower --spatial_shape\n")


@pytest.mark.skipif(MEMORY_GIB >= 256, reason="a 4096^3 float32 patch fits in this machine's memory")
def test_an_impossible_patch_is_refused_up_front(tmp_path, capsys):
    """The probe of issue 30: ``--spatial_shape 4096 4096 4096`` ended in an allocator traceback;
    now training and inference refuse it in one line before anything is read or written."""
    p = make_vs_dataset(tmp_path, 2, 1, 1)
    assert run_main(stage1.main, stage1_args(p, tmp_path / "run", "--spatial_shape", "4096", "4096", "4096")) == 2
    assert capsys.readouterr().err == IMPOSSIBLE and not (tmp_path / "run").exists()
    model_dir = a_model(tmp_path / "m").parents[2]
    assert run_main(inference.main, inference_args(p, model_dir, "--spatial_shape", "4096", "4096", "4096")) == 2
    assert capsys.readouterr().err == IMPOSSIBLE
    assert not RunLayout(model_dir, "U_Net2D5").output_pred.exists()


def test_the_cpu_allocator_failing_is_the_one_line_out_of_memory_error(capsys):
    """torch's CPU allocator raises a RuntimeError ("DefaultCPUAllocator: can't allocate
    memory"), not a MemoryError: it gets the promised line, not a traceback (1 PiB cannot be
    mapped in a 47-bit address space, so this allocation fails on every machine)."""
    assert run_main(lambda argv: torch.empty(2**50, dtype=torch.uint8), []) == 2
    assert capsys.readouterr().err == f"error: out of main memory (tried to allocate 1048576.0 GiB); {OOM_ADVICE}\n"
    with pytest.raises(RuntimeError, match="a bug"):  # any other RuntimeError keeps its traceback
        run_main(lambda argv: (_ for _ in ()).throw(RuntimeError("a bug")), [])
