"""utilities.core.jobs: logged subprocesses, side by side, in dependency order, failures named."""
from __future__ import annotations

import sys

import pytest

from utilities.core.jobs import Job, run_jobs, run_logged, thread_env

# waits (up to 20 s) for the file argv[2] to exist after writing argv[1]: succeeds only when the
# job that writes argv[2] runs at the same time
RENDEZVOUS = ("import pathlib, sys, time\n"
              "pathlib.Path(sys.argv[1]).write_text('here')\n"
              "t = time.time()\n"
              "while not pathlib.Path(sys.argv[2]).exists():\n"
              "    time.sleep(0.05)\n"
              "    if time.time() - t > 20: sys.exit('alone')\n")


def py(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def test_side_by_side_then_dependents(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    jobs = [
        Job("x", py(RENDEZVOUS, str(a), str(b)), tmp_path / "x.log"),
        Job("y", py(RENDEZVOUS, str(b), str(a)), tmp_path / "y.log"),
        # reads both files: only correct after x and y
        Job("z", py("import pathlib, sys; pathlib.Path(sys.argv[1]).write_text("
                    "pathlib.Path(sys.argv[2]).read_text() + pathlib.Path(sys.argv[3]).read_text())",
                    str(tmp_path / "z"), str(a), str(b)), tmp_path / "z.log", needs=("x", "y")),
    ]
    lines = []
    done = run_jobs(jobs, 2, thread_env(1), report=lines.append)
    assert (tmp_path / "z").read_text() == "herehere"
    assert [j.name for j in done] == ["x", "y", "z"] and all(j.seconds > 0 for j in done)
    assert lines[0].startswith("=== start: x") and lines[1].startswith("=== start: y")
    assert lines[-2].startswith("=== start: z") and lines[-1].startswith("=== z: ")
    assert "$ " in (tmp_path / "z.log").read_text()  # the command line heads the log


def test_failure_is_named_and_dependents_not_started(tmp_path):
    jobs = [
        Job("bad", py("import sys; print('error: --foo is wrong'); sys.exit(2)"), tmp_path / "bad.log"),
        Job("after_bad", py("open(r'%s', 'w').write('ran')" % (tmp_path / "ran")), tmp_path / "ab.log",
            needs=("bad",)),
        Job("good", py("open(r'%s', 'w').write('ok')" % (tmp_path / "good")), tmp_path / "good.log"),
    ]
    with pytest.raises(RuntimeError) as info:
        run_jobs(jobs, 1, thread_env(1), report=lambda line: None)
    message = str(info.value)
    assert "2 job(s) failed" in message and "error: --foo is wrong" in message and "bad.log" in message
    assert "after_bad: not started" in message
    assert (tmp_path / "good").read_text() == "ok" and not (tmp_path / "ran").exists()


def test_threads_reach_the_child_and_bad_plans_are_refused(tmp_path):
    log = tmp_path / "env.log"
    run_logged(py("import os; print('threads', os.environ['OMP_NUM_THREADS'])"), log, thread_env(3))
    assert "threads 3" in log.read_text()
    with pytest.raises(ValueError, match="unknown job"):
        run_jobs([Job("a", py("pass"), log, needs=("nope",))], 1, thread_env(1))
    with pytest.raises(ValueError, match="unique"):
        run_jobs([Job("a", py("pass"), log), Job("a", py("pass"), log)], 1, thread_env(1))
    with pytest.raises(ValueError, match="wait on each other"):
        run_jobs([Job("a", py("pass"), log, needs=("b",)), Job("b", py("pass"), log, needs=("a",))], 1,
                 thread_env(1), report=lambda line: None)


def test_interrupt_stops_the_running_jobs(tmp_path):
    """Ctrl-C in the runner terminates its children instead of leaving them running."""
    import os
    import signal
    import threading
    import time

    pid_file = tmp_path / "pid"
    finished = tmp_path / "finished"
    long = Job("long", py("import os, pathlib, sys, time; pathlib.Path(sys.argv[1]).write_text(str(os.getpid())); "
                          "time.sleep(60); pathlib.Path(sys.argv[2]).write_text('yes')", str(pid_file), str(finished)),
               tmp_path / "long.log")

    def interrupt_when_running() -> None:
        t = time.time()
        while not pid_file.exists() and time.time() - t < 20:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    # a test run started in the background by a non-interactive shell inherits SIGINT ignored
    # (Python then never raises KeyboardInterrupt): Ctrl-C as in a terminal for this test
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt_when_running, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            run_jobs([long], 1, thread_env(1), report=lambda line: None)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not finished.exists()  # stopped, not waited for
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_job_registered_while_the_runner_is_interrupted_is_stopped():
    """The race behind a flaky CI run: the runner is interrupted after a job's process started
    but before it was registered; that process stops itself on registering instead of living on."""
    import subprocess
    import sys

    from utilities.core.jobs import _JobPool

    pool = _JobPool(1, thread_env(1), None, lambda line: None)
    pool.stopping = True
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pool._keep("late")(proc)
        assert proc.poll() is not None and pool.processes["late"] is proc
    finally:
        proc.kill()
        proc.wait()


def test_a_child_started_as_stop_all_runs_is_stopped(tmp_path, monkeypatch):
    """``stop_all`` (the ablation runner's Ctrl-C/SIGTERM) between a child's start and its
    registration: ``run_logged`` stops that child itself instead of waiting on it; a child
    started after ``stop_all`` has returned runs normally."""
    import subprocess
    import time

    import utilities.core.jobs as jobs

    real_popen = subprocess.Popen

    def popen_then_stop_all(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        jobs.stop_all(grace_s=5)  # nothing registered yet: the child is not in the live set
        return proc

    monkeypatch.setattr(jobs.subprocess, "Popen", popen_then_stop_all)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with -15"):
        run_logged([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "late.log", thread_env(1))
    assert time.monotonic() - start < 30
    monkeypatch.setattr(jobs.subprocess, "Popen", real_popen)
    run_logged([sys.executable, "-c", "print('after')"], tmp_path / "after.log", thread_env(1))
    assert "after" in (tmp_path / "after.log").read_text()


def test_a_script_run_in_the_tests_process_fails_as_its_subprocess_does(tmp_path, monkeypatch):
    """``helpers.ScriptsInProcess`` (the demo and runner tests' stand-in for ``run_logged``): the
    first script command runs as a process, the next in this process; a user error gives the same
    error (script, exit status, its ``error:`` line) and the same log as the subprocess did."""
    from helpers import ROOT, ScriptsInProcess

    from utilities.core import jobs

    scripts = ScriptsInProcess(subprocesses=1).install(monkeypatch)
    assert jobs.run_logged is scripts
    command = [sys.executable, "utilities/scores.py", "--model_dir", str(tmp_path / "run"), "--network", "U_Net2D5",
               "--dataset_split", str(tmp_path / "none.csv"), "--path_labels", str(tmp_path)]
    errors = []
    for name in ("subprocess", "in_process"):
        with pytest.raises(RuntimeError) as e:
            jobs.run_logged(command, tmp_path / f"{name}.log", thread_env(1), cwd=ROOT)
        errors.append(str(e.value).replace(str(tmp_path / f"{name}.log"), "LOG"))
    assert scripts.in_process == [command]
    line = f"error: split file not found: {tmp_path / 'none.csv'} (pass --dataset_split with an existing CSV)"
    assert errors[0] == errors[1] == f"scores.py exited with 2 ({line}); log: LOG"
    logs = [(tmp_path / f"{name}.log").read_text().strip().splitlines() for name in ("subprocess", "in_process")]
    assert logs[0] == logs[1] == [f"$ {' '.join(command)}", line]
