"""utilities/method/health.py: the one collapse rule, and its three readers (the engine's watch, the
progress plot's shading, the ablation runner's health columns) agreeing on hand-made logs; the
flood judged by what the points say; the network against its own seeds (seed_ratio by hand and
against every lesion the points allow, the epoch's verdict, the run's)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from experiments.ablation import summary as ablate  # the runner's health: run_health, health_table, _patience
from utilities.method.health import (
    CollapseWatch,
    certainly_below,
    collapsed_rows,
    empty_start_epochs,
    ends_below_seeds,
    judge_seeds,
    model_suffixes,
    seed_ratio,
    seeds_summary,
    watch_for,
)
from utilities.training import progress

# stage-1 rows without the engine's verdict column (a log written before it existed):
# 1 healthy; 2 empty validation; 3 a tenth of the seeds' foreground on the training patches
# (0.0009 < 0.001: collapsed); 4 just above a tenth; 5 foreground almost everywhere; 6 no seeds.
STAGE1 = pd.DataFrame({"epoch": [1, 2, 3, 4, 5, 6],
                       "val_empty": [0, 1, 0, 0, 0, 1],
                       "fg_train": [0.02, 0.03, 0.0009, 0.0011, 0.95, 0.0],
                       "seed_fg": [0.01, 0.01, 0.01, 0.01, 0.01, 0.0]})


def test_the_rule_by_hand():
    watch = watch_for("")
    assert watch == CollapseWatch("model", "val_empty", "fg_train", "seed_fg", (), "ramp", ("grad_crf", "grad_vm"),
                                  "fg_outside")
    states = [watch.state(r) for r in STAGE1.to_dict("records")]
    assert states == [None, "empty", "empty", None, "full", None]
    assert collapsed_rows(STAGE1).tolist() == [False, True, True, False, True, False]
    assert watch.state({"val_empty": "x", "fg_train": None, "seed_fg": 0.1}) is None   # unreadable: not judged
    assert watch_for("2").log_column == "collapsed2" and watch_for("2").reference_column == "teacher_fg2"


def test_a_flood_by_hand_in_a_log_without_fg_outside():
    """A log written before ``fg_outside`` existed, stage 1 with the mCRF/VM at full weight: more
    than 10 times the seeds' foreground and over 1 % of the patches is a flood; before the
    ramp-up ends, at 10 times or under 1 %, or with both regularisers off (no gradient: seeds
    only), it is not; SCM's watches do not look for floods."""
    rows = pd.DataFrame({"epoch": [1, 2, 3, 4, 5, 6, 7, 8],
                         "ramp": [0.5, 1.0, 1.0, 1.0, 0.99, 1.0, 1.0, 1.0],
                         "val_empty": [0] * 8,
                         "fg_train": [0.3, 0.2, 0.0201, 0.02, 0.0099, 0.19, 0.2, 0.2],
                         "seed_fg": [0.001, 0.001, 0.002, 0.002, 0.0001, 0.02, 0.001, 0.001],
                         "grad_crf": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.0, 0.0],
                         "grad_vm": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.0, 0.01]})
    watch = watch_for("")
    assert [watch.state(r) for r in rows.to_dict("records")] == [None, "flooded", "flooded", None, None, None,
                                                                 None, "flooded"]
    assert collapsed_rows(rows).tolist() == [False, True, True, False, False, False, False, True]
    scm = watch_for("1")
    assert scm.ramp_column is None
    assert scm.state({"val_empty1": 0, "fg_train1": 0.3, "teacher_fg1": 0.001, "ramp": 1.0, "grad_crf": 1}) is None


def test_the_engine_verdict_wins_where_logged():
    log = STAGE1.assign(collapsed=[1, 0, 0, 0, 0, 0])
    assert collapsed_rows(log).tolist() == [True, False, False, False, False, False]


def test_scm_logs_judge_each_model_against_its_teacher():
    log = pd.DataFrame({"epoch": [1, 2, 3], "val_empty1": [0, 0, 1], "val_empty2": [0, 0, 0],
                        "fg_train1": [0.02, 0.02, 0.02], "fg_train2": [0.02, 0.0001, 0.02],
                        "teacher_fg1": [0.02, 0.02, 0.02], "teacher_fg2": [0.02, 0.02, 0.02]})
    assert model_suffixes(log.columns) == ["1", "2"]
    assert collapsed_rows(log).tolist() == [False, True, True]


