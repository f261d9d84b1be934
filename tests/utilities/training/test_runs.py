"""Run folders: an existing run is never clobbered, a NaN loss stops with the good checkpoints
kept, an unwritable output keeps what was there."""
from __future__ import annotations

import errno
import os
import re

import pandas as pd
import pytest
from helpers import a_model, inference_args, one_line, pretrained, same_weights, scm_args, stage1_args

import inference
import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
import train_SCM as scm
from networks import get_network
from utilities.core.errors import NonFiniteLossError
from utilities.models.checkpoints import load_model_weights, load_resume_state
from utilities.training.engine import Callback
from utilities.training.runs import check_run_dir
from utilities.workflow.cli import EXIT_USER_ERROR, resume_record, run_main


# ------------------------------------------------------------------------ an existing run
def test_existing_run_refused_and_kept(data, tmp_path):
    run = tmp_path / "run" / "U_Net2D5"
    best = a_model(tmp_path / "run")
    final = a_model(tmp_path / "run", name="CP_final.pth")
    before = best.read_bytes()
    with pytest.raises(FileExistsError) as err:
        stage1.main(stage1_args(data, tmp_path / "run"))
    # a finished run without its resumable state: --resume would be refused, so it is not advised
    assert one_line(err) == (f"{run} already holds a run (CP_best.pth, CP_final.pth); pass --overwrite to replace it, "
                             "or choose another --model_dir")
    with pytest.raises(ValueError, match="^--resume and --overwrite exclude each other; pass one of them$"):
        stage1.main(stage1_args(data, tmp_path / "run", "--resume", "--overwrite"))
    # --overwrite with a bad input fails before deleting anything
    (data["image_crop"] / "vs_gk_1_T2.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="1 file"):
        stage1.main(stage1_args(data, tmp_path / "run", "--overwrite"))
    assert best.read_bytes() == before and final.is_file()

    # SCM: the same refusal, and never inside a stage-1 run folder that --overwrite would delete
    pre = pretrained(tmp_path)
    with pytest.raises(FileExistsError, match=f"^{re.escape(str(run))} already holds a run"):
        scm.main(scm_args(data, pre, tmp_path / "run"))
    with pytest.raises(ValueError) as err:
        scm.main(scm_args(data, pre, pre[0], "--overwrite"))
    assert one_line(err) == (f"--model_dir {pre[0]} would put the SCM run in {pre[0] / 'U_Net2D5'}, which holds the "
                             f"stage-1 checkpoint {pre[0] / 'U_Net2D5' / 'models' / 'CP_best.pth'} of "
                             "--pretrained_model1_dir; choose another --model_dir")
    assert (pre[0] / "U_Net2D5" / "models" / "CP_best.pth").is_file()


@pytest.mark.parametrize(("files", "latest", "what"), [
    # another script's run: a stage-1 run resumed by SCM, an SCM run resumed by stage 1
    (["CP_best.pth", "CP_final.pth", "CP_latest.pth"], "CP_latest_SCM.pth",
     "the run of another training script (CP_latest.pth; this one resumes from CP_latest_SCM.pth)"),
    (["CP_best_model1.pth", "CP_latest_SCM.pth"], "CP_latest.pth",
     "the run of another training script (CP_latest_SCM.pth; this one resumes from CP_latest.pth)"),
    # a finished run whose resumable state was removed
    (["CP_best.pth", "CP_final.pth"], "CP_latest.pth",
     "a finished run (CP_final.pth) without its resumable state CP_latest.pth"),
])
def test_resume_refuses_a_folder_it_cannot_continue(tmp_path, files, latest, what):
    models = tmp_path / "U_Net2D5" / "models"
    models.mkdir(parents=True)
    for name in files:
        (models / name).write_bytes(b"x")
    with pytest.raises(FileExistsError) as err:
        check_run_dir([models.parent], True, False, models / latest)
    assert one_line(err) == (f"--resume: {models.parent} holds {what}; nothing there to continue: choose another "
                             "--model_dir, or pass --overwrite instead of --resume to replace it")
    assert sorted(p.name for p in models.iterdir()) == sorted(files)


def test_resume_restarts_a_run_killed_in_its_first_epoch(tmp_path, caplog):
    """Only this script's best checkpoint, no latest state: killed before epoch 1 ended; it starts
    again from epoch 1 (a warning says so)."""
    models = tmp_path / "U_Net2D5" / "models"
    models.mkdir(parents=True)
    (models / "CP_best.pth").write_bytes(b"x")
    with caplog.at_level("WARNING", logger="paseg"):
        assert check_run_dir([models.parent], True, False, models / "CP_latest.pth") is None
    assert "stopped before its first epoch ended" in caplog.text


# ------------------------------------------------------------------------ a non-finite loss
def test_nonfinite_loss_stops_and_keeps_checkpoints(data, tmp_path, monkeypatch, capsys):
    epochs: list[int] = []

    class RecordEpoch(Callback):
        def on_epoch_start(self, epoch, state):
            epochs.append(epoch)

    class NaNFromEpoch2(stage1.PartialDiceCELoss):
        def forward(self, logits, labels):
            loss = super().forward(logits, labels)
            return loss * float("nan") if epochs[-1] >= 1 else loss

    monkeypatch.setattr(stage1, "PartialDiceCELoss", NaNFromEpoch2)
    models = tmp_path / "run" / "U_Net2D5" / "models"
    with pytest.raises(NonFiniteLossError) as err:
        stage1.main(stage1_args(data, tmp_path / "run", "--max_epochs", "3"), callbacks=[RecordEpoch()])
    assert one_line(err) == (f"loss term loss became nan at epoch 2, step 1; training stopped, the last good "
                             f"checkpoints in {models} are intact (lower --learning_rate or check the data)")
    assert sorted(p.name for p in models.iterdir()) == ["CP_best.pth", "CP_best_seed_dice.pth", "CP_latest.pth"]
    args = stage1.build_parser().parse_args(stage1_args(data, tmp_path / "run", "--max_epochs", "3"))
    latest = load_resume_state(models / "CP_latest.pth", resume_record(args), {"network": "U_Net2D5"})
    assert latest["epoch"] == 1
    model = get_network("U_Net2D5", 1, 2)
    assert load_model_weights(model, models / "CP_best.pth", "U_Net2D5")["epoch"] == 1
    assert same_weights(model.state_dict(), latest["model"])  # both from the end of epoch 1
    assert pd.read_csv(models.parent / "log.csv")["epoch"].tolist() == [1]
    # from the shell (run_main): the one error line on stderr, and as the last line of the run's log
    capsys.readouterr()
    argv = stage1_args(data, tmp_path / "again", "--max_epochs", "3")
    assert run_main(lambda a: stage1.main(a, callbacks=[RecordEpoch()]), argv) == EXIT_USER_ERROR
    captured = capsys.readouterr()
    message = (f"loss term loss became nan at epoch 2, step 1; training stopped, the last good checkpoints in "
               f"{tmp_path / 'again' / 'U_Net2D5' / 'models'} are intact (lower --learning_rate or check the data)")
    assert captured.err == f"error: {message}\n" and "became nan" not in captured.out
    log_lines = next((tmp_path / "again" / "U_Net2D5").glob("log_*.txt")).read_text(encoding="utf-8").splitlines()
    assert log_lines[-1].endswith(f" ERROR error: {message}")


# ------------------------------------------------------------------------ unwritable outputs
def test_unwritable_output_keeps_previous_file(data, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OSError) as err:
        stage1.main(stage1_args(data, blocker / "run"))
    assert one_line(err) == (f"cannot create output folder {blocker / 'run' / 'U_Net2D5' / 'models'}: Not a "
                             "directory; choose a writable location")

    model_dir = a_model(tmp_path / "m").parents[2]
    (written,) = inference.main(inference_args(data, model_dir))
    before = written.read_bytes()

    def disk_full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError) as err:
        inference.main(inference_args(data, model_dir))
    assert err.value.errno == errno.ENOSPC
    assert one_line(err) == (f"cannot write {written}: No space left on device; check the free disk space and that "
                             f"{written.parent} is writable (any previous {written.name} is unchanged)")
    assert written.read_bytes() == before and os.listdir(written.parent) == [written.name]
