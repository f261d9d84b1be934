"""The files that make a run resumable and skippable, in its folder: ``ablate_started.json``
(written before a training starts: a killed run is resumed only with the flags it was started
with), ``ablate_trained.json`` (after it), ``ablate_done.json`` (atomically, after scoring: the
run is skipped), and what :func:`train_mode` reads in the folder (``--resume`` or ``--overwrite``)."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from utilities.core.textdata import loads_json
from utilities.data.io import save_text
from utilities.data.layout import RunLayout, below

from .commands import Run
from .scripts import NNUNET_NETWORK, TRAINING_SCRIPTS

__all__ = ["DONE_NAME", "TRAINED_NAME", "STARTED_NAME", "LOG_NAME", "ARGS_NAME", "ABLATION_KEY", "train_mode",
           "read_json", "write_json", "run_marker", "signature", "same_run", "recorded_changes", "relocated",
           "recorded_folder", "training_script", "changes", "finished", "split_digest", "check_split",
           "stale_evaluation"]

DONE_NAME = "ablate_done.json"
TRAINED_NAME = "ablate_trained.json"
#: Written before a training starts: a killed run is resumed only with the flags it was started with.
STARTED_NAME = "ablate_started.json"
LOG_NAME = "ablate_log.txt"
#: The arguments a training recorded in its resumable state, kept as text by a run record
#: (``experiments/records.py``), which keeps no checkpoint; read when the checkpoint is absent.
ARGS_NAME = "ablate_args.json"


def train_mode(folder: Path) -> str | None:
    """``--resume`` if the run folder holds a latest checkpoint (or an nnU-Net run), ``--overwrite``
    if it holds other checkpoints (a run killed before its first latest checkpoint), ``None`` for
    a fresh folder."""
    nnunet = RunLayout(folder, NNUNET_NETWORK).folder
    if nnunet.is_dir() and any(nnunet.iterdir()):
        return "--resume"
    runs = [RunLayout.of_folder(d) for d in folder.glob("*")]
    if any(run.latest().is_file() or run.latest(scm=True).is_file() for run in runs):
        return "--resume"
    return "--overwrite" if any(any(run.models.glob("*.pth")) for run in runs) else None


def read_json(path: Path) -> dict[str, Any] | None:
    """A marker the runner wrote (or nnU-Net's ``budget.json``); ``None`` when it is missing or
    unreadable (the step runs again). A key repeated in it is a one-line error naming the file."""
    try:
        return loads_json(path.read_text(encoding="utf-8"), f"run marker {path}")
    except (OSError, json.JSONDecodeError):
        return None


def write_json(obj: dict[str, Any], path: Path) -> None:
    save_text(json.dumps(obj, indent=1) + "\n", path)


#: The key of a marker that records the ablation folder its commands name.
ABLATION_KEY = "ablation_dir"
#: What a path inside the ablation folder is compared as (:func:`relocated`).
_HERE = "<ablation_dir>"


def signature(run: Run) -> list[str]:
    """What identifies a run's training: its command minus the interpreter."""
    return run.train[1:]


def run_marker(run: Run, split: str | None, **fields: Any) -> dict[str, Any]:
    """A marker of ``run``: its training command, ``split`` (its split file's digest, as
    :func:`split_digest` read it), the ablation folder its commands name, and ``fields``."""
    return {"command": signature(run), "split_sha256": split, ABLATION_KEY: _folders({}, run)[1], **fields}


def relocated(command: Sequence[str], ablation_dir: str | None) -> list[str]:
    """``command`` with every path inside ``ablation_dir`` (a folder the ablation runner made:
    runs, stage 0) written relative to it: an ablation folder moved elsewhere holds the same
    runs. Other paths (the dataset's, the scripts') are left as they are."""
    if not ablation_dir:
        return list(command)
    return [item if (rest := below(item, str(ablation_dir))) is None else _HERE + rest for item in command]


def recorded_folder(marker: dict[str, Any], here: str | None) -> str | None:
    """The ablation folder a marker's commands name, for commands that now name ``here``. A
    marker written before the folder was recorded is taken as made ``here``; with no ``here``
    (``None``) paths are compared as they are."""
    recorded = marker.get(ABLATION_KEY)
    return recorded if isinstance(recorded, str) and here is not None else here


def _folders(marker: dict[str, Any], run: Run) -> tuple[str | None, str | None]:
    """The ablation folder a marker's commands name and the one ``run``'s name."""
    here = None if run.ablation_dir is None else str(run.ablation_dir)
    return recorded_folder(marker, here), here


def _commands(marker: dict[str, Any] | None, run: Run) -> tuple[list[str], list[str]] | None:
    """The training a marker records and ``run``'s, paths inside the ablation folder relative to
    it; ``None`` when the marker records no command."""
    recorded = (marker or {}).get("command")
    if not isinstance(recorded, list):
        return None
    then, now = _folders(marker or {}, run)
    return relocated(recorded, then), relocated(signature(run), now)


def same_run(marker: dict[str, Any] | None, run: Run) -> bool:
    """Whether a marker records ``run``'s training: the same flags and values, the same training
    script wherever its checkout lies, and the same paths inside the ablation folder wherever
    that folder now lies. The runner writes absolute script paths; another checkout (a worktree
    pinned at a commit, a newer clone) that reads the same ablation folder has the script
    elsewhere, and the run is still the same; so is a run whose ablation folder was moved."""
    pair = _commands(marker, run)
    return pair is not None and _portable(pair[0]) == _portable(pair[1])


def recorded_changes(marker: dict[str, Any] | None, run: Run) -> str:
    """What differs between the training a marker records and ``run``'s (paths inside the
    ablation folder compared relative to it)."""
    recorded, current = _commands(marker, run) or ([], signature(run))
    return changes(recorded, current)


#: Flags of a training command that do not change its result (the runner's ``--device``): a run
#: made on a GPU is the same run when its table is made, or it is resumed, on a CPU.
FREE_FLAGS = ("--device",)


def _portable(command: Sequence[str]) -> list[str]:
    """``command`` with its script (the first item) as its path in the repository when it is one
    of the training scripts the runner calls, and without the :data:`FREE_FLAGS` and their values."""
    if not command:
        return list(command)
    found = training_script(command[0])
    rest: list[str] = []
    items = iter(command[1:])
    for item in items:
        if item in FREE_FLAGS:
            next(items, None)
        else:
            rest.append(item)
    return [found[1] if found else str(command[0]).replace("\\", "/"), *rest]


def training_script(path: str) -> tuple[str, str] | None:
    """``(checkout, script)`` when ``path`` is one of the training scripts the runner calls: the
    folder of the checkout it lies in (``""`` for a path given from the repository root) and its
    path in the repository; ``None`` for any other path."""
    script = str(path).replace("\\", "/")
    for known in TRAINING_SCRIPTS:
        if script == known:
            return "", known
        if script.endswith("/" + known):
            return script[: -len(known) - 1], known
    return None


def _flag_values(command: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``--flag`` -> its values in a command (the script as ``""``)."""
    out: dict[str, tuple[str, ...]] = {"": (Path(command[0]).name,)} if command else {}
    flag = None
    for token in command[1:]:
        if token.startswith("--"):
            flag = token
            out[flag] = ()
        elif flag is not None:
            out[flag] += (token,)
    return out


def changes(old: Sequence[str], new: Sequence[str]) -> str:
    """What differs between two commands, e.g. ``--learning_rate 0.01 -> 0.04``."""
    a, b = _flag_values(old), _flag_values(new)
    shown = []
    for flag in dict.fromkeys([*a, *b]):
        if a.get(flag) != b.get(flag):
            before = " ".join(a[flag]) if flag in a else "(absent)"
            after = " ".join(b[flag]) if flag in b else "(absent)"
            shown.append(f"{flag or 'script'} {before} -> {after}")
    return ", ".join(shown[:5]) + (" ..." if len(shown) > 5 else "")


def split_digest(path: Path | None) -> str | None:
    """The SHA-256 of a split file's bytes (``None`` when there is none to read)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path is not None else None
    except OSError:
        return None


def check_split(marker: dict[str, Any] | None, run: Run) -> None:
    """Refuse (``ValueError``, one line) a run recorded with another content of its split file:
    its training and scoring cases were others. A marker written before the content was
    recorded is taken as it is."""
    recorded = (marker or {}).get("split_sha256")
    if recorded is not None and run.split_file is not None and recorded != split_digest(run.split_file):
        raise ValueError(f"run folder {run.folder} was trained and scored with another content of the split file "
                         f"{run.split_file} (it changed since): its cases were others; restore the split, or delete "
                         "that folder (or choose another --output_dir) to run it on this one")


def stale_evaluation(run: Run) -> str | None:
    """What changed in the inference or scoring since a finished run was scored (``None``: nothing,
    not finished, or recorded before the runner kept it): such a run is inferred and scored again."""
    return _evaluation_change(read_json(run.folder / DONE_NAME), run)


def _evaluation_change(marker: dict[str, Any] | None, run: Run) -> str | None:
    """:func:`stale_evaluation` of a done marker already read."""
    recorded = (marker or {}).get("evaluation")
    if recorded is None or not run.evaluation or not same_run(marker, run):
        return None
    then, now = _folders(marker or {}, run)
    old, new = relocated(recorded, then), relocated(run.evaluation, now)
    return None if old == new else changes(["evaluation", *old], ["evaluation", *new])


def finished(run: Run) -> bool:
    """Whether ``run`` is done as the config now gives it: its training the same (another is an
    error), its split file's content the same (an error), its inference and scoring the same
    (else not finished: :func:`stale_evaluation`) and its scores there."""
    marker = read_json(run.folder / DONE_NAME)
    if marker is None:
        return False
    if not same_run(marker, run):
        changed = recorded_changes(marker, run)
        raise ValueError(f"run folder {run.folder} holds a finished run made with other flags than the config "
                         f"now gives ({changed}); delete that folder or choose another --output_dir")
    check_split(marker, run)
    if _evaluation_change(marker, run) is not None:
        return False
    return run.results.is_file()


