"""utilities/method/metrics.py: overlap metrics on tiny masks and surface distances on a shifted
cube, computed by hand; empty masks scored, never dropped."""
from __future__ import annotations

import math

import numpy as np
import pytest

from utilities.method.metrics import all_metrics, overlap_metrics, surface_metrics


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


def test_all_metrics_of_two_single_voxels_in_mm():
    """One voxel each, 3 voxels apart along the last axis at 2 mm: no overlap, every surface
    distance 6 mm."""
    pred = np.zeros((2, 3, 5), bool)
    gt = np.zeros((2, 3, 5), bool)
    pred[1, 1, 0] = gt[1, 1, 3] = True
    got = all_metrics(pred, gt, (1.0, 1.0, 2.0))
    assert got == pytest.approx({"dice": 0.0, "jaccard": 0.0, "precision": 0.0, "recall": 0.0, "hd95": 6.0,
                                 "assd": 6.0})


def test_all_metrics_of_two_empty_masks():
    got = all_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), (1.0, 1.0, 1.0))
    assert {k: got[k] for k in ("dice", "jaccard", "precision", "recall")} == dict.fromkeys(
        ("dice", "jaccard", "precision", "recall"), 1.0)
    assert math.isnan(got["hd95"]) and math.isnan(got["assd"])
