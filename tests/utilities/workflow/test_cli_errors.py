"""What a shell user sees when a script stops: ``error: <message>`` on one stderr line and exit
code 2 for a bad input (never a traceback), the traceback kept for a real bug, shown on demand
with ``--debug`` or ``PASEG_DEBUG=1``, and ``interrupted`` (exit 130) for Ctrl-C.

Most cases call :func:`utilities.workflow.cli.run_main` in-process (the code of every script's
``__main__``); a DataLoader worker's error and the signals run the scripts as subprocesses.
"""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import (
    ROOT,
    a_model,
    inference_args,
    load_script,
    pretrained,
    project_sources,
    run_script,
    scm_args,
    script_env,
    stage1_args,
)
from synth import blob_case, write

import inference
import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
import train_SCM as scm
from utilities import scores
from utilities.core.errors import NonFiniteLossError
from utilities.training.engine import CollapseError
from utilities.workflow.cli import DEBUG_ENV, EXIT_INTERRUPTED, EXIT_USER_ERROR, run_main, user_message

MAKE_SPLIT = load_script("splits/make_split.py")
SIMULATE = load_script("data/simulate_7points.py")


def _stderr_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("script", ["stage1", "scm", "inference", "scores", "make_split", "simulate"])
def test_user_error_is_one_line_and_exit_2(data, tmp_path, capsys, script):
    missing = tmp_path / "no_such_split.csv"
    pre = pretrained(tmp_path)
    main, argv = {
        "stage1": (stage1.main, stage1_args(data, tmp_path / "run", "--dataset_split", str(missing))),
        "scm": (scm.main, scm_args(data, [tmp_path / "nowhere", pre[1]], tmp_path / "run")),
        "inference": (inference.main, inference_args(data, tmp_path / "run")),
        "scores": (scores.main, ["--model_dir", str(tmp_path / "run"), "--dataset_split", str(data["split"]),
                                 "--path_labels", str(data["label_crop"])]),
        "make_split": (MAKE_SPLIT.main, ["--images_dir", str(tmp_path / "none"), "--output", str(tmp_path / "s.csv")]),
        "simulate": (SIMULATE.main, ["--dataset_split", str(missing), "--path_anno_7points", str(tmp_path / "a")]),
    }[script]
    assert run_main(main, argv) == EXIT_USER_ERROR
    line = _stderr_line(capsys)
    expected = {
        "stage1": f"error: split file not found: {missing} (pass --dataset_split with an existing CSV)",
        "scm": (f"error: model1: stage-1 checkpoint {tmp_path / 'nowhere' / 'U_Net2D5' / 'models' / 'CP_best.pth'} "
                "not found; train it first with `python train_gatedcrfloss3d22d_multiview_varianceloss.py --network "
                f"U_Net2D5 --model_dir {tmp_path / 'nowhere'} ...` or fix --pretrained_model1_dir/--network1"),
        "inference": (f"error: checkpoint {tmp_path / 'run' / 'U_Net2D5' / 'models' / 'CP_best.pth'} not found; no "
                      f"checkpoint in {tmp_path / 'run' / 'U_Net2D5' / 'models'}; train first or check "
                      "--model_dir/--network"),
        "scores": "error: 1 file(s) to score are missing: ",
        "make_split": f"error: --images_dir folder not found: {tmp_path / 'none'}",
        "simulate": f"error: split file not found: {missing} (pass --dataset_split with an existing CSV)",
    }[script]
    assert line.startswith(expected) if script == "scores" else line == expected
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("error, code", [
    (ValueError("--x must be positive, got -1"), EXIT_USER_ERROR),
    (FileExistsError("run exists"), EXIT_USER_ERROR),
    (NonFiniteLossError("loss term loss became nan at epoch 2, step 1"), EXIT_USER_ERROR),
    (CollapseError("collapse: stopped by --stop_on_collapse"), EXIT_USER_ERROR),
    (KeyboardInterrupt(), EXIT_INTERRUPTED),
])
def test_exit_codes_and_debug_traceback(capsys, monkeypatch, error, code):
    def main(argv):
        assert argv == ["--flag", "1"]  # --debug is taken out before main parses
        raise error

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert run_main(main, ["--flag", "1"], interrupted="interrupted; resume with --resume") == code
    expected = "interrupted; resume with --resume" if code == EXIT_INTERRUPTED else f"error: {error}"
    assert _stderr_line(capsys) == expected
    # --debug, or the environment variable, shows the whole traceback, then the same last line
    for argv, env in ((["--debug", "--flag", "1"], None), (["--flag", "1"], "1")):
        if env:
            monkeypatch.setenv(DEBUG_ENV, env)
        assert run_main(main, argv, interrupted="interrupted; resume with --resume") == code
        err = capsys.readouterr().err
        assert err.startswith("Traceback (most recent call last):") and err.strip().splitlines()[-1] == expected


def test_a_bug_keeps_its_traceback(capsys):
    def main(argv):
        return {}["missing key"]

    with pytest.raises(KeyError):
        run_main(main, [])
    assert capsys.readouterr().err == ""  # Python itself prints the traceback (exit 1)


