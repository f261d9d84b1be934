"""The collapse rule, once: when a training epoch counts as collapsed.

Pure (no torch, no files): the engine applies it to each epoch's row as it trains
(:class:`CollapseWatch`), ``progress.png`` shades the epochs it flags in a ``log.csv``, and the
ablation runner counts them per run, all through this module.

An epoch counts as collapsed for a model when, while its reference (the fraction of foreground
voxels of the expanded seeds, ``seed_fg``, or of SCM's teacher pseudo-labels, ``teacher_fg<k>``,
in the training patches) has foreground, the model predicts

- nothing: no foreground on any validation volume (``val_empty<k>`` = 1), or on the training
  patches less than a tenth of the reference's foreground (``fg_train<k>``);
- or foreground almost everywhere: more than 90 % of the training patches' voxels while the
  reference covers less than half;
- or (stage 1, when the mCRF or the VM is on and its ramp-up has reached full weight) a flood: more than
  ``FLOOD_RATIO`` (10) times the seeds' foreground and over 1 % of the training patches. On
  small lesions the full-weight mCRF can pull the network into segmenting a whole tissue class
  and hold it there (docs/results/collapse.md §8); working runs end at 1.5-6 times the seeds'
  foreground (the seeds are the lesions' cores). A run without them (seeds only) is not judged by
  this rule: its seed loss alone decides how far past the seeds it predicts, which is its Dice's
  business, not a collapse.

The engine logs its verdict per epoch as ``collapsed<k>`` (1 collapsed, 0 not); a log without
that column (written before it existed) is judged by the rule from its other columns.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["CollapseWatch", "FLOOD_RATIO", "FLOOD_MIN_SHARE", "model_suffixes", "watch_for", "collapsed_rows"]

#: A flood: the training predictions hold more than this many times the reference's foreground...
#: (10: on the development logs, over ``collapse_patience`` epochs, the lowest ratio that flags no
#: run that 20 did not; docs/results/collapse.md §8)
FLOOD_RATIO = 10.0
#: ... and more than this share of the training patches' voxels.
FLOOD_MIN_SHARE = 0.01


@dataclass(frozen=True)
class CollapseWatch:
    """The collapse rule (module docstring) for one model's columns of a log row.

    ``grad_columns``: the gradient-norm columns of its loss terms (the engine names the dominant one);
    ``ramp_column``: the regularisers' ramp-up weight (stage 1), when floods are watched for;
    ``regulariser_columns``: their gradient norms (a flood counts only when one is above 0).
    """

    model: str
    val_empty_column: str
    train_column: str
    reference_column: str
    grad_columns: tuple[str, ...] = ()
    ramp_column: str | None = None
    regulariser_columns: tuple[str, ...] = ()

    @property
    def log_column(self) -> str:
        """The ``log.csv`` column of this model's per-epoch collapse state (1 collapsed, 0 not):
        ``collapsed`` for ``model``, ``collapsed1`` for ``model1``."""
        return "collapsed" + self.model.removeprefix("model")

    def state(self, row: Mapping[str, Any]) -> str | None:
        """``"empty"``, ``"full"``, ``"flooded"`` or ``None`` for this epoch's row."""
        reference = _number(row.get(self.reference_column))
        train = _number(row.get(self.train_column))
        if not reference > 0:
            return None  # no foreground to learn (or unknown): nothing to compare with
        if _number(row.get(self.val_empty_column)) == 1 or train < 0.1 * reference:
            return "empty"
        if train > 0.9 and reference < 0.5:
            return "full"
        if self.ramp_column is not None and _number(row.get(self.ramp_column)) >= 0.99 \
                and any(_number(row.get(c)) > 0 for c in self.regulariser_columns) \
                and train > FLOOD_RATIO * reference and train > FLOOD_MIN_SHARE:
            return "flooded"
        return None


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def model_suffixes(columns: Sequence[str]) -> list[str]:
    """The model suffixes of a log: ``[""]`` for stage 1, ``["1", "2"]`` for SCM."""
    found = sorted({m.group(1) for c in columns if (m := re.fullmatch(r"val_empty(\d?)", c))})
    return found or [""]


def watch_for(suffix: str, grad_columns: tuple[str, ...] = ()) -> CollapseWatch:
    """The watch of stage 1's model (``suffix`` ``""``: against ``seed_fg``, floods watched for
    once ``ramp`` is full and the mCRF or VM has a gradient) or of SCM's model ``<suffix>``
    (against ``teacher_fg<suffix>``)."""
    if suffix == "":
        return CollapseWatch("model", "val_empty", "fg_train", "seed_fg", grad_columns, "ramp", ("grad_crf", "grad_vm"))
    return CollapseWatch(f"model{suffix}", f"val_empty{suffix}", f"fg_train{suffix}", f"teacher_fg{suffix}",
                         grad_columns)


def collapsed_rows(log: pd.DataFrame) -> np.ndarray:
    """Per row of a ``log.csv``: whether some model counts as collapsed in that epoch (its
    ``collapsed<k>`` column where logged, else the rule on its columns)."""
    flags = np.zeros(len(log), dtype=bool)
    records = None
    for suffix in model_suffixes(log.columns):
        watch = watch_for(suffix)
        if watch.log_column in log.columns:
            flags |= pd.to_numeric(log[watch.log_column], errors="coerce").fillna(0).to_numpy(float) > 0
            continue
        records = log.to_dict("records") if records is None else records
        flags |= np.array([watch.state(r) is not None for r in records], dtype=bool)
    return flags
