"""The tests mirror the source tree: every module of ``utilities`` and ``networks`` has its test
module at the mirrored path (``utilities/core/errors.py`` → ``tests/utilities/core/test_errors.py``
or ``test_errors_<aspect>.py``), every test module of a mirrored folder is named after a module of
its package, every other test module sits in one of the folders for scripts, experiments,
benchmarks, integration and robustness, and no two test modules share a file name (pytest
imports them by name: the second would not be collected)."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import PurePosixPath

from helpers import ROOT, project_sources

#: The source packages whose modules each have a test module (folders, relative to the root).
SOURCES = ("utilities", "networks")

#: Files of those packages that are scripts, not modules of the library, and the test module
#: that runs each of them.
SCRIPTS = {"utilities/scores.py": "tests/utilities/evaluation/test_scoring.py"}

#: Test modules of a mirrored folder that test the package as a whole, not one module.
PACKAGE_TESTS = {"tests/utilities/test_structure.py": "the import layers of utilities",
                 "tests/utilities/test_types.py": "mypy over utilities and networks"}

#: The folders (and their subfolders) for test modules that are not about one module of the
#: library: the scripts at the root and under data/, the experiments, the benchmarks, whole runs of
#: the sequence, and the robustness tests (grouped by theme: one theme touches many modules and scripts).
OTHER_FOLDERS = ("tests/scripts", "tests/experiments", "tests/benchmarks", "tests/integration", "tests/robustness")

#: Test modules at the top of tests/ (this one: it is about the tests, not about a source file).
TOP_LEVEL = ("tests/test_tree.py",)


def _tests_a_module(stem: str, module: str) -> bool:
    """``test_<module>`` or ``test_<module>_<aspect>``."""
    return stem == f"test_{module}" or stem.startswith(f"test_{module}_")


def tree_problems(sources: Iterable[str], tests: Iterable[str]) -> list[str]:
    """What breaks the mirror, one line each (``[]`` when nothing does).

    Args:
        sources: the files of :data:`SOURCES`, relative POSIX paths (``utilities/core/errors.py``);
            a folder with an ``__init__.py`` is a package.
        tests: the files under ``tests/``, relative POSIX paths; only ``test_*.py`` are test modules.
    """
    sources = [PurePosixPath(s) for s in sources]
    tests = [PurePosixPath(t) for t in tests if PurePosixPath(t).name.startswith("test_") and t.endswith(".py")]
    packages = {s.parent for s in sources if s.name == "__init__.py"}
    modules: dict[PurePosixPath, list[str]] = defaultdict(list)   # package → its module names
    for s in sources:
        if s.suffix == ".py" and s.name != "__init__.py" and s.parent in packages and str(s) not in SCRIPTS:
            modules[s.parent].append(s.stem)
    by_folder: dict[PurePosixPath, list[str]] = defaultdict(list)
    for t in tests:
        by_folder[t.parent].append(t.stem)
    problems = []
    for package in sorted(packages):
        mirror = PurePosixPath("tests") / package
        for module in sorted(modules[package]):
            if not any(_tests_a_module(stem, module) for stem in by_folder[mirror]):
                problems.append(f"{package / module}.py has no test module: write {mirror}/test_{module}.py "
                                f"(or test_{module}_<aspect>.py)")
    for script, test in sorted(SCRIPTS.items()):
        if PurePosixPath(script) in sources and PurePosixPath(test) not in tests:
            problems.append(f"{script} (a script) has no test module: {test} is missing")
    mirrors = {PurePosixPath("tests") / p: p for p in packages}
    for t in sorted(tests):
        if t.parent in mirrors:
            package = mirrors[t.parent]
            names = [*modules[package], package.name]   # test_<package>.py: the package's __init__
            if str(t) not in PACKAGE_TESTS and not any(_tests_a_module(t.stem, m) for m in names):
                problems.append(f"{t} is named after no module of {package}/ ({', '.join(sorted(modules[package]))}): "
                                "rename it test_<module>.py or test_<module>_<aspect>.py, or move it")
        elif not any(t.is_relative_to(folder) for folder in OTHER_FOLDERS) and str(t) not in TOP_LEVEL:
            problems.append(f"{t} is outside the mirrored tree: move it to the folder that mirrors its module "
                            f"(tests/<package>/...) or to one of {', '.join(OTHER_FOLDERS)}")
    names: dict[str, list[str]] = defaultdict(list)
    for t in tests:
        names[t.name].append(str(t))
    for name, paths in sorted(names.items()):
        if len(paths) > 1:
            problems.append(f"{len(paths)} test modules are named {name} ({', '.join(sorted(paths))}): pytest "
                            "collects only one of them; rename all but one")
    return problems


def _project(folder: str) -> list[str]:
    return [p.relative_to(ROOT).as_posix() for p in project_sources() if p.relative_to(ROOT).parts[0] == folder]


def test_the_tests_mirror_the_source_tree():
    sources = [s for folder in SOURCES for s in _project(folder)]
    assert "utilities/core/errors.py" in sources and "networks/blocks.py" in sources
    problems = tree_problems(sources, _project("tests"))
    assert problems == [], "\n".join(problems)


def test_the_scripts_among_the_sources_are_run_by_their_test_module():
    for script, test in SCRIPTS.items():
        module = PurePosixPath(script)
        assert (ROOT / script).is_file()
        assert f"from {module.parent.as_posix().replace('/', '.')} import {module.stem}" in (ROOT / test).read_text()


# ----------------------------------------------------------------------------- the check on made-up trees
SOURCES_MADE_UP = ["utilities/__init__.py", "utilities/scores.py", "utilities/core/__init__.py",
                   "utilities/core/errors.py", "utilities/core/jobs.py", "utilities/data/__init__.py",
                   "utilities/data/grid.py", "utilities/data/dataset_file.py", "utilities/evaluation/__init__.py",
                   "utilities/evaluation/scoring.py", "networks/__init__.py", "networks/blocks.py"]
TESTS_MADE_UP = ["tests/conftest.py", "tests/helpers.py", "tests/test_tree.py", "tests/utilities/test_structure.py",
                 "tests/utilities/evaluation/test_scoring.py", "tests/utilities/core/test_errors.py",
                 "tests/utilities/core/test_jobs_interrupt.py", "tests/utilities/data/test_grid.py",
                 "tests/utilities/data/test_dataset_file.py", "tests/networks/test_networks.py",
                 "tests/networks/test_blocks.py", "tests/integration/test_pipeline.py",
                 "tests/robustness/test_sane_inputs.py", "tests/scripts/test_inference.py",
                 "tests/experiments/ablation/test_config.py"]


def test_a_complete_made_up_tree_passes():
    assert tree_problems(SOURCES_MADE_UP, TESTS_MADE_UP) == []


def test_a_module_without_its_test_module_is_named():
    tests = [t for t in TESTS_MADE_UP if t not in ("tests/utilities/core/test_jobs_interrupt.py",
                                                   "tests/networks/test_blocks.py")]
    assert tree_problems(SOURCES_MADE_UP, tests) == [
        "networks/blocks.py has no test module: write tests/networks/test_blocks.py (or test_blocks_<aspect>.py)",
        "utilities/core/jobs.py has no test module: write tests/utilities/core/test_jobs.py "
        "(or test_jobs_<aspect>.py)",
    ]


def test_a_test_module_in_the_wrong_folder_is_named():
    """Its module's test sits one layer off (the module counts as untested), a theme's test sits
    in a mirrored folder, a test sits at the top of tests/, two test modules share a name."""
    tests = [t for t in TESTS_MADE_UP if t != "tests/utilities/data/test_grid.py"]
    tests += ["tests/utilities/core/test_grid.py", "tests/utilities/data/test_reliability_names.py",
              "tests/test_pipeline_small.py", "tests/robustness/test_errors.py"]
    assert tree_problems(SOURCES_MADE_UP, tests) == [
        "utilities/data/grid.py has no test module: write tests/utilities/data/test_grid.py (or test_grid_<aspect>.py)",
        "tests/test_pipeline_small.py is outside the mirrored tree: move it to the folder that mirrors its module "
        f"(tests/<package>/...) or to one of {', '.join(OTHER_FOLDERS)}",
        "tests/utilities/core/test_grid.py is named after no module of utilities/core/ (errors, jobs): rename it "
        "test_<module>.py or test_<module>_<aspect>.py, or move it",
        "tests/utilities/data/test_reliability_names.py is named after no module of utilities/data/ (dataset_file, "
        "grid): rename it test_<module>.py or test_<module>_<aspect>.py, or move it",
        "2 test modules are named test_errors.py (tests/robustness/test_errors.py, "
        "tests/utilities/core/test_errors.py): pytest collects only one of them; rename all but one",
    ]


def test_a_script_among_the_sources_needs_its_named_test_module():
    tests = [t for t in TESTS_MADE_UP if t != "tests/utilities/evaluation/test_scoring.py"]
    assert tree_problems(SOURCES_MADE_UP, tests) == [
        "utilities/evaluation/scoring.py has no test module: write tests/utilities/evaluation/test_scoring.py "
        "(or test_scoring_<aspect>.py)",
        "utilities/scores.py (a script) has no test module: tests/utilities/evaluation/test_scoring.py is missing"]
    moved = [*tests, "tests/utilities/evaluation/test_scoring_script.py"]   # the module's test, not the script's
    assert tree_problems(SOURCES_MADE_UP, moved) == [
        "utilities/scores.py (a script) has no test module: tests/utilities/evaluation/test_scoring.py is missing"]