def test_progress_and_the_ablation_runner_read_the_same_epochs(tmp_path):
    path = tmp_path / "log.csv"
    STAGE1.to_csv(path, index=False)
    assert progress.collapsed_epochs(STAGE1) == [2, 3, 5]
    health = ablate.run_health(path, patience=2)
    assert health["collapsed_epochs"] == 3 and health["longest_streak"] == 2 and health["warned"]
    assert not ablate.run_health(path, patience=3)["warned"]


def test_the_runner_counts_a_warning_as_the_engine_gave_it(tmp_path):
    """SCM's two models collapsed on alternate epochs (1, 3 and 2): some model is collapsed in
    three consecutive epochs, but neither reached a count of 2, so the engine never warned and
    the runner does not call the run warned; a recovery restarts the count the same way."""
    log = pd.DataFrame({"epoch": [1, 2, 3, 4], "collapsed1": [1, 0, 1, 0], "collapsed2": [0, 1, 0, 0],
                        "val_empty1": [0] * 4, "val_empty2": [0] * 4})
    path = tmp_path / "log.csv"
    log.to_csv(path, index=False)
    health = ablate.run_health(path, patience=2)
    assert health["longest_streak"] == 3 and not health["warned"]
    assert ablate.run_health(path, patience=1)["warned"]
    # stage 1: epochs 2-3 collapsed, recovered at 3 (the count starts afresh), then epoch 4
    stage1 = pd.DataFrame({"epoch": [1, 2, 3, 4, 5], "collapsed": [0, 1, 1, 1, 0], "val_empty": [0] * 5,
                           "recovered": [0, 0, 1, 0, 0]})
    stage1.to_csv(path, index=False)
    assert ablate.run_health(path, patience=3)["longest_streak"] == 3
    assert not ablate.run_health(path, patience=3)["warned"]
    assert ablate.run_health(path, patience=2)["warned"]


def test_a_recovered_run_is_told_from_a_failed_one(tmp_path):
    """``--on_collapse recover``: a warning followed by a recovery, a best checkpoint after it and
    a healthy last epoch is *recovered*; the same log whose best epoch is the one before the
    collapse, or whose last epoch is collapsed again, is not."""
    log = pd.DataFrame({"epoch": [1, 2, 3, 4, 5], "ramp": [1.0] * 5, "val_empty": [0, 1, 1, 0, 0],
                        "fg_train": [0.02] * 5, "seed_fg": [0.01] * 5, "recovered": [0, 0, 1, 0, 0],
                        "best_epoch": [1, 1, 1, 1, 5]})
    path = tmp_path / "log.csv"
    log.to_csv(path, index=False)
    health = ablate.run_health(path, patience=2)
    assert health["warned"] and health["recoveries"] == 1 and health["recovered"]
    log.assign(best_epoch=[1] * 5).to_csv(path, index=False)
    assert not ablate.run_health(path, patience=2)["recovered"]
    log.assign(val_empty=[0, 1, 1, 0, 1]).to_csv(path, index=False)
    assert not ablate.run_health(path, patience=2)["recovered"]
    log.drop(columns="recovered").to_csv(path, index=False)
    health = ablate.run_health(path, patience=2)
    assert health["warned"] and health["recoveries"] == 0 and not health["recovered"]


# ------------------------------------------------------------------ the flood, judged by what the points say
FULL = {"ramp": 1.0, "val_empty": 0, "grad_crf": 0.1, "grad_vm": 0.1}


