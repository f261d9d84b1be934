"""Running the project's scripts as logged subprocesses, several side by side.

Two single-threaded trainings next to each other use a 2-core machine better than one
two-threaded one (small 3D networks do not scale across threads), so the demo and the ablation
runner start each training as ``python <script> <flags>`` with ``OMP_NUM_THREADS`` set, its
output in a log file, and run up to ``slots`` of them at once, a job starting when the jobs it
needs have finished.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Job", "run_logged", "exit_error", "run_jobs", "thread_env", "stop", "stop_all"]

#: Every child :func:`run_logged` has running, in any thread (what :func:`stop_all` stops).
_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()
#: How many times :func:`stop_all` has run: a child that registers after a stop_all that came
#: between its start and its registration is stopped at once (it would otherwise outlive it).
_STOPS = 0


def thread_env(threads: int) -> dict[str, str]:
    """This process's environment with every CPU thread pool set to ``threads``."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def run_logged(command: Sequence[str], log: Path, env: Mapping[str, str], cwd: Path | None = None,
               started: Callable[[subprocess.Popen], None] | None = None) -> None:
    """Run ``command``, appending its output (and the command line) to ``log``; ``started`` gets
    the process as soon as it runs (to stop it from elsewhere).

    Raises:
        RuntimeError: it exited with non-zero status; the message names the script, the status,
            its last ``error:`` line (or last line) and the log.
    """
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"\n$ {shlex.join(command)}\n")
        fh.flush()
        with _LIVE_LOCK:
            stops = _STOPS
        with subprocess.Popen(list(command), cwd=cwd, env=dict(env), stdout=fh, stderr=subprocess.STDOUT) as proc:
            with _LIVE_LOCK:
                _LIVE.add(proc)
                late = _STOPS != stops
            if late:
                stop([proc])
            try:
                if started is not None:
                    started(proc)
                rc = proc.wait()
            except BaseException:  # Ctrl-C or SIGTERM in this thread: the child must not outlive it
                stop([proc])
                raise
            finally:
                with _LIVE_LOCK:
                    _LIVE.discard(proc)
    if rc != 0:
        raise exit_error(command, rc, log)


def exit_error(command: Sequence[str], rc: int, log: Path) -> RuntimeError:
    """The error of a ``command`` that exited with ``rc``: its script, the status, its last
    ``error:`` line (or last line) in ``log``, and the log."""
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    last = next((line for line in reversed(lines) if line.startswith("error:")), lines[-1] if lines else "")
    return RuntimeError(f"{Path(command[1]).name if len(command) > 1 else command[0]} exited with {rc} "
                        f"({last.strip()[:300]}); log: {log}")


@dataclass
class Job:
    """One subprocess: ``command`` logged to ``log``, started once every job named in ``needs`` is done."""

    name: str
    command: list[str]
    log: Path
    needs: tuple[str, ...] = ()
    seconds: float = field(default=0.0, init=False)


def _check_jobs(jobs: Sequence[Job], slots: int) -> None:
    """At least one slot, unique names, and every job's needs among the jobs (ValueError)."""
    if slots < 1:
        raise ValueError(f"slots must be at least 1, got {slots}")
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique, got {names}")
    unknown = sorted({n for j in jobs for n in j.needs} - set(names))
    if unknown:
        raise ValueError(f"jobs need unknown job(s) {unknown}")


#: Seconds a stopped process gets to end cleanly (SIGTERM) before it is killed.
STOP_GRACE_S = 10.0


