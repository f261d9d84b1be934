"""Validation: whole-volume Dice against the full labels and against the expanded seeds, the
predicted foreground fraction (training health) and the network against its own seeds
(:mod:`utilities.method.health`), every rank's shard gathered. Scoring predictions after training
is :mod:`utilities.evaluation.scoring` (the words: :mod:`utilities.evaluation`)."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from utilities.core.distributed import DistContext, unwrap
from utilities.method.defaults import SW_OVERLAP
from utilities.method.health import certainly_below, seed_ratio
from utilities.method.losses import one_hot, soft_dice
from utilities.method.optim import Amp
from utilities.models.prediction import sliding_window_predict

__all__ = ["VALIDATION_METRICS", "seed_shares", "volume_scores", "evaluate", "mean_scores"]

#: What :func:`evaluate` reports per volume (``dice`` and the ``seed_*`` scores when their reference is loaded).
VALIDATION_METRICS = ("dice", "seed_dice", "fg_fraction", "empty", "seed_recall", "seed_fpr", "seed_ratio",
                      "seed_below")


def seed_shares(foreground: torch.Tensor, seeds: torch.Tensor) -> dict[str, torch.Tensor]:
    """Shares of all voxels: predicted foreground (``fg_train``), the expanded seeds' core
    (``seed_fg``, label 1), unknown (``seed_unknown``, 2) and background (``seed_bg``, 0, outside
    the points' boxes), and the predicted foreground on each of them (``fg_core``,
    ``fg_unknown``, ``fg_outside``). Stage 1 logs them per training step; :func:`volume_scores`
    scores a volume with them.

    Args:
        foreground: boolean, any shape; seeds: integer, the same shape.
    """
    if foreground.shape != seeds.shape:
        raise ValueError(f"seed_shares: foreground {tuple(foreground.shape)} and seeds {tuple(seeds.shape)} differ")
    out = {"fg_train": foreground.float().mean()}
    for label, seed_name, fg_name in ((1, "seed_fg", "fg_core"), (2, "seed_unknown", "fg_unknown"),
                                      (0, "seed_bg", "fg_outside")):
        where = seeds == label
        out[seed_name] = where.float().mean()
        out[fg_name] = (where & foreground).float().mean()
    return out


def volume_scores(logits: torch.Tensor, label: torch.Tensor | None,
                  seeds: torch.Tensor | None) -> dict[str, float]:
    """Scores of ``argmax(logits)`` for one volume.

    ``dice``: foreground Dice against the full label; ``seed_dice``: against the expanded seeds
    on their annotated voxels only (label 1 = foreground near the seed, 0 = background outside
    the box, 2 = unknown, ignored); ``fg_fraction``: the fraction of voxels predicted as
    foreground; ``empty``: 1.0 if no voxel is predicted as foreground, else 0.0. Uses the
    losses' Dice. Against the points (with seeds that hold a core): ``seed_recall``, the share
    of the seed core predicted; ``seed_fpr``, the share of the certain background (outside the
    points' boxes) predicted; ``seed_ratio`` (:func:`utilities.method.health.seed_ratio`, the
    Dice ratio to the seeds if the core is lesion) and ``seed_below``: 1.0 when the volume is below
    its seeds by the certain reading (:func:`utilities.method.health.certainly_below`: nothing
    predicted in the points' boxes, or most of the foreground outside them), else 0.0.

    Args:
        logits: ``(1, C, X, Y, Z)``; label, seeds: ``(1, 1, X, Y, Z)`` integer or ``None``.
    """
    num_classes = logits.shape[1]
    argmax = logits.argmax(1)
    pred = one_hot(argmax, num_classes)
    fg_fraction = float((argmax > 0).float().mean())
    scores: dict[str, float] = {"fg_fraction": fg_fraction, "empty": float(fg_fraction == 0.0)}
    if label is not None:
        scores["dice"] = _foreground_dice(pred, one_hot((label[:, 0] > 0).long(), num_classes))
    if seeds is not None:
        known = seeds[:, 0] < 2
        scores["seed_dice"] = _foreground_dice(pred, one_hot((seeds[:, 0] == 1).long(), num_classes), known)
        scores |= _seed_scores(seed_shares(argmax > 0, seeds[:, 0]))
    return scores


def _seed_scores(shares: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """``seed_recall``, ``seed_fpr``, ``seed_ratio`` and ``seed_below`` of one volume's
    :func:`seed_shares` (none without a seed core: nothing to compare with)."""
    v = {k: float(t) for k, t in shares.items()}
    if not v["seed_fg"] > 0:
        return {}
    ratio = seed_ratio(v["seed_fg"], v["seed_unknown"], v["fg_core"], v["fg_unknown"], v["fg_outside"])
    return {"seed_recall": v["fg_core"] / v["seed_fg"],
            "seed_fpr": v["fg_outside"] / v["seed_bg"] if v["seed_bg"] > 0 else 0.0,
            "seed_ratio": ratio, "seed_below": float(certainly_below(v["fg_core"], v["fg_unknown"], v["fg_outside"]))}


def _foreground_dice(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean Dice of the foreground classes of one volume; 1 where prediction and target are
    both empty (a correct empty prediction)."""
    dice = soft_dice(pred, target, mask, eps=0.0)[0, 1:]
    if mask is not None:
        pred, target = pred * mask.unsqueeze(1), target * mask.unsqueeze(1)
    both_empty = (pred.sum((2, 3, 4)) + target.sum((2, 3, 4)))[0, 1:] == 0
    return float(torch.where(both_empty, torch.ones_like(dice), dice).mean())


def evaluate(model: nn.Module, loader: Iterable[Mapping[str, Any]], roi_size: tuple[int, ...] | list[int],
             device: torch.device, sw_batch_size: int = 1, overlap: float = SW_OVERLAP, amp: Amp | None = None,
             ctx: DistContext | None = None,
             on_volume: Callable[[Mapping[str, Any], torch.Tensor], None] | None = None
             ) -> dict[str, dict[str, float]]:
    """Scores of every validation volume: ``{subject: {metric: value}}`` (see :func:`volume_scores`).

    With a distributed ``ctx`` each rank scores its shard of the loader and the results are
    gathered, so every rank returns all subjects. ``on_volume(batch, logits)`` is called for
    each volume (e.g. to log an image grid). The forward passes bypass a DDP wrapper: ranks
    hold different numbers of volumes, so no collective may run inside this loop.
    """
    model.eval()
    net = unwrap(model)
    results: dict[str, dict[str, float]] = {}
    for batch in loader:
        image = batch["image"].to(device)
        logits = sliding_window_predict(net, image, roi_size, sw_batch_size, overlap, amp)
        label = batch.get("label")
        seeds = batch.get("seeds")
        scores = volume_scores(logits, None if label is None else label.to(device),
                               None if seeds is None else seeds.to(device))
        results[batch["subject"][0]] = scores
        if on_volume is not None:
            on_volume(batch, logits)
    model.train()
    if ctx is not None and ctx.distributed:
        merged: dict[str, dict[str, float]] = {}
        for part in ctx.gather(results):
            merged.update(part)
        results = merged
    return results


def mean_scores(scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean of each of :data:`VALIDATION_METRICS` over volumes (NaN when not computed)."""
    out = {}
    for metric in VALIDATION_METRICS:
        values = [s[metric] for s in scores.values() if metric in s]
        out[metric] = float(sum(values) / len(values)) if values else math.nan
    return out
