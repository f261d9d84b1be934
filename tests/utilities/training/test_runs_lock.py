"""One run per folder, and a run killed at any moment can be resumed: the advisory lock, the
temporaries of killed writes, Ctrl-C, SIGKILL, and a finished run copied elsewhere."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT, STAGE1, script_env, stage1_args, weights
from synth import make_vs_dataset

import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
from utilities.core.errors import RunInUseError
from utilities.data import io
from utilities.data.io import is_temporary
from utilities.training.runs import LOCK_NAME, RunLock, lock_holder


def _default_sigint() -> None:
    """In the child: Ctrl-C as in a terminal. A test run started in the background by a
    non-interactive shell inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / STAGE1), *args], cwd=ROOT, env=script_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            preexec_fn=_default_sigint)


def _wait_for(condition, procs, timeout: float = 240.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if any(p.poll() is not None for p in procs):
            return
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def _epochs(run: Path) -> list[int]:
    try:
        return pd.read_csv(run / "log.csv")["epoch"].tolist()
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return []


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    run = tmp_path / "run"
    first = RunLock(run).acquire()
    assert (run / LOCK_NAME).read_text().strip() == str(os.getpid())
    # another process holding the folder: a child that takes the lock and waits
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
                              "from utilities.training.runs import RunLock; from pathlib import Path; "
                              "RunLock(Path(sys.argv[2])).acquire(); print('locked', flush=True); time.sleep(60)",
                              str(ROOT), str(tmp_path / "other")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUseError) as err:
            RunLock(tmp_path / "other").acquire()
        assert str(err.value) == (f"{tmp_path / 'other'} is in use by process {child.pid} (a training running now); "
                                  "wait for it to end, stop it, or choose another --model_dir")
        child.send_signal(signal.SIGKILL)  # its lock file stays, its lock does not
        child.wait()
        assert (tmp_path / "other" / LOCK_NAME).is_file()
        taken = RunLock(tmp_path / "other").acquire()
        assert (tmp_path / "other" / LOCK_NAME).read_text().strip() == str(os.getpid())
        taken.release()
        assert not (tmp_path / "other" / LOCK_NAME).exists()
    finally:
        child.kill()
        first.release()


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_refused_while_the_holder_has_not_written_its_pid_yet(tmp_path):
    """The window between the holder's flock and its pid write (an empty file, or a dead process's
    pid left by a SIGKILL): the refused process waits for the pid rather than saying 'another
    process' (two trainings started at once in one folder hit it on a loaded machine)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text("999999999\n")  # a dead holder's pid
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); "
            "print('locked', flush=True); time.sleep(0.5); os.ftruncate(fd, 0); time.sleep(0.3); "
            "os.pwrite(fd, f'{os.getpid()}\\n'.encode(), 0); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(run / LOCK_NAME)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUseError, match=f"in use by process {child.pid} "):
            RunLock(run).acquire()
        assert lock_holder(run) == child.pid
    finally:
        child.kill()
        child.wait()
    assert lock_holder(run) is None
    taken = RunLock(run).acquire()
    assert (run / LOCK_NAME).read_text() == f"{os.getpid()}\n"  # written over the longer old pid, then cut
    taken.release()


def test_temporaries_of_killed_writes_never_count_as_a_run(tmp_path):
    """A SIGKILL inside the first checkpoint write leaves ``models/.CP_best.pth.tmp-<random>.pth``:
    a plain start and --resume both work, and the temporary is removed."""
    p = make_vs_dataset(tmp_path / "data", n_train=2, n_val=1, n_inf=0)
    models = tmp_path / "run" / "U_Net2D5" / "models"
    models.mkdir(parents=True)
    left = models / ".CP_best.pth.tmp-k1ll3d.pth"
    left.write_bytes(b"")
    assert is_temporary(left) and not is_temporary(models / "CP_best.pth")
    run = stage1.main(stage1_args(p, models.parents[1], "--max_epochs", "1"))
    assert not left.exists() and (run / "models" / "CP_final.pth").is_file()
    assert not any(is_temporary(f) for f in run.rglob("*")) and not (run / LOCK_NAME).exists()
    # (--resume after such a kill: test_killed_inside_writes_then_resume_is_exact)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("killed")
    p = make_vs_dataset(root / "data", n_train=2, n_val=1, n_inf=0, shape_zyx=(16, 32, 40))
    writes: list[str] = []
    real_replace = os.replace

    def counting(src, dst):
        writes.append(Path(dst).name)
        return real_replace(src, dst)

    io.os.replace = counting
    try:
        run = stage1.main(stage1_args(p, root / "a"))
    finally:
        io.os.replace = real_replace
    return root, p, run, writes


class Killed(KeyboardInterrupt):
    """Stands for SIGKILL: nothing of the process's own clean-up may be relied upon."""