def test_worker_error_message_unwrapped():
    """A DataLoader worker's exception reaches the parent wrapped in its traceback text."""
    from torch._utils import ExceptionWrapper

    try:
        raise ValueError("image file a.nii.gz has 2 NaN or Inf voxel(s); fix or re-export it")
    except ValueError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 1")
    with pytest.raises(ValueError) as err:
        wrapped.reraise()
    assert str(err.value).count("NaN or Inf") == 2  # the message is inside the wrapper's text too
    assert user_message(err.value) == "image file a.nii.gz has 2 NaN or Inf voxel(s); fix or re-export it"


def test_every_script_entry_point_uses_run_main():
    # the project's own files only: the virtual environment's packages are not ours (nor always utf-8)
    ours = [p for p in project_sources()
            if not p.relative_to(ROOT).as_posix().startswith(("tests/", "benchmarks/", "experiments/"))]
    scripts = [p for p in ours if re.search(r'^if __name__ == "__main__":', p.read_text(encoding="utf-8"), re.M)]
    assert len(scripts) >= 14
    offenders = [p.relative_to(ROOT).as_posix() for p in scripts
                 if not re.search(r'^if __name__ == "__main__":\n(?:    .*\n|\n)*?    sys\.exit\(run_main\(main',
                                  p.read_text(encoding="utf-8"), re.M)]
    assert not offenders, offenders


def test_shell_user_sees_one_line_from_a_worker(data, tmp_path):
    """Subprocess, as from a shell: an image with NaN voxels read in a DataLoader worker
    (``--num_workers 2``) gives one stderr line naming it once, exit 2, no traceback, no output."""
    path = data["image_crop"] / "vs_gk_4_T2.nii.gz"
    image, _ = blob_case(seed=1)
    image[3, 4, 5] = np.nan
    write(image, path)
    model_dir = a_model(tmp_path / "m").parents[2]
    torch.set_num_threads(1)
    proc = run_script("inference.py", inference_args(data, model_dir, "--num_workers", "2"))
    assert proc.returncode == EXIT_USER_ERROR, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count(str(path)) == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: image file {path} has 1 NaN or Inf voxel(s) (NaN/Inf values are not allowed); fix or re-export it"]
    assert not list(tmp_path.rglob("*_seg.nii.gz"))


_FORK_AND_TERMINATE = """
import os, signal, sys, time
from utilities.core.runtime import Terminated, raise_terminated
signal.signal(signal.SIGTERM, raise_terminated)
pid = os.fork()
if pid == 0:
    time.sleep(60)
    os._exit(0)
time.sleep(0.5)
os.kill(pid, signal.SIGTERM)
_, status = os.waitpid(pid, 0)
print("child", os.WTERMSIG(status) if os.WIFSIGNALED(status) else "exit %d" % os.WEXITSTATUS(status))
try:
    raise_terminated(signal.SIGTERM, None)
except Terminated:
    print("main Terminated")
"""


def test_a_forked_child_dies_of_sigterm_the_main_process_raises():
    """run_main's SIGTERM handler is inherited by forked children (DataLoader workers, process
    pools, nnU-Net's preprocessing pools), which pools end with SIGTERM: there it keeps SIGTERM's
    default action (a worker that raised instead once died holding a pool's queue lock and left
    an nnU-Net run waiting forever); in the process that installed it, it raises Terminated.
    Run in a fresh interpreter: a fork of this (threaded) test process proves nothing."""
    import signal

    out = subprocess.run([sys.executable, "-c", _FORK_AND_TERMINATE], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env=script_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == [f"child {int(signal.SIGTERM)}", "main Terminated"], out.stdout + out.stderr


def test_the_log_of_a_stopped_run_says_why(tmp_path, capsys):
    """A script that opened a log file and then stopped: the error line (or the bug's one-line
    summary, its traceback kept on stderr) is the last line of the log, not only of the console."""
    from utilities.core.logs import close_handlers, setup_logger

    def stops(error):
        def main(argv):
            setup_logger(tmp_path / type(error).__name__, name="log").info("working")
            raise error
        return main

    assert run_main(stops(ValueError("subject s3: its annotation is empty; click the points again")), []) == 2
    assert capsys.readouterr().err == "error: subject s3: its annotation is empty; click the points again\n"
    lines = next((tmp_path / "ValueError").glob("log_*.txt")).read_text().splitlines()
    assert lines[0].endswith(" INFO working")
    assert lines[-1].endswith(" ERROR error: subject s3: its annotation is empty; click the points again")
    with pytest.raises(KeyError):
        run_main(stops(KeyError("spacing")), [])
    lines = next((tmp_path / "KeyError").glob("log_*.txt")).read_text().splitlines()
    assert lines[-1].endswith(" ERROR stopped by an unexpected error (a bug; its traceback is on stderr): KeyError: "
                              "'spacing'")
    assert run_main(stops(KeyboardInterrupt()), [], interrupted="interrupted; resume with --resume") == 130
    lines = next((tmp_path / "KeyboardInterrupt").glob("log_*.txt")).read_text().splitlines()
    assert lines[-1].endswith(" ERROR interrupted; resume with --resume")
    close_handlers()
