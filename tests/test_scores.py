"""Metrics and scoring on known masks, empty cases kept."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from utilities import scores
from utilities.layout import RunLayout
from utilities.metrics import overlap_metrics, surface_metrics


def _cube(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return m


@pytest.mark.parametrize("pred_cells, gt_cells, dice, jaccard, precision, recall", [
    # 1-D layouts on a 1×1×4 grid: hand-computed
    ([1, 1, 0, 0], [1, 1, 0, 0], 1.0, 1.0, 1.0, 1.0),
    ([1, 1, 0, 0], [0, 1, 1, 0], 0.5, 1 / 3, 0.5, 0.5),
    ([1, 1, 1, 1], [1, 0, 0, 0], 0.4, 0.25, 0.25, 1.0),
    ([0, 0, 0, 0], [1, 0, 0, 0], 0.0, 0.0, 0.0, 0.0),
    ([1, 0, 0, 0], [0, 0, 0, 0], 0.0, 0.0, 0.0, 0.0),
    ([0, 0, 0, 0], [0, 0, 0, 0], 1.0, 1.0, 1.0, 1.0),
])
def test_overlap_metrics_hand_computed(pred_cells, gt_cells, dice, jaccard, precision, recall):
    pred = np.array(pred_cells, bool).reshape(1, 1, 4)
    gt = np.array(gt_cells, bool).reshape(1, 1, 4)
    got = overlap_metrics(pred, gt)
    assert got == pytest.approx({"dice": dice, "jaccard": jaccard, "precision": precision, "recall": recall})


def test_surface_metrics_shifted_cube_in_mm():
    gt = _cube((10, 10, 10), (2, 2, 2), (6, 6, 6))
    pred = np.roll(gt, 1, axis=0)  # shifted by one voxel along axis 0 (spacing 2 mm)
    m = surface_metrics(pred, gt, (2.0, 1.0, 1.0))
    assert m["hd95"] == pytest.approx(2.0)
    assert 0 < m["assd"] <= 2.0
    assert math.isnan(surface_metrics(np.zeros_like(gt), gt, (1, 1, 1))["hd95"])


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="differs"):
        overlap_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))


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
