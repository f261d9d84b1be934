"""--on_collapse recover: a provoked collapse is recovered from the last healthy weights, the
trainer's change is applied (and replayed on resume), and --on_collapse stop stops; the seed
rule on provoked predictions: a big lesion inside the points' boxes is healthy, a tissue class
outside them is a flood, below the seeds, warned at the end and counted as failed."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from helpers import KillAt, Killed, load_script, same_weights, weights

import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
from utilities.core.distributed import unwrap
from utilities.method.health import CollapseWatch
from utilities.training.engine import Callback, CollapseError

pytestmark = pytest.mark.slow  # every test trains (make test-quick leaves them out)

WORKERS = ("--num_workers", "1")


@pytest.fixture(scope="module")
def tiny(tiny_seeds, tmp_path_factory):
    """The shared tiny seeded dataset (conftest's ``tiny_seeds``); this module's runs in its own folder."""
    root = tmp_path_factory.mktemp("recover")
    _, common = tiny_seeds
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
    """Provokes a flood: at full ramp-up weight the training patches are half foreground, 90 % of
    it outside the points' boxes."""

    def __init__(self, epochs: set[int]) -> None:
        self.epochs = epochs

    def on_validated(self, epoch, row, state):
        return {"fg_train": 0.5, "seed_fg": 0.001, "fg_outside": 0.45, "ramp": 1.0} if epoch in self.epochs else {}


def test_a_flood_is_recovered_with_lighter_regularisers(tiny, capsys):
    """A flood (the full-weight mCRF holding a tissue class as foreground) warns in one line and,
    recovered, divides the mCRF and VM weights by 3 (the next epoch's loss is built with them)."""
    root, common = tiny
    run = stage1.main(["--model_dir", str(root / "flood"), *common, "--max_epochs", "3", "--on_collapse", "recover"],
                      callbacks=[FloodAt({1})])
    log = pd.read_csv(run / "log.csv")
    assert log["collapsed"].tolist() == [0, 1, 0] and log["recovered"].tolist() == [0, 1, 0]
    out = capsys.readouterr().out
    assert "collapse: model has predicted more than 50% of its foreground outside the points' boxes (certain " \
           "background) with the mCRF/VM at full weight (50.00% of the training patches, 90.0% of it outside the " \
           "boxes; over-segmentation) for 1 epoch(s) (epochs 2-2)" in out
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


def test_an_empty_start_is_no_collapse_with_the_foreground_dice(tiny, capsys):
    """--seg_dice foreground starts empty and then grows: the first half of the run (2 of 4 epochs)
    may predict nothing; an empty third epoch is a collapse, and its recovery keeps the loss's
    plain CE although the seed loss dominates (seeds only: the class balance flooded with this loss)."""
    root, common = tiny
    run = stage1.main(["--model_dir", str(root / "fgdice"), *common, "--max_epochs", "4", "--seg_dice", "foreground",
                       "--weight_gatedcrf", "0", "--weight_variance", "0", "--on_collapse", "recover"],
                      callbacks=[EmptyAt({0, 1, 2})])
    log = pd.read_csv(run / "log.csv")
    assert log["val_empty"].tolist()[:3] == [1, 1, 1]
    assert log["collapsed"].tolist() == [0, 0, 1, 0] and log["recovered"].tolist() == [0, 0, 1, 0]
    lines = [line for line in capsys.readouterr().out.splitlines() if " WARNING recover 1/2 after epoch 3: " in line]
    assert len(lines) == 1 and "dominant term seg" in lines[0] and "class-balanced" not in lines[0]


class Predict(Callback):
    """Makes the network predict, for real, from its input: in ``lesion`` epochs (0-based) the bright
    lesion (over the midpoint of the image's median and maximum: the tiny cases' whole lesion,
    13 times their seed core, inside the points' boxes); in ``dark`` epochs the voxels under the
    median more than 5 voxels from the lesion (a tissue class outside the lesion and its box, which
    reaches at most 4 voxels beyond the lesion). A forward hook replaces the logits (kept in the
    graph) for training and validation alike."""

    def __init__(self, lesion: set[int], dark: set[int]) -> None:
        self.lesion, self.dark, self.handle = lesion, dark, None

    def on_epoch_start(self, epoch, state):
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
        if epoch in self.lesion | self.dark:
            self.handle = unwrap(state.models["model"]).register_forward_hook(
                lambda module, inputs, output: output * 0 + self.logits(inputs[0], epoch in self.dark))

    @staticmethod
    def logits(image, dark):
        flat = image.flatten(1)
        median = flat.median(1).values.view(-1, 1, 1, 1, 1)
        fg = image > (median + flat.max(1).values.view(-1, 1, 1, 1, 1)) / 2
        if dark:
            fg = (image < median) & (torch.nn.functional.max_pool3d(fg.float(), 11, stride=1, padding=5) == 0)
        return torch.cat([(~fg).float(), fg.float()], 1) * 6 - 3


def test_a_network_below_its_seeds_is_flagged_warned_and_counted_as_failed(tiny, capsys):
    """The tiny cases' seeds are a small core of each lesion (18-37 voxels of ~450). Epochs 1-3
    predict the lesion: at full ramp-up weight (epoch 3) 13 times the seeds' foreground, which the
    10x ratio called a flood, but all inside the points' boxes: healthy, and above the seeds.
    Epoch 4 predicts a tissue class outside the boxes: a flood, below the seeds on the training
    patches and the validation volume; the run ends with one warning naming the epoch and the
    numbers, and counts as failed; selection by seed_dice keeps an epoch above the seeds."""
    root, common = tiny
    run = stage1.main(["--model_dir", str(root / "below"), *common, "--max_epochs", "4", "--val_metric",
                       "seed_dice"], callbacks=[Predict(lesion={0, 1, 2}, dark={3})])
    log = pd.read_csv(run / "log.csv")
    assert log["ramp"].iloc[2] == 1.0 and (log["grad_crf"] > 0).all()
    assert (log["fg_train"] / log["seed_fg"]).iloc[2] > 10 and (log["fg_outside"].iloc[:3] == 0).all()
    old_rule = CollapseWatch("model", "val_empty", "fg_train", "seed_fg", (), "ramp", ("grad_crf", "grad_vm"))
    assert old_rule.state(log.iloc[2].to_dict()) == "flooded"   # what the ratio said of a healthy big lesion
    assert log["collapsed"].tolist() == [0, 0, 0, 1]              # the flood outside the boxes only
    assert log["below_seeds"].tolist() == [0, 0, 0, 1] and log["val_seed_below"].tolist() == [0, 0, 0, 1]
    assert (log["seed_ratio"].iloc[:3] > 1).all()
    assert log["val_seed_recall"].tolist() == [1, 1, 1, 0] and log["val_seed_ratio"].iloc[3] == 0
    assert log["seed_ratio"].iloc[3] == 0 and log["fg_outside"].iloc[3] == log["fg_train"].iloc[3] > 0.1
    assert log["best_epoch"].iloc[-1] == 1 and log["val_seed_dice"].iloc[0] == 1.0
    out = capsys.readouterr().out
    lines = [line.split(" WARNING ", 1)[1] for line in out.splitlines() if " WARNING below its seeds" in line]
    assert len(lines) == 1 and "collapse: model has predicted more than 50% of its foreground outside" in out
    assert lines[0].startswith(
        "below its seeds: model ends worse than its own expanded seeds used as the prediction (on the training patches "
        "a Dice ratio to the seeds under 0.5 if the seed core is lesion, or, there or on most validation volumes, "
        "nothing predicted inside the points' boxes or more than 50% of the foreground outside them) in its last "
        "epoch (4); epoch 4: training patches: seed core predicted 0.0%, 100.0% of the predicted foreground outside "
        "the points' boxes, Dice ratio to the seeds at best 0.000 if the core is lesion; validation: 100% of the "
        "volumes below their seeds, with nothing predicted in the boxes or most of the foreground outside them (seed "
        "core predicted 0.0%, ")
    assert lines[0].endswith("the run counts as failed; see the guide page docs/guide/collapse.md")
    assert torch.load(run / "models" / "CP_best.pth", weights_only=True)["epoch"] == 1
    health = load_script("experiments/ablate.py").run_health(run / "log.csv", patience=1)
    assert health["below_seeds"] and health["warned"]
