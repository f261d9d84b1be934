"""Reliability: every bad input stops with a one-line error naming the file or flag and what to
do; nothing already written is lost; training resumes exactly.

Cases 1-13 follow the numbering of the reliability issue; then atomic writes, exact resume
(stage 1 and SCM) and seeding. The scripts run in-process on 32×32×16 synthetic volumes.
"""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

import inference
import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
import train_SCM as scm
from conftest import ROOT, load_script
from networks import get_network
from synth import blob_case, make_vs_dataset, write
from utilities import io, scores
from utilities.io import prediction_path
from utilities.checkpoints import load_model_weights, load_resume_state, save_model
from utilities.engine import Callback
from utilities.runs import NonFiniteLossError

SHAPE = ["--spatial_shape", "32", "32", "16"]
GEODESIC = load_script("data/VS/generate_geodesic_labels.py")


# ------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these volumes are tiny, and two threads spinning on two cores that
    other jobs share made these tests ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data(tmp_path):
    """Two training, one validation, one inference subject (32×32×16, VS layout)."""
    return make_vs_dataset(tmp_path / "data", n_train=2, n_val=1, n_inf=1)


def stage1_args(p, model_dir, *extra):
    return ["--model_dir", str(model_dir), "--network", "U_Net2D5", "--dataset_split", str(p["split"]),
            "--path_images", str(p["image_crop"]), "--path_labels", str(p["label_crop"]),
            "--path_geodesic_labels", str(p["geodesic_label"]), *SHAPE, "--down_size", "16", "16", "16",
            "--max_epochs", "2", "--rampup_epochs", "1", "--device", "cpu", "--seed", "7", *extra]


def pretrained(root, seed=0):
    """Two stage-1 run folders, each with a random U_Net2D5 CP_best.pth (different weights)."""
    dirs = []
    for k in (1, 2):
        torch.manual_seed(seed + k)
        folder = root / f"pre{k}"
        save_model(folder / "U_Net2D5" / "models" / "CP_best.pth", get_network("U_Net2D5", 1, 2), "U_Net2D5")
        dirs.append(folder)
    return dirs


def scm_args(p, pre, model_dir, *extra):
    return ["--pretrained_model1_dir", str(pre[0]), "--network1", "U_Net2D5",
            "--pretrained_model2_dir", str(pre[1]), "--network2", "U_Net2D5", "--model_dir", str(model_dir),
            "--dataset_split", str(p["split"]), "--path_images", str(p["image_crop"]),
            "--path_labels", str(p["label_crop"]), *SHAPE, "--max_epochs", "2", "--iterative_epochs", "1",
            "--device", "cpu", "--seed", "7", *extra]


def inference_args(p, model_dir, *extra):
    return ["--model_dir", str(model_dir), "--network", "U_Net2D5", "--dataset_split", str(p["split"]),
            "--path_images", str(p["image_crop"]), *SHAPE, "--device", "cpu", *extra]


def geodesic_args(p, out, *extra):
    return ["--dataset_split", str(p["split"]), "--path_images", str(p["image_crop"]),
            "--path_labels", str(p["label_crop"]), "--path_anno_7points", str(p["annotation_7points"]),
            "--path_geodesic", str(out), "--num_workers", "1", "--phase", "training", *extra]


def a_model(model_dir, network="U_Net2D5", name="CP_best.pth"):
    torch.manual_seed(0)
    path = Path(model_dir) / "U_Net2D5" / "models" / name
    save_model(path, get_network(network, 1, 2), network, epoch=1)
    return path


def run_reader(script: str, data, tmp_path) -> None:
    """Run one of the scripts that read the images: stage 1, inference or the geodesic expansion."""
    if script == "stage1":
        stage1.main(stage1_args(data, tmp_path / "run"))
    elif script == "inference":
        inference.main(inference_args(data, a_model(tmp_path / "m").parents[2]))
    else:
        GEODESIC.main(geodesic_args(data, tmp_path / "geo"))


def one_line(err) -> str:
    """The exception's message, checked to be a single line."""
    message = str(err.value)
    assert "\n" not in message, message
    return message


