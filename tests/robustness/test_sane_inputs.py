"""Inputs that every earlier check accepts but that cannot give a sane result: each is refused
with one line naming the file or flag (or warned about) before any training step or output."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import a_model, inference_args, load_script, one_line, pretrained, scm_args, stage1_args
from synth import blob_case, write

import inference
import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
import train_SCM as scm
from utilities import scores
from utilities.data.layout import RunLayout

MAKE_SPLIT = load_script("splits/make_split.py")
SIMULATE = load_script("data/simulate_7points.py")


def _nothing_written(tmp_path):
    assert not (tmp_path / "run").exists() and not list(tmp_path.rglob("*_seg.nii.gz"))


def _image(seed=0):
    image, _ = blob_case(seed=seed)
    return image.astype(np.float32)


@pytest.mark.parametrize("script", ["stage1", "inference"])
@pytest.mark.parametrize("case", ["huge", "outlier", "constant"])
def test_images_normalisation_cannot_use(data, tmp_path, script, case):
    subject = "vs_gk_4" if script == "inference" else "vs_gk_1"
    path = data["image_crop"] / f"{subject}_T2.nii.gz"
    image = _image()
    if case == "huge":
        image = image * np.float32(3e35)  # finite, but its variance overflows float32
    elif case == "outlier":
        image[3, 4, 5] = 1e20
    else:
        image[:] = 7.0
    write(image, path)
    with pytest.raises(ValueError) as err:
        if script == "stage1":
            stage1.main(stage1_args(data, tmp_path / "run"))
        else:
            inference.main(inference_args(data, a_model(tmp_path / "m").parents[2]))
    expected = {
        "huge": f"image {path} holds values up to {float(np.abs(image).max()):.3g}, too large to normalise in float32 "
                "(the result is NaN); rescale it (e.g. fix its scale factor) and re-export it",
        "outlier": f"image {path}: a few extreme voxels (up to 1e+20, while 99.5 % of the voxels are at most "
                   f"{float(np.quantile(image.astype(np.float64), 0.995)):.3g}) dominate the z-normalisation and leave "
                   "every other voxel at nearly one value; clip or fix those voxels and re-export it",
        "constant": f"image {path} is constant (7 everywhere); it holds no image to learn from or segment",
    }[case]
    assert one_line(err) == expected
    _nothing_written(tmp_path)


def test_float_label_refused_everywhere(data, tmp_path):
    """A smoothed label (1e-3 everywhere outside the lesion) would be a whole-volume lesion."""
    path = data["label_crop"] / "vs_gk_3_Label.nii.gz"  # the validation case's label
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
    label[label == 0] = 1e-3
    write(label, path)
    count = int((label == np.float32(1e-3)).sum())
    message = (f"label {path} holds {count} non-integer value(s) (e.g. 0.001); a label "
               "must hold integers (0 background, 1 lesion): threshold it or re-export it as an integer label")
    with pytest.raises(ValueError) as err:
        stage1.main(stage1_args(data, tmp_path / "run"))
    assert one_line(err) == message
    _nothing_written(tmp_path)
    # scoring against it
    prediction = (sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 0.5).astype(np.uint8)
    write(prediction, RunLayout(tmp_path / "m", "U_Net2D5").prediction("vs_gk_3", "T2"))
    with pytest.raises(ValueError) as err:
        scores.main(["--model_dir", str(tmp_path / "m"), "--dataset_split", str(data["split"]), "--phase",
                     "validation", "--path_labels", str(data["label_crop"])])
    assert one_line(err) == message
    # simulating its 7 points
    with pytest.raises(ValueError) as err:
        SIMULATE.main(["--dataset_split", str(data["split"]), "--path_labels", str(data["label_crop"]),
                       "--path_anno_7points", str(tmp_path / "anno"), "--phase", "validation"])
    assert one_line(err) == message
    assert not list((tmp_path / "anno").glob("*.nii.gz"))


def test_multichannel_and_2d_images_refused(data, tmp_path):
    path = data["image_crop"] / "vs_gk_1_T2.nii.gz"
    image = _image()
    two = sitk.JoinSeries([sitk.GetImageFromArray(image), sitk.GetImageFromArray(image)])  # 4D: 2 volumes
    sitk.WriteImage(two, str(path))
    with pytest.raises(ValueError) as err:
        stage1.main(stage1_args(data, tmp_path / "run"))
    assert one_line(err) == (f"image {path} has 2 channels (shape [32, 32, 16] x 2); expected a 3D volume with one "
                             "channel: save each channel (sequence) as its own file")
    _nothing_written(tmp_path)

    flat = data["image_crop"] / "vs_gk_4_T2.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(image[8]), str(flat))  # one 2D slice, 32x32
    with pytest.raises(ValueError) as err:
        inference.main(inference_args(data, a_model(tmp_path / "m").parents[2]))
    assert one_line(err) == f"image {flat} is 2D (shape [32, 32]); expected a 3D volume"
    _nothing_written(tmp_path)


def test_training_seeds_without_annotation(data, tmp_path, capsys):
    seeds = {s: data["geodesic_label"] / f"{s}_GeodesicLabel.nii.gz" for s in ("vs_gk_1", "vs_gk_2")}
    arrays = {s: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for s, p in seeds.items()}
    write(np.full_like(arrays["vs_gk_1"], 2), seeds["vs_gk_1"])  # nothing annotated: a warning
    stage1.main(stage1_args(data, tmp_path / "ok", "--max_epochs", "1"))
    assert [line.split(" WARNING ", 1)[1] for line in capsys.readouterr().out.splitlines()
            if "no annotated voxel" in line] == [
        f"expanded-seed label {seeds['vs_gk_1']} has no annotated voxel (every voxel is 2, unknown): this case adds "
        "nothing to the training; re-run the geodesic expansion for it"]
    background_only = arrays["vs_gk_2"].copy()
    background_only[background_only == 1] = 2  # no foreground seed in any training case: an error
    write(background_only, seeds["vs_gk_2"])
    with pytest.raises(ValueError) as err:
        stage1.main(stage1_args(data, tmp_path / "run"))
    assert one_line(err) == (f"none of the 2 training case(s) has a foreground voxel (1) in its expanded seeds (e.g. "
                             f"{seeds['vs_gk_1']}): the network would learn background only; check "
                             "--path_geodesic_labels or re-run the geodesic expansion")
    _nothing_written(tmp_path)


@pytest.mark.parametrize("argv, message", [
    (["--down_size", "1", "1", "1"], "--down_size [1, 1, 1] leaves an mCRF view of a single pixel, whose loss is 0; "
                                     "use sizes of at least 2 (or --weight_gatedcrf 0 to train without the mCRF)"),
    (["--spatial_shape", "16", "16", "16"], "--spatial_shape [16, 16, 16] does not fit U_Net2D5: input spatial shape "
                                            "(16, 16, 16) leaves a single bottleneck voxel"),
])
def test_flags_that_cannot_train(data, tmp_path, argv, message):
    with pytest.raises(ValueError) as err:
        stage1.main(stage1_args(data, tmp_path / "run", *argv))
    assert one_line(err).startswith(message)
    _nothing_written(tmp_path)


def test_small_spatial_shape_named_in_scm_and_inference(data, tmp_path):
    for call in (lambda: scm.main(scm_args(data, pretrained(tmp_path), tmp_path / "run", "--spatial_shape", "16", "16",
                                           "16")),
                 lambda: inference.main(inference_args(data, a_model(tmp_path / "m").parents[2], "--spatial_shape",
                                                       "16", "16", "16"))):
        with pytest.raises(ValueError) as err:
            call()
        assert one_line(err).startswith("--spatial_shape [16, 16, 16] does not fit U_Net2D5: ")
    _nothing_written(tmp_path)


def test_rampup_longer_than_the_run_warned(data, tmp_path, capsys):
    stage1.main(stage1_args(data, tmp_path / "run", "--max_epochs", "1", "--rampup_epochs", "30"))
    out = capsys.readouterr().out
    assert ("WARNING --rampup_epochs 30 (after --warmup_epochs 0) does not end within --max_epochs 1: the CRF and VM "
            "weights reach only 0.007 of their value by the last epoch; lower --rampup_epochs to at most 0, or raise "
            "--max_epochs to at least 31") in out


def test_scores_refuse_prediction_shifted_beyond_the_field_of_view(data, tmp_path):
    label = data["label_crop"] / "vs_gk_4_Label.nii.gz"
    pred = RunLayout(tmp_path / "m", "U_Net2D5").prediction("vs_gk_4", "T2")
    write(sitk.GetArrayFromImage(sitk.ReadImage(str(label))), pred, origin=(1.0, -2.0, 103.0))  # 100 mm away
    with pytest.raises(ValueError) as err:
        scores.main(["--model_dir", str(tmp_path / "m"), "--dataset_split", str(data["split"]),
                     "--path_labels", str(data["label_crop"])])
    assert one_line(err) == (f"prediction {pred} has origin [1.0, -2.0, 103.0] but label {label} has "
                             "[1.0, -2.0, 3.0]; predict on the images that match the labels")
    assert not (tmp_path / "m" / "U_Net2D5" / "results_inference.csv").exists()


def test_split_without_validation_case_warned(tmp_path, capsys):
    for i in range(3):
        write(_image(i), tmp_path / "images" / f"c{i}_Flair.nii.gz")
    split = MAKE_SPLIT.main(["--images_dir", str(tmp_path / "images"), "--output", str(tmp_path / "s.csv")])
    assert split["phase"].value_counts().to_dict() == {"training": 2, "inference": 1}
    assert [line.split(" WARNING ", 1)[1] for line in capsys.readouterr().out.splitlines() if " WARNING " in line] == [
        f"{tmp_path / 's.csv'} has no validation case (of 3): the trainers train on every training case and choose "
        "CP_best by seed_dice on their expanded seeds (CP_final: the last epoch); for a held-out validation case use "
        "more images or other --ratios"]
    MAKE_SPLIT.main(["--images_dir", str(tmp_path / "images"), "--output", str(tmp_path / "all.csv"), "--ratios",
                     "1", "0", "0"])   # asked for: said, not warned
    out = capsys.readouterr().out
    assert " WARNING " not in out and f"{tmp_path / 'all.csv'} has no validation case (of 3): the trainers" in out
