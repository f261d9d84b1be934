"""utilities/health.py: the one collapse rule, and its three readers (the engine's watch, the
progress plot's shading, the ablation runner's health columns) agreeing on hand-made logs."""
from __future__ import annotations

import pandas as pd
from helpers import load_script

from utilities import progress
from utilities.health import CollapseWatch, collapsed_rows, model_suffixes, watch_for

ablate = load_script("experiments/ablate.py")

# stage-1 rows without the engine's verdict column (a log written before it existed):
# 1 healthy; 2 empty validation; 3 a tenth of the seeds' foreground on the training patches
# (0.0009 < 0.001: collapsed); 4 just above a tenth; 5 foreground almost everywhere; 6 no seeds.
STAGE1 = pd.DataFrame({"epoch": [1, 2, 3, 4, 5, 6],
                       "val_empty": [0, 1, 0, 0, 0, 1],
                       "fg_train": [0.02, 0.03, 0.0009, 0.0011, 0.95, 0.0],
                       "seed_fg": [0.01, 0.01, 0.01, 0.01, 0.01, 0.0]})


def test_the_rule_by_hand():
    watch = watch_for("")
    assert watch == CollapseWatch("model", "val_empty", "fg_train", "seed_fg", (), "ramp", ("grad_crf", "grad_vm"))
    states = [watch.state(r) for r in STAGE1.to_dict("records")]
    assert states == [None, "empty", "empty", None, "full", None]
    assert collapsed_rows(STAGE1).tolist() == [False, True, True, False, True, False]
    assert watch.state({"val_empty": "x", "fg_train": None, "seed_fg": 0.1}) is None   # unreadable: not judged
    assert watch_for("2").log_column == "collapsed2" and watch_for("2").reference_column == "teacher_fg2"


def test_a_flood_by_hand():
    """Stage 1 with the mCRF/VM at full weight: more than 10 times the seeds' foreground and over
    1 % of the patches is a flood; before the ramp-up ends, at 10 times or under 1 %, or with both
    regularisers off (no gradient: seeds only), it is not; SCM's watches do not look for floods."""
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
