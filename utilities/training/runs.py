"""Run folders and what is written into them while training: the refusal to clobber a run,
start-up in a safe order, ``log.csv``, TensorBoard, and the stops on non-finite values."""
from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import torch
from torch import nn

from utilities.core.arguments import origins_summary
from utilities.core.distributed import DistContext, init_distributed, unwrap
from utilities.core.errors import NonFiniteLossError, RunInUseError
from utilities.core.logs import log_config, setup_logger
from utilities.core.runtime import resolve_device, seed_everything
from utilities.core.textdata import read_csv_table
from utilities.data.io import ensure_writable_dir, is_temporary, remove_temporaries, save_csv
from utilities.data.layout import RunLayout

__all__ = [
    "RunOptions",
    "LOCK_NAME",
    "RunLock",
    "check_run_dir",
    "prepare_run_dir",
    "lock_run_dirs",
    "lock_holder",
    "start_run",
    "CsvLog",
    "TensorBoard",
    "slice_grid",
    "check_finite",
    "check_finite_weights",
]

logger = logging.getLogger("paseg")
T = TypeVar("T")


@dataclass(frozen=True)
class RunOptions:
    """How a training run starts: where, from which seed, and what to do with an existing run."""

    device: str = "auto"
    seed: int = 0
    resume: bool = False
    overwrite: bool = False


def _existing_checkpoints(run_dir: Path) -> list[str]:
    """The checkpoints in ``<run_dir>/models`` (never the temporaries of a killed write)."""
    models = RunLayout.of_folder(run_dir).models
    return sorted(p.name for p in models.glob("*.pth") if not is_temporary(p)) if models.is_dir() else []


#: The advisory lock file in a run folder, held while a training process uses the folder.
LOCK_NAME = ".paseg_run.lock"


class RunLock:
    """An advisory lock on a run folder (``<run_dir>/.paseg_run.lock`` holding the owner's pid).

    ``fcntl.flock`` where available: the kernel releases it when the process ends, however
    (SIGKILL included), so a dead process's lock is simply taken over. Elsewhere an exclusive
    create with the pid inside; a lock whose pid is no longer running is taken over.
    """

    _held: dict[Path, RunLock] = {}

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock (re-taking one this process already holds); raises :class:`RunInUseError`."""
        key = self.path.resolve()
        previous = RunLock._held.pop(key, None)
        if previous is not None:
            previous.release()
        # (its message names the deepest folder a run needs)
        ensure_writable_dir(RunLayout.of_folder(self.run_dir).models)
        try:
            import fcntl
        except ImportError:  # not POSIX
            self._acquire_exclusive()
        else:
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    raise self._in_use(self._owner()) from None
                try:
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)  # the owner removed the file between our open and our lock: again
            # over the old content, then cut: a reader never sees an empty file
            pid = f"{os.getpid()}\n".encode()
            os.pwrite(fd, pid, 0)
            os.ftruncate(fd, len(pid))
            self.fd = fd
        RunLock._held[key] = self
        return self

    def _acquire_exclusive(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = _read_pid(self.path)
                # an empty file: its creator is about to write its pid
                owner = self._owner() if owner is None else owner
                if owner is not None and owner != os.getpid() and _alive(owner):
                    raise self._in_use(owner) from None
                self.path.unlink(missing_ok=True)  # a dead process's lock
                continue
            os.write(fd, f"{os.getpid()}\n".encode())
            self.fd = fd
            return
        raise self._in_use(self._owner())

    def _owner(self) -> int | None:
        return _live_owner(self.path)

    def _in_use(self, owner: int | None) -> RunInUseError:
        who = f"process {owner}" if owner is not None else "another process"
        return RunInUseError(f"{self.run_dir} is in use by {who} (a training running now); wait for it to end, "
                             f"stop it, or choose another --model_dir")

    def release(self) -> None:
        """Release the lock and remove the lock file."""
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # before unlocking: a waiting process then retries
            try:
                import fcntl

                fcntl.flock(self.fd, fcntl.LOCK_UN)
            except ImportError:
                pass
            os.close(self.fd)
            self.fd = None
        RunLock._held.pop(self.path.resolve(), None)


def lock_holder(run_dir: str | os.PathLike) -> int | None:
    """The pid of the process that holds ``run_dir``'s lock (-1 when unknown), ``None`` when no
    running process holds it; takes, creates and removes nothing."""
    path = Path(run_dir) / LOCK_NAME
    if not path.is_file():
        return None
    try:
        import fcntl
    except ImportError:  # not POSIX: the pid inside
        owner = _read_pid(path)
        return owner if owner is not None and owner != os.getpid() and _alive(owner) else None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        owner = _live_owner(path)
        return owner if owner is not None else -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


#: How long a process refused a lock waits for the holder's pid to appear in the lock file (the
#: holder writes it just after taking the lock; until then the file is empty or names a dead process).
OWNER_WAIT_S = 2.0


def _live_owner(path: Path, wait_s: float = OWNER_WAIT_S) -> int | None:
    """The pid in a held lock file once it names a running process other than this one; ``None``
    when none appears within ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        owner = _read_pid(path)
        if owner is not None and owner != os.getpid() and _alive(owner):
            return owner
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_run_dir(run_dirs: Sequence[Path], resume: bool, overwrite: bool, latest: Path,
                  flag_hint: str = "--model_dir") -> Path | None:
    """Refuse to clobber an existing run; changes nothing on disk.

    Returns the latest checkpoint to resume from (``None`` to start fresh).

    Raises:
        FileExistsError: a run folder holds checkpoints and neither ``--resume`` nor ``--overwrite``.
        FileNotFoundError: ``--resume`` without a latest checkpoint.
    """
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other; pass one of them")
    if resume:
        if latest.is_file():
            return latest
        started = [d for d in dict.fromkeys(run_dirs) if RunLayout.of_folder(d).models.is_dir()]
        if not started:
            raise FileNotFoundError(f"--resume: no checkpoint {latest} to resume from; start without --resume")
        for run_dir in started:
            _refuse_foreign_resume(run_dir, latest, flag_hint)
        # killed before its first latest checkpoint: nothing to continue, so the run starts again
        logger.warning("--resume: %s holds a run stopped before its first epoch ended (no %s); starting it "
                       "again from epoch 1", started[0], latest.name)
        return None
    for run_dir in dict.fromkeys(run_dirs):
        existing = _existing_checkpoints(run_dir)
        if existing and not overwrite:
            resume_hint = "--resume to continue it, " if latest.is_file() else ""
            raise FileExistsError(f"{run_dir} already holds a run ({', '.join(existing)}); pass {resume_hint}"
                                  f"--overwrite to replace it, or choose another {flag_hint}")
    return None


