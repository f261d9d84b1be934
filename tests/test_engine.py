"""The training engine: one backward from per-term logit gradients (equal to ``loss.backward()``),
the training-health columns, the collapse detector (unit cases and a collapse provoked on tiny
data), and the stage-1 ramp schedule with its remedies (warm-up, step-counted ramp)."""
from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_seeded

import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
from utilities.checkpoints import ResumeRecord, TrainingState
from utilities.engine import CollapseError, CollapseWatch, LossPart, StepInfo, _backward, _CollapseDetector
from utilities.optim import Amp, make_optimizer
from utilities.schedules import sigmoid_rampup


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
    # without --stop_on_collapse the same run warns and trains on
    stage1.main(["--model_dir", str(root / "run2"), *flags, "--max_epochs", "3"])
    warnings = _warnings(capsys.readouterr().out)
    assert len(warnings) == 1 and warnings[0].startswith("collapse: model has predicted")
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
