"""inference.py on a folder of images (every format), probabilities and ensembles: the same masks
as the split mode, bit for bit; the model's own network and patch size; one-line errors."""
from __future__ import annotations

import math
import shutil

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import a_model, copy_runs, inference_args, one_line
from synth import make_vs_dataset

import inference
from inference import probability_path
from utilities.data.grid import Grid
from utilities.data.layout import RunLayout
from utilities.workflow.cli import run_main

ANGLE = math.radians(20)
OBLIQUE = (math.cos(ANGLE), -math.sin(ANGLE), 0.0, math.sin(ANGLE), math.cos(ANGLE), 0.0, 0.0, 0.0, 1.0)


@pytest.fixture(scope="module")
def runs(tiny_runs, tmp_path_factory):
    """This module's copy of the session's tiny trained runs (conftest.py: ``tiny_runs``): two
    stage-1 runs (2 epochs, seed 0; 1 epoch, seed 8) and the SCM run on them."""
    p, trained = tiny_runs
    return p, copy_runs(trained, tmp_path_factory.mktemp("runs"))


def _array(path):
    return np.asarray(nib.load(str(path)).dataobj)


def _sitk_array(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_folder_mode_equals_split_mode(runs, tmp_path):
    """``--model_dir`` alone (network and patch size from the run) gives, for every image of the
    folder, the split mode's mask bit for bit, under the input's name, in its geometry."""
    p, root = runs
    split = inference.main(inference_args(p, root / "run1"))
    out = tmp_path / "out"
    written = inference.main(["--model_dir", str(root / "run1"), "--input_folder", str(p["image_crop"]),
                              "--output_folder", str(out), "--device", "cpu"])
    names = sorted(f.name for f in p["image_crop"].iterdir())
    assert [w.name for w in written] == names  # every image, under its own name
    for seg in split:
        folder_seg = out / seg.name.replace("_seg", "")
        a, b = nib.load(str(seg)), nib.load(str(folder_seg))
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_array_equal(a.affine, b.affine)
        assert b.get_data_dtype() == np.uint8
    # the split mode without --network/--spatial_shape takes them from the run too
    again = inference.main(["--model_dir", str(root / "run1"), "--dataset_split", str(p["split"]), "--path_images",
                            str(p["image_crop"]), "--device", "cpu", "--output_folder", str(tmp_path / "flat")])
    for seg, flat in zip(split, again, strict=True):
        assert flat.name == seg.name.replace("_seg", "")
        np.testing.assert_array_equal(_array(seg), _array(flat))


def test_every_format_in_oblique_geometry(tmp_path, capsys):
    """.nrrd, .nhdr, .mha, .mhd and .nii copies of oblique NIfTI images give the NIfTI's masks,
    written as .nii.gz in each input's own world geometry; a header's data file is part of its image."""
    p = make_vs_dataset(tmp_path / "data", 0, 0, 2, direction=OBLIQUE)
    model_dir = a_model(tmp_path / "m").parents[2]
    reference = inference.main(inference_args(p, model_dir))
    folder = tmp_path / "in"
    folder.mkdir()
    formats = [".nrrd", ".mha", ".nhdr", ".mhd", ".nii"]
    subjects = ["vs_gk_1", "vs_gk_2"]
    for k, ext in enumerate(formats):
        subject = subjects[k % 2]
        image = sitk.ReadImage(str(p["image_crop"] / f"{subject}_T2.nii.gz"))
        sitk.WriteImage(image, str(folder / f"{subject}_{ext[1:]}_T2{ext}"))
    written = inference.main(["--model_dir", str(model_dir), "--input_folder", str(folder), "--output_folder",
                              str(tmp_path / "out"), "--spatial_shape", "32", "32", "16", "--image_postfix", "T2",
                              "--device", "cpu"])
    assert len(written) == len(formats)
    # the .raw data files of the .nhdr and .mhd headers are read with their headers, not left out
    assert "left out" not in capsys.readouterr().out
    for k, ext in enumerate(formats):
        subject = subjects[k % 2]
        out = tmp_path / "out" / f"{subject}_{ext[1:]}_T2.nii.gz"
        assert out in written
        ref = RunLayout(model_dir, "U_Net2D5").prediction(subject, "T2")
        np.testing.assert_array_equal(_sitk_array(out), _sitk_array(ref))
        source = Grid.read(next(folder.glob(f"{subject}_{ext[1:]}_T2{ext}")))
        got = Grid.read(out)
        assert got.size == source.size
        np.testing.assert_allclose(got.spacing, source.spacing, rtol=1e-5)
        np.testing.assert_allclose(got.direction, source.direction, atol=1e-5)
        np.testing.assert_allclose(got.origin, source.origin, atol=1e-4)
    assert [r.name for r in reference] == ["vs_gk_1_T2_seg.nii.gz", "vs_gk_2_T2_seg.nii.gz"]


def test_probabilities(runs, tmp_path):
    """``--save_probabilities``: float32 in [0, 1] beside each mask, in its geometry; the mask is
    the argmax (probability above one half); the masks are unchanged."""
    p, root = runs
    plain = [_array(s) for s in inference.main(inference_args(p, root / "run1"))]
    written = inference.main(inference_args(p, root / "run1", "--save_probabilities"))
    for seg, before in zip(written, plain, strict=True):
        prob_path = seg.with_name(seg.name.replace("_seg.nii.gz", "_prob.nii.gz"))
        prob_img, seg_img = nib.load(str(prob_path)), nib.load(str(seg))
        assert prob_img.get_data_dtype() == np.float32
        np.testing.assert_array_equal(prob_img.affine, seg_img.affine)
        prob, mask = np.asarray(prob_img.dataobj), np.asarray(seg_img.dataobj)
        assert prob.shape == mask.shape and prob.min() >= 0 and prob.max() <= 1
        assert 0 < mask.sum() < mask.size  # both classes occur, so the comparison means something
        decided = prob != 0.5
        np.testing.assert_array_equal((prob > 0.5)[decided], mask[decided] == 1)
        np.testing.assert_array_equal(mask, before)


def test_a_new_prediction_leaves_no_file_of_an_earlier_one_beside_it(runs, tmp_path, capsys):
    """Probabilities, then masks alone with --overwrite: the earlier probability maps go (they
    would belong to another prediction); masks in another format into the same folder need
    --overwrite and replace the earlier format's. In the run's own output_pred the same, said in
    the log."""
    p, root = runs
    out = tmp_path / "out"
    argv = ["--model_dir", str(root / "run1"), "--input_folder", str(p["image_crop"]), "--output_folder", str(out),
            "--device", "cpu"]
    names = sorted(f.name.removesuffix(".nii.gz") for f in p["image_crop"].iterdir())
    inference.main([*argv, "--save_probabilities"])
    assert len(list(out.glob("*_prob.nii.gz"))) == len(names)
    inference.main([*argv, "--overwrite"])
    assert sorted(f.name for f in out.iterdir()) == [f"{n}.nii.gz" for n in names]
    assert run_main(inference.main, [*argv, "--output_format", "mha"]) == 2
    assert f"segmentation file(s) exist already, e.g. {out / (names[0] + '.nii.gz')}" in capsys.readouterr().err
    inference.main([*argv, "--output_format", "mha", "--overwrite"])
    assert sorted(f.name for f in out.iterdir()) == [f"{n}.mha" for n in names]
    run = inference_args(p, root / "run1")
    first = inference.main([*run, "--save_probabilities"])
    capsys.readouterr()
    assert inference.main(run) == first
    assert not [probability_path(m) for m in first if probability_path(m).exists()]
    assert "removed 2 file(s) of an earlier prediction that this one does not write again" in capsys.readouterr().out


def test_ensemble_of_scm_models(runs, tmp_path):
    """``--ensemble`` on an SCM run averages model 1's and model 2's probabilities; the mask is
    the argmax of the mean; a model ensembled with itself is that model, bit for bit."""
    p, root = runs
    probs = []
    for k in (1, 2):
        out = tmp_path / f"m{k}"
        inference.main(inference_args(p, root / "scm", "--epoch_inf", f"best_model{k}", "--save_probabilities",
                                      "--output_folder", str(out)))
        probs.append([_array(f) for f in sorted(out.glob("*_prob.nii.gz"))])
    ens = tmp_path / "ens"
    written = inference.main(["--model_dir", str(root / "scm"), "--ensemble", "--dataset_split", str(p["split"]),
                              "--path_images", str(p["image_crop"]), "--save_probabilities", "--output_folder",
                              str(ens), "--device", "cpu"])
    assert [w.name for w in written] == ["vs_gk_4_T2.nii.gz", "vs_gk_5_T2.nii.gz"]
    for seg, p1, p2 in zip(written, *probs, strict=True):
        mean = (p1.astype(np.float64) + p2) / 2
        prob = _array(seg.with_name(seg.name.replace(".nii.gz", "_prob.nii.gz")))
        np.testing.assert_allclose(prob, mean, atol=1e-6)
        decided = np.abs(mean - 0.5) > 1e-6
        np.testing.assert_array_equal(_array(seg)[decided], (mean > 0.5)[decided])
        assert not np.array_equal(p1, p2)  # two different models
    # one model twice (listed twice, or --model_dir plus itself): its masks and probabilities exactly
    single = tmp_path / "single"
    inference.main(inference_args(p, root / "run1", "--save_probabilities", "--output_folder", str(single)))
    for k, first in enumerate([["--ensemble", str(root / "run1")], ["--model_dir", str(root / "run1"), "--ensemble"]]):
        twice = tmp_path / f"twice{k}"
        inference.main([*first, str(root / "run1"), "--dataset_split", str(p["split"]), "--path_images",
                        str(p["image_crop"]), "--save_probabilities", "--output_folder", str(twice), "--device", "cpu"])
        for a in sorted(single.iterdir()):
            np.testing.assert_array_equal(_array(a), _array(twice / a.name))


def test_folder_mode_errors(runs, tmp_path, capsys):
    p, root = runs
    model = ["--model_dir", str(root / "run1"), "--device", "cpu"]
    best = root / "run1" / "U_Net2D5" / "models" / "CP_best.pth"
    empty = tmp_path / "empty"
    empty.mkdir()
    twice = tmp_path / "twice"
    twice.mkdir()
    shutil.copy(p["image_crop"] / "vs_gk_1_T2.nii.gz", twice / "a.nii.gz")
    sitk.WriteImage(sitk.ReadImage(str(twice / "a.nii.gz")), str(twice / "a.nrrd"))
    cases = [
        (["--input_folder", str(p["image_crop"])], "--input_folder needs --output_folder, the folder to write the "
                                                   "segmentations to"),
        (["--input_folder", str(p["image_crop"]), "--output_folder", str(p["image_crop"])],
         f"--output_folder {p['image_crop']} is --input_folder: the segmentations would overwrite the images; "
         "choose another folder"),
        (["--input_folder", str(tmp_path / "nowhere"), "--output_folder", str(tmp_path / "o")],
         f"--input_folder {tmp_path / 'nowhere'} is not a folder; pass the folder of images to segment"),
        (["--input_folder", str(empty), "--output_folder", str(tmp_path / "o")],
         f"--input_folder {empty} holds no image (.nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd); check the folder or "
         "--image_postfix"),
        (["--input_folder", str(twice), "--output_folder", str(tmp_path / "o")],
         f"--input_folder {twice} holds a twice (a.nii.gz and a.nrrd); keep one format of each image"),
        (["--input_folder", str(p["image_crop"]), "--output_folder", str(tmp_path / "o"), "--dataset_split",
          str(p["split"])], "--input_folder excludes --dataset_split (split mode); pass one of them"),
    ]
    for argv, message in cases:
        assert run_main(inference.main, [*model, *argv]) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    assert run_main(inference.main, ["--ensemble", str(root / "run1"), "--input_folder", str(p["image_crop"]),
                                     "--output_folder", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (f"error: --ensemble needs at least two models, got 1 ({best}); list them: "
                                       "--ensemble A B\n")
    with pytest.raises(ValueError) as err:
        inference.main(["--model_dir", str(root / "run1"), "--ensemble", "--input_folder", str(p["image_crop"]),
                        "--output_folder", str(tmp_path / "o")])
    assert one_line(err).startswith(f"--ensemble without models needs an SCM run in --model_dir {root / 'run1'}")
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_a_damaged_image_last_in_the_folder_stops_the_run_before_any_mask(runs, tmp_path, capsys):
    """Every image is read whole before the first case is segmented: a gzip cut short (its header
    reads) or a NaN voxel in the folder's last image leaves no mask of the images before it."""
    p, root = runs
    folder = tmp_path / "in"
    shutil.copytree(p["image_crop"], folder)
    good = (folder / "vs_gk_1_T2.nii.gz").read_bytes()
    (folder / "zz_T2.nii.gz").write_bytes(good[: len(good) // 2])
    out = tmp_path / "out"
    argv = ["--model_dir", str(root / "run1"), "--device", "cpu", "--input_folder", str(folder), "--output_folder",
            str(out)]
    assert run_main(inference.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read image file {folder / 'zz_T2.nii.gz'} (unreadable or truncated") \
        and err.count("\n") == 1
    assert not out.exists() or not list(out.iterdir())
    image = sitk.ReadImage(str(folder / "vs_gk_1_T2.nii.gz"))
    array = sitk.GetArrayFromImage(image)
    array[0, 0, 0] = np.nan
    nan = sitk.GetImageFromArray(array)
    nan.CopyInformation(image)
    sitk.WriteImage(nan, str(folder / "zz_T2.nii.gz"))
    assert run_main(inference.main, argv) == 2
    assert capsys.readouterr().err == (f"error: image file {folder / 'zz_T2.nii.gz'} has 1 NaN or Inf voxel(s) "
                                       "(NaN/Inf values are not allowed); fix or re-export it\n")
    assert not out.exists() or not list(out.iterdir())


@pytest.mark.parametrize("output_format", ["nrrd", "mha", "nii"])
def test_output_format(runs, tmp_path, output_format):
    """``--output_format``: the same masks and probabilities in another format, on the input's grid;
    the run's output_pred/ (read by scores.py) stays .nii.gz."""
    p, root = runs
    split = inference.main(inference_args(p, root / "run1", "--save_probabilities"))
    written = inference.main(inference_args(p, root / "run1", "--output_folder", str(tmp_path / "out"),
                                            "--output_format", output_format, "--save_probabilities"))
    for seg, out in zip(split, written, strict=True):
        assert out.name == seg.name.replace("_seg.nii.gz", f".{output_format}")
        np.testing.assert_array_equal(_sitk_array(out), _sitk_array(seg))
        prob = out.with_name(out.name.replace(f".{output_format}", f"_prob.{output_format}"))
        np.testing.assert_array_equal(_sitk_array(prob),
                                      _sitk_array(seg.with_name(seg.name.replace("_seg", "_prob"))))
        a, b = Grid.read(seg), Grid.read(out)
        assert a.size == b.size
        np.testing.assert_allclose(b.spacing, a.spacing, rtol=1e-6)
        np.testing.assert_allclose(b.direction, a.direction, atol=1e-6)
        np.testing.assert_allclose(b.origin, a.origin, atol=1e-5)
    with pytest.raises(ValueError, match=r"--output_format nrrd needs --output_folder"):
        inference.main(inference_args(p, root / "run1", "--output_format", "nrrd"))