def weights(path, key="state_dict"):
    return torch.load(path, map_location="cpu", weights_only=True)[key]


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------ 1. the split file
@pytest.mark.parametrize("content, error, message", [
    (None, FileNotFoundError, r"split file not found: {path} \(pass --dataset_split with an existing CSV\)"),
    (b"\xff\xfe\xfa\x00,training\n", ValueError, r"cannot read split file {path}: .*; expected rows 'subject,phase'"),
    (b"vs_gk_1,training\nvs_gk_2,testing\nvs_gk_3,validation\n", ValueError,
     r"split file {path} has unknown phase\(s\) \['testing'\]; use one of \['training', 'validation', 'inference'\]"),
    (b"vs_gk_1,training\nvs_gk_2,training\nvs_gk_1,validation\n", ValueError,
     r"split file {path} lists subject\(s\) more than once: \['vs_gk_1'\]; keep one row per subject"),
])
def test_1_split_errors(data, tmp_path, content, error, message):
    split = tmp_path / "bad_split.csv"
    if content is not None:
        split.write_bytes(content)
    args = stage1_args(data, tmp_path / "run")
    args[args.index("--dataset_split") + 1] = str(split)
    with pytest.raises(error) as err:
        stage1.main(args)
    assert re.fullmatch(message.format(path=re.escape(str(split))), one_line(err))
    assert not (tmp_path / "run").exists()  # checked before any folder is made


# ------------------------------------------------------------------------ 2. missing files
def test_2_missing_files_all_listed(data, tmp_path):
    gone = [data["image_crop"] / "vs_gk_1_T2.nii.gz", data["geodesic_label"] / "vs_gk_2_GeodesicLabel.nii.gz",
            data["label_crop"] / "vs_gk_3_Label.nii.gz"]  # two training files, one validation file
    for path in gone:
        path.unlink()
    with pytest.raises(FileNotFoundError) as err:
        stage1.main(stage1_args(data, tmp_path / "run"))
    message = one_line(err)
    assert message.startswith(f"3 file(s) of the subjects listed in {data['split']} are missing: ")
    for what, path in zip(("image", "expanded-seed label", "label"), gone):
        assert f"{what} {path}" in message
    assert message.endswith("Check --path_images/--image_postfix or --path_geodesic_labels/"
                            "--geodesic_label_postfix or --path_labels/--label_postfix or the split.")
    assert not (tmp_path / "run").exists()

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


# ------------------------------------------------------------------------ 3. geometry
PERMUTED = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize("which, change, message", [
    ("seeds", "shape", r"expanded-seed label {path} has shape \(32, 32, 12\) but image {image} has \(32, 32, 16\); "
                       r"they must be on the same voxel grid"),
    ("seeds", "spacing", r"expanded-seed label {path} has spacing \(0\.5, 0\.5, 3\.0\) but image {image} has "
                         r"\(0\.5, 0\.5, 1\.5\); resample it onto the image grid"),
    ("label", "orientation", r"label {path} has orientation/origin PLS \(-1\.0, 2\.0, 3\.0\) but image {image} has "
                             r"LPS \(-1\.0, 2\.0, 3\.0\) \(RAS mm\); they must share the image's geometry"),
    ("anno", "shape", r"image {image} has size \[32, 32, 16\] but annotation {path} has \[32, 32, 12\]; they must "
                      r"be on the same voxel grid \(annotated points may lie outside the image\): resample one of "
                      r"them onto the other's grid"),
    ("anno", "spacing", r"image {image} has spacing \[0\.5, 0\.5, 1\.5\] but annotation {path} has "
                        r"\[0\.5, 0\.5, 3\.0\]; resample one of them"),
    ("anno", "orientation", r"image {image} has orientation \[1\.0, 0\.0, 0\.0, 0\.0, 1\.0, 0\.0, 0\.0, 0\.0, 1\.0\] "
                            r"but annotation {path} has \[0\.0, 1\.0, 0\.0, 1\.0, 0\.0, 0\.0, 0\.0, 0\.0, 1\.0\]; "
                            r"reorient one of them"),
])
def test_3_geometry_mismatch(data, tmp_path, which, change, message):
    folder, postfix, subject = {"seeds": ("geodesic_label", "GeodesicLabel", "vs_gk_1"),
                                "label": ("label_crop", "Label", "vs_gk_3"),
                                "anno": ("annotation_7points", "7points", "vs_gk_1")}[which]
    path = data[folder] / f"{subject}_{postfix}.nii.gz"
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    kwargs = {"shape": {}, "spacing": {"spacing": (0.5, 0.5, 3.0)}, "orientation": {"direction": PERMUTED}}[change]
    write(array[:12] if change == "shape" else array, path, **kwargs)
    image = data["image_crop"] / f"{subject}_T2.nii.gz"
    with pytest.raises(ValueError) as err:
        if which == "anno":
            GEODESIC.main(geodesic_args(data, tmp_path / "geo"))
        else:
            stage1.main(stage1_args(data, tmp_path / "run"))
    assert re.fullmatch(message.format(path=re.escape(str(path)), image=re.escape(str(image))), one_line(err))
    assert not (tmp_path / "run").exists() and not list((tmp_path / "geo").rglob("*.nii.gz"))


