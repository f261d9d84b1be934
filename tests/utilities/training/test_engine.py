"""The training engine: one backward from per-term logit gradients (equal to ``loss.backward()``),
the training-health columns, the collapse detector (unit cases and a collapse provoked on tiny
data), the seed rule (checkpoint selection by seed_dice never preferring an epoch below its
seeds, the closing warning; the scores against the points are in test_validation.py), and the
stage-1 ramp schedule with its remedies (warm-up, step-counted ramp)."""
from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_seeded

import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
from utilities.core.distributed import DistContext
from utilities.method.health import watch_for
from utilities.method.optim import Amp, make_optimizer
from utilities.method.schedules import sigmoid_rampup
from utilities.models.checkpoints import BestTracker, ResumeRecord, TrainingState
from utilities.training.engine import (
    BestCheckpoint,
    CollapseError,
    CollapseWatch,
    FitConfig,
    LossPart,
    StepInfo,
    Trainer,
    _backward,
    _below_seeds_line,
    _CollapseDetector,
)


# ------------------------------------------------------------------ one backward from logit gradients
def test_backward_equals_loss_backward_and_reports_term_norms():
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, 3, padding=1)
    x = torch.randn(2, 1, 6, 5, 4)
    target = torch.randint(0, 2, (2, 6, 5, 4))

    def terms(logits):
        ce = torch.nn.functional.cross_entropy(logits, target)
        smooth = 0.3 * (logits.softmax(1)[:, 1].diff(dim=1) ** 2).mean()
        return ce, smooth

    # reference: the summed loss, one backward
    logits = net(x)
    ce, smooth = terms(logits)
    (ce + smooth).backward()
    expected = {n: p.grad.clone() for n, p in net.named_parameters()}
    # independent term norms: autograd on a fresh graph
    logits = net(x)
    norms = [float(torch.autograd.grad(t, logits, retain_graph=True)[0].norm()) for t in terms(logits)]

    net.zero_grad(set_to_none=True)
    state = TrainingState({"model": net}, {"optimizer": make_optimizer(net, 0.1)}, Amp(False, torch.device("cpu")),
                          {"network": "conv"}, ResumeRecord({}))
    logits = net(x)
    ce, smooth = terms(logits)
    zero = logits.new_zeros(())  # a term switched off (weight 0): no gradient, norm 0
    got = _backward(state, {"optimizer": [LossPart("ce", ce, logits), LossPart("smooth", smooth, logits),
                                          LossPart("off", zero, logits)]})
    assert got == {"grad_ce": pytest.approx(norms[0], rel=1e-6), "grad_smooth": pytest.approx(norms[1], rel=1e-6),
                   "grad_off": 0.0}
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------ collapse detector, unit cases
WATCH = CollapseWatch("model", "val_empty", "fg_train", "seed_fg", ("grad_seg", "grad_crf"))


@pytest.mark.parametrize("row, expected", [
    ({"val_empty": 1.0, "fg_train": 0.02, "seed_fg": 0.01}, "empty"),     # every validation volume empty
    ({"val_empty": 0.5, "fg_train": 0.0009, "seed_fg": 0.01}, "empty"),   # under a tenth of the seeds
    ({"val_empty": 0.5, "fg_train": 0.0011, "seed_fg": 0.01}, None),
    ({"val_empty": 0.0, "fg_train": 0.95, "seed_fg": 0.01}, "full"),      # foreground almost everywhere
    ({"val_empty": 0.0, "fg_train": 0.95, "seed_fg": 0.6}, None),         # ... but so are the seeds
    ({"val_empty": 1.0, "fg_train": 0.0, "seed_fg": 0.0}, None),          # nothing to learn: no collapse
    ({"val_empty": 1.0, "fg_train": 0.0, "seed_fg": math.nan}, None),
])
def test_collapse_state(row, expected):
    assert WATCH.state(row) == expected


def test_detector_fires_once_after_patience_and_names_the_dominant_term():
    detector = _CollapseDetector([WATCH], patience=2)
    healthy = {"val_empty": 0.0, "fg_train": 0.02, "seed_fg": 0.01, "grad_seg": 0.5, "grad_crf": 0.1}
    onset = {**healthy, "grad_crf": 4.0}  # the CRF pulls hard in the epoch before the collapse
    empty = {"val_empty": 1.0, "fg_train": 0.0, "seed_fg": 0.01, "grad_seg": 0.2, "grad_crf": 0.0}
    assert detector(0, healthy) is None
    assert detector(1, onset) is None
    assert detector(2, empty) is None  # 1 epoch collapsed < patience 2
    message = detector(3, empty)
    assert message.startswith("collapse: model has predicted no foreground")
    assert "for 2 epoch(s) (epochs 3-4)" in message and "1.00% foreground" in message
    # summed over epochs 2-4: crf 4.0 + 0 + 0 > seg 0.5 + 0.2 + 0.2
    assert "dominant loss gradient w.r.t. the logits is crf (mean norms over epochs 2-4: seg 0.3, crf 1.33)" in message
    assert "see the guide page docs/guide/collapse.md for remedies" in message
    assert detector(4, empty) is None  # warned once per streak
    assert detector(5, healthy) is None and detector(6, empty) is None  # the streak restarts


