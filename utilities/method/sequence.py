"""Every command line of the sequence — stage 0, stage 1, SCM, inference, scores — as an
argument list, built in one place: ``plan.py``'s printed commands
(:func:`utilities.workflow.plan.pipeline_commands`), the demo (``data/demo/run_demo.py``), the
ablation runner, the dataset family (``experiments/family.py``) and a model card's training
command (:func:`utilities.models.model_package.training_command`).

A command is ``[python, script, *parts]``: the script of its step
(:data:`utilities.method.defaults.SCRIPTS`), started as a :class:`Launcher` says, then each part in
turn, a mapping of flags as JSON holds them (:func:`flag_args`) or a list of words.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utilities.method.defaults import SCRIPTS, SEED_POSTFIX

__all__ = ["Part", "Launcher", "USER", "flag_args", "command", "script_command", "seed_args", "teacher_args"]

#: One part of a command: flags as JSON holds them (``{"--a": 1}``) or words (paths allowed).
Part = Mapping[str, Any] | Sequence[str | os.PathLike]


@dataclass(frozen=True)
class Launcher:
    """How a command starts: the Python that runs it, and the folder its script path starts from
    (``None``: the path from the repository root, as a user types it there)."""

    python: str = "python"
    root: str | os.PathLike | None = None

    def start(self, script: str) -> list[str]:
        """``[python, script]``, ``script`` a path from the repository root."""
        return [self.python, script if self.root is None else str(Path(self.root) / script)]


#: The commands as printed for a user: ``python <script>`` from the repository root.
USER = Launcher()


def flag_args(flags: Mapping[str, Any]) -> list[str]:
    """Flags as JSON holds them to an argument list: ``{"--a": 1, "--b": [2, 3], "--c": true,
    "--d": null}`` -> ``["--a", "1", "--b", "2", "3", "--c"]`` (``null``/``false``: left out;
    floats as ``repr``; a list or tuple gives one word per item)."""
    args: list[str] = []
    for key, value in flags.items():
        if value is None or value is False:
            continue
        args.append(key)
        if value is True:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        args += [repr(v) if isinstance(v, float) else str(v) for v in values]
    return args


def command(step: str, *parts: Part, launcher: Launcher = USER) -> list[str]:
    """The command line of ``step`` (``stage0``, ``stage1``, ``scm``, ``inference``, ``scores``):
    ``[python, script, *parts]`` with each mapping part as :func:`flag_args`, each path as text."""
    if step not in SCRIPTS:
        raise ValueError(f"unknown step {step!r}; one of {list(SCRIPTS)}")
    return script_command(SCRIPTS[step], *parts, launcher=launcher)


def script_command(script: str, *parts: Part, launcher: Launcher = USER) -> list[str]:
    """:func:`command` of a script that is no step of its own: a dataset's stage-0 entry point
    (``data/VS/generate_geodesic_labels.py``) or a baseline (``experiments/nnunet_baseline.py``)."""
    words = launcher.start(script)
    for part in parts:
        words += flag_args(part) if isinstance(part, Mapping) else [os.fspath(word) for word in part]
    return words


def seed_args(folder: str | os.PathLike, postfix: str = SEED_POSTFIX) -> list[str]:
    """The training labels a stage-1 or SCM run reads: the expanded seeds in ``folder`` (or, with
    another ``postfix``, any label files, e.g. the full labels of a fully supervised run)."""
    return ["--path_geodesic_labels", os.fspath(folder), "--geodesic_label_postfix", postfix]


def teacher_args(model1: str | os.PathLike, model2: str | os.PathLike, network1: str | None = None,
                 network2: str | None = None) -> list[str]:
    """SCM's two stage-1 runs (and their networks, when given)."""
    return ["--pretrained_model1_dir", os.fspath(model1), *(["--network1", network1] if network1 else []),
            "--pretrained_model2_dir", os.fspath(model2), *(["--network2", network2] if network2 else [])]