def _refuse_foreign_resume(run_dir: Path, latest: Path, flag_hint: str) -> None:
    """``--resume`` into ``run_dir`` without this script's resumable state ``latest``: refuse
    (``FileExistsError``) when the folder holds another script's run (its ``CP_latest*.pth``) or a
    finished run (``CP_final*.pth``) whose state was removed; only a run killed before its first
    epoch ended may start again."""
    existing = _existing_checkpoints(run_dir)
    foreign = [n for n in existing if n.startswith("CP_latest") and n != latest.name]
    finished = [n for n in existing if n.startswith("CP_final")]
    if foreign:
        what = f"the run of another training script ({', '.join(foreign)}; this one resumes from {latest.name})"
    elif finished:
        what = f"a finished run ({', '.join(finished)}) without its resumable state {latest.name}"
    else:
        return
    raise FileExistsError(f"--resume: {run_dir} holds {what}; nothing there to continue: choose another "
                          f"{flag_hint}, or pass --overwrite instead of --resume to replace it")


def prepare_run_dir(run_dirs: Sequence[Path], resume: bool, overwrite: bool, latest: Path,
                    flag_hint: str = "--model_dir") -> Path | None:
    """:func:`check_run_dir`, then create ``<run_dir>/models`` for each run folder (after
    deleting an existing run when ``overwrite``)."""
    latest_path = check_run_dir(run_dirs, resume, overwrite, latest, flag_hint)
    for run_dir in dict.fromkeys(run_dirs):
        if overwrite and _existing_checkpoints(run_dir):
            for entry in run_dir.iterdir():  # everything but the lock this process holds
                if entry.name != LOCK_NAME:
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        remove_temporaries(run_dir)  # left by a killed write; never part of a run
        ensure_writable_dir(RunLayout.of_folder(run_dir).models)
    return latest_path


def lock_run_dirs(run_dirs: Sequence[Path]) -> list[RunLock]:
    """Lock every run folder (sorted, so two processes never wait on each other); on a refusal
    the locks already taken are released."""
    locks: list[RunLock] = []
    try:
        for run_dir in sorted(dict.fromkeys(Path(d) for d in run_dirs)):
            locks.append(RunLock(run_dir).acquire())
    except BaseException:
        for lock in locks:
            lock.release()
        raise
    return locks