def test_a_flood_warning_names_the_foreground_outside_the_points_boxes():
    detector = _CollapseDetector([watch_for("", ("grad_seg", "grad_crf", "grad_vm"))], patience=1)
    row = {"val_empty": 0.0, "fg_train": 0.2, "seed_fg": 0.01, "fg_outside": 0.15, "ramp": 1.0, "grad_seg": 0.1,
           "grad_crf": 0.3, "grad_vm": 0.05}
    message = detector(4, row)
    assert message.startswith("collapse: model has predicted more than 50% of its foreground outside the points' "
                              "boxes (certain background) with the mCRF/VM at full weight (20.00% of the training "
                              "patches, 75.0% of it outside the boxes; over-segmentation) for 1 epoch(s) (epochs 5-5)")
    assert row["collapsed"] == 1 and detector.kind == "flooded" and detector.dominant == "crf"
    # 20 times the seeds' foreground, all of it inside the boxes: a big lesion, not a flood
    assert detector(5, {**row, "fg_outside": 0.01}) is None


# ------------------------------------------------------------------ the seed rule
def test_seed_dice_selection_skips_an_epoch_below_its_seeds(tmp_path):
    """The engine on hand-made rows: epoch 2 has the highest seed_dice but is below its seeds
    (most validation volumes): CP_best (seed_dice) stays at epoch 1, while the Dice checkpoint,
    chosen by the masks, takes epoch 2; the closing warning names the last epoch."""
    net = torch.nn.Conv3d(1, 2, 1)
    state = TrainingState({"model": net}, {"optimizer": make_optimizer(net, 0.1)}, Amp(False, torch.device("cpu")),
                          {"network": "conv"}, ResumeRecord({}))
    best = [BestCheckpoint("best", "model", "val_seed_dice", "seed_dice", tmp_path / "CP_best.pth",
                           ("best_seed_dice", "best_epoch")),
            BestCheckpoint("best_other", "model", "val_dice", "dice", tmp_path / "CP_best_dice.pth")]
    config = FitConfig(3, 0.01, (4, 4, 4), tmp_path, tmp_path / "latest.pth", tmp_path / "log.csv", tmp_path / "tb",
                       tmp_path / "healthy.pth", {}, best)
    trainer = Trainer(state, lambda batch, info: None, [], [], config, DistContext(), torch.device("cpu"))
    rows = [{"epoch": e + 1, "val_seed_dice": d, "val_dice": d, "val_seed_below": b, "val_seed_recall": 0.3,
             "val_seed_fpr": 0.2, "val_seed_ratio": 0.5}
            for e, (d, b) in enumerate([(0.6, 0.0), (0.8, 1.0), (0.5, 1.0)])]
    for epoch, row in enumerate(rows):
        trainer.judge_seeds(row, epoch)
        trainer.save_best(row, epoch)
    assert [r["below_seeds"] for r in rows] == [0, 1, 1]
    assert [r["best_epoch"] for r in rows] == [1, 1, 1]
    assert torch.load(tmp_path / "CP_best.pth", weights_only=True)["epoch"] == 1
    assert torch.load(tmp_path / "CP_best_dice.pth", weights_only=True)["epoch"] == 2
    line = _below_seeds_line("model", rows[-1], "", state.trackers["best"], trainer.below)
    assert line == ("below its seeds: model ends worse than its own expanded seeds used as the prediction (on the "
                    "training patches a Dice ratio to the seeds under 0.5 if the seed core is lesion, or, there or on "
                    "most validation volumes, nothing predicted inside the points' boxes or more than 50% of the "
                    "foreground outside them) in its last epoch (3); epoch 3: validation: 100% of the volumes below "
                    "their seeds, with nothing predicted in the boxes or most of the foreground outside them (seed "
                    "core predicted 30.0%, 20.00% of the certain background predicted, Dice ratio to the seeds if the "
                    "core is lesion 0.500 on average); the run counts as failed; see the guide page "
                    "docs/guide/collapse.md")
    assert _below_seeds_line("model", rows[0], "", state.trackers["best"], trainer.below) == ""
    every = BestTracker(0.8, 2, below=True)   # no epoch above its seeds: CP_best is one below them
    assert "in its last epoch (1) and its best checkpoint's epoch (2); epoch 1: no numbers" in _below_seeds_line(
        "model", {"epoch": 1, "below_seeds": 1}, "", every, {})


# ------------------------------------------------------------------ ramp schedule and its remedies
@pytest.mark.parametrize("info, args, expected", [
    (StepInfo(3, 5, 35, 10), (6, 0, "epoch"), sigmoid_rampup(3, 6)),          # the paper: per epoch
    (StepInfo(3, 5, 35, 10), (6, 0, "step"), sigmoid_rampup(3.5, 6)),         # fractional epochs
    (StepInfo(1, 9, 19, 10), (6, 2, "epoch"), 0.0),                           # warm-up: seeds only
    (StepInfo(2, 0, 20, 10), (6, 2, "epoch"), sigmoid_rampup(0, 6)),          # the ramp starts after it
    (StepInfo(4, 5, 45, 10), (6, 2, "step"), sigmoid_rampup(2.5, 6)),
    (StepInfo(0, 0, 0, 10), (0, 0, "epoch"), 1.0),                            # no ramp-up
])
def test_ramp_weight(info, args, expected):
    assert stage1.ramp_weight(info, *args) == pytest.approx(expected, abs=0)