def test_3_prediction_label_geometry_mismatch(data, tmp_path):
    """Scoring: a prediction on another grid than its label would give wrong distances in mm."""
    label = data["label_crop"] / "vs_gk_4_Label.nii.gz"
    pred = prediction_path(tmp_path / "m", "U_Net2D5", "vs_gk_4", "T2")
    write(sitk.GetArrayFromImage(sitk.ReadImage(str(label))), pred, spacing=(0.5, 0.5, 3.0))
    with pytest.raises(ValueError) as err:
        scores.main(["--model_dir", str(tmp_path / "m"), "--network", "U_Net2D5", "--dataset_split",
                     str(data["split"]), "--path_labels", str(data["label_crop"])])
    assert one_line(err) == (f"prediction {pred} has spacing [0.5, 0.5, 3.0] but label {label} has [0.5, 0.5, 1.5]; "
                             "predict on the images that match the labels")
    assert not (tmp_path / "m" / "U_Net2D5" / "results_inference.csv").exists()


# ------------------------------------------------------------------------ 4. annotations
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
def test_4_bad_annotation(data, tmp_path, case, message):
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


def test_4_expanded_seeds_with_unexpected_values(data, tmp_path):
    """The expanded seeds the training reads are checked too: only 0, 1 and 2."""
    path = data["geodesic_label"] / "vs_gk_2_GeodesicLabel.nii.gz"
    seeds = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    seeds[0, 0, :3] = (3, 7, 255)
    write(seeds, path)
    with pytest.raises(ValueError) as err:
        stage1.main(stage1_args(data, tmp_path / "run"))
    assert one_line(err) == (f"expanded-seed label {path} holds values [3, 7, 255]; expected only [0, 1, 2] "
                             "(background, foreground, unknown): re-run the geodesic expansion")


# ------------------------------------------------------------------------ 5. NaN / Inf voxels
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("script", ["stage1", "inference", "geodesic"])
def test_5_nonfinite_image(data, tmp_path, bad, script):
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