def start_run(options: RunOptions, config: Mapping[str, Any], run_dirs: Sequence[Path], latest: Path,
              log_name: str = "log", preflight: Callable[[], T] | None = None
              ) -> tuple[DistContext, torch.device, logging.Logger, Path | None, T | None]:
    """Device, process group, input checks, run folders, logger (``config`` logged whole), seeding.

    The order makes every bad input fail before anything is written or deleted: the device,
    then whether the run folder may be used (:func:`check_run_dir`), then ``preflight()`` (load
    and check the data and checkpoints; console logging only), and only then the run folders
    are created (an ``--overwrite``-n run is deleted) and the log file opened.

    Returns ``(ctx, device, logger, checkpoint to resume from or None, preflight's result)``;
    the log file goes to the first run folder.
    """
    ctx, device = init_distributed(resolve_device(options.device))
    if ctx.is_main:
        check_run_dir(run_dirs, options.resume, options.overwrite, latest)
    setup_logger(None, log_name, ctx.rank)
    prepared = preflight() if preflight is not None else None
    latest_path = None
    if ctx.is_main:
        # the folders are locked first, then checked again: another run may have started meanwhile
        locks = lock_run_dirs(run_dirs)
        ctx.on_close.extend(lock.release for lock in locks)
        try:
            latest_path = prepare_run_dir(run_dirs, options.resume, options.overwrite, latest)
        except BaseException:
            for lock in locks:
                lock.release()
            raise
    latest_path = ctx.broadcast(latest_path)
    log = setup_logger(run_dirs[0] if ctx.is_main else None, log_name, ctx.rank)
    log_config(log, config)
    if origins_summary():
        log.info("flags not typed: %s", origins_summary())
    log.info("device %s, %d process(es)", device, ctx.world_size)
    seed_everything(options.seed + ctx.rank)
    return ctx, device, log, latest_path, prepared


class CsvLog:
    """``log.csv``, one row per epoch, rewritten atomically after each epoch.

    ``start_epoch`` is the number of epochs done (a resumed run): their rows are kept, those
    of later epochs (written after the checkpoint that is resumed) are dropped.
    """

    def __init__(self, path: Path, start_epoch: int = 0) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if start_epoch > 0 and path.is_file():
            try:
                old = read_csv_table(path, "training log")
            except ValueError as e:
                raise ValueError(f"--resume: {e}; move it away to start a new log") from None
            if "epoch" not in old.columns:
                raise ValueError(f"--resume: training log {path} has no 'epoch' column; move it away to start a "
                                 "new log")
            self.rows = old[old["epoch"] <= start_epoch].to_dict("records")

    def append(self, row: Mapping[str, Any]) -> None:
        self.rows.append(dict(row))
        save_csv(pd.DataFrame(self.rows), self.path)


class TensorBoard:
    """SummaryWriter on the main process only; a no-op elsewhere."""

    def __init__(self, log_dir: Path | None) -> None:
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_dir))

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    self.writer.add_scalar(key, value, step)

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, grid, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def slice_grid(volumes: Sequence[torch.Tensor]) -> torch.Tensor:
    """The middle axial (Z) slice of each ``(X, Y, Z)`` volume, each scaled to [0, 1], side by
    side: a ``(1, Y, k·X)`` image for TensorBoard."""
    tiles = []
    for vol in volumes:
        tile = vol[..., vol.shape[-1] // 2].float().cpu().T.flip(0)  # rows = Y (anterior up)
        lo, hi = tile.min(), tile.max()
        tiles.append((tile - lo) / (hi - lo) if hi > lo else torch.zeros_like(tile))
    return torch.cat(tiles, dim=1).unsqueeze(0)


def check_finite(values: Mapping[str, float], epoch: int, step: int, where: Path) -> None:
    """Stop with a clear message at the first non-finite loss term (``run_main`` writes it into the
    run's log as well)."""
    for name, value in values.items():
        if not math.isfinite(float(value)):
            message = (f"loss term {name} became {float(value)} at epoch {epoch}, step {step}; training stopped, "
                       f"the last good checkpoints in {where} are intact (lower --learning_rate or check the data)")
            raise NonFiniteLossError(message)


def check_finite_weights(models: Mapping[str, nn.Module], epoch: int, where: Path) -> None:
    """Stop before a checkpoint is written if a weight or buffer of a model is NaN/Inf (the
    previous checkpoints stay the last good ones)."""
    for name, model in models.items():
        for key, tensor in unwrap(model).state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                message = (f"{name} weight {key} became non-finite in epoch {epoch}; training stopped, the last "
                           f"good checkpoints in {where} are intact (lower --learning_rate or check the data)")
                raise NonFiniteLossError(message)