# ------------------------------------------------------------------ a collapse provoked on tiny data
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("collapse")
    seeds, common = tiny_seeded(root)
    return root, seeds, common


def _warnings(text: str) -> list[str]:
    return [line.split(" WARNING ", 1)[1] for line in text.splitlines() if " WARNING " in line]


def test_health_columns_and_provoked_collapse(tiny, capsys):
    """A CRF weight of 100 from the first step (no ramp-up) drives the network to a constant
    prediction within two epochs: the detector warns, --stop_on_collapse stops with the
    checkpoints intact, and the health columns hold what the data says."""
    root, seeds_dir, common = tiny
    flags = [*common, "--max_epochs", "4", "--rampup_epochs", "0", "--weight_gatedcrf", "100",
             "--collapse_patience", "2"]
    with pytest.raises(CollapseError) as err:
        stage1.main(["--model_dir", str(root / "run"), *flags, "--stop_on_collapse"])
    message = str(err.value)
    assert message.startswith("collapse: model has predicted foreground almost everywhere for 2 epoch(s) "
                              "(epochs 1-2)")
    assert "dominant loss gradient w.r.t. the logits is crf" in message and "--stop_on_collapse" in message
    assert [w for w in _warnings(capsys.readouterr().out) if w.startswith("collapse")][0] in message
    run = root / "run" / "U_Net2D5"
    assert sorted(p.name for p in (run / "models").iterdir()) == ["CP_best.pth", "CP_best_seed_dice.pth",
                                                                  "CP_latest.pth"]
    assert "WARNING collapse: model has predicted" in next(run.glob("log_*.txt")).read_text()
    log = pd.read_csv(run / "log.csv")
    assert log["epoch"].tolist() == [1, 2]  # stopped after epoch 2, its row and checkpoint written
    assert torch.load(run / "models" / "CP_latest.pth", weights_only=False)["epoch"] == 2
    # the patch is the whole 32x32x16 volume, so the seeds' foreground fraction is known exactly
    fractions = [float((nib.load(f).get_fdata() == 1).mean()) for f in sorted(seeds_dir.glob("vs_gk_[12]_*"))]
    assert log["seed_fg"].to_numpy() == pytest.approx([np.mean(fractions)] * 2, rel=1e-6)
    for column in ("fg_train", "val_fg_fraction", "val_empty"):
        assert log[column].between(0, 1).all()
    assert log["fg_train"].iloc[1] > 0.9 and log["val_fg_fraction"].iloc[1] > 0.9
    assert log["grad_crf"].iloc[0] > 10 * log["grad_seg"].iloc[0] > 0 and (log["grad_vm"] > 0).all()
    assert log["ramp"].tolist() == [1.0, 1.0]
    # without --stop_on_collapse the same run warns and trains on; it ends below its seeds: almost all of its
    # foreground lies outside the points' boxes
    stage1.main(["--model_dir", str(root / "run2"), *flags, "--max_epochs", "3"])
    warnings = _warnings(capsys.readouterr().out)
    assert len(warnings) == 2 and warnings[0].startswith("collapse: model has predicted")
    assert warnings[1].startswith("below its seeds: model ends worse than its own expanded seeds")
    assert (root / "run2" / "U_Net2D5" / "models" / "CP_final.pth").is_file()


def test_init_checkpoint_starts_from_published_weights(tiny, tmp_path):
    """--init_checkpoint takes a published checkpoint (or ours) as the starting weights."""
    from networks import get_network
    from networks.published import ours_to_published

    _, _, common = tiny
    torch.manual_seed(5)
    start = get_network("U_Net2D5", 1, 2)
    path = tmp_path / "published.pth"
    torch.save(ours_to_published(start.state_dict(), "U_Net2D5"), path)
    run = stage1.main(["--model_dir", str(tmp_path / "run"), *common, "--max_epochs", "1", "--learning_rate", "1e-12",
                       "--momentum", "0", "--init_checkpoint", str(path)])
    final = torch.load(run / "models" / "CP_final.pth", weights_only=False)["state_dict"]
    for key, value in start.state_dict().items():  # a step of lr 1e-12 moves nothing measurable
        torch.testing.assert_close(final[key], value, rtol=0, atol=1e-6)
    torch.save(ours_to_published(get_network("AttU_Net", 1, 2).state_dict(), "AttU_Net"), path)
    with pytest.raises(ValueError, match=r"is a published AttU_Net checkpoint, not U_Net2D5; pass --network AttU_Net"):
        stage1.main(["--model_dir", str(tmp_path / "run2"), *common, "--max_epochs", "1",
                     "--init_checkpoint", str(path)])
    assert not (tmp_path / "run2").exists()  # refused before anything is written