@pytest.mark.parametrize("fg_train, seed_fg, fg_outside, grads, expected", [
    (0.12, 0.01, 0.006, {}, None),          # a healthy big lesion: 12x the seeds' core, 5 % of it outside the boxes
    (0.17, 0.01, 0.0, {}, None),            # 17x, all inside the boxes
    (0.12, 0.01, 0.07, {}, "flooded"),      # 58 % of the foreground outside the boxes: a tissue class
    (0.02, 0.01, 0.015, {}, "flooded"),     # a flood at twice the seeds' foreground is a flood too
    (0.12, 0.01, 0.06, {}, None),           # exactly half outside: not more than half
    (0.009, 0.001, 0.008, {}, None),        # under 1 % of the patches
    (0.12, 0.01, 0.07, {"grad_crf": 0.0, "grad_vm": 0.0}, None),   # seeds only: not judged by the flood rule
    (0.12, 0.01, 0.07, {"ramp": 0.5}, None),                       # the ramp-up is not at full weight
])
def test_a_flood_is_foreground_outside_the_points_boxes(fg_train, seed_fg, fg_outside, grads, expected):
    row = {**FULL, "fg_train": fg_train, "seed_fg": seed_fg, "fg_outside": fg_outside, **grads}
    assert watch_for("").state(row) == expected
    assert collapsed_rows(pd.DataFrame([row])).tolist() == [expected is not None]
    assert watch_for("").outside_share(row) == pytest.approx(fg_outside / fg_train)


# ------------------------------------------------------------------ the network against its own seeds
# Counts: core |C| (label 1), unknown |U| (label 2); the prediction on C, on U and outside the boxes.
# Ratio: max over lesions L (C within L within the boxes) of Dice(P, L) / Dice(C, L), by hand at the
# three lesions that decide it (L = C; C plus P's voxels of U; the whole boxes).
@pytest.mark.parametrize("counts, expected", [
    ((10, 20, 10, 0, 0), 1.0),                           # the seeds themselves: equal at L = C
    ((10, 190, 10, 110, 0), (240 / 320) / (20 / 210)),  # 12x the core inside the boxes: 7.875 at L = boxes
    ((10, 20, 4, 0, 0), (8 / 14) / 1.0),                # misses 6 of the 10 core voxels: 0.571 at L = C
    ((10, 20, 10, 20, 300), (60 / 360) / (20 / 40)),    # a flood outside the boxes: 0.333 at L = boxes
    ((10, 20, 10, 0, 3), (20 / 43) / (20 / 40)),        # the core plus 3 voxels outside: 0.930 at L = boxes
    ((10, 20, 10, 0, 5), (20 / 45) / (20 / 40)),        # ... plus 5: 0.889
    ((10, 20, 0, 0, 0), 0.0),                           # empty
    # a flood over a small core's boxes (18 core voxels in a box of 1568): not below the seeds for
    # certain, since the lesion might fill the boxes, where the seeds score 0.023: 4.94 there
    ((18, 1550, 0, 550, 7700), (1100 / 9818) / (36 / 1586)),
])
def test_seed_ratio_by_hand(counts, expected):
    assert seed_ratio(*counts) == pytest.approx(expected, rel=1e-12)
    assert seed_ratio(*(c / 1000 for c in counts)) == pytest.approx(expected, rel=1e-12)   # shares work too


def test_seed_ratio_is_the_best_over_every_lesion_the_points_allow():
    """Brute force over every lesion the points allow (only counts matter: a of P's unknown voxels
    and b of the others in the lesion besides the core), for every prediction of small cases."""
    for core, unknown in ((1, 0), (3, 4), (5, 2)):
        for fg_core in range(core + 1):
            for fg_unknown in range(unknown + 1):
                for fg_outside in (0, 1, 4, 9):
                    predicted = fg_core + fg_unknown + fg_outside
                    best = max(2 * (fg_core + a) / (predicted + core + a + b) / (2 * core / (2 * core + a + b))
                               for a in range(fg_unknown + 1) for b in range(unknown - fg_unknown + 1))
                    assert seed_ratio(core, unknown, fg_core, fg_unknown, fg_outside) == pytest.approx(best, abs=1e-12)
    assert math.isnan(seed_ratio(0, 5, 0, 2, 1)) and math.isnan(seed_ratio(3, math.nan, 1, 0, 0))


def _shares(core, unknown, fg_core, fg_unknown, fg_outside, total=1000):
    return {"seed_fg": core / total, "seed_unknown": unknown / total, "fg_core": fg_core / total,
            "fg_unknown": fg_unknown / total, "fg_outside": fg_outside / total,
            "fg_train": (fg_core + fg_unknown + fg_outside) / total}


