"""Shared fixtures: the repository root on sys.path (via ``helpers``), one thread, the golden
file, the locale, the tiny datasets several modules read; the ``slow`` marker and how pytest-xdist
shares the tests between its workers (``--dist loadgroup``). Helpers that tests import live in ``tests/helpers.py``."""
from __future__ import annotations

import functools
import locale
import re
from pathlib import Path

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


def _figure_only(csv_path, out=None, patience=None) -> Path:
    """``progress.plot_progress`` in the tests: the log is read and checked and the figure built,
    every panel and its shading (what can fail on a log, ``progress.log_figure``), but not
    rasterised to a PNG file, which took 0.4 s of each drawing's 0.45 s;
    ``tests/utilities/training/test_progress.py`` draws the real picture. A failure is still a
    warning of the run (``draw_progress``)."""
    from utilities.training import progress

    progress.log_figure(csv_path, patience)
    return Path(out) if out is not None else progress.progress_path(csv_path)


@pytest.fixture(scope="session", autouse=True)
def _progress_figure_not_rasterised():
    """:func:`_figure_only` for every training run in a test's process (session and module
    fixtures included)."""
    from utilities.training import progress

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(progress, "plot_progress", _figure_only)
        yield


@pytest.fixture(scope="session", autouse=True)
def _writes_not_flushed_to_disk():
    """Every atomic write of a test's process (``utilities.data.io.atomic_path``) renames its
    temporary file without the ``fsync`` before it: a flush to the disk guards against a power
    cut, which no test makes, and cost 17 ms of waiting each, several thousand times a suite.
    ``tests/utilities/data/test_io.py`` checks the real flush and its order."""
    from utilities.data import io

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(io, "_fsync", lambda path: None)
        yield


@pytest.fixture
def data(tmp_path):
    """Two training, one validation, one inference subject (32×32×16, VS layout)."""
    from synth import make_vs_dataset

    return make_vs_dataset(tmp_path / "data", n_train=2, n_val=1, n_inf=1)


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> Path:
    """The ``--quick`` demo dataset (make_demo_data.py: 4 training, 2 validation, 2 inference cases
    of 32x32x16), written once per worker: ``<root>/data/{image_crop,label_crop,annotation_7points}``
    and ``<root>/split.csv``. Read only: a test writes its runs under its own ``tmp_path``."""
    from helpers import make_quick_demo

    return make_quick_demo(tmp_path_factory.mktemp("quick_demo"))


@pytest.fixture(scope="session")
def tiny_seeds(tmp_path_factory) -> tuple[Path, list[str]]:
    """:func:`helpers.tiny_seeded` once per worker (2 training, 1 validation case and their stage-0
    seeds): ``(seeds folder, stage-1 data flags)``. Read only."""
    from helpers import tiny_seeded

    return tiny_seeded(tmp_path_factory.mktemp("tiny_seeds"))


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> tuple[dict[str, Path], Path]:
    """Trained once per worker on a tiny VS dataset (2 training, 1 validation, 2 inference cases):
    ``run1`` (stage 1, 2 epochs), ``run2`` (1 epoch, seed 8) and ``scm`` (1 epoch on both):
    ``(dataset paths, root)``. Read only: a module takes its own copy (:func:`helpers.copy_runs`),
    as inference writes its masks into the run. The modules that use it are one work unit
    (:data:`SHARED_FIXTURES`), so one worker trains them."""
    from helpers import train_tiny_runs

    return train_tiny_runs(tmp_path_factory.mktemp("tiny_runs"))


# --- slow tests, and the tests' share between pytest-xdist workers ------------------------------------------------
_SHARED = re.compile(r"""scope\s*=\s*["'](module|class|package|session)["']""")


#: Modules whose tests are mostly end to end (ablations, script runs in every format, trained runs
#: read by folder prediction) but carry no ``slow`` marks of their own: all their tests count as slow.
SLOW_MODULES = ("tests/experiments/test_ablate.py", "tests/experiments/test_collapse_analysis.py",
                "tests/robustness/test_reliability_runner.py", "tests/robustness/test_formats_every_script.py",
                "tests/scripts/test_inference_folders.py", "tests/scripts/test_export_nnunet.py",
                "tests/utilities/data/test_dataset_file.py", "tests/utilities/workflow/test_cli_errors.py")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: end to end (trains models, runs scripts or benchmarks); "
                                       "`make test-quick` leaves these out (-m 'not slow')")


@functools.cache
def shares_module_fixtures(module: str) -> bool:
    """Whether the test module ``module`` (a path relative to the repository root) defines a
    fixture built once per module, class or session (a tiny trained run, a prepared dataset): its
    tests must then run on one worker, or each worker builds the fixture again. (The session
    fixtures of this file are cheap and built once per worker.)"""
    try:
        return bool(_SHARED.search((ROOT / module).read_text(encoding="utf-8")))
    except OSError:
        return True


#: Costly session fixtures of this file: the modules that read one are handed out together, so
#: that one worker builds it once for all of them.
SHARED_FIXTURES = ("tiny_runs",)


@functools.cache
def shared_fixture(module: str) -> str | None:
    """The first of :data:`SHARED_FIXTURES` that the test module ``module`` names, if any."""
    try:
        text = (ROOT / module).read_text(encoding="utf-8")
    except OSError:
        return None
    return next((name for name in SHARED_FIXTURES if re.search(rf"\b{name}\b", text)), None)


def work_unit(nodeid: str) -> str:
    """What pytest-xdist hands to one worker in one piece: the modules that read one of
    :data:`SHARED_FIXTURES` together, the whole module when it shares a module-scoped fixture
    (:func:`shares_module_fixtures`), else the test alone."""
    module = nodeid.split("::", 1)[0]
    shared = shared_fixture(module)
    if shared is not None:
        return f"fixture:{shared}"
    return module if shares_module_fixtures(module) else nodeid


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of :data:`SLOW_MODULES` ``slow``. Then the ``slow`` tests first, and with
    them every test of a module handed out whole (:func:`work_unit`) that holds one: the workers
    take the long tests while the short ones are left to fill their ends, instead of one long
    test running alone at the end."""
    for item in items:
        if item.nodeid.split("::", 1)[0] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
    slow_units = {work_unit(item.nodeid) for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: work_unit(item.nodeid) not in slow_units)  # stable: collection order within


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup``: one work unit per module that shares a module-scoped fixture, one per
    test otherwise (:func:`work_unit`), handed out in the collection's order with
    ``--no-loadscope-reorder`` (the slow tests first). pytest-xdist's own ``xdist_group`` marks
    do not reach its scheduler under pytest 9 (it renames ``item._nodeid``, which pytest 9 no
    longer reads), so the units are decided here, from the node ids alone."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ModuleFixtureScheduling(config, log)