# ------------------------------------------------------------------------ 6. arguments
@pytest.mark.parametrize("script, argv, message", [
    ("stage1", ["--spatial_shape", "30", "32", "16"], "--spatial_shape must be divisible by 16 in every axis, "
                                                      "got [30, 32, 16]"),
    ("stage1", ["--down_size", "64", "16", "16"], "--down_size [64, 16, 16] must not exceed --spatial_shape "
                                                  "[32, 32, 16] in any axis"),
    ("inference", ["--spatial_shape", "32", "32", "0"], "--spatial_shape needs three positive sizes, got [32, 32, 0]"),
    ("stage1", ["--max_epochs", "0"], "argument --max_epochs: must be a positive integer, got 0"),
    ("stage1", ["--batch_size", "-1"], "argument --batch_size: must be a positive integer, got -1"),
    ("scm", ["--iterative_epochs", "0"], "argument --iterative_epochs: must be a positive integer, got 0"),
    ("inference", ["--sw_batch_size", "0"], "argument --sw_batch_size: must be a positive integer, got 0"),
])
def test_6_bad_arguments(data, tmp_path, capsys, script, argv, message):
    build = {"stage1": lambda: stage1_args(data, tmp_path / "run", *argv),
             "scm": lambda: scm_args(data, pretrained(tmp_path), tmp_path / "run", *argv),
             "inference": lambda: inference_args(data, tmp_path / "run", *argv)}[script]
    main = {"stage1": stage1.main, "scm": scm.main, "inference": inference.main}[script]
    if message.startswith("argument"):
        with pytest.raises(SystemExit) as err:
            main(build())
        assert err.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: {message}")
    else:
        with pytest.raises(ValueError) as err:
            main(build())
        assert one_line(err) == message
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------ 7. damaged NIfTI files
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
def test_7_unreadable_or_truncated_nifti(data, tmp_path, script, folder, name, what, damage):
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


# ------------------------------------------------------------------------ 8. checkpoints
@pytest.mark.parametrize("script", ["inference", "scm"])
@pytest.mark.parametrize("bad", ["other_network", "not_a_checkpoint"])
def test_8_wrong_checkpoint(data, tmp_path, script, bad):
    if script == "inference":
        path = a_model(tmp_path / "m")
    else:
        pre = pretrained(tmp_path)
        path = pre[1] / "U_Net2D5" / "models" / "CP_best.pth"
    if bad == "other_network":
        a_model(path.parents[2], network="U_Net")
    else:
        path.write_text("not a checkpoint")
    with pytest.raises(ValueError) as err:
        if script == "inference":
            inference.main(inference_args(data, tmp_path / "m"))
        else:
            scm.main(scm_args(data, pre, tmp_path / "scm"))
    flag = "--network" if script == "inference" else "--network2"
    expected = (f"checkpoint {path} holds a U_Net network, not U_Net2D5; pass {flag} U_Net or another checkpoint"
                if bad == "other_network" else
                f"{path} is not a readable PyTorch checkpoint (UnpicklingError); point to a .pth written by this "
                "project's training scripts")
    assert one_line(err) == expected
    assert not (tmp_path / "scm").exists() and not list(tmp_path.rglob("*_seg.nii.gz"))


# ------------------------------------------------------------------------ 9. CUDA without a GPU
@pytest.mark.parametrize("script", ["stage1", "scm", "inference"])
def test_9_cuda_without_gpu(data, tmp_path, monkeypatch, script):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if script == "stage1":
        call = lambda: stage1.main(stage1_args(data, tmp_path / "run", "--device", "cuda"))
    elif script == "scm":
        pre = pretrained(tmp_path)
        call = lambda: scm.main(scm_args(data, pre, tmp_path / "run", "--device", "cuda"))
    else:
        model_dir = a_model(tmp_path / "run").parents[2]
        call = lambda: inference.main(inference_args(data, model_dir, "--device", "cuda"))
    with pytest.raises(RuntimeError) as err:
        call()
    assert one_line(err) == ("--device cuda was requested but no CUDA GPU is available; use --device cpu or "
                             "--device auto")
    assert not list(tmp_path.rglob("log*.txt")) and not list(tmp_path.rglob("*_seg.nii.gz"))


