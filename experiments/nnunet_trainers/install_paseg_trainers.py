"""Make nnU-Net find PA-Seg's trainers by name: ``nnUNetv2_train ... -tr nnUNetTrainerPASeg``.

nnU-Net v2 looks a trainer up by importing every module under ``nnunetv2/training/nnUNetTrainer/``
(its own folder's modules first, then its sub-packages), and only then the folders of
``nnUNet_extTrainer``. This writes one small module, ``paseg_trainers.py``, into that folder; it
puts this folder on ``sys.path`` and imports ``nnUNetTrainerBudget`` and ``nnUNetTrainerPASeg``
from here, so ``nnUNetv2_train``, ``nnUNetv2_predict`` and the ranks of ``-num_gpus`` find them
without any variable set (``PASEG_NNUNET_TRAINERS``, when set, names another checkout's trainer
folder: ``experiments/nnunet_baseline.py`` sets it to its own, so that a worktree pinned for an
experiment trains with its own trainers, not those of the checkout that ran ``make install``).
Being in nnU-Net's own folder, it is found before the lookup reaches
the sub-packages, some of which need packages this project does not install (timm, for the
Primus trainers). Where PA-Seg cannot be imported (the repository moved: run ``make install``
again) the module warns and defines nothing, so nnU-Net's other trainers stay usable.

``make install`` runs this; by hand: ``python experiments/nnunet_trainers/install_paseg_trainers.py``.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages first

from utilities.core.arguments import ArgumentParser

__all__ = ["SHIM_NAME", "TRAINERS_DIR", "shim_text", "nnunet_trainer_folder", "install", "main"]

SHIM_NAME = "paseg_trainers.py"
TRAINERS_DIR = Path(__file__).resolve().parent

_TEMPLATE = '''"""PA-Seg's nnU-Net trainers (nnUNetTrainerBudget, nnUNetTrainerPASeg) for nnU-Net's lookup by name.

Written by PA-Seg's `make install` (experiments/nnunet_trainers/install_paseg_trainers.py); the
classes live in {folder}, or in the folder $PASEG_NNUNET_TRAINERS names (another checkout's, e.g.
a worktree pinned for an experiment: its nnunet_baseline.py sets it). Delete this file to remove
them from nnU-Net.
"""
import os
import sys
import warnings

TRAINERS = os.environ.get("PASEG_NNUNET_TRAINERS") or {folder!r}
if TRAINERS not in sys.path:
    sys.path.insert(0, TRAINERS) if os.environ.get("PASEG_NNUNET_TRAINERS") else sys.path.append(TRAINERS)
try:
    from nnUNetTrainerBudget import nnUNetTrainerBudget
    from nnUNetTrainerPASeg import nnUNetTrainerPASeg
except ImportError as e:
    warnings.warn(f"PA-Seg's nnU-Net trainers cannot be imported from {{TRAINERS}} ({{e}}); run `make install` "
                  "in the PA-Seg repository", stacklevel=1)
'''


def shim_text(trainers_dir: Path = TRAINERS_DIR) -> str:
    """The text of ``paseg_trainers.py`` for the trainers in ``trainers_dir``."""
    return _TEMPLATE.format(folder=str(Path(trainers_dir).resolve()))


def nnunet_trainer_folder() -> Path:
    """``nnunetv2/training/nnUNetTrainer/`` of the installed nnU-Net (the folder its lookup searches)."""
    try:
        import nnunetv2
    except ImportError as e:
        raise ValueError(f"nnU-Net v2 is not installed here ({e}); `make install` installs it "
                         "(requirements-nnunet.txt)") from None
    return Path(nnunetv2.__path__[0]) / "training" / "nnUNetTrainer"


def install(target: Path | None = None) -> Path:
    """Write ``paseg_trainers.py`` into ``target`` (default: nnU-Net's trainer folder); returns its path."""
    from utilities.data.io import save_text

    folder = nnunet_trainer_folder() if target is None else Path(target)
    if not folder.is_dir():
        raise FileNotFoundError(f"--target {folder}: not a folder")
    path = folder / SHIM_NAME
    save_text(shim_text(), path)
    return path


def main(argv: Sequence[str] | None = None) -> Path:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default=None,
                   help="folder to write paseg_trainers.py into (default: nnunetv2/training/nnUNetTrainer/)")
    args = p.parse_args(argv)
    path = install(None if args.target is None else Path(args.target))
    print(f"nnU-Net finds nnUNetTrainerBudget and nnUNetTrainerPASeg by name through {path}")
    return path


if __name__ == "__main__":
    sys.path.insert(0, str(TRAINERS_DIR.parents[1]))   # the repository root: `utilities`
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
