"""The command line shared by every script: how ``main(argv)`` is run (one-line errors, exit
codes), the argparse value types and flag groups, and the typed values the flags name.

``LOGGER_NAME`` and ``setup_logger`` (:mod:`utilities.core.logs`) are also importable from here for
the scripts that still import them from this module."""
from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from utilities.core.arguments import Inert, clear_origins, origin_flags, origin_note, record_origins, typed_flags
from utilities.core.compile import COMPILE_BACKENDS
from utilities.core.errors import USER_ERRORS
from utilities.core.logs import LOGGER_NAME, setup_logger
from utilities.core.runtime import Terminated, raise_terminated
from utilities.data.dataset_file import add_dataset_flag
from utilities.method.defaults import (
    IMAGE_POSTFIX,
    LABEL_POSTFIX,
    LEARNING_RATE,
    SEED_POSTFIX,
    SPATIAL_SHAPE,
    SW_OVERLAP,
)
from utilities.method.optim import MOMENTUM, OPTIMIZERS

if TYPE_CHECKING:
    from utilities.data.loading import DataConfig
    from utilities.models.checkpoints import ResumeRecord
    from utilities.training.runs import RunOptions

__all__ = [
    "run_main",
    "user_message",
    "DEBUG_ENV",
    "EXIT_USER_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "LOGGER_NAME",
    "setup_logger",
    "add_common_args",
    "add_data_args",
    "add_training_args",
    "add_compile_args",
    "data_config",
    "run_options",
    "resume_record",
    "RESUME_FREE_FLAGS",
    "RESUME_FIXED_FLAGS",
    "positive_int",
    "nonnegative_int",
    "positive_float",
    "positive_unit_float",
    "epoch_inf_name",
    "nonnegative_float",
    "check_spatial_shape",
    "check_sw_overlap",
    "check_flag_conflicts",
    "out_of_memory_message",
    "TRAINING_INERT",
    "COMPILE_INERT",
    "resumed_args",
    "take_recorded",
]

#: Flags that may change between a run and its ``--resume`` without changing the result.
RESUME_FREE_FLAGS = frozenset({"resume", "overwrite", "num_workers", "cache_gb", "device", "sw_batch_size",
                               "debug", "stop_on_collapse", "collapse_patience", "model_dir", "dataset",
                               "init_checkpoint"})   # a resume starts from its latest state, never from it
#: Flags a resume cannot change, with their value in checkpoints written before the flag existed:
#: the saved optimizer state is of that optimizer, and the best checkpoints so far (and the values
#: a resumed run compares against) were chosen by that metric.
RESUME_FIXED_FLAGS = {"optimizer": "sgd", "val_metric": "dice"}

#: Environment variable that makes :func:`run_main` show full tracebacks (as ``--debug`` does).
DEBUG_ENV = "PASEG_DEBUG"
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
#: Exit code after SIGTERM (a cluster job at its time limit, ``kill``): 128 + 15, as the shell.
EXIT_TERMINATED = 143


_WORKER_PREFIX = re.compile(r"^Caught \w+ in .*\nOriginal Traceback", re.S)
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception|Stopped): (.*)$")


def user_message(error: BaseException) -> str:
    """The one-line message of ``error``; for an exception re-raised from a DataLoader worker
    (``Caught ValueError in DataLoader worker process 0. Original Traceback ...``), the original
    exception's message, so it is shown once."""
    text = str(error)
    if _WORKER_PREFIX.match(text):
        for line in reversed(text.strip().splitlines()):
            found = _EXCEPTION_LINE.match(line.strip())
            if found:
                return found.group(1)
    if isinstance(error, OSError) and not text.strip() and error.strerror:
        text = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    if isinstance(error, (FileNotFoundError, PermissionError, NotADirectoryError)) and error.filename \
            and text.startswith("[Errno"):
        text = f"{error.strerror}: {error.filename}"
    return " ".join(text.split()) or type(error).__name__


