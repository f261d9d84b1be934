"""utilities/core/runtime.py: the device a ``--device`` value names (CUDA's presence simulated, so
every machine runs every case), seeds that repeat every generator, SIGTERM in the main process.
(A forked child's SIGTERM: tests/utilities/workflow/test_cli_errors.py.)"""
from __future__ import annotations

import random
import signal

import numpy as np
import pytest
import torch

from utilities.core.errors import DeviceError
from utilities.core.runtime import Terminated, raise_terminated, resolve_device, seed_everything


@pytest.mark.parametrize("cuda, name, expected", [
    (False, "auto", "cpu"), (True, "auto", "cuda"), (False, "cpu", "cpu"), (True, "cpu", "cpu"),
    (True, "cuda", "cuda"), (True, "cuda:1", "cuda:1"),
])
def test_resolve_device(monkeypatch, cuda, name, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2 if cuda else 0)
    assert resolve_device(name) == torch.device(expected)


@pytest.mark.parametrize("cuda, name, message", [
    (False, "cuda", "--device cuda was requested but no CUDA GPU is available; use --device cpu or --device auto"),
    (False, "cuda:0", "--device cuda:0 was requested but no CUDA GPU is available"),
    (True, "cuda:2", "--device cuda:2 was requested but only 2 CUDA GPU(s) are visible; use --device cuda or a "
                     "smaller index"),
])
def test_a_device_this_machine_lacks_is_a_user_error(monkeypatch, cuda, name, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2 if cuda else 0)
    with pytest.raises(DeviceError) as err:
        resolve_device(name)
    assert str(err.value).startswith(message)


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_seed_everything_repeats_python_numpy_and_torch():
    seed_everything(11)
    first = _draws()
    seed_everything(12)
    assert _draws() != first
    seed_everything(11)
    assert _draws() == first
    seed_everything(2**32 + 11)   # NumPy takes the seed modulo 2**32; the others take it whole
    assert _draws()[1] == first[1]


def test_sigterm_in_the_main_process_raises_terminated():
    with pytest.raises(Terminated):
        raise_terminated(signal.SIGTERM, None)
    assert issubclass(Terminated, KeyboardInterrupt)   # the run stops as on Ctrl-C
