"""Segmentation metrics on binary masks (medpy), with empty masks kept, never dropped.

Scoring files with them is :mod:`utilities.evaluation.scoring` (the words: :mod:`utilities.evaluation`)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["OVERLAP_METRICS", "SURFACE_METRICS", "overlap_metrics", "surface_metrics", "all_metrics"]

OVERLAP_METRICS = ("dice", "jaccard", "precision", "recall")
SURFACE_METRICS = ("hd95", "assd")


def overlap_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Dice, Jaccard, precision and recall of two binary masks (medpy).

    Empty masks are scored, never dropped: when both masks are empty every overlap metric is 1
    (the empty prediction is right); when only one is empty, Dice and Jaccard are 0, and a
    ratio whose denominator is empty (precision of an empty prediction, recall of an empty
    label) is 0.
    """
    pred = np.asarray(pred).astype(bool)
    gt = np.asarray(gt).astype(bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from label shape {gt.shape}")
    if not pred.any() and not gt.any():
        return dict.fromkeys(OVERLAP_METRICS, 1.0)
    mb = _medpy()
    return {
        "dice": float(mb.dc(pred, gt)),
        "jaccard": float(mb.jc(pred, gt)),
        "precision": float(mb.precision(pred, gt)) if pred.any() else 0.0,
        "recall": float(mb.recall(pred, gt)) if gt.any() else 0.0,
    }


def surface_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """95% Hausdorff distance and average symmetric surface distance in mm (``spacing`` in the
    arrays' axis order). NaN when either mask is empty (undefined)."""
    pred = np.asarray(pred).astype(bool)
    gt = np.asarray(gt).astype(bool)
    if not pred.any() or not gt.any():
        return {"hd95": math.nan, "assd": math.nan}
    spacing = tuple(float(s) for s in spacing)
    mb = _medpy()
    return {"hd95": float(mb.hd95(pred, gt, voxelspacing=spacing)),
            "assd": float(mb.assd(pred, gt, voxelspacing=spacing))}


def _medpy() -> Any:
    """medpy's binary metrics, imported on first use: its package imports scipy.stats (0.6 s),
    which the scripts that only import this module (every training script) never need."""
    from medpy.metric import binary

    return binary


def all_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Overlap and surface metrics of one case."""
    return {**overlap_metrics(pred, gt), **surface_metrics(pred, gt, spacing)}