def test_an_epoch_below_its_seeds():
    """Below the seeds on the training patches (ratio under 0.5) or on more than half of the
    validation volumes; a healthy big lesion at 12x the seeds' core inside the boxes is not, nor is
    a network that keeps 4 of a 10-voxel core (0.571: the lesion part of a spilt core)."""
    healthy = _shares(10, 190, 10, 110, 0)
    assert judge_seeds(healthy) == {"seed_ratio": pytest.approx(7.875), "below_seeds": 0}
    assert judge_seeds(_shares(10, 20, 4, 0, 0)) == {"seed_ratio": pytest.approx(8 / 14), "below_seeds": 0}
    misses = _shares(10, 20, 2, 0, 0)   # 2 of 10: 4/12 at L = C
    assert judge_seeds(misses) == {"seed_ratio": pytest.approx(1 / 3), "below_seeds": 1}
    assert judge_seeds(_shares(10, 20, 3, 0, 0)) == {"seed_ratio": pytest.approx(6 / 13), "below_seeds": 1}
    assert judge_seeds({**healthy, "val_seed_below": 0.75})["below_seeds"] == 1
    assert judge_seeds({**healthy, "val_seed_below": 0.5})["below_seeds"] == 0   # half is not most
    assert judge_seeds({"val_seed_below2": 1.0}, "2") == {"seed_ratio2": pytest.approx(math.nan, nan_ok=True),
                                                          "below_seeds2": 1}   # SCM: validation only
    assert judge_seeds({}) == {"seed_ratio": pytest.approx(math.nan, nan_ok=True), "below_seeds": 0}
    row = {**misses, **judge_seeds(misses), "val_seed_below": 1.0, "val_seed_recall": 0.25, "val_seed_fpr": 0.0125,
           "val_seed_ratio": 0.4}
    assert seeds_summary(row) == ("training patches: seed core predicted 20.0%, 0.0% of the predicted foreground "
                                  "outside the points' boxes, Dice ratio to the seeds at best 0.333 if the core is "
                                  "lesion; validation: 100% of the volumes below their seeds, with nothing predicted "
                                  "in the boxes or most of the foreground outside them (seed core predicted 25.0%, "
                                  "1.25% of the certain background predicted, Dice ratio to the seeds if the core is "
                                  "lesion 0.400 on average)")


def test_the_certain_reading():
    """Nothing inside the boxes, or more than half of the foreground outside them, is below the
    seeds whatever the core holds; a network inside a core it does not fill is not, by this reading."""
    assert certainly_below(0, 0, 0) and certainly_below(0, 0, 5)          # empty; all outside
    assert certainly_below(2, 2, 5) and not certainly_below(2, 3, 5)      # 5 of 9 outside; 5 of 10 is not most
    assert not certainly_below(3, 0, 0) and not certainly_below(0, 4, 1)  # inside a part of the core; in the unknown
    assert not certainly_below(1, math.nan, 0)                            # not logged
    # on the training patches either reading: 40 % of the foreground outside, but the core missed: the best
    # lesion is the core plus P's unknown voxel, (6/16) / (20/21) = 0.39
    assert judge_seeds(_shares(10, 20, 2, 1, 2))["below_seeds"] == 1
    # 60 % of the foreground outside the boxes, with a core-reading ratio of 1 (the whole boxes: (40/80) / (20/40))
    flood = _shares(10, 20, 10, 10, 30)
    assert judge_seeds(flood) == {"seed_ratio": pytest.approx(1.0), "below_seeds": 1}
    # a network smaller than a core it lies in: below by the core reading only, which judges the training
    # patches, when it keeps under about a third of the core (8 of 40: 16/48 at the core alone); 15 of 40
    # (30/55) is what a network that predicts only the lesion part of a spilt core looks like
    small = _shares(40, 20, 8, 0, 0)
    assert judge_seeds(small) == {"seed_ratio": pytest.approx(1 / 3), "below_seeds": 1}
    assert judge_seeds(_shares(40, 20, 15, 0, 0)) == {"seed_ratio": pytest.approx(30 / 55), "below_seeds": 0}
    assert judge_seeds({**small, "seed_fg": 0.0})["below_seeds"] == 0   # no core in the patches: nothing to judge


