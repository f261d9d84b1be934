"""Exact resume of stage 1 and SCM, and the same seed giving the same result."""
from __future__ import annotations

import pandas as pd
import pytest
from helpers import KillAt, Killed, pretrained, same_weights, scm_args, stage1_args, weights
from synth import make_vs_dataset

import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
import train_SCM as scm

pytestmark = pytest.mark.slow  # every test trains (make test-quick leaves them out)

# ------------------------------------------------------------------------ exact resume
# Stage 1 loads patches in a worker process: its random state must come back on resume too
# (workers kept across epochs would carry states no checkpoint holds). SCM loads in-process.
WORKERS = ("--num_workers", "1")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Data and an uninterrupted 2-epoch stage-1 run. The volumes (40×32×16) are longer than
    the patches along X, so where each patch is cropped is random too."""
    root = tmp_path_factory.mktemp("resume")
    p = make_vs_dataset(root / "data", n_train=2, n_val=1, n_inf=0, shape_zyx=(16, 32, 40))
    run = stage1.main(stage1_args(p, root / "a", *WORKERS))
    return root, p, run


def test_resume_stage1_is_exact(uninterrupted, monkeypatch):
    root, p, run_a = uninterrupted
    with pytest.raises(Killed):
        stage1.main(stage1_args(p, root / "b", *WORKERS), callbacks=[KillAt(1)])  # at the start of epoch 2
    models_b = root / "b" / "U_Net2D5" / "models"
    assert not (models_b / "CP_final.pth").exists()
    epoch1 = weights(models_b / "CP_latest.pth", "model")
    run_b = stage1.main(stage1_args(p, root / "b", *WORKERS, "--resume"))
    final_a, final_b = weights(run_a / "models" / "CP_final.pth"), weights(run_b / "models" / "CP_final.pth")
    assert same_weights(final_a, final_b)
    assert not same_weights(final_a, epoch1)  # training went on after the interruption
    assert same_weights(weights(run_a / "models" / "CP_best.pth"), weights(run_b / "models" / "CP_best.pth"))
    log_a, log_b = (pd.read_csv(r / "log.csv").drop(columns="time_s") for r in (run_a, run_b))
    assert log_b["epoch"].tolist() == [1, 2]  # the row written before the interruption is kept
    pd.testing.assert_frame_equal(log_a, log_b)


def test_resume_takes_the_runs_recorded_flags(uninterrupted, capsys):
    """``--resume`` with only the run folder and this machine's flags: the data, patch, loss and
    epoch flags come from the run's record, not the script's defaults, and the run ends as the
    uninterrupted one."""
    root, p, run_a = uninterrupted
    with pytest.raises(Killed):
        stage1.main(stage1_args(p, root / "d", *WORKERS), callbacks=[KillAt(1)])
    capsys.readouterr()
    run_d = stage1.main(["--model_dir", str(root / "d"), "--network", "U_Net2D5", "--device", "cpu", *WORKERS,
                         "--resume"])
    out = capsys.readouterr().out
    assert same_weights(weights(run_a / "models" / "CP_final.pth"), weights(run_d / "models" / "CP_final.pth"))
    taken = out.split("flags not typed: ", 1)[1].splitlines()[0]
    assert taken.endswith(f"from --resume {run_d / 'models' / 'CP_latest.pth'}")
    for flag in ("--dataset_split", "--spatial_shape", "--down_size", "--max_epochs", "--rampup_epochs", "--seed"):
        assert flag in taken
    assert "--resume with changed argument" not in out


def test_same_seed_same_result(uninterrupted):
    root, p, run_a = uninterrupted
    run_c = stage1.main(stage1_args(p, root / "c", *WORKERS))
    assert same_weights(weights(run_a / "models" / "CP_final.pth"), weights(run_c / "models" / "CP_final.pth"))


def test_resume_scm_is_exact(uninterrupted, tmp_path, monkeypatch):
    _, p, _ = uninterrupted
    pre = pretrained(tmp_path)
    out_a = scm.main(scm_args(p, pre, tmp_path / "a"))
    with pytest.raises(Killed):  # at the start of epoch 2, after the teachers' first reload
        scm.main(scm_args(p, pre, tmp_path / "b"), callbacks=[KillAt(1)])
    out_b = scm.main(scm_args(p, pre, tmp_path / "b", "--resume"))
    models_a, models_b = out_a / "U_Net2D5" / "models", out_b / "U_Net2D5" / "models"
    for k in (1, 2):
        assert same_weights(weights(models_a / f"CP_final_model{k}.pth"), weights(models_b / f"CP_final_model{k}.pth"))
        assert same_weights(weights(models_a / "CP_latest_SCM.pth", f"teacher{k}"),
                            weights(models_b / "CP_latest_SCM.pth", f"teacher{k}"))
    assert not same_weights(weights(models_a / "CP_final_model1.pth"),
                            weights(pre[0] / "U_Net2D5" / "models" / "CP_best.pth"))
    log_a, log_b = (pd.read_csv(o / "U_Net2D5" / "log_SCM.csv").drop(columns="time_s") for o in (out_a, out_b))
    pd.testing.assert_frame_equal(log_a, log_b)


@pytest.mark.parametrize("changed", [("--cache_gb", "0"), ("--num_workers", "0")])
def test_same_seed_same_result_whatever_the_cache_or_workers(uninterrupted, changed):
    """The patches depend on the seed, the epoch and the subject only: not caching the volumes
    (re-read and preprocessed every epoch) or loading in the main process instead of a worker
    gives the same losses, scores and weights."""
    root, p, run_a = uninterrupted
    args = stage1_args(p, root / f"other_{changed[0][2:]}", *WORKERS)
    run = stage1.main([*args, *changed])
    log_a, log = (pd.read_csv(r / "log.csv").drop(columns="time_s") for r in (run_a, run))
    pd.testing.assert_frame_equal(log_a, log)
    assert same_weights(weights(run_a / "models" / "CP_final.pth"), weights(run / "models" / "CP_final.pth"))
