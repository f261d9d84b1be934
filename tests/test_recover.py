"""--on_collapse recover: a provoked collapse is recovered from the last healthy weights, the
trainer's change is applied (and replayed on resume), and --on_collapse stop stops."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from helpers import KillAt, Killed, same_weights, tiny_seeded, weights

import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
from utilities.engine import Callback, CollapseError

WORKERS = ("--num_workers", "1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("recover")
    _, common = tiny_seeded(root)
    return root, [*common, *WORKERS, "--rampup_epochs", "2", "--collapse_patience", "1"]


class EmptyAt(Callback):
    """Provokes a collapse: validation reports every volume empty in the given (0-based) epochs."""

    def __init__(self, epochs: set[int]) -> None:
        self.epochs = epochs

    def on_validated(self, epoch, row, state):
        return {"val_empty": 1.0} if epoch in self.epochs else {}


def test_provoked_collapse_is_recovered_from_the_last_healthy_epoch(tiny, capsys):
    root, common = tiny
    run = stage1.main(["--model_dir", str(root / "a"), *common, "--max_epochs", "3", "--on_collapse", "recover"],
                      callbacks=[EmptyAt({1})])
    models = run / "models"
    log = pd.read_csv(run / "log.csv")
    assert log["collapsed"].tolist() == [0, 1, 0] and log["recovered"].tolist() == [0, 1, 0]
    # the ramp-up (2 epochs, per epoch) restarted at epoch 3 over twice its length
    assert log["ramp"].tolist() == pytest.approx([math.exp(-5), math.exp(-5 * 0.25), math.exp(-5)])
    latest = torch.load(models / "CP_latest.pth", weights_only=True)
    assert len(latest["recoveries"]) == 1 and latest["recoveries"][0]["epoch"] == 2
    dominant = latest["recoveries"][0]["dominant"]
    assert dominant in ("seg", "crf", "vm")
    lines = [line for line in capsys.readouterr().out.splitlines() if " WARNING recover 1/2 after epoch 2: " in line]
    assert len(lines) == 1
    assert f"restored from {models / 'CP_healthy.pth'}; dominant term {dominant}" in lines[0]
    assert "mCRF/VM ramp-up restarted at epoch 3 over 4 epoch(s)" in lines[0]
    assert ("partial CE now class-balanced" in lines[0]) == (dominant == "seg")
    # CP_healthy is epoch 1's state (epoch 3 healthy again: overwritten then)
    healthy = torch.load(models / "CP_healthy.pth", weights_only=True)
    assert same_weights(healthy["model"], latest["model"])


class FloodAt(Callback):
    """Provokes a flood: at full ramp-up weight the training patches hold 500 times the seeds' foreground."""

    def __init__(self, epochs: set[int]) -> None:
        self.epochs = epochs

    def on_validated(self, epoch, row, state):
        return {"fg_train": 0.5, "seed_fg": 0.001, "ramp": 1.0} if epoch in self.epochs else {}


def test_a_flood_is_recovered_with_lighter_regularisers(tiny, capsys):
    """A flood (the full-weight mCRF holding a tissue class as foreground) warns in one line and,
    recovered, divides the mCRF and VM weights by 3 (the next epoch's loss is built with them)."""
    root, common = tiny
    run = stage1.main(["--model_dir", str(root / "flood"), *common, "--max_epochs", "3", "--on_collapse", "recover"],
                      callbacks=[FloodAt({1})])
    log = pd.read_csv(run / "log.csv")
    assert log["collapsed"].tolist() == [0, 1, 0] and log["recovered"].tolist() == [0, 1, 0]
    out = capsys.readouterr().out
    assert "collapse: model has predicted more than 10 times its reference's foreground with the mCRF/VM at full " \
           "weight (50.00% of the training patches; over-segmentation) for 1 epoch(s) (epochs 2-2)" in out
    line = next(x for x in out.splitlines() if " WARNING recover 1/2 after epoch 2: " in x)
    assert "mCRF and VM weights divided by 3 (now 0.333 and 0.0333) against the flood" in line
    assert "class-balanced" not in line
    latest = torch.load(run / "models" / "CP_latest.pth", weights_only=True)
    assert latest["recoveries"][0]["kind"] == "flooded"
    last = log.iloc[2]
    assert last["loss"] == pytest.approx(last["loss_seg"] + last["ramp"] * (last["loss_crf"] / 3
                                                                             + 0.1 * last["loss_vm"] / 3), rel=1e-5)


def test_seeds_only_is_not_judged_by_the_flood_rule(tiny, capsys):
    """Without the mCRF and VM (both weights 0: no regulariser gradient) the same flood is not a
    collapse: nothing is flagged or recovered."""
    root, common = tiny
    run = stage1.main(["--model_dir", str(root / "seeds_only"), *common, "--max_epochs", "2", "--on_collapse",
                       "recover", "--weight_gatedcrf", "0", "--weight_variance", "0"], callbacks=[FloodAt({1})])
    log = pd.read_csv(run / "log.csv")
    assert log["fg_train"].iloc[1] == 0.5 and (log[["grad_crf", "grad_vm"]] == 0).all().all()
    assert log["collapsed"].tolist() == [0, 0] and log["recovered"].tolist() == [0, 0]
    assert "collapse:" not in capsys.readouterr().out


def test_recovery_restores_the_healthy_weights_and_is_replayed_on_resume(tiny):
    root, common = tiny
    flags = [*common, "--max_epochs", "3", "--on_collapse", "recover"]
    # a run that recovers at its last epoch ends with the healthy epoch's weights
    run = stage1.main(["--model_dir", str(root / "b"), *common, "--max_epochs", "2", "--on_collapse", "recover"],
                      callbacks=[EmptyAt({1})])
    final = weights(run / "models" / "CP_final.pth")
    healthy = torch.load(run / "models" / "CP_healthy.pth", weights_only=True)["model"]
    assert same_weights(final, healthy)
    # killed after the recovery (start of epoch 3) and resumed: the same as uninterrupted
    full = stage1.main(["--model_dir", str(root / "c"), *flags], callbacks=[EmptyAt({1})])
    with pytest.raises(Killed):
        stage1.main(["--model_dir", str(root / "d"), *flags], callbacks=[EmptyAt({1}), KillAt(2)])
    resumed = stage1.main(["--model_dir", str(root / "d"), *flags, "--resume"])
    assert same_weights(weights(full / "models" / "CP_final.pth"), weights(resumed / "models" / "CP_final.pth"))
    a, b = (pd.read_csv(r / "log.csv").drop(columns="time_s") for r in (full, resumed))
    pd.testing.assert_frame_equal(a, b)


def test_on_collapse_stop_stops(tiny):
    root, common = tiny
    with pytest.raises(CollapseError, match="stopped by --on_collapse stop"):
        stage1.main(["--model_dir", str(root / "e"), *common, "--max_epochs", "3", "--on_collapse", "stop"],
                    callbacks=[EmptyAt({0})])
    assert pd.read_csv(root / "e" / "U_Net2D5" / "log.csv")["epoch"].tolist() == [1]