# ------------------------------------------------------------------------ 10. an existing run
def test_10_existing_run_refused(data, tmp_path):
    run = tmp_path / "run" / "U_Net2D5"
    best = a_model(tmp_path / "run")
    final = a_model(tmp_path / "run", name="CP_final.pth")
    before = best.read_bytes()
    with pytest.raises(FileExistsError) as err:
        stage1.main(stage1_args(data, tmp_path / "run"))
    assert one_line(err) == (f"{run} already holds a run (CP_best.pth, CP_final.pth); pass --resume to continue it, "
                             "--overwrite to replace it, or choose another --model_dir")
    with pytest.raises(ValueError, match="^--resume and --overwrite exclude each other; pass one of them$"):
        stage1.main(stage1_args(data, tmp_path / "run", "--resume", "--overwrite"))
    # --overwrite with a bad input fails before deleting anything
    (data["image_crop"] / "vs_gk_1_T2.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="1 file"):
        stage1.main(stage1_args(data, tmp_path / "run", "--overwrite"))
    assert best.read_bytes() == before and final.is_file()

    # SCM: the same refusal, and never inside a stage-1 run folder that --overwrite would delete
    pre = pretrained(tmp_path)
    with pytest.raises(FileExistsError, match=f"^{re.escape(str(run))} already holds a run"):
        scm.main(scm_args(data, pre, tmp_path / "run"))
    with pytest.raises(ValueError) as err:
        scm.main(scm_args(data, pre, pre[0], "--overwrite"))
    assert one_line(err) == (f"--model_dir {pre[0]} would put the SCM run in {pre[0] / 'U_Net2D5'}, which holds the "
                             f"stage-1 checkpoint {pre[0] / 'U_Net2D5' / 'models' / 'CP_best.pth'} of "
                             "--pretrained_model1_dir; choose another --model_dir")
    assert (pre[0] / "U_Net2D5" / "models" / "CP_best.pth").is_file()


# ------------------------------------------------------------------------ 11. a non-finite loss
def test_11_nonfinite_loss_stops_and_keeps_checkpoints(data, tmp_path, monkeypatch):
    epochs: list[int] = []

    class RecordEpoch(Callback):
        def on_epoch_start(self, epoch, state):
            epochs.append(epoch)

    class NaNFromEpoch2(stage1.PartialDiceCELoss):
        def forward(self, logits, labels):
            loss = super().forward(logits, labels)
            return loss * float("nan") if epochs[-1] >= 1 else loss

    monkeypatch.setattr(stage1, "PartialDiceCELoss", NaNFromEpoch2)
    models = tmp_path / "run" / "U_Net2D5" / "models"
    with pytest.raises(NonFiniteLossError) as err:
        stage1.main(stage1_args(data, tmp_path / "run", "--max_epochs", "3"), callbacks=[RecordEpoch()])
    assert one_line(err) == (f"loss term loss became nan at epoch 2, step 1; training stopped, the last good "
                             f"checkpoints in {models} are intact (lower --learning_rate or check the data)")
    assert sorted(p.name for p in models.iterdir()) == ["CP_best.pth", "CP_best_seed_dice.pth", "CP_latest.pth"]
    args = stage1.build_parser().parse_args(stage1_args(data, tmp_path / "run", "--max_epochs", "3"))
    latest = load_resume_state(models / "CP_latest.pth", vars(args), {"network": "U_Net2D5"})
    assert latest["epoch"] == 1
    model = get_network("U_Net2D5", 1, 2)
    assert load_model_weights(model, models / "CP_best.pth", "U_Net2D5")["epoch"] == 1
    assert same_weights(model.state_dict(), latest["model"])  # both from the end of epoch 1
    assert pd.read_csv(models.parent / "log.csv")["epoch"].tolist() == [1]
    log_text = next(models.parent.glob("log_*.txt")).read_text(encoding="utf-8")
    assert "loss term loss became nan at epoch 2" in log_text


# ------------------------------------------------------------------------ 12. empty cases in scoring
def test_12_empty_label_kept_and_counted(tmp_path, capsys):
    """Complements tests/test_scores.py::test_scores_script_keeps_empty_cases (empty predictions and
    both empty): a non-empty prediction on an empty label is kept and counted too."""
    shape = (8, 12, 12)
    full = np.zeros(shape, np.uint8)
    full[2:6, 2:8, 2:8] = 1
    cases = {"a": (full, full), "b": (full, np.zeros(shape, np.uint8))}
    split = tmp_path / "split.csv"
    split.write_text("a,inference\nb,inference\n")
    for subject, (pred, label) in cases.items():
        write(pred, prediction_path(tmp_path / "m", "U_Net2D5", subject, "T2"))
        write(label, tmp_path / "labels" / f"{subject}_Label.nii.gz")
    out = scores.main(["--model_dir", str(tmp_path / "m"), "--network", "U_Net2D5", "--dataset_split", str(split),
                       "--path_labels", str(tmp_path / "labels")])
    table = pd.read_csv(out).set_index("subject")
    assert list(table.index) == ["a", "b", "mean", "std"]
    assert table.loc["b", "dice"] == 0.0 and np.isnan(table.loc["b", "hd95"])
    assert table.loc["mean", "dice"] == pytest.approx(0.5) and table.loc["mean", "hd95"] == 0.0
    printed = capsys.readouterr().out
    assert "empty label (1): b" in printed
    assert "over 2 of 2 cases" in printed and "over 1 of 2 cases" in printed


# ------------------------------------------------------------------------ 13. unwritable outputs
def test_13_unwritable_output(data, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OSError) as err:
        stage1.main(stage1_args(data, blocker / "run"))
    assert one_line(err) == (f"cannot create output folder {blocker / 'run' / 'U_Net2D5' / 'models'}: Not a "
                             "directory; choose a writable location")

    model_dir = a_model(tmp_path / "m").parents[2]
    (written,) = inference.main(inference_args(data, model_dir))
    before = written.read_bytes()

    def disk_full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError) as err:
        inference.main(inference_args(data, model_dir))
    assert err.value.errno == errno.ENOSPC
    assert one_line(err) == (f"cannot write {written}: No space left on device; check the free disk space and that "
                             f"{written.parent} is writable (any previous {written.name} is unchanged)")
    assert written.read_bytes() == before and os.listdir(written.parent) == [written.name]


