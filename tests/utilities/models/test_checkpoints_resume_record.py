"""The typed record a resume checks a checkpoint against (``utilities.models.checkpoints.ResumeRecord``),
built from a training script's arguments (``utilities.workflow.cli.resume_record``)."""
from __future__ import annotations

import logging

import pytest
from helpers import one_line

import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
from utilities.models.checkpoints import ResumeRecord
from utilities.workflow.cli import RESUME_FIXED_FLAGS, RESUME_FREE_FLAGS, resume_record

ARGS = ["--dataset_split", "s.csv", "--path_images", "img", "--path_labels", "lab", "--path_geodesic_labels", "geo",
        "--model_dir", "run"]


def record(*extra: str) -> ResumeRecord:
    return resume_record(stage1.build_parser().parse_args([*ARGS, *extra]))


def test_every_argument_is_in_exactly_one_group_and_saved_whole():
    args = stage1.build_parser().parse_args(ARGS)
    rec = resume_record(args)
    groups = [set(rec.settings), set(rec.fixed), set(rec.free)]
    assert set().union(*groups) == set(vars(args))
    assert sum(map(len, groups)) == len(vars(args))  # disjoint
    assert set(rec.free) == RESUME_FREE_FLAGS & set(vars(args)) and set(rec.fixed) == set(RESUME_FIXED_FLAGS)
    assert rec.to_saved() == vars(args)
    assert rec.epochs == args.max_epochs
    assert rec.saved_like(rec.to_saved()) == rec


def test_a_changed_setting_is_named_a_free_one_is_not(tmp_path):
    old = record("--learning_rate", "0.01", "--num_workers", "2")
    new = record("--learning_rate", "0.02", "--num_workers", "0", "--device", "cpu")
    saved = new.saved_like(old.to_saved())
    assert new.check_resume(saved, done=1, path=tmp_path / "CP_latest.pth") == ["--learning_rate 0.01 -> 0.02"]


def test_a_flag_newer_than_the_checkpoint():
    """A setting the checkpoint lacks is not compared; a fixed flag takes its value from before it existed."""
    old = {k: v for k, v in record().to_saved().items() if k not in {"optimizer", "fg_patch_fraction"}}
    now = record("--fg_patch_fraction", "0.5")
    saved = now.saved_like(old)
    assert saved.fixed == {"optimizer": "sgd", "val_metric": "dice"} and "fg_patch_fraction" not in saved.settings
    assert now.check_resume(saved, done=1, path="CP_latest.pth") == []
    with pytest.raises(ValueError) as err:
        record("--optimizer", "adam").check_resume(saved, done=1, path="CP_latest.pth")
    assert one_line(err) == ("--resume: CP_latest.pth was trained with --optimizer sgd, not adam (its state cannot be "
                             "carried over); pass --optimizer sgd, or start afresh with --overwrite")


def test_the_selection_metric_cannot_change_on_resume():
    """The best checkpoints so far were chosen by --val_metric (their values are what a resumed run
    compares against): a resume with the other metric would compare seed Dice against the best
    Dice; refused in one line."""
    saved = record().saved_like(record("--val_metric", "dice").to_saved())
    with pytest.raises(ValueError) as err:
        record("--val_metric", "seed_dice").check_resume(saved, done=3, path="CP_latest.pth")
    assert one_line(err) == ("--resume: CP_latest.pth was trained with --val_metric dice, not seed_dice (its state "
                             "cannot be carried over); pass --val_metric dice, or start afresh with --overwrite")


def test_more_epochs_done_than_planned_is_refused():
    saved = record().saved_like(record("--max_epochs", "6").to_saved())
    assert record("--max_epochs", "5").check_resume(saved, done=5, path="x.pth") == ["--max_epochs 6 -> 5"]
    with pytest.raises(ValueError) as err:
        record("--max_epochs", "4").check_resume(saved, done=5, path="x.pth")
    assert one_line(err) == ("--resume: x.pth has already trained 5 epochs, more than --max_epochs 4; "
                             "pass --max_epochs 6 (the run's) or more")


def test_the_warning_names_each_change(tmp_path, caplog):
    """Through a checkpoint file: ``load_resume_state`` warns once with every change."""
    import torch

    from utilities.models.checkpoints import load_resume_state

    path = tmp_path / "CP_latest.pth"
    old = record("--seed", "1", "--momentum", "0.9")
    torch.save({"epoch": 1, "rng": [], "scaler": {}, "network": "U_Net2D5", "args": old.to_saved()}, path)
    with caplog.at_level(logging.WARNING, logger="paseg"):
        load_resume_state(path, record("--seed", "2", "--momentum", "0.9", "--overwrite"), {"network": "U_Net2D5"})
    assert [r.getMessage() for r in caplog.records] == [
        "--resume with changed argument(s): --seed 1 -> 2; the result will differ from an uninterrupted run"]


@pytest.mark.parametrize("broken, missing", [({"args": None}, "['args']"), ({"args": [1, 2]}, "['args']"),
                                             ({"args": {}, "drop": "scaler"}, "['scaler']")])
def test_a_checkpoint_without_usable_arguments_is_refused_in_one_line(tmp_path, broken, missing):
    import torch

    from utilities.models.checkpoints import load_resume_state

    state = {"epoch": 1, "rng": [], "scaler": {}, "network": "U_Net2D5", "args": record().to_saved()} | broken
    state.pop(state.pop("drop", "none"), None)
    path = tmp_path / "CP_latest.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        load_resume_state(path, record(), {"network": "U_Net2D5"})
    assert one_line(err) == (f"--resume: {path} is not a resumable checkpoint of this script (no {missing}); "
                             "start afresh with --overwrite")
