"""The training-health rules, once: when an epoch counts as collapsed, and when a network is
below its own seeds.

Pure (no torch, no files): the engine applies them to each epoch's row as it trains
(:class:`CollapseWatch`, :func:`judge_seeds`), ``progress.png`` shades the epochs they flag in a
``log.csv``, and the ablation runner counts them per run, all through this module.

**Collapse.** An epoch counts as collapsed for a model when, while its reference (the fraction of
foreground voxels of the expanded seeds, ``seed_fg``, or of SCM's teacher pseudo-labels,
``teacher_fg<k>``, in the training patches) has foreground, the model predicts

- nothing: no foreground on any validation volume (``val_empty<k>`` = 1), or on the training
  patches less than a tenth of the reference's foreground (``fg_train<k>``);
- or foreground almost everywhere: more than 90 % of the training patches' voxels while the
  reference covers less than half;
- or (stage 1, when the mCRF or the VM is on and its ramp-up has reached full weight) a flood:
  more than half (``FLOOD_OUTSIDE_SHARE``) of its foreground in the training patches lies
  outside the points' boxes (``fg_outside``: label 0 of the expanded seeds, background for
  certain), and it covers over 1 % of the patches. On small lesions the full-weight mCRF can
  pull the network into segmenting a whole tissue class and hold it there
  (docs/results/collapse.md §8): in the logs of that study every flooded epoch had at least
  73 % of its foreground outside the boxes. A healthy network's foreground lies inside them,
  however large the lesion is against the seeds' core: where the expanded seeds are a small
  core of large lesions, healthy runs sit at 7-17 times the seeds' foreground, which the
  earlier ratio rule (more than ``FLOOD_RATIO``, 10, times the seeds' foreground) called a
  flood. That ratio still judges a log without ``fg_outside`` (written before it existed). A
  run without the mCRF and VM (seeds only) is not judged by the flood rule: its seed loss
  alone decides how far past the seeds it predicts, which is its Dice's business.

**An empty start.** With ``--seg_dice foreground`` (nnU-Net's Dice+CE, without the class
balance) a healthy network predicts almost nothing for a while and then grows, as nnU-Net's
trainer does: in the 12 runs of that loss with the guard set to warn (the dataset family's
development members 6 and 15, 42-46 epochs each), the first empty streak lasted 2-18 epochs and
every run learned afterwards (best validation Dice 0.47-0.94). Empty epochs up to
``--empty_start_epochs`` (:func:`empty_start_epochs`: by default half of the run with that loss,
else none) are therefore not a collapse; the other states are.

The engine logs its verdict per epoch as ``collapsed<k>`` (1 collapsed, 0 not); a log without
that column (written before it existed) is judged by the rule from its other columns.

**Below its seeds.** What the points say for certain: outside its box (label 0) is background,
and the lesion holds its foreground point, which lies in the seed core (label 1, C). The rest of
the box (label 2, U) is unknown, and so, for certain, is most of the core: stage 0 grows it from
the point by a geodesic distance threshold, and on small lesions it spills past them (on the
dataset family's development member 6, training cases with lesions of 34-165 voxels, the cores
hold 15-94 % lesion).
Two readings follow.

- *The core reading* (the one the seed loss trains with): every lesion L with C ⊆ L ⊆ C ∪ U is
  possible, and the seeds, used as the prediction, score Dice(C, L) against it.
  :func:`seed_ratio` is the largest Dice(P, L) / Dice(C, L) of a prediction P over those lesions
  (the reading most favourable to the network); under 1, the network is worse than its own seeds
  whatever the lesion, if the core is lesion. For a lesion size the best L takes P's voxels of U
  first, and the condition Dice(P, L) >= k Dice(C, L) is then convex (while L takes P's voxels)
  or linear (after) in the size, so the maximum is at one of three lesions: the core alone, the
  core plus P's voxels of U, or the whole boxes.
- *The certain reading*: the seeds put none of their foreground outside the boxes. A network
  that puts more than half of it there (``FLOOD_OUTSIDE_SHARE``), or predicts nothing inside the
  boxes, is wrong on most of what it predicts for certain.

An epoch is *below its seeds* (``below_seeds<k>`` = 1) when, on the training patches (counts
pooled over the epoch), the core-reading ratio ``seed_ratio`` is under ``SEED_MARGIN`` or the
certain reading fails; or when the certain reading fails on more than half of the validation
volumes (``val_seed_below<k>``, the share of them that fail it). The core reading judges the
training patches only, where a network fits the cores it is trained on: on member 6 the eight
runs with nnU-Net's Dice+CE (inference Dice 0.56-0.73 against the seeds' 0.567) end at a ratio
of 0.96-1.19 there, while on the validation volumes they predict the lesion, not the spilt core
(ratio 0.22-0.51 at validation Dice 0.36-0.64); ``val_seed_ratio`` is logged for reading.

``SEED_MARGIN`` is 0.5: the network's Dice under half of the seeds' own in the reading most
favourable to it. A network that predicts exactly the lesion inside a core of lesion share s
scores 2s / (1 + s) at L = C, so a margin near 1 flags good networks wherever the cores spill.
Replayed on the 50 committed development runs with these columns (members 6, 15 and 20 and
brats_small; ``experiments/replay_seed_rule.py``, docs/results/data/guard/replay.md), the
training-patch readings at each run's best and last epochs against its inference Dice: at a
margin of 0.9 they flag 30 of the 31 runs clearly below their seeds (under 0.9 of the seeds'
Dice), all 3 within 10 % under them, and 3 of the 16 at or above them (member 20: 0.666 against
the seeds' 0.456, at a ratio of 0.75 at its best epoch; two of member 6's runs with nnU-Net's
Dice+CE: 0.633 and 0.725 against 0.567). At any margin from 0 to 0.7 they flag the same 30 and
none of the others: on these runs the certain reading finds every failure the core reading
finds. The core reading stays, at 0.5, for what the certain one cannot see: a network that keeps
only a few voxels of the cores. Checkpoint selection by ``seed_dice`` never prefers such an
epoch to one that is not, and a run whose last epoch, or whose best checkpoint's epoch, is below
its seeds counts as failed (:func:`ends_below_seeds`). A network that shrinks inside the cores
of unseen volumes is not flagged, whether the cores are lesion or not: the points cannot tell.
Lesions the points do not mark are background to this rule.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["CollapseWatch", "FLOOD_RATIO", "FLOOD_MIN_SHARE", "FLOOD_OUTSIDE_SHARE", "SEED_MARGIN", "SEED_SHARES",
           "model_suffixes", "watch_for", "empty_start_epochs", "collapsed_rows", "seed_ratio", "certainly_below",
           "seed_columns", "judge_seeds", "seeds_summary", "ends_below_seeds", "final_epochs_below",
           "Streak", "log_column", "model_flags", "warned_streaks"]

#: A flood in a log without ``fg_outside``: the training predictions hold more than this many
#: times the reference's foreground... (10: on the development logs, over ``collapse_patience``
#: epochs, the lowest ratio that flags no run that 20 did not; docs/results/collapse.md §8)
FLOOD_RATIO = 10.0
#: ... and more than this share of the training patches' voxels.
FLOOD_MIN_SHARE = 0.01
#: A flood: more than this share of the training predictions' foreground lies outside the points' boxes;
#: and the certain reading of the seed rule (:func:`certainly_below`), on training patches and validation volumes.
FLOOD_OUTSIDE_SHARE = 0.5
#: Below its seeds: the network's Dice under this share of the seeds' own, whatever the lesion the
#: points allow (0.5: a network that predicts only the lesion part of a spilt core stays above it; module docstring).
SEED_MARGIN = 0.5
#: Stage 1's training-patch columns the seed rule reads (shares of the patches' voxels): the seeds'
#: core (label 1) and unknown (label 2), and the predicted foreground on the core, the unknown and
#: the certain background (label 0, outside the points' boxes).
SEED_SHARES = ("seed_fg", "seed_unknown", "fg_core", "fg_unknown", "fg_outside")


@dataclass(frozen=True)
class CollapseWatch:
    """The collapse rule (module docstring) for one model's columns of a log row.

    ``grad_columns``: the gradient-norm columns of its loss terms (the engine names the dominant one);
    ``ramp_column``: the regularisers' ramp-up weight (stage 1), when floods are watched for;
    ``regulariser_columns``: their gradient norms (a flood counts only when one is above 0);
    ``outside_column``: the training predictions' foreground outside the points' boxes (a flood
    is judged by it where logged, else by ``FLOOD_RATIO``);
    ``empty_start``: epochs (the row's 1-based ``epoch``) in which predicting nothing is the
    expected start, not a collapse (:func:`empty_start_epochs`).
    """

    model: str
    val_empty_column: str
    train_column: str
    reference_column: str
    grad_columns: tuple[str, ...] = ()
    ramp_column: str | None = None
    regulariser_columns: tuple[str, ...] = ()
    outside_column: str | None = None
    empty_start: int = 0

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
            return None if _number(row.get("epoch")) <= self.empty_start else "empty"
        if train > 0.9 and reference < 0.5:
            return "full"
        if self.ramp_column is not None and _number(row.get(self.ramp_column)) >= 0.99 \
                and any(_number(row.get(c)) > 0 for c in self.regulariser_columns) and train > FLOOD_MIN_SHARE:
            outside = self.outside_share(row)
            if outside > FLOOD_OUTSIDE_SHARE or (math.isnan(outside) and train > FLOOD_RATIO * reference):
                return "flooded"
        return None

    def outside_share(self, row: Mapping[str, Any]) -> float:
        """The share of the training predictions' foreground outside the points' boxes (NaN when
        not logged, or nothing is predicted)."""
        if self.outside_column is None:
            return math.nan
        train = _number(row.get(self.train_column))
        return _number(row.get(self.outside_column)) / train if train > 0 else math.nan


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def model_suffixes(columns: Sequence[str]) -> list[str]:
    """The model suffixes of a log: ``[""]`` for stage 1, ``["1", "2"]`` for SCM."""
    found = sorted({m.group(1) for c in columns if (m := re.fullmatch(r"val_empty(\d?)", c))})
    return found or [""]


def empty_start_epochs(seg_dice: str, max_epochs: int, given: int | None = None) -> int:
    """Stage 1's ``--empty_start_epochs`` (module docstring): ``given``, else half of
    ``max_epochs`` (rounded down) with ``--seg_dice foreground`` and 0 with the paper's Dice."""
    if given is not None:
        return given
    return max_epochs // 2 if seg_dice == "foreground" else 0


def watch_for(suffix: str, grad_columns: tuple[str, ...] = (), empty_start: int = 0) -> CollapseWatch:
    """The watch of stage 1's model (``suffix`` ``""``: against ``seed_fg``, floods watched for
    once ``ramp`` is full and the mCRF or VM has a gradient, judged by ``fg_outside``; empty
    epochs up to ``empty_start`` are not a collapse) or of SCM's model ``<suffix>`` (against
    ``teacher_fg<suffix>``)."""
    if suffix == "":
        return CollapseWatch("model", "val_empty", "fg_train", "seed_fg", grad_columns, "ramp", ("grad_crf", "grad_vm"),
                             "fg_outside", empty_start)
    return CollapseWatch(f"model{suffix}", f"val_empty{suffix}", f"fg_train{suffix}", f"teacher_fg{suffix}",
                         grad_columns)


def log_column(log: pd.DataFrame, name: str) -> np.ndarray:
    """A ``log.csv`` column as numbers, 0 where empty or not a number (all 0 when the log has
    no such column)."""
    if name not in log.columns:
        return np.zeros(len(log))
    return pd.to_numeric(log[name], errors="coerce").fillna(0).to_numpy(float)


def model_flags(log: pd.DataFrame, suffix: str, records: list[dict[str, Any]] | None = None) -> np.ndarray:
    """Per row of a ``log.csv``: whether the model of ``suffix`` counts as collapsed (the
    engine's ``collapsed<k>`` column where logged, else the rule on the rows, ``records``
    when they are at hand)."""
    watch = watch_for(suffix)
    if watch.log_column in log.columns:
        return log_column(log, watch.log_column) > 0
    records = log.to_dict("records") if records is None else records
    return np.array([watch.state(r) is not None for r in records], dtype=bool)


def collapsed_rows(log: pd.DataFrame) -> np.ndarray:
    """Per row of a ``log.csv``: whether some model counts as collapsed in that epoch."""
    flags = np.zeros(len(log), dtype=bool)
    for suffix in model_suffixes(log.columns):
        flags |= model_flags(log, suffix)
    return flags


def seed_ratio(core: float, unknown: float, fg_core: float, fg_unknown: float, fg_outside: float) -> float:
    """The largest Dice(P, L) / Dice(C, L) over the lesions L the points allow (module docstring).

    Args: voxel counts, or shares of the same voxels: ``core`` |C| (label 1), ``unknown`` |U|
    (label 2), and the prediction P's foreground on C, on U and outside the boxes (label 0).
    Returns NaN without a core (nothing to compare with), 0 for an empty prediction.
    """
    if not core > 0 or any(math.isnan(v) for v in (unknown, fg_core, fg_unknown, fg_outside)):
        return math.nan
    predicted = fg_core + fg_unknown + fg_outside
    best = 0.0
    for size in (0.0, fg_unknown, unknown):   # |L| - |C|: the core alone, plus P's voxels of U, the whole boxes
        taken = min(fg_unknown, size)
        network = 2 * (fg_core + taken) / (predicted + core + size)
        seeds = 2 * core / (2 * core + size)
        best = max(best, network / seeds)
    return best


def certainly_below(fg_core: float, fg_unknown: float, fg_outside: float) -> bool:
    """The certain reading of the seed rule (module docstring): a prediction with nothing inside
    the points' boxes, or with more than ``FLOOD_OUTSIDE_SHARE`` of its foreground outside them.

    Args: the prediction's foreground on the seed core, the unknown voxels and outside the boxes
    (voxel counts, or shares of the same voxels). NaN anywhere: ``False`` (not logged).
    """
    if any(math.isnan(v) for v in (fg_core, fg_unknown, fg_outside)):
        return False
    inside = fg_core + fg_unknown
    return not inside > 0 or fg_outside > FLOOD_OUTSIDE_SHARE * (inside + fg_outside)


def seed_columns(suffix: str) -> tuple[str, str]:
    """The engine's ``log.csv`` columns of model ``<suffix>``'s seed rule: the training patches'
    :func:`seed_ratio` and the verdict (1 below its seeds, 0 not)."""
    return f"seed_ratio{suffix}", f"below_seeds{suffix}"


def judge_seeds(row: Mapping[str, Any], suffix: str = "", margin: float = SEED_MARGIN) -> dict[str, float]:
    """Model ``<suffix>``'s seed rule on an epoch's row: its training patches' :func:`seed_ratio`
    (from :data:`SEED_SHARES`; NaN where not logged) and whether the epoch is below its seeds
    (there by either reading, the core reading's ratio under ``margin``, or by the certain one on
    more than half of the validation volumes: ``val_seed_below<suffix>``)."""
    shares = [_number(row.get(c + suffix)) for c in SEED_SHARES]
    ratio = seed_ratio(*shares)
    below = (ratio < margin or (shares[0] > 0 and certainly_below(*shares[2:]))
             or _number(row.get(f"val_seed_below{suffix}")) > 0.5)
    ratio_column, below_column = seed_columns(suffix)
    return {ratio_column: ratio, below_column: int(below)}


def seeds_summary(row: Mapping[str, Any], suffix: str = "") -> str:
    """What the seed rule saw in an epoch's row, for the warning: on the training patches and on
    the validation volumes, the share of the seed core predicted, where the foreground lies, and
    the ratio to the seeds."""
    def value(column: str) -> float:
        return _number(row.get(column + suffix))

    parts = []
    core, outside, train = value("seed_fg"), value("fg_outside"), value("fg_train")
    if core > 0 and not math.isnan(outside):
        parts.append(f"training patches: seed core predicted {value('fg_core') / core:.1%}, "
                     f"{outside / train if train > 0 else 0.0:.1%} of the predicted foreground outside the points' "
                     f"boxes, Dice ratio to the seeds at best {value('seed_ratio'):.3f} if the core is lesion")
    if not math.isnan(value("val_seed_below")):
        parts.append(f"validation: {value('val_seed_below'):.0%} of the volumes below their seeds, with nothing "
                     f"predicted in the boxes or most of the foreground outside them (seed core predicted "
                     f"{value('val_seed_recall'):.1%}, {value('val_seed_fpr'):.2%} of the certain background "
                     f"predicted, Dice ratio to the seeds if the core is lesion {value('val_seed_ratio'):.3f} "
                     "on average)")
    return "; ".join(parts) or "no seed columns"


def ends_below_seeds(log: pd.DataFrame) -> list[str]:
    """The models of a ``log.csv`` whose last epoch, or whose best checkpoint's epoch
    (``best_epoch<k>``), is below its seeds (``below_seeds<k>`` = 1), each as ``model<k> at
    epoch <n>``; empty for a log without the column (written before it existed)."""
    found = []
    for suffix in model_suffixes(log.columns):
        column = seed_columns(suffix)[1]
        if column not in log.columns or not len(log):
            continue
        found += [f"model{suffix} at epoch {e}" for e in final_epochs_below(log, log_column(log, column) > 0, suffix)]
    return found


def final_epochs_below(log: pd.DataFrame, below: np.ndarray, suffix: str = "") -> list[int]:
    """Of model ``<suffix>``'s last epoch and its best checkpoint's epoch (``best_epoch<suffix>``
    in the last row), those that ``below`` (a verdict per row of ``log``) flags, sorted."""
    epochs = pd.to_numeric(log["epoch"], errors="coerce").to_numpy(float)
    best = _number(log[f"best_epoch{suffix}"].iloc[-1]) if f"best_epoch{suffix}" in log.columns else math.nan
    return sorted(({int(epochs[-1])} if below[-1] else set())
                  | {int(e) for e, b in zip(epochs, below) if b and e == best})


# --------------------------------------------------------------------------------------------
# A log read back: the warnings the engine gave
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Streak:
    """Epochs ``first``-``last`` (1-based, inclusive) of ``model``; ``warned_at``: the epoch the
    collapse warning fired (``None`` for an unjudged flood)."""

    model: str
    first: int
    last: int
    warned_at: int | None = None

    def epochs(self) -> str:
        return f"{self.first}" if self.first == self.last else f"{self.first}-{self.last}"


def warned_streaks(log: pd.DataFrame, patience: int) -> list[Streak]:
    """The collapse streaks the training warned about, replaying the engine's count (the one
    reading of a log's warnings: ``progress.png`` shades them, the ablation runner counts a
    run as warned by them): per model, consecutive collapsed epochs, counted afresh after a
    recovery (``recovered`` = 1); the warning fires when the count reaches ``patience``. Each
    warned streak runs from its first epoch to its last (or its recovery); sorted by first epoch."""
    epochs = log["epoch"].to_numpy(int)
    recovered = log_column(log, "recovered") > 0
    streaks = []
    for suffix in model_suffixes(log.columns):
        model = watch_for(suffix).model
        start, count, warned_at = 0, 0, None
        for row, collapsed in enumerate(model_flags(log, suffix)):
            if collapsed:
                start = row if count == 0 else start
                count += 1
                warned_at = int(epochs[row]) if count == patience else warned_at
            if warned_at is not None and (not collapsed or recovered[row] or row == len(epochs) - 1):
                last = row if collapsed else row - 1
                streaks.append(Streak(model, int(epochs[start]), int(epochs[last]), warned_at))
                warned_at = None
            if not collapsed or recovered[row]:
                count = 0
    return sorted(streaks, key=lambda s: (s.first, s.model))
