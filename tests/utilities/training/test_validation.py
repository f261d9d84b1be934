"""utilities/training/validation.py: the scores of one volume against its full label and its
expanded seeds on tiny volumes (by hand), their mean over volumes, and ``evaluate`` of a
network whose output is known."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from utilities.training.validation import VALIDATION_METRICS, evaluate, mean_scores, seed_shares, volume_scores


def test_scores_against_the_points_by_hand():
    """16 voxels: 4 seed core, 4 unknown, 8 certain background; the prediction takes 2 of the core,
    3 of the unknown and 1 of the background."""
    seeds = torch.tensor([1, 1, 1, 1, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0]).reshape(1, 1, 4, 2, 2)
    fg = torch.tensor([1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0], dtype=torch.bool).reshape(1, 4, 2, 2)
    shares = {k: float(v) for k, v in seed_shares(fg, seeds[:, 0]).items()}
    assert shares == {"fg_train": 6 / 16, "seed_fg": 4 / 16, "fg_core": 2 / 16, "seed_unknown": 4 / 16,
                      "fg_unknown": 3 / 16, "seed_bg": 8 / 16, "fg_outside": 1 / 16}
    logits = torch.stack([(~fg).float(), fg.float()], 1)
    scores = volume_scores(logits, None, seeds)
    # ratio at the three lesions: L = C 0.4 / 1; C + P's 3 unknown (10/13) / (8/11); the whole boxes (10/14) / (8/12)
    assert scores == {"fg_fraction": 6 / 16, "empty": 0.0, "seed_dice": pytest.approx(4 / 7),
                      "seed_recall": 0.5, "seed_fpr": 1 / 8, "seed_ratio": pytest.approx(15 / 14), "seed_below": 0.0}
    missed = volume_scores(torch.stack([fg.float(), (~fg).float()], 1), None, seeds)   # the complement
    assert missed["seed_recall"] == 0.5 and missed["seed_fpr"] == 7 / 8 and missed["seed_below"] == 1.0
    # 1 of the core's 4 voxels: below by the core reading (the core alone, 2/5), not by the certain one
    one = torch.zeros_like(fg)
    one.view(-1)[0] = True
    inside = volume_scores(torch.stack([(~one).float(), one.float()], 1), None, seeds)
    assert inside["seed_ratio"] == pytest.approx(0.4) and inside["seed_below"] == 0.0
    no_core = volume_scores(logits, None, torch.where(seeds == 1, 2, seeds))
    assert "seed_ratio" not in no_core and "seed_below" not in no_core and "seed_dice" in no_core
    with pytest.raises(ValueError, match=r"seed_shares: foreground \(1, 4, 2, 2\) and seeds \(1, 1, 4, 2, 2\) differ"):
        seed_shares(fg, seeds)


def _logits(foreground) -> torch.Tensor:
    """Two-class logits ``(1, 2, V, 1, 1)`` whose argmax is ``foreground`` (V voxels along X)."""
    fg = torch.tensor(foreground, dtype=torch.float32)[None, :, None, None]
    return torch.stack([1.0 - fg, fg], 1)


def _volume(values) -> torch.Tensor:
    return torch.tensor(values)[None, None, :, None, None]


def test_dice_and_seed_dice_of_a_four_voxel_volume_by_hand():
    """Prediction 1 1 0 0, label 1 0 0 0: Dice 2·1 / (2 + 1). Seeds 1 2 0 0: the unknown voxel
    (the second, predicted foreground) is left out, so the seed Dice is 2·1 / (1 + 1)."""
    scores = volume_scores(_logits([1, 1, 0, 0]), _volume([1, 0, 0, 0]), _volume([1, 2, 0, 0]))
    assert scores["dice"] == pytest.approx(2 / 3)
    assert scores["seed_dice"] == pytest.approx(1.0)
    assert (scores["fg_fraction"], scores["empty"], scores["seed_recall"], scores["seed_fpr"]) == (0.5, 0.0, 1.0, 0.0)
    shifted = volume_scores(_logits([0, 1, 1, 0]), _volume([1, 0, 0, 0]), _volume([1, 2, 0, 0]))
    assert shifted["dice"] == 0.0 and shifted["seed_dice"] == 0.0   # the only seed voxel missed
    assert (shifted["seed_recall"], shifted["seed_fpr"]) == (0.0, 0.5)   # 1 of the 2 background voxels


def test_an_empty_prediction_of_an_empty_volume_scores_one():
    scores = volume_scores(_logits([0, 0, 0]), _volume([0, 0, 0]), _volume([0, 2, 0]))
    assert scores == {"fg_fraction": 0.0, "empty": 1.0, "dice": 1.0, "seed_dice": 1.0}   # no seed core: no ratio


def test_mean_scores_over_the_volumes_that_have_each_score():
    means = mean_scores({"a": {"dice": 0.5, "seed_dice": 1.0, "empty": 0.0},
                         "b": {"dice": 1.0, "empty": 1.0}})
    assert list(means) == list(VALIDATION_METRICS)
    assert (means["dice"], means["seed_dice"], means["empty"]) == (0.75, 1.0, 0.5)
    assert math.isnan(means["seed_recall"]) and math.isnan(means["fg_fraction"])


class _AllForeground(nn.Module):
    """Logits (0, 1) at every voxel, whatever the input: everything is foreground."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), torch.ones_like(x)], 1)


def test_evaluate_a_network_that_predicts_everything():
    """An 8×8×4 volume (256 voxels) whose label holds 16: Dice 2·16 / (256 + 16) = 2/17, by
    sliding windows of 4×4×4; the model is back in training mode afterwards."""
    label = torch.zeros(1, 1, 8, 8, 4, dtype=torch.long)
    label[..., 2:6, 2:6, 1:2] = 1
    seeds = torch.full_like(label, 2)
    seeds[..., 3:5, 3:5, 1:2] = 1
    seeds[..., 0, :, :] = 0
    batches = [{"image": torch.rand(1, 1, 8, 8, 4), "label": label, "seeds": seeds, "subject": ["s1"]},
               {"image": torch.rand(1, 1, 8, 8, 4), "subject": ["s2"]}]
    model = _AllForeground().train()
    seen = []
    results = evaluate(model, batches, (4, 4, 4), torch.device("cpu"),
                       on_volume=lambda batch, logits: seen.append((batch["subject"][0], tuple(logits.shape))))
    assert model.training
    assert seen == [("s1", (1, 2, 8, 8, 4)), ("s2", (1, 2, 8, 8, 4))]
    assert results["s2"] == {"fg_fraction": 1.0, "empty": 0.0}
    s1 = results["s1"]
    assert s1["dice"] == pytest.approx(2 / 17) and s1["fg_fraction"] == 1.0
    # the seeds: 4 core voxels, 32 certain background (the first x-slice), the rest unknown
    assert s1["seed_dice"] == pytest.approx(2 * 4 / (36 + 4))
    assert (s1["seed_recall"], s1["seed_fpr"]) == (1.0, 1.0)