def test_an_empty_start_with_the_foreground_dice():
    """With --seg_dice foreground the first half of the run may predict nothing; afterwards, and
    with the paper's Dice at any epoch, empty is a collapse; a flood or full prediction is always one."""
    assert empty_start_epochs("foreground", 46) == 23 and empty_start_epochs("foreground", 3) == 1
    assert empty_start_epochs("classes", 46) == 0 and empty_start_epochs("classes", 46, 5) == 5
    assert empty_start_epochs("foreground", 46, 0) == 0
    watch = watch_for("", (), empty_start_epochs("foreground", 10))
    empty = {"seed_fg": 0.01, "fg_train": 0.0, "val_empty": 1.0}
    assert [watch.state({**empty, "epoch": e}) for e in (1, 5, 6)] == [None, None, "empty"]
    assert watch_for("").state({**empty, "epoch": 1}) == "empty"
    assert watch.state({"epoch": 1, "seed_fg": 0.01, "fg_train": 0.95, "val_empty": 0.0}) == "full"


def test_a_run_that_ends_below_its_seeds_counts_as_failed(tmp_path):
    """The last epoch, or the best checkpoint's, below its seeds: the run is named and the
    ablation runner counts it as failed; an earlier epoch below them (the first dive) is not."""
    log = pd.DataFrame({"epoch": [1, 2, 3], "val_empty": [0, 0, 0], "fg_train": [0.02] * 3, "seed_fg": [0.01] * 3,
                        "collapsed": [0, 0, 0], "below_seeds": [1, 0, 1], "best_epoch": [1, 2, 2]})
    assert ends_below_seeds(log) == ["model at epoch 3"]
    assert ends_below_seeds(log.assign(best_epoch=[1, 1, 1])) == ["model at epoch 1", "model at epoch 3"]
    assert ends_below_seeds(log.assign(below_seeds=[1, 0, 0])) == []
    assert ends_below_seeds(log.drop(columns="below_seeds")) == []   # a log from before the rule
    scm = pd.DataFrame({"epoch": [1, 2], "val_empty1": [0, 0], "val_empty2": [0, 0], "below_seeds1": [0, 0],
                        "below_seeds2": [0, 1], "best_epoch1": [2, 2], "best_epoch2": [1, 1]})
    assert ends_below_seeds(scm) == ["model2 at epoch 2"]
    path = tmp_path / "log.csv"
    log.to_csv(path, index=False)
    health = ablate.run_health(path, patience=3)
    assert health["below_seeds"] and not health["warned"]
    log.assign(below_seeds=[1, 0, 0]).to_csv(path, index=False)
    assert not ablate.run_health(path, patience=3)["below_seeds"]


def test_the_ablation_table_counts_a_run_below_its_seeds_as_failed(tmp_path, monkeypatch):
    """health_table: the same healthy log fails only when its last epoch is below its seeds."""
    variant = ablate.Variant("stage1", "stage1", "Stage 1", {})
    runs = [ablate.Run(variant, seed, tmp_path / f"seed{seed}", "U_Net2D5") for seed in (0, 1)]
    monkeypatch.setattr(ablate, "_patience", lambda run: 3)
    for run, last in zip(runs, (0, 1)):
        (run.folder / "U_Net2D5").mkdir(parents=True)
        pd.DataFrame({"epoch": [1, 2], "val_empty": [0, 0], "fg_train": [0.02] * 2, "seed_fg": [0.01] * 2,
                      "collapsed": [0, 0], "below_seeds": [1, last], "best_epoch": [2, 2]}).to_csv(
            run.folder / "U_Net2D5" / "log.csv", index=False)
    per_case = pd.DataFrame({"variant": ["stage1"] * 2, "seed": [0, 1], "pred_voxels": [50, 50]})
    table = ablate.health_table(runs, per_case)
    assert table["below_seeds"].tolist() == [False, True] and table["failed"].tolist() == [False, True]