# ------------------------------------------------------------------------ atomic writes
def _partial_then_fail(target_index: int):
    def writer(*args, **kwargs):
        Path(str(args[target_index])).write_bytes(b"half a fi")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return writer


@pytest.mark.parametrize("name, save, patch", [
    ("CP.pth", lambda p: io.save_torch({"w": torch.ones(3)}, p), ("torch", "save", 1)),
    ("img.nii.gz", lambda p: io.write_image(sitk.GetImageFromArray(np.ones((2, 3, 4), np.float32)), p),
     ("sitk", "WriteImage", 1)),
    ("seg.nii.gz", lambda p: io.save_nifti(nib.Nifti1Image(np.ones((2, 3, 4), np.uint8), np.eye(4)), p),
     ("nib", "save", 1)),
    ("log.csv", lambda p: io.save_csv(pd.DataFrame({"epoch": [1, 2]}), p), ("DataFrame", "to_csv", 1)),
    ("notes.txt", lambda p: io.save_text("hello\n", p), ("Path", "write_text", 0)),
])
def test_atomic_write_keeps_previous_file(tmp_path, monkeypatch, name, save, patch):
    path = tmp_path / "out" / name
    save(path)
    before = path.read_bytes()
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would make it, not mkstemp's 0600
    module, attr, index = patch
    owner = {"torch": torch, "sitk": sitk, "nib": nib, "DataFrame": pd.DataFrame, "Path": Path}[module]
    if module == "Path":
        original = Path.write_text

        def write_text(self, *a, **k):
            if self.name.startswith(f".{name}."):
                self.write_bytes(b"half a fi")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return original(self, *a, **k)
        monkeypatch.setattr(Path, "write_text", write_text)
    else:
        monkeypatch.setattr(owner, attr, _partial_then_fail(index))
    with pytest.raises(OSError) as err:
        save(path)
    assert one_line(err).startswith(f"cannot write {path}: No space left on device;")
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [name]  # no temporary file left


def test_no_write_bypasses_utilities_io():
    """Every file the project writes goes through utilities/io (temp file + rename)."""
    pattern = re.compile(r"torch\.save\(|sitk\.WriteImage\(|nib\.save\(|\.to_csv\(|\.write_text\(|\.write_bytes\("
                         r"|open\([^)]*['\"][wa]b?['\"]|np\.save|savefig\(")
    # fine: writing to the temporary file of utilities.io.atomic_path (``tmp``), to an in-memory
    # buffer, or to /proc
    allowed = re.compile(r"\btmp\b|\bbuffer\b|/proc/")
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith((".venv/", "tests/")):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line) and not allowed.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, offenders


