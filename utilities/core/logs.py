"""The project's one logger: the console (and a timestamped file beside a run), every argument
of a run logged, and whether progress bars are drawn."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["LOGGER_NAME", "setup_logger", "close_handlers", "log_args", "log_config", "show_progress"]

LOGGER_NAME = "paseg"


def show_progress() -> bool:
    """Whether to draw progress bars: only when stderr is a terminal (a log file gets per-epoch
    or per-stage lines instead of carriage-return frames)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def close_handlers() -> None:
    """Remove and close every handler of the project's logger (the streams and the file a run
    opened): before a new run sets its own, and after a script run in another's process, whose
    console handler holds a redirected stream."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def setup_logger(log_dir: str | os.PathLike | None, name: str = "log", rank: int = 0) -> logging.Logger:
    """Console logger plus, if ``log_dir`` is given, a timestamped file ``<name>_<time>.txt`` in it.

    Only rank 0 (of a distributed run) logs.
    """
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    close_handlers()
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if log_dir is not None and rank == 0:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        file_handler = logging.FileHandler(Path(log_dir) / f"{name}_{stamp}.txt", encoding="utf-8")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger


def log_args(logger: logging.Logger, args: argparse.Namespace) -> None:
    """Log every argument (loop over ``vars(args)``)."""
    log_config(logger, vars(args))


def log_config(logger: logging.Logger, config: Mapping[str, Any]) -> None:
    """Log every argument of a run, one ``--flag value`` line each."""
    logger.info("arguments:")
    for key, value in sorted(config.items()):
        logger.info("  --%s %s", key, value)