@pytest.mark.slow
def test_killed_inside_writes_then_resume_is_exact(reference, monkeypatch):
    """Killed inside the first write of the best checkpoint, then (resumed) of the latest one,
    then (resumed) of the final one, each time with the temporary file left behind as a SIGKILL
    would: the last ``--resume`` ends with the uninterrupted run's weights and log."""
    root, p, run_a, writes = reference
    real_replace = os.replace
    model_dir = root / "b"
    for kill_at in ("CP_best.pth", "CP_latest.pth", "CP_final.pth", None):
        assert kill_at is None or kill_at in writes

        def killed(src, dst, kill_at=kill_at):
            if Path(dst).name == kill_at:
                shutil.copy(src, Path(src).with_name(f".{kill_at}{io.TEMP_PREFIX}killed.pth"))
                raise Killed
            return real_replace(src, dst)

        monkeypatch.setattr(io.os, "replace", killed)
        if kill_at is None:
            run_b = stage1.main(stage1_args(p, model_dir, "--resume"))
        else:
            with pytest.raises(Killed):
                stage1.main(stage1_args(p, model_dir, *(("--resume",) if kill_at != "CP_best.pth" else ())))
            assert any(is_temporary(f) for f in model_dir.rglob("*"))
    for name in ("CP_final.pth", "CP_best.pth"):
        a, b = weights(run_a / "models" / name), weights(run_b / "models" / name)
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    log_a, log_b = (pd.read_csv(r / "log.csv").drop(columns="time_s") for r in (run_a, run_b))
    pd.testing.assert_frame_equal(log_a, log_b)
    assert not any(is_temporary(f) for f in run_b.rglob("*"))


@pytest.mark.slow
def test_copied_finished_run_resumes_without_a_false_warning(reference, tmp_path, caplog):
    root, p, run_a, _ = reference
    copy = tmp_path / "elsewhere"
    shutil.copytree(run_a.parent, copy)
    with caplog.at_level("WARNING", logger="paseg"):
        run = stage1.main(stage1_args(p, copy, "--resume"))
    assert not [r for r in caplog.records if "differ" in r.getMessage()], caplog.text
    assert _epochs(run) == [1, 2]


EPOCHS = 6


@pytest.mark.slow
def test_two_runs_one_folder_then_ctrl_c_and_resume(tmp_path):
    """As from a shell: two trainings started at once in one folder (one is refused, naming the
    other's pid, and writes nothing); Ctrl-C of the other (one line, exit 130, epoch lines and no
    progress-bar frames in its redirected output); --resume finishes every epoch."""
    p = make_vs_dataset(tmp_path / "data", n_train=2, n_val=1, n_inf=0)
    run = tmp_path / "run" / "U_Net2D5"
    # 6 epochs of ~0.2 s on a fast machine (each draws its progress picture): after the first epoch's
    # line, a second and more are left to interrupt; --resume then trains the rest in-process
    args = stage1_args(p, tmp_path / "run", "--max_epochs", str(EPOCHS))
    procs = [_start(args), _start(args)]
    _wait_for(lambda: sum(pr.poll() is not None for pr in procs) >= 1, [])
    refused = next(pr for pr in procs if pr.poll() is not None)
    winner = next(pr for pr in procs if pr is not refused)
    out, err = refused.communicate()
    assert refused.returncode == 2, err
    assert err.strip().splitlines() == [f"error: {run} is in use by process {winner.pid} (a training running now); "
                                        "wait for it to end, stop it, or choose another --model_dir"]
    # the epoch's log line follows its latest checkpoint: wait for the line itself, then interrupt at once
    _wait_for(lambda: any(f"epoch 1/{EPOCHS} lr" in f.read_text() for f in run.glob("log_*.txt")), [winner])
    assert winner.poll() is None, winner.communicate()
    winner.send_signal(signal.SIGINT)
    out, err = winner.communicate(timeout=120)
    assert winner.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted; resume with --resume"
    assert "\r" not in out + err and f"epoch 1/{EPOCHS} lr" in out  # redirected: epoch lines, no progress-bar frames
    done = _epochs(run)
    assert 1 <= len(done) < EPOCHS and len(list(run.glob("log_*.txt"))) == 1  # the refused run wrote nothing

    # (a SIGKILLed holder's lock is taken over: test_lock_refuses_a_live_holder_and_takes_over_a_dead_one;
    # kills inside writes: test_killed_inside_writes_then_resume_is_exact)
    stage1.main([*args, "--resume"])
    assert _epochs(run) == list(range(1, EPOCHS + 1)) and (run / "models" / "CP_final.pth").is_file()
    assert not (run / LOCK_NAME).exists() and not any(is_temporary(f) for f in run.rglob("*"))