def run_main(main: Callable[[list[str] | None], Any], argv: Sequence[str] | None = None,
             interrupted: str = "interrupted") -> int:
    """Run a script's ``main(argv)`` the way a shell user should see it; returns the exit code.

    Use as ``if __name__ == "__main__": sys.exit(run_main(main))``. A user error (a bad input
    or flag: ``ValueError``, ``FileNotFoundError``, ``FileExistsError``, a write error, a
    missing device, a run folder in use, a training stop such as a NaN loss or a collapse, and
    running out of memory) prints ``error: <message>`` on stderr, one line, and exits 2; Ctrl-C prints
    ``<interrupted>`` and exits 130; SIGTERM (a job's time limit) says "terminated" and exits
    143. Any other exception is a bug and keeps its traceback
    (exit 1). ``--debug`` anywhere in the arguments (removed before ``main`` sees them) or
    ``PASEG_DEBUG=1`` shows the full traceback of user errors too. The same last line (for a
    bug, its one-line summary) ends the log file of a script that opened one. A user error that
    names a flag whose value came from ``--plan`` or ``--dataset`` says so
    (:func:`utilities.core.arguments.origin_note`).
    """
    clear_origins()
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    args = [a for a in args if a != "--debug"]
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        main(args)
    except KeyboardInterrupt as e:
        if debug:
            traceback.print_exc()
        terminated = isinstance(e, Terminated)
        _last_words(interrupted.replace("interrupted", "terminated", 1) if terminated else interrupted)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except USER_ERRORS as e:
        if debug:
            traceback.print_exc()
        text = user_message(e)
        _last_words(f"error: {text}{origin_note(text)}")
        return EXIT_USER_ERROR
    except (MemoryError, RuntimeError) as e:
        message = out_of_memory_message(e)
        if message is None:  # any other RuntimeError is a bug: its traceback
            _log_files_note(_bug_line(e))
            raise
        if debug:
            traceback.print_exc()
        _last_words(f"error: {message}")
        return EXIT_USER_ERROR
    except Exception as e:  # a bug: its traceback, and a line in the run's log
        _log_files_note(_bug_line(e))
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _bug_line(error: BaseException) -> str:
    """A bug's one-line summary for the run's log (its traceback goes to stderr)."""
    return (f"stopped by an unexpected error (a bug; its traceback is on stderr): {type(error).__name__}: "
            f"{' '.join(str(error).split())[:300]}")


def _last_words(line: str) -> None:
    """``line`` (how the script ended) on stderr, and in the log file of the run, if the script
    opened one (:func:`setup_logger` with a folder), so that the log of a stopped run says why."""
    print(line, file=sys.stderr, flush=True)
    _log_files_note(line)


def _log_files_note(line: str) -> None:
    """``line`` into every log file of the project's logger (not its console handler)."""
    files = [h for h in logging.getLogger(LOGGER_NAME).handlers if isinstance(h, logging.FileHandler)]
    if files:
        record = logging.LogRecord(LOGGER_NAME, logging.ERROR, __file__, 0, "%s", (line,), None)
        for handler in files:
            handler.handle(record)


#: What the CPU allocators say when an allocation fails (torch's ``DefaultCPUAllocator``, and
#: the older or Windows wording), inside a ``RuntimeError`` (also when a DataLoader worker's).
_CPU_ALLOCATOR = re.compile(r"DefaultCPUAllocator: can't allocate memory|not enough memory: you tried to allocate")
_TRIED = re.compile(r"tried to allocate (\d+) bytes")
_OOM_ADVICE = ("lower --batch_size, --spatial_shape or --sw_batch_size, pass --amp on a GPU, or lower --cache_gb")


def out_of_memory_message(error: BaseException) -> str | None:
    """The one-line message of running out of memory, or ``None`` when ``error`` is not that:
    ``torch.OutOfMemoryError`` (GPU), ``MemoryError`` (NumPy, Python) and the ``RuntimeError``
    of torch's CPU allocator (``DefaultCPUAllocator: can't allocate memory``)."""
    text = str(error).strip()
    if isinstance(error, torch.OutOfMemoryError):
        where = "GPU"
    elif isinstance(error, MemoryError):
        where = "main"
    elif isinstance(error, RuntimeError) and _CPU_ALLOCATOR.search(text):
        where = "main"
        tried = _TRIED.search(text)
        text = f"tried to allocate {int(tried.group(1)) / 2**30:.1f} GiB" if tried else "the CPU allocator failed"
    else:
        return None
    return f"out of {where} memory ({(text.splitlines() or ['no details'])[0][:160]}); {_OOM_ADVICE}"


