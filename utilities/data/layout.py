"""The one object that names a run's files.

A training script's ``--model_dir`` holds one run folder per network, ``<model_dir>/<network>/``:

.. code-block:: text

    <model_dir>/<network>/
        models/CP_best.pth, CP_final.pth, CP_latest.pth, CP_best_<metric>.pth, CP_healthy.pth
               (SCM: CP_{best,final}_model<k>.pth in network k's folder; CP_latest_SCM.pth in network 1's)
        log.csv, log_<time>.txt, progress.png, tensorboard/          (SCM: log_SCM.csv, log_SCM_<time>.txt,
                                                                       progress_SCM.png, tensorboard_SCM/)
        output_pred/<subject>_<postfix>/<subject>_<postfix>_seg.nii.gz   (inference.py)
        results_<phase>.csv                                              (utilities/scores.py)

Every trainer, ``inference.py``, ``utilities/scores.py``, the model packages and the experiment
runners ask a :class:`RunLayout` for these paths; none joins them by hand. Pure paths: nothing
here reads or writes a file except :meth:`RunLayout.checkpoint_kinds` and
:meth:`RunLayout.parent_hint`, which look.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MODELS", "OUTPUT_PRED", "RunLayout", "below"]

#: The sub-folder of a run folder that holds its checkpoints.
MODELS = "models"
#: The sub-folder of a run folder that holds inference.py's predictions.
OUTPUT_PRED = "output_pred"



def below(path: str, root: str) -> str | None:
    """What follows ``root`` in ``path`` (``"/runs/a"`` for ``/abl/runs/a`` under ``/abl``, ``""``
    for ``root`` itself), compared as written; ``None`` where ``path`` does not lie under ``root``.
    The one rule by which a path moves with a folder moved elsewhere (the ablation runner's
    markers, a resumed nnU-Net run)."""
    root = root.rstrip("/")
    return path[len(root):] if path == root or path.startswith(root + "/") else None


@dataclass(frozen=True)
class RunLayout:
    """The files of the run of ``network`` in ``model_dir`` (``model_dir`` kept as given, for messages).

    ``scm``: the names of the SCM stage (``log_SCM.csv``, ``CP_latest_SCM.pth``, ...), which
    lives in the folder of its first network.
    """

    model_dir: str | os.PathLike
    network: str

    @classmethod
    def of_folder(cls, run_dir: str | os.PathLike) -> RunLayout:
        """The layout whose run folder is ``run_dir`` (``<model_dir>/<network>``)."""
        run_dir = Path(run_dir)
        return cls(run_dir.parent, run_dir.name)

    @property
    def folder(self) -> Path:
        """The run folder ``<model_dir>/<network>``."""
        return Path(self.model_dir) / self.network

    @property
    def models(self) -> Path:
        """``<run folder>/models``: the checkpoints."""
        return self.folder / MODELS

    def checkpoint(self, kind: str) -> Path:
        """``models/CP_<kind>.pth``: ``best``, ``final``, ``latest``, ``best_seed_dice``,
        ``best_model1``, ``latest_SCM``, ``healthy``, ... (inference's ``--epoch_inf``)."""
        return self.models / f"CP_{kind}.pth"

    def latest(self, scm: bool = False) -> Path:
        """The resumable training state: ``CP_latest.pth`` (SCM: ``CP_latest_SCM.pth``)."""
        return self.checkpoint("latest_SCM" if scm else "latest")

    @property
    def healthy(self) -> Path:
        """``CP_healthy.pth``: the state after the last epoch in which no model was collapsed."""
        return self.checkpoint("healthy")

    def checkpoint_kinds(self, models_only: bool = False) -> list[str]:
        """The ``<kind>`` of every ``CP_<kind>.pth`` in ``models/``, sorted (none: ``[]``);
        ``models_only``: without the training states (``latest*``, ``healthy``), which hold no
        model to predict with."""
        if not self.models.is_dir():
            return []
        kinds = sorted(p.name[len("CP_"):-len(".pth")] for p in self.models.glob("CP_*.pth"))
        return [k for k in kinds if not (k.startswith("latest") or k == "healthy")] if models_only else kinds

    def log_name(self, scm: bool = False) -> str:
        """The stem of the text log ``<stem>_<time>.txt``: ``log`` (SCM: ``log_SCM``)."""
        return "log_SCM" if scm else "log"

    def log_csv(self, scm: bool = False) -> Path:
        """``log.csv`` (SCM: ``log_SCM.csv``), one row per epoch."""
        return self.folder / f"{self.log_name(scm)}.csv"

    def progress(self, scm: bool = False) -> Path:
        """``progress.png`` (SCM: ``progress_SCM.png``), drawn from the CSV log."""
        return self.folder / ("progress_SCM.png" if scm else "progress.png")

    def tensorboard(self, scm: bool = False) -> Path:
        """``tensorboard/`` (SCM: ``tensorboard_SCM/``)."""
        return self.folder / ("tensorboard_SCM" if scm else "tensorboard")

    @property
    def output_pred(self) -> Path:
        """``<run folder>/output_pred``: inference.py's predictions in split mode."""
        return self.folder / OUTPUT_PRED

    def prediction(self, subject: str, postfix: str) -> Path:
        """Where ``inference.py`` writes a subject's segmentation and ``scores.py`` reads it:
        ``output_pred/<subject>_<postfix>/<subject>_<postfix>_seg.nii.gz``."""
        name = f"{subject}_{postfix}"
        return self.output_pred / name / f"{name}_seg.nii.gz"

    def results(self, phase: str) -> Path:
        """``results_<phase>.csv``: the scores of the predictions of ``phase``."""
        return self.folder / f"results_{phase}.csv"

    def parent_hint(self, flag: str, kind: str = "best") -> str | None:
        """When ``model_dir`` is itself a network's run folder (it holds ``models/CP_<kind>.pth``:
        the folder a training printed was passed instead of its parent), the advice
        ``"<model_dir> is the run folder of a network: pass its parent, <flag> <its parent>"``;
        else ``None``."""
        inner = RunLayout.of_folder(self.model_dir)
        if not inner.checkpoint(kind).is_file():
            return None
        return f"{self.model_dir} is the run folder of a network: pass its parent, {flag} {Path(self.model_dir).parent}"
