"""Argument helpers shared by every script: device choice, seeding, logging, value checks."""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

__all__ = [
    "add_common_args",
    "resolve_device",
    "seed_everything",
    "setup_logger",
    "log_args",
    "positive_int",
    "nonnegative_int",
    "positive_float",
    "nonnegative_float",
    "check_spatial_shape",
]

LOGGER_NAME = "paseg"


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


def add_common_args(parser: argparse.ArgumentParser, workers: bool = True) -> None:
    """``--device``, ``--seed`` and (optionally) ``--num_workers``."""
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where to run: auto = cuda if available, else cpu")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same result on CPU)")
    if workers:
        parser.add_argument("--num_workers", type=nonnegative_int, default=0,
                            help="data-loading worker processes (0: load in the main process)")


def resolve_device(name: str) -> torch.device:
    """Map ``auto``/``cpu``/``cuda`` (or ``cuda:1``) to a device; clear error if CUDA is missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name} was requested but no CUDA GPU is available; "
                           "use --device cpu or --device auto")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise RuntimeError(f"--device {name} was requested but only {torch.cuda.device_count()} CUDA GPU(s) "
                           "are visible; use --device cuda or a smaller index")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_spatial_shape(shape: Sequence[int], flag: str = "--spatial_shape", multiple: int = 16) -> tuple[int, ...]:
    """Three positive sizes, each divisible by ``multiple`` (the networks pool 4 times)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or any(s <= 0 for s in shape):
        raise ValueError(f"{flag} needs three positive sizes, got {list(shape)}")
    if any(s % multiple for s in shape):
        raise ValueError(f"{flag} must be divisible by {multiple} in every axis, got {list(shape)}")
    return shape


def setup_logger(log_dir: str | os.PathLike | None, name: str = "log", rank: int = 0) -> logging.Logger:
    """Console logger plus, if ``log_dir`` is given, a timestamped file ``<name>_<time>.txt`` in it.

    Only rank 0 (of a distributed run) logs.
    """
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
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
    logger.info("arguments:")
    for key, value in sorted(vars(args).items()):
        logger.info("  --%s %s", key, value)