def check_flag_conflicts(args: argparse.Namespace) -> None:
    """Refuse, in one line naming both flags, flags that ask for two contradictory things (a
    flag set by ``--plan`` counts as given): ``--stop_on_collapse`` with ``--on_collapse
    recover``. Flags that exclude each other elsewhere: ``--resume``/``--overwrite``
    (:mod:`utilities.training.runs`), inference's modes (``inference.py``)."""
    if getattr(args, "stop_on_collapse", False) and getattr(args, "on_collapse", None) == "recover":
        plan = getattr(args, "plan", None)
        source = f" (set by --plan {plan} unless given)" if plan else ""
        raise ValueError(f"--stop_on_collapse contradicts --on_collapse recover{source}: the first ends the run at a "
                         "collapse, the second recovers from it; pass one of them (--on_collapse stop is "
                         "--stop_on_collapse)")


def _memory_bytes() -> int | None:
    """This machine's physical memory in bytes (``None`` where the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be zero or a positive number, got {text}")
    return value


def unit_float(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text}")
    return value


def momentum_float(text: str) -> float:
    """A momentum: in [0, 1) (1 or more makes the updates grow without bound)."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text}")
    return value


def epoch_inf_name(text: str) -> str:
    """``--epoch_inf``: a checkpoint's name (``best``, ``final``, ``best_model2``); its file name
    (``CP_final.pth``) is read as the name. A path is refused: files are given by ``--model`` or
    ``--checkpoint``."""
    if "/" in text or os.sep in text:
        raise argparse.ArgumentTypeError(f"must be a checkpoint name such as best or final, not the path {text!r}; "
                                         "give a checkpoint file with --model (inference.py) or --checkpoint "
                                         "(export_model.py)")
    name = text.removesuffix(".pth")
    name = name.removeprefix("CP_")
    if not name:
        raise argparse.ArgumentTypeError(f"must be a checkpoint name such as best or final, got {text!r}")
    return name


def positive_unit_float(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text}")
    return value


def add_common_args(parser: argparse.ArgumentParser, workers: bool = True) -> None:
    """``--device``, ``--seed`` and (optionally) ``--num_workers``."""
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where to run: auto = cuda if available, else cpu")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same result on CPU)")
    if workers:
        parser.add_argument("--num_workers", type=nonnegative_int, default=0,
                            help="data-loading worker processes (0: load in the main process)")


