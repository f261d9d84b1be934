"""What a careful user tries next (issue 13, "keep going"): a split saved by a spreadsheet with a
byte-order mark, the latest training state given to inference, a resume with fewer epochs than
already trained, running out of memory."""
from __future__ import annotations

import pytest
import torch
from helpers import a_model, inference_args, one_line, pretrained, scm_args, stage1_args

import inference
import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
import train_SCM as scm
from utilities.data.splits import read_split
from utilities.workflow.cli import EXIT_USER_ERROR, run_main


def test_split_with_byte_order_mark(tmp_path):
    split = tmp_path / "split.csv"
    split.write_bytes("vs_gk_1,training\r\nvs_gk_2,validation\r\n".encode("utf-8-sig"))
    assert read_split(split)["subject"].tolist() == ["vs_gk_1", "vs_gk_2"]


@pytest.mark.slow
def test_latest_state_at_inference_and_resume_with_fewer_epochs(data, tmp_path):
    run = stage1.main(stage1_args(data, tmp_path / "run"))  # 2 epochs
    latest = run / "models" / "CP_latest.pth"
    with pytest.raises(ValueError) as err:
        inference.main(inference_args(data, tmp_path / "run", "--epoch_inf", "latest"))
    assert one_line(err) == (f"{latest} is the resumable training state (for --resume), not a model checkpoint; "
                             "point to CP_best*.pth or CP_final*.pth (inference: --epoch_inf best or final)")
    assert not list(tmp_path.rglob("*_seg.nii.gz"))
    final = (run / "models" / "CP_final.pth").read_bytes()
    with pytest.raises(ValueError) as err:
        stage1.main(stage1_args(data, tmp_path / "run", "--resume", "--max_epochs", "1"))
    assert one_line(err) == (f"--resume: {latest} has already trained 2 epochs, more than --max_epochs 1; pass "
                             "--max_epochs 2 (the run's) or more")
    assert (run / "models" / "CP_final.pth").read_bytes() == final  # not rewritten as an "epoch 1" model


@pytest.mark.parametrize("error, where", [(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                           "GPU"), (MemoryError(), "main")])
def test_out_of_memory_is_a_user_error(capsys, error, where):
    def main(argv):
        raise error

    assert run_main(main, []) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: out of {where} memory (")
    assert err.rstrip().endswith("lower --batch_size, --spatial_shape or --sw_batch_size, pass --amp on a GPU, or "
                                 "lower --cache_gb")


def test_sigterm_stops_like_ctrl_c(capsys):
    """A cluster job at its time limit gets SIGTERM: one line, exit 143, the handler restored."""
    import os
    import signal

    before = signal.getsignal(signal.SIGTERM)

    def main(argv):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("not reached")

    assert run_main(main, [], interrupted="interrupted; resume with --resume") == 143
    assert capsys.readouterr().err == "terminated; resume with --resume\n"
    assert signal.getsignal(signal.SIGTERM) is before


def test_network_run_folder_given_instead_of_model_dir(data, tmp_path):
    """``--model_dir runs/U_Net2D5`` (the folder training printed) instead of ``runs``."""
    run = a_model(tmp_path / "runs").parents[1]  # runs/U_Net2D5
    with pytest.raises(FileNotFoundError) as err:
        inference.main(inference_args(data, run))
    assert one_line(err) == (f"checkpoint {run / 'U_Net2D5' / 'models' / 'CP_best.pth'} not found; {run} is the run "
                             f"folder of a network: pass its parent, --model_dir {run.parent}")
    pre = pretrained(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        scm.main(scm_args(data, [pre[0] / "U_Net2D5", pre[1]], tmp_path / "scm"))
    nested = pre[0] / "U_Net2D5" / "U_Net2D5" / "models" / "CP_best.pth"
    assert one_line(err) == (f"model1: stage-1 checkpoint {nested} "
                             f"not found; {pre[0] / 'U_Net2D5'} is the run folder of a network: pass its parent, "
                             f"--pretrained_model1_dir {pre[0]}")
    assert not (tmp_path / "scm").exists()
