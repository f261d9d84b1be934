"""Shared fixtures: the repository root on sys.path, script loading, tiny synthetic NIfTI data."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The tests use tiny tensors: one thread avoids OpenMP synchronisation costs, which dominate
# there and grow badly when another process shares the cores.
torch.set_num_threads(1)


def load_script(relpath: str):
    """Import a script of the repository (e.g. ``data/VS/convert.py``) as a module."""
    path = ROOT / relpath
    name = "script_" + relpath.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def golden():
    return torch.load(ROOT / "tests" / "data" / "golden_32x32x16.pt", weights_only=False)


@pytest.fixture(autouse=True)
def _restore_locale():
    """GDCM (DICOM reading/writing in SimpleITK) switches the process locale to "C"; restore it
    so later tests decode text as UTF-8."""
    import locale

    saved = locale.setlocale(locale.LC_ALL)
    yield
    locale.setlocale(locale.LC_ALL, saved)