class _JobPool:
    """The state of one :func:`run_jobs` call, shared by its worker threads under ``lock``."""

    def __init__(self, slots: int, env: Mapping[str, str], cwd: Path | None,
                 report: Callable[[str], None]) -> None:
        self.slots, self.env, self.cwd, self.report = slots, env, cwd, report
        self.running: dict[str, threading.Thread] = {}
        self.done: set[str] = set()
        self.failed: dict[str, str] = {}
        self.processes: dict[str, subprocess.Popen] = {}
        self.lock = threading.Condition()
        self.stopping = False   # interrupted: a process registered from now on is stopped at once

    def _keep(self, name: str) -> Callable[[subprocess.Popen], None]:
        def keep(proc: subprocess.Popen) -> None:
            with self.lock:
                self.processes[name] = proc
                stopping = self.stopping
            if stopping:  # started while the runner was being interrupted
                stop([proc])
        return keep

    def work(self, job: Job) -> None:
        """Run one job in this thread, then free its slot and wake the scheduler."""
        t0 = time.time()
        error = None
        try:
            run_logged(job.command, job.log, self.env, self.cwd, started=self._keep(job.name))
        except Exception as e:  # any failure must free the slot, or the runner waits forever
            error = str(e) if isinstance(e, (RuntimeError, OSError)) else f"{type(e).__name__}: {e}"
        job.seconds = time.time() - t0
        with self.lock:
            del self.running[job.name]
            self.processes.pop(job.name, None)
            if error is None:
                self.done.add(job.name)
                self.report(f"=== {job.name}: {job.seconds:.1f} s ===")
            else:
                self.failed[job.name] = error
                self.report(f"=== {job.name}: FAILED after {job.seconds:.1f} s: {error} ===")
            self.lock.notify_all()

    def _start_ready(self, pending: list[Job]) -> None:
        for job in [j for j in pending if any(n in self.failed for n in j.needs)]:
            pending.remove(job)
            self.failed[job.name] = "not started: a job it needs failed"
        ready = [j for j in pending if all(n in self.done for n in j.needs)]
        while ready and len(self.running) < self.slots:
            job = ready.pop(0)
            pending.remove(job)
            self.running[job.name] = threading.Thread(target=self.work, args=(job,), daemon=True)
            self.report(f"=== start: {job.name} (log {job.log}) ===")
            self.running[job.name].start()
        if not self.running and pending:  # unreachable with known, acyclic needs
            raise ValueError(f"jobs {[j.name for j in pending]} wait on each other")

    def run(self, jobs: Sequence[Job]) -> None:
        """Start jobs as slots and their needs allow until every one has ended; on an exception
        (Ctrl-C included) stop the running processes first."""
        pending = list(jobs)
        try:
            with self.lock:
                while pending or self.running:
                    self._start_ready(pending)
                    self.lock.wait()
        except BaseException:
            with self.lock:
                self.stopping = True
                processes, threads = list(self.processes.values()), list(self.running.values())
            stop(processes)
            for thread in threads:  # a job started just now stops itself on registering
                thread.join(timeout=STOP_GRACE_S + 5.0)
            raise


def run_jobs(jobs: Sequence[Job], slots: int, env: Mapping[str, str], cwd: Path | None = None,
             report: Callable[[str], None] = print) -> list[Job]:
    """Run ``jobs`` with at most ``slots`` at once; a ready job starts in list order (put the long
    ones first). ``report`` gets one line when a job starts and one when it ends.

    Returns the jobs with their ``seconds``. Raises RuntimeError naming every failed job (the
    others still finish; a job that needs a failed one is not started). Interrupted (Ctrl-C,
    SIGTERM turned into an exception), it stops the running jobs before passing the exception on.
    """
    _check_jobs(jobs, slots)
    pool = _JobPool(slots, env, cwd, report)
    pool.run(jobs)
    if pool.failed:
        raise RuntimeError(f"{len(pool.failed)} job(s) failed: "
                           + " | ".join(f"{k}: {v}" for k, v in pool.failed.items()))
    return list(jobs)


def stop_all(grace_s: float = STOP_GRACE_S) -> None:
    """:func:`stop` every child :func:`run_logged` has running (from any thread): what a runner
    does on Ctrl-C or SIGTERM, which reach only its own thread."""
    global _STOPS
    with _LIVE_LOCK:
        _STOPS += 1
        live = list(_LIVE)
    stop(live, grace_s)


def stop(processes: Sequence[subprocess.Popen], grace_s: float = STOP_GRACE_S) -> None:
    """Terminate ``processes`` (SIGTERM: the scripts end cleanly, their checkpoints intact), then
    kill what is still running after ``grace_s`` seconds."""
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.time() + grace_s
    for proc in processes:
        try:
            proc.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
