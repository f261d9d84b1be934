"""The scripts the ablation runner calls: their paths, and their argument parsers (each script's
own ``build_parser``), read to check a command's flags and to know what it will train with."""
from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from utilities.core.arguments import clear_origins
from utilities.method.defaults import SCM_SCRIPT, STAGE1_SCRIPT

#: The repository root: the scripts' paths are taken from it, and the runner starts them there.
ROOT = Path(__file__).resolve().parents[2]

NNUNET_SCRIPT = "experiments/nnunet_baseline.py"
#: The sub-folder of an ``nnunet`` run (``nnunet_baseline.NETWORK``).
NNUNET_NETWORK = "nnUNet"
GEODESIC_SCRIPTS = {"VS": "data/VS/generate_geodesic_labels.py", "BraTS": "data/BraTS/generate_geodesic_labels.py"}
#: The scripts that train a run (paths in the repository): what identifies a run in another checkout.
TRAINING_SCRIPTS = (STAGE1_SCRIPT, SCM_SCRIPT, NNUNET_SCRIPT)
#: The module whose ``build_parser`` checks each script's flags before anything runs.
PARSERS = {STAGE1_SCRIPT: Path(STAGE1_SCRIPT).stem, SCM_SCRIPT: Path(SCM_SCRIPT).stem,
           "inference.py": "inference", "scores.py": "utilities.scores", "nnunet_baseline.py": NNUNET_SCRIPT}


@functools.cache
def _script_module(name: str) -> Any:
    """The module of a script the runner calls (imported by name, or loaded once from its file for
    experiments/, which is no package)."""
    import importlib
    import importlib.util

    target = PARSERS[name]
    if not target.endswith(".py"):
        return importlib.import_module(target)
    spec = importlib.util.spec_from_file_location(Path(target).stem, ROOT / target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script_parser(name: str) -> argparse.ArgumentParser:
    """The argparse parser of a script the runner calls."""
    return _script_module(name).build_parser()


def planned_args(command: Sequence[str]) -> argparse.Namespace:
    """The arguments a training command will run with, as its script reads them: its parser,
    with the flags of its ``--plan`` as defaults (a relative plan path is taken from the
    repository root, where the runner starts the script)."""
    from utilities.workflow.plan import apply_plan

    name = Path(command[1]).name
    argv = list(command[2:])
    if "--plan" in argv[:-1] and not Path(argv[argv.index("--plan") + 1]).is_absolute():
        argv[argv.index("--plan") + 1] = str(ROOT / argv[argv.index("--plan") + 1])
    section = {STAGE1_SCRIPT: "stage1", SCM_SCRIPT: "scm"}.get(name)
    parser = script_parser(name)
    if not section:
        return parser.parse_args(argv)
    args = apply_plan(parser, argv, section)
    clear_origins()  # the plan's flags are the run's, not this process's: its errors name no plan
    return args

