"""Scoring on known masks, empty cases kept; a split's subjects, or a folder of predictions
against a folder of labels with no split."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from helpers import SHAPE, a_model, one_line

import inference
from utilities import scores
from utilities.data import splits
from utilities.data.layout import RunLayout
from utilities.evaluation import scoring
from utilities.workflow.cli import run_main


def _cube(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return m


def _write(mask, path, spacing=(1.0, 1.0, 2.0)):
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def test_scores_script_keeps_empty_cases(tmp_path, capsys):
    shape = (8, 12, 12)
    gt_a = _cube(shape, (2, 2, 2), (6, 8, 8))
    cases = {
        "a": (gt_a, gt_a),                                   # perfect
        "b": (np.zeros(shape, bool), gt_a),                  # empty prediction
        "c": (np.zeros(shape, bool), np.zeros(shape, bool)),  # both empty
    }
    split = tmp_path / "split.csv"
    split.write_text("".join(f"{s},inference\n" for s in cases) + "x,training\n")
    for s, (pred, gt) in cases.items():
        _write(pred, RunLayout(tmp_path / "m", "U_Net").prediction(s, "T2"))
        _write(gt, tmp_path / "labels" / f"{s}_Label.nii.gz")
    out = scores.main(["--model_dir", str(tmp_path / "m"), "--network", "U_Net", "--dataset_split", str(split),
                       "--image_postfix", "T2", "--phase", "inference", "--path_labels", str(tmp_path / "labels"),
                       "--label_postfix", "Label"])
    table = pd.read_csv(out)
    assert out == tmp_path / "m" / "U_Net" / "results_inference.csv"
    assert table["subject"].tolist() == ["a", "b", "c", "mean", "std"]
    per_case = table.set_index("subject")
    assert per_case.loc["a", "dice"] == 1.0 and per_case.loc["a", "hd95"] == 0.0
    assert per_case.loc["b", "dice"] == 0.0 and np.isnan(per_case.loc["b", "hd95"])
    assert per_case.loc["c", "dice"] == 1.0
    assert per_case.loc["mean", "dice"] == pytest.approx(2 / 3)  # over all 3 cases
    assert per_case.loc["mean", "hd95"] == 0.0  # over the 1 case where it is defined
    printed = capsys.readouterr().out
    assert "empty prediction (2): b, c" in printed
    assert "over 1 of 3 cases" in printed and "over 3 of 3 cases" in printed


def test_scores_missing_predictions_listed(tmp_path):
    split = tmp_path / "split.csv"
    split.write_text("a,inference\nb,inference\n")
    with pytest.raises(FileNotFoundError, match="4 file"):
        scores.main(["--model_dir", str(tmp_path), "--dataset_split", str(split), "--path_labels", str(tmp_path)])


def test_prediction_dir_with_postfix(tmp_path):
    """A flat folder of <subject><postfix>.nii.gz predictions (any tool's), scored like inference.py's."""
    shape = (8, 12, 12)
    gt = _cube(shape, (2, 2, 2), (6, 8, 8))
    pred = _cube(shape, (2, 2, 2), (6, 8, 5))  # 3 of 6 columns along the last axis: precision 1, recall 1/2
    split = tmp_path / "split.csv"
    split.write_text("a,validation\n")
    _write(pred, tmp_path / "preds" / "a_pred.nii.gz")
    _write(gt, tmp_path / "labels" / "a_Label.nii.gz")
    out = scores.main(["--prediction_dir", str(tmp_path / "preds"), "--prediction_postfix", "_pred",
                       "--dataset_split", str(split), "--phase", "validation",
                       "--path_labels", str(tmp_path / "labels")])
    assert out == tmp_path / "preds" / "results_validation.csv"
    row = pd.read_csv(out).set_index("subject").loc["a"]
    assert row["precision"] == 1.0 and row["recall"] == 0.5
    assert row["dice"] == pytest.approx(2 / 3) and row["jaccard"] == 0.5
    # without --prediction_postfix: <subject> (nnU-Net's name) or <subject>_<image_postfix> (inference.py's)
    (tmp_path / "preds" / "a_pred.nii.gz").rename(tmp_path / "preds" / "a_T2.nii.gz")
    args = ["--prediction_dir", str(tmp_path / "preds"), "--dataset_split", str(split), "--phase", "validation",
            "--path_labels", str(tmp_path / "labels")]
    assert pd.read_csv(scores.main(args)).set_index("subject").loc["a", "dice"] == pytest.approx(2 / 3)
    _write(gt, tmp_path / "preds" / "a.nii.gz")
    with pytest.raises(ValueError) as err:
        scores.main(args)
    assert one_line(err) == (f"--prediction_dir {tmp_path / 'preds'} holds 2 predictions of subject 'a': a.nii.gz "
                             "and a_T2.nii.gz; keep one of them, or pass --prediction_postfix")
    assert pd.read_csv(scores.main([*args, "--prediction_postfix", ""])).set_index("subject").loc["a", "dice"] == 1.0


# ---- a folder against a folder (--path_predictions, no split) -------------------------------------

SHAPE3 = (8, 12, 12)
GT = _cube(SHAPE3, (2, 2, 2), (6, 8, 8))              # 4 x 6 x 6 = 144 voxels
HALF = _cube(SHAPE3, (2, 2, 2), (6, 8, 5))            # its first 3 of 6 columns: precision 1, recall 1/2


@pytest.fixture
def no_split(monkeypatch, tmp_path):
    """Run from a folder holding splits/split_VS.csv (naming other subjects), with the split reader
    made to fail: folder scoring must never read a split."""
    (tmp_path / "cwd" / "splits").mkdir(parents=True)
    (tmp_path / "cwd" / "splits" / "split_VS.csv").write_text("vs_gk_202,inference\n")
    monkeypatch.chdir(tmp_path / "cwd")

    def refuse(*args, **kwargs):
        raise AssertionError(f"a split was read: {args}")

    monkeypatch.setattr(scoring, "read_split", refuse)
    monkeypatch.setattr(splits, "read_split", refuse)


def test_no_default_names_a_dataset():
    """Every default of scores.py is dataset-free: no split, label folder or postfix of VS/BraTS."""
    defaults = {a.dest: a.default for a in scores.build_parser()._actions if a.dest != "help"}
    assert {k: v for k, v in defaults.items() if v is not None} == {"label_postfix": "Label", "allow_missing": False,
                                                                    "report": False}


@pytest.mark.parametrize("predictions, labels, postfix", [
    # postfix-free names on both sides (nnU-Net's convention), .nrrd and .mha
    ({"brain1.nrrd": GT, "brain2.mha": HALF, "brain3.nii.gz": np.zeros(SHAPE3, bool)},
     {"brain1.nrrd": GT, "brain2.mha": GT, "brain3.nii": GT}, "''"),
    # postfixes: predictions <subject>_pred (read from the names), labels <subject>_Label, mixed with none
    ({"brain1_pred.nii.gz": GT, "brain2_pred.nrrd": HALF, "brain3.mha": np.zeros(SHAPE3, bool)},
     {"brain1_Label.nii.gz": GT, "brain2.nrrd": GT, "brain3_Label.mha": GT}, "'_pred'"),
], ids=["no postfix", "postfix"])
def test_folder_against_folder(tmp_path, capsys, no_split, predictions, labels, postfix):
    for name, mask in predictions.items():
        _write(mask, tmp_path / "preds" / name)
    for name, mask in labels.items():
        _write(mask, tmp_path / "labels" / name)
    _write(GT.astype(float) * 0.7, tmp_path / "preds" / (next(iter(predictions)).split(".")[0] + "_prob.nii.gz"))
    (tmp_path / "preds" / "notes.txt").write_text("not an image")
    out = scores.main(["--path_predictions", str(tmp_path / "preds"), "--path_labels", str(tmp_path / "labels")])
    assert out == tmp_path / "preds" / "results_all.csv"
    cases, summary = scoring.read_scores(out)
    assert cases["subject"].tolist() == ["brain1", "brain2", "brain3"]
    table = cases.set_index("subject")
    assert table.loc["brain1", "dice"] == 1.0 and table.loc["brain1", "hd95"] == 0.0
    assert (table.loc["brain2", "precision"], table.loc["brain2", "recall"]) == (1.0, 0.5)
    assert table.loc["brain2", "dice"] == pytest.approx(2 / 3)
    assert table.loc["brain3", "dice"] == 0.0 and math.isnan(table.loc["brain3", "hd95"])
    assert table["label_voxels"].tolist() == [144, 144, 144] and table["pred_voxels"].tolist() == [144, 72, 0]
    assert summary.loc["mean", "dice"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert pd.read_csv(out)["row"].tolist() == ["case"] * 3 + ["summary"] * 2
    printed = capsys.readouterr().out
    assert printed.startswith("preds against labels: ")
    assert "--path_predictions: 1 probability map(s) (<mask>_prob) not scored" in printed
    assert f"--path_predictions {tmp_path / 'preds'}: 1 entry in no image format not read: notes.txt" in printed
    assert ("prediction postfix '_pred' read from the names" in printed) == (postfix == "'_pred'")
    assert not list((tmp_path / "preds").glob("*.tmp*"))  # written through a temporary file, renamed
    assert printed.rstrip().endswith(f"written {out}")
    scores.main(["--path_predictions", str(tmp_path / "preds"), "--path_labels", str(tmp_path / "labels")])
    assert capsys.readouterr().out.rstrip().endswith(f"replaced {out}")   # a second scoring says it replaces


def test_folder_with_a_given_postfix(tmp_path, no_split):
    """--prediction_postfix fixes the names read: <subject>_T2_seg, or the bare <subject>."""
    _write(HALF, tmp_path / "preds" / "a_T2_seg.nrrd")
    _write(GT, tmp_path / "preds" / "b.nii.gz")
    _write(GT, tmp_path / "labels" / "a_Seg.nii.gz")
    _write(GT, tmp_path / "labels" / "b_Seg.nrrd")
    out = scores.main(["--path_predictions", str(tmp_path / "preds"), "--path_labels", str(tmp_path / "labels"),
                       "--label_postfix", "Seg", "--prediction_postfix", "_T2_seg"])
    assert scoring.read_scores(out)[0].set_index("subject")["recall"].to_dict() == {"a": 0.5, "b": 1.0}


def _folders(tmp_path, predictions, labels):
    for name in predictions:
        _write(GT, tmp_path / "preds" / name)
    for name in labels:
        _write(GT, tmp_path / "labels" / name)
    return ["--path_predictions", str(tmp_path / "preds"), "--path_labels", str(tmp_path / "labels")]


def test_missing_pairs_are_named(tmp_path, capsys, no_split):
    """As nnUNetv2_evaluate_folder: a label without a prediction is an error (one line naming it,
    nothing written), and so is a prediction without a label; --allow_missing (nnU-Net's --chill)
    scores the pairs and lists the others."""
    argv = _folders(tmp_path, ["a.nii.gz", "b.nii.gz", "extra.nrrd"], ["a_Label.nii.gz", "b_Label.nii.gz",
                                                                      "c_Label.mha"])
    with pytest.raises(FileNotFoundError) as err:
        scores.main(argv)
    assert one_line(err) == (
        f"--path_predictions {tmp_path / 'preds'} and --path_labels {tmp_path / 'labels'} do not pair up: 1 label(s) "
        "without a prediction: c_Label.mha; 1 prediction(s) without a label: extra.nrrd (a label "
        "<subject>[_Label] pairs with the prediction <subject>[_<postfix>] in any image format); check "
        "--label_postfix/--prediction_postfix, or pass --allow_missing to score the pairs found and list the others")
    assert not (tmp_path / "preds" / "results_all.csv").exists()
    out = scores.main([*argv, "--allow_missing"])
    assert scoring.read_scores(out)[0]["subject"].tolist() == ["a", "b"]
    printed = capsys.readouterr().out
    assert "not scored (--allow_missing): 1 label(s) without a prediction: c_Label.mha" in printed
    assert "not scored (--allow_missing): 1 prediction(s) without a label: extra.nrrd" in printed
    # the command line: one line on stderr, no traceback
    assert run_main(scores.main, argv) == 2
    err_text = capsys.readouterr().err
    assert err_text.startswith("error: --path_predictions ") and err_text.count("\n") == 1


@pytest.mark.parametrize("predictions, labels, message", [
    (["a.nii.gz"], ["b_Label.nii.gz"], "do not pair up: 1 label(s) without a prediction: b_Label.nii.gz; "
                                       "1 prediction(s) without a label: a.nii.gz"),
    (["a.nii.gz", "a_pred.nrrd"], ["a_Label.nii.gz"], "holds 2 predictions of subject 'a': a.nii.gz and "
                                                      "a_pred.nrrd; keep one of them"),
    (["a_pred.nii.gz", "b_T2.nii.gz"], ["a.nii.gz", "b.nii.gz"], "the predictions' names end in different postfixes "
                                                                 "after the subject (a_pred: '_pred', b_T2: '_T2')"),
    (["a.nii.gz", "a.nrrd"], ["a.nii.gz"], "prediction 'a' exists in 2 formats in --path_predictions"),
    (["a.nii.gz"], ["a.nii.gz", "a_Label.nrrd"], "holds two labels of subject 'a': a.nii.gz and a_Label.nrrd"),
])
def test_names_that_do_not_pair(tmp_path, no_split, predictions, labels, message):
    argv = _folders(tmp_path, predictions, labels)
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        scores.main(argv)
    assert message in one_line(err)
    assert not (tmp_path / "preds" / "results_all.csv").exists()


def test_folder_grid_mismatch(tmp_path, no_split):
    """The one grid check: a prediction on another spacing than its label is named, nothing written."""
    _write(GT, tmp_path / "preds" / "a.nrrd", spacing=(1.0, 1.0, 3.0))
    _write(GT, tmp_path / "labels" / "a_Label.nii.gz")
    with pytest.raises(ValueError) as err:
        scores.main(["--path_predictions", str(tmp_path / "preds"), "--path_labels", str(tmp_path / "labels")])
    assert one_line(err) == (f"prediction {tmp_path / 'preds' / 'a.nrrd'} has spacing [1.0, 1.0, 3.0] but label "
                             f"{tmp_path / 'labels' / 'a_Label.nii.gz'} has [1.0, 1.0, 2.0]; predict on the images "
                             "that match the labels")
    assert not (tmp_path / "preds" / "results_all.csv").exists()


@pytest.mark.parametrize("argv, message", [
    ([], "pass what to score: --path_predictions DIR (a folder against --path_labels, no split), or --model_dir DIR / "
         "--prediction_dir DIR with --dataset_split CSV"),
    (["--path_predictions", "p"], "--path_labels is required: the folder of the full labels to score against"),
    (["--model_dir", "m", "--path_labels", "l"], "--model_dir needs --dataset_split, the CSV naming the subjects to "
                                                 "score (or score a folder against a folder: --path_predictions DIR "
                                                 "--path_labels DIR)"),
    (["--prediction_dir", "p", "--path_labels", "l"], "--prediction_dir needs --dataset_split"),
    (["--path_predictions", "p", "--path_labels", "l", "--dataset_split", "s.csv"],
     "--path_predictions excludes --dataset_split: it scores every prediction of the folder, no split"),
    (["--path_predictions", "p", "--model_dir", "m", "--path_labels", "l"], "--path_predictions excludes --model_dir"),
    (["--model_dir", "m", "--path_labels", "l", "--dataset_split", "s.csv", "--allow_missing"],
     "--allow_missing applies to --path_predictions only"),
    (["--path_predictions", "p", "--path_labels", "p"], "--path_predictions p is --path_labels"),
])
def test_what_to_score_is_checked(argv, message, no_split):
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        scores.main(argv)
    assert one_line(err).startswith(message)


def test_prediction_dir_reads_every_format(tmp_path):
    """--prediction_dir with a split: <subject><postfix> in any image format (masks written with
    inference.py --output_format nrrd or mha)."""
    split = tmp_path / "split.csv"
    split.write_text("a,inference\nb,inference\n")
    _write(HALF, tmp_path / "preds" / "a_T2.nrrd")
    _write(GT, tmp_path / "preds" / "b_T2.mha")
    for s in "ab":
        _write(GT, tmp_path / "labels" / f"{s}_Label.nii.gz")
    out = scores.main(["--prediction_dir", str(tmp_path / "preds"), "--prediction_postfix", "_T2",
                       "--dataset_split", str(split), "--path_labels", str(tmp_path / "labels")])
    assert scoring.read_scores(out)[0].set_index("subject")["recall"].to_dict() == {"a": 0.5, "b": 1.0}


def test_the_masks_of_folder_prediction_are_scored_as_written(data, tmp_path, capsys):
    """inference.py --input_folder on scans <subject>_T2 writes <subject>_T2.nrrd masks (and _prob
    maps); scores.py pairs them with <subject>_Label by subject, no split, and the report finds
    each scan by its mask's name."""
    a_model(tmp_path / "m")
    inference.main(["--model_dir", str(tmp_path / "m"), "--network", "U_Net2D5", *SHAPE, "--device", "cpu",
                    "--input_folder", str(data["image_crop"]), "--output_folder", str(tmp_path / "seg"),
                    "--output_format", "nrrd", "--save_probabilities"])
    masks = sorted(p.name for p in (tmp_path / "seg").iterdir() if "_prob" not in p.name)
    assert masks == [f"vs_gk_{k}_T2.nrrd" for k in range(1, 5)]
    out = scores.main(["--path_predictions", str(tmp_path / "seg"), "--path_labels", str(data["label_crop"]),
                       "--report", "--path_images", str(data["image_crop"])])
    cases = scoring.read_scores(out)[0]
    assert cases["subject"].tolist() == [f"vs_gk_{k}" for k in range(1, 5)]
    written = [int((sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "seg" / m))) > 0).sum()) for m in masks]
    assert cases["pred_voxels"].astype(int).tolist() == written
    printed = capsys.readouterr().out
    assert "prediction postfix '_T2' read from the names" in printed
    assert "--path_predictions: 4 probability map(s) (<mask>_prob) not scored" in printed
    assert (tmp_path / "seg" / "report_all" / "report.html").is_file()