# ------------------------------------------------------------------------ exact resume
# Stage 1 loads patches in a worker process: its random state must come back on resume too
# (workers kept across epochs would carry states no checkpoint holds). SCM loads in-process.
WORKERS = ("--num_workers", "1")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Data and an uninterrupted 2-epoch stage-1 run. The volumes (40×32×16) are longer than
    the patches along X, so where each patch is cropped is random too."""
    root = tmp_path_factory.mktemp("resume")
    p = make_vs_dataset(root / "data", n_train=2, n_val=1, n_inf=0, shape_zyx=(16, 32, 40))
    run = stage1.main(stage1_args(p, root / "a", *WORKERS))
    return root, p, run


class Killed(KeyboardInterrupt):
    """Stands for the process being killed."""


class KillAt(Callback):
    """Kills the run at the start of a (0-based) epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, epoch, state):
        if epoch == self.epoch:
            raise Killed


def test_resume_stage1_is_exact(uninterrupted, monkeypatch):
    root, p, run_a = uninterrupted
    with pytest.raises(Killed):
        stage1.main(stage1_args(p, root / "b", *WORKERS), callbacks=[KillAt(1)])  # at the start of epoch 2
    models_b = root / "b" / "U_Net2D5" / "models"
    assert not (models_b / "CP_final.pth").exists()
    epoch1 = weights(models_b / "CP_latest.pth", "model")
    run_b = stage1.main(stage1_args(p, root / "b", *WORKERS, "--resume"))
    final_a, final_b = weights(run_a / "models" / "CP_final.pth"), weights(run_b / "models" / "CP_final.pth")
    assert same_weights(final_a, final_b)
    assert not same_weights(final_a, epoch1)  # training went on after the interruption
    assert same_weights(weights(run_a / "models" / "CP_best.pth"), weights(run_b / "models" / "CP_best.pth"))
    log_a, log_b = (pd.read_csv(r / "log.csv").drop(columns="time_s") for r in (run_a, run_b))
    assert log_b["epoch"].tolist() == [1, 2]  # the row written before the interruption is kept
    pd.testing.assert_frame_equal(log_a, log_b)


def test_same_seed_same_result(uninterrupted):
    root, p, run_a = uninterrupted
    run_c = stage1.main(stage1_args(p, root / "c", *WORKERS))
    assert same_weights(weights(run_a / "models" / "CP_final.pth"), weights(run_c / "models" / "CP_final.pth"))


def test_resume_scm_is_exact(uninterrupted, tmp_path, monkeypatch):
    _, p, _ = uninterrupted
    pre = pretrained(tmp_path)
    out_a = scm.main(scm_args(p, pre, tmp_path / "a"))
    with pytest.raises(Killed):  # at the start of epoch 2, after the teachers' first reload
        scm.main(scm_args(p, pre, tmp_path / "b"), callbacks=[KillAt(1)])
    out_b = scm.main(scm_args(p, pre, tmp_path / "b", "--resume"))
    models_a, models_b = out_a / "U_Net2D5" / "models", out_b / "U_Net2D5" / "models"
    for k in (1, 2):
        assert same_weights(weights(models_a / f"CP_final_model{k}.pth"), weights(models_b / f"CP_final_model{k}.pth"))
        assert same_weights(weights(models_a / "CP_latest_SCM.pth", f"teacher{k}"),
                            weights(models_b / "CP_latest_SCM.pth", f"teacher{k}"))
    assert not same_weights(weights(models_a / "CP_final_model1.pth"),
                            weights(pre[0] / "U_Net2D5" / "models" / "CP_best.pth"))
    log_a, log_b = (pd.read_csv(o / "U_Net2D5" / "log_SCM.csv").drop(columns="time_s") for o in (out_a, out_b))
    pd.testing.assert_frame_equal(log_a, log_b)
