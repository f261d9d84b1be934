"""Where and how a process runs: the device, the seeds, and SIGTERM turned into an exception."""
from __future__ import annotations

import os
import random
import signal
from typing import Any

import numpy as np
import torch

from utilities.core.errors import DeviceError

__all__ = ["Terminated", "raise_terminated", "resolve_device", "seed_everything"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so the run stops as on Ctrl-C (checkpoints intact)."""


#: The process that imported this module; a forked child (a DataLoader worker, a process pool's
#: worker) inherits both this value and the handler, and so can tell that it is not that process.
_MAIN_PID = os.getpid()


def raise_terminated(signum: int, frame: Any) -> None:
    """A SIGTERM handler (``signal.signal(signal.SIGTERM, raise_terminated)``): raise :class:`Terminated`.

    In a forked child that inherited it, SIGTERM keeps its default action (the child ends at
    once): pools end their workers with SIGTERM, and a worker that raised instead could die
    holding the pool's queue lock and leave the parent waiting forever."""
    if os.getpid() != _MAIN_PID:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated()


def resolve_device(name: str) -> torch.device:
    """Map ``auto``/``cpu``/``cuda`` (or ``cuda:1``) to a device; clear error if CUDA is missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"--device {name} was requested but no CUDA GPU is available; "
                           "use --device cpu or --device auto")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"--device {name} was requested but only {torch.cuda.device_count()} CUDA GPU(s) "
                           "are visible; use --device cuda or a smaller index")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