def check_spatial_shape(shape: Sequence[int], flag: str = "--spatial_shape", multiple: int = 16) -> tuple[int, ...]:
    """Three positive sizes, each divisible by ``multiple`` (the networks pool 4 times), of a
    patch that can fit in memory: one float32 copy of it (the input alone; the network needs
    many times more) must not exceed this machine's physical memory. A patch that passes may
    still run out of memory later: :func:`run_main` says so in one line."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or any(s <= 0 for s in shape):
        raise ValueError(f"{flag} needs three positive sizes, got {list(shape)}")
    if any(s % multiple for s in shape):
        raise ValueError(f"{flag} must be divisible by {multiple} in every axis, got {list(shape)}")
    memory, need = _memory_bytes(), 4 * int(np.prod(shape, dtype=np.int64))
    if memory is not None and need > memory:
        raise ValueError(f"{flag} {list(shape)} cannot fit in memory: one patch in float32 alone needs "
                         f"{need / 2**30:.1f} GiB, more than the {memory / 2**30:.1f} GiB of this machine; lower "
                         f"{flag}")
    return shape


def check_sw_overlap(overlap: float, flag: str = "--sw_overlap") -> float:
    """A sliding-window overlap in [0, 1) (raises ``ValueError`` naming the flag)."""
    if not 0 <= overlap < 1:
        raise ValueError(f"{flag} must be in [0, 1), got {overlap}")
    return overlap


def add_data_args(parser: argparse.ArgumentParser, labels_help: str, seeds_help: str) -> None:
    """The paper's data and optimiser flags shared by both training scripts (VS defaults, none of
    which applies with ``--dataset``: :func:`utilities.data.dataset_file.parse_with_dataset`)."""
    add_dataset_flag(parser)
    parser.add_argument("--dataset_split", default="./splits/split_VS.csv", help="CSV of 'subject,phase' rows")
    parser.add_argument("--path_images", default="./data/VS/image_crop/",
                        help="folder of <subject>_<image_postfix>.nii.gz")
    parser.add_argument("--image_postfix", default=IMAGE_POSTFIX, help="image file postfix")
    parser.add_argument("--path_labels", default="./data/VS/label_crop/", help=labels_help)
    parser.add_argument("--label_postfix", default=LABEL_POSTFIX, help="label file postfix")
    parser.add_argument("--path_geodesic_labels", default="./data/VS/geodesic/weight0.5_threshold0.2/geodesic_label/",
                        help=seeds_help)
    parser.add_argument("--geodesic_label_postfix", default=SEED_POSTFIX, help="expanded-seed label postfix")
    parser.add_argument("--learning_rate", type=positive_float, default=LEARNING_RATE,
                        help="initial learning rate (poly decay)")
    parser.add_argument("--spatial_shape", type=int, nargs=3, default=list(SPATIAL_SHAPE),
                        help="training patch and sliding-window size (X Y Z), divisible by 16")


def add_compile_args(parser: argparse.ArgumentParser) -> None:
    """``--compile`` and ``--compile_backend`` (see :mod:`utilities.core.compile`)."""
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the network(s) (first steps slower while compiling; see "
                             "docs/guide/sequence.md); falls back to eager with a warning where the toolchain "
                             "is missing")
    parser.add_argument("--compile_backend", default="inductor", choices=COMPILE_BACKENDS,
                        help="torch.compile backend for --compile (aot_eager: no code generation, eager: the graph "
                             "capture alone; both for checks)")


def add_training_args(parser: argparse.ArgumentParser) -> None:
    """Flags common to both training scripts, beyond the paper's."""
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --model_dir from its latest checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run in --model_dir")
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling)")
    add_compile_args(parser)
    parser.add_argument("--sw_batch_size", type=positive_int, default=1,
                        help="sliding windows per forward pass in validation")
    parser.add_argument("--sw_overlap", type=float, default=SW_OVERLAP, help="sliding-window overlap in validation")
    parser.add_argument("--val_metric", default="dice", choices=["dice", "seed_dice"],
                        help="checkpoint selection: Dice against full labels (paper) or, label-free, "
                             "agreement with the expanded seeds on their annotated voxels")
    parser.add_argument("--train_on_all_cases", action="store_true",
                        help="the split's validation cases train too (nnU-Net's fold 'all'; a split without "
                             "validation cases trains this way by itself): CP_best is then chosen by seed_dice on "
                             "the training cases' expanded seeds, CP_final is the last epoch")
    parser.add_argument("--cache_gb", type=nonnegative_float, default=8.0,
                        help="memory budget (GiB) for volumes kept decoded between epochs")
    parser.add_argument("--momentum", type=momentum_float, default=MOMENTUM,
                        help="SGD Nesterov momentum (the paper's 0.99)")
    parser.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS,
                        help="sgd (the paper's, with --momentum) or adam (then pass a smaller --learning_rate, "
                             "e.g. 0.001; --momentum is unused)")
    parser.add_argument("--grad_clip", type=positive_float, default=None,
                        help="clip the gradient norm of each network to this value (default: no clipping; "
                             "nnU-Net uses 12)")
    parser.add_argument("--collapse_patience", type=positive_int, default=3,
                        help="warn when the predictions stay empty this many epochs while the seeds have foreground")
    parser.add_argument("--stop_on_collapse", action="store_true",
                        help="end the run (checkpoints intact) when the collapse warning fires "
                             "(the same as --on_collapse stop)")
    parser.add_argument("--on_collapse", default="warn", choices=["warn", "stop", "recover"],
                        help="when the collapse warning fires: warn only; stop the run; or recover: restore the "
                             "last healthy epoch's weights and continue with what the dominant term calls for "
                             "(see docs/guide/collapse.md)")
    parser.add_argument("--max_recoveries", type=positive_int, default=2,
                        help="--on_collapse recover: at most this many recoveries, then warn only")


def data_config(args: argparse.Namespace) -> DataConfig:
    """The :class:`utilities.data.loading.DataConfig` named by the data flags."""
    from utilities.data.loading import DataConfig  # lazily: TorchIO is slow to import, most scripts never need it

    labels = "" if args.path_labels is None else args.path_labels   # none in a --dataset file: points only
    return DataConfig(args.dataset_split, args.path_images, args.image_postfix, labels, args.label_postfix,
                      args.path_geodesic_labels, args.geodesic_label_postfix, args.val_metric, args.cache_gb,
                      getattr(args, "train_on_all_cases", False))


