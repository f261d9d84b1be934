"""Shared fixtures: the repository root on sys.path (via ``helpers``), one thread, the golden
file, the locale. Helpers that tests import live in ``tests/helpers.py``."""
from __future__ import annotations

import locale

import pytest
import torch
from helpers import ROOT

# The tests use tiny tensors: one thread avoids OpenMP synchronisation costs, which dominate
# there and grow badly when another process shares the cores.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def golden():
    return torch.load(ROOT / "tests" / "data" / "golden_32x32x16.pt", weights_only=False)


# GDCM (DICOM reading and writing in SimpleITK) switches the process locale to "C", after which
# Python decodes text files as ASCII (and torch's inductor fails to import its templates). Every
# test and every fixture, whatever its scope, starts from the locale the session started with.
_START_LOCALE = locale.setlocale(locale.LC_ALL)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    try:
        return (yield)
    finally:
        locale.setlocale(locale.LC_ALL, _START_LOCALE)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    locale.setlocale(locale.LC_ALL, _START_LOCALE)
    return (yield)


@pytest.fixture(autouse=True)
def _restore_locale():
    yield
    locale.setlocale(locale.LC_ALL, _START_LOCALE)


@pytest.fixture
def data(tmp_path):
    """Two training, one validation, one inference subject (32×32×16, VS layout)."""
    from synth import make_vs_dataset

    return make_vs_dataset(tmp_path / "data", n_train=2, n_val=1, n_inf=1)