def run_options(args: argparse.Namespace) -> RunOptions:
    """The :class:`utilities.training.runs.RunOptions` named by ``--device --seed --resume --overwrite``."""
    from utilities.training.runs import RunOptions

    return RunOptions(args.device, args.seed, args.resume, args.overwrite)


def resume_record(args: argparse.Namespace) -> ResumeRecord:
    """The :class:`utilities.models.checkpoints.ResumeRecord` of a training script's arguments: the
    flags of :data:`RESUME_FREE_FLAGS` are free, those of :data:`RESUME_FIXED_FLAGS` fixed, every
    other flag a setting; ``--max_epochs`` the planned epochs."""
    from utilities.models.checkpoints import ResumeRecord  # lazily: the checkpoints pull in every network

    values = vars(args)
    return ResumeRecord(
        settings={k: v for k, v in values.items() if k not in RESUME_FREE_FLAGS and k not in RESUME_FIXED_FLAGS},
        fixed={k: values.get(k, legacy) for k, legacy in RESUME_FIXED_FLAGS.items()},
        free={k: v for k, v in values.items() if k in RESUME_FREE_FLAGS},
        epochs=values.get("max_epochs"), legacy=RESUME_FIXED_FLAGS)


def take_recorded(parser: argparse.ArgumentParser, argv: Sequence[str] | None, args: argparse.Namespace,
                  recorded: Mapping[str, Any], origin: str, free: Collection[str] = RESUME_FREE_FLAGS) -> list[str]:
    """Set every flag of ``args`` neither typed in ``argv`` nor set by a ``--plan`` or
    ``--dataset`` file, nor in ``free`` (this machine's flags), to its value in ``recorded`` (a
    run's arguments), noting ``origin`` as where it came from (:func:`record_origins`); returns
    the option strings changed. Keys ``recorded`` has that are no flag of ``parser`` are left."""
    given = typed_flags(parser, argv)
    from_files = origin_flags()
    given |= {a.dest for a in parser._actions if from_files.intersection(a.option_strings)}
    options = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    taken = []
    for dest, value in recorded.items():
        if dest in given or dest in free or dest not in options or not hasattr(args, dest):
            continue
        if getattr(args, dest) != value:
            setattr(args, dest, value)
            taken.append(options[dest])
    record_origins(taken, origin)
    return taken


def resumed_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None, args: argparse.Namespace,
                 latest: os.PathLike | str) -> argparse.Namespace:
    """With ``--resume``: every flag neither typed in ``argv`` nor set by a ``--plan`` or
    ``--dataset`` file takes the value the run recorded in its resumable state ``latest``
    (:func:`take_recorded`), so that a resume continues the run it names instead of one with the
    script's defaults. The flags of :data:`RESUME_FREE_FLAGS` (device, workers, ...) keep this
    machine's values. The values taken are recorded as coming from ``--resume <latest>`` (logged
    at the start of the run, named in errors); a typed flag still changes the run, with the
    warning of the resume's check. A change the resume refuses (the optimiser, ``--val_metric``,
    fewer epochs than done) is refused here, before the run's folder gets a log file.

    An unreadable or missing ``latest`` changes nothing: the resume itself reports it."""
    if not getattr(args, "resume", False) or getattr(args, "overwrite", False) or not os.path.isfile(latest):
        return args
    try:   # mapped, not read: only its recorded flags are needed here, and the resume reads the weights
        state = torch.load(latest, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return args
    recorded = state.get("args") if isinstance(state, dict) else None
    if not isinstance(recorded, dict):
        return args
    take_recorded(parser, argv, args, recorded, f"--resume {latest}")
    if isinstance(state.get("epoch"), int):   # a change the resume refuses is refused before anything is written
        record = resume_record(args)
        record.check_resume(record.saved_like(recorded), state["epoch"], Path(latest))
    return args


#: Either training script's flags that another flag makes pointless.
TRAINING_INERT = (
    Inert(("momentum",), lambda a: a.optimizer != "sgd", "with --optimizer adam: only SGD has a momentum"),
    Inert(("max_recoveries",), lambda a: a.on_collapse != "recover",
          "without --on_collapse recover: nothing is recovered"),
    Inert(("on_collapse",), lambda a: a.stop_on_collapse,
          "with --stop_on_collapse, which stops the run at a collapse (--on_collapse stop)"),
)
#: ``--compile_backend`` of any script with ``--compile``.
COMPILE_INERT = (Inert(("compile_backend",), lambda a: not a.compile, "without --compile: nothing is compiled"),)
