"""``progress.png``: a training run's curves at a glance, drawn from its ``log.csv``.

Five panels over the epochs: the loss terms, the validation Dice (and seed Dice), the learning
rate and the ramp-up weight, the health columns (predicted foreground fractions of the training
patches and validation volumes against the seeds' or teachers'), and the gradient norms of each
loss term. Epochs of a collapse streak are shaded red in every panel: consecutive epochs in which
a model predicted no validation foreground (``val_empty`` = 1) or, on the training patches, less
than a tenth of its reference's foreground (``fg_train`` < ``seed_fg`` / 10; SCM: ``fg_train<k>``
against ``teacher_fg<k>``), while the reference has foreground — the engine's collapse rule;
and any epoch the engine logged as collapsed (``collapsed<k>`` = 1, which also counts a
prediction of foreground almost everywhere).

Stage 1's ``log.csv`` gives ``progress.png``, SCM's ``log_SCM.csv`` ``progress_SCM.png``, in the
same folder. Drawn with matplotlib's Agg backend (no display), written atomically.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator, NullLocator

from utilities.health import collapsed_rows
from utilities.io import atomic_path
from utilities.textdata import read_csv_table

__all__ = ["progress_path", "collapsed_epochs", "collapse_streaks", "plot_progress", "draw_progress"]

logger = logging.getLogger("paseg")

_LOSS = re.compile(r"^(loss(_\w+)?|self\d|kd\d|loss\d)$")
_VAL = re.compile(r"^val_(seed_)?dice\d?$")
_HEALTH = re.compile(r"^(fg_train\d?|val_fg_fraction\d?|seed_fg|teacher_fg\d)$")
_GRAD = re.compile(r"^grad_\w+$")


def progress_path(csv_path: str | os.PathLike) -> Path:
    """``log.csv`` -> ``progress.png``, ``log_SCM.csv`` -> ``progress_SCM.png`` (same folder)."""
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.stem.replace("log", "progress", 1) + ".png")


def collapsed_epochs(log: pd.DataFrame) -> list[int]:
    """The epochs (the ``epoch`` column) in which some model counts as collapsed
    (:func:`utilities.health.collapsed_rows`)."""
    return [int(e) for e in log["epoch"].to_numpy()[collapsed_rows(log)]]


def collapse_streaks(epochs: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive runs of ``epochs`` as ``(first, last)`` pairs."""
    streaks: list[tuple[int, int]] = []
    for e in sorted(epochs):
        if streaks and e == streaks[-1][1] + 1:
            streaks[-1] = (streaks[-1][0], e)
        else:
            streaks.append((e, e))
    return streaks


def _plot_columns(ax: Any, log: pd.DataFrame, columns: Sequence[str], x: np.ndarray, log_scale: bool = False) -> None:
    drawn = 0
    for c in columns:
        y = pd.to_numeric(log[c], errors="coerce").to_numpy(float)
        if not np.isfinite(y).any():
            continue
        ax.plot(x, y, marker="o", markersize=2.5, linewidth=1.2, label=c)
        drawn += 1
    if log_scale and drawn:
        values = pd.concat([pd.to_numeric(log[c], errors="coerce") for c in columns], ignore_index=True)
        if (values > 0).any():
            ax.set_yscale("log", nonpositive="mask")  # a zero (e.g. an empty prediction) leaves a gap
            ax.yaxis.set_minor_locator(NullLocator())  # minor log ticks cost half the drawing time
    if drawn:
        ax.legend(fontsize=7, loc="best", ncol=2 if drawn > 4 else 1)
    else:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")


def plot_progress(csv_path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Draw the progress figure of ``csv_path`` (a training ``log.csv``) to ``out`` (default
    :func:`progress_path`); returns the written path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    csv_path = Path(csv_path)
    out = Path(out) if out is not None else progress_path(csv_path)
    log = read_csv_table(csv_path, "training log")
    if "epoch" not in log.columns:
        raise ValueError(f"{csv_path} has no epoch column; is it a training log.csv?")
    x = log["epoch"].to_numpy(float)
    cols = list(log.columns)
    panels = [
        ("losses (epoch means)", [c for c in cols if _LOSS.match(c)], True),
        ("validation Dice", [c for c in cols if _VAL.match(c)], False),
        ("learning rate and ramp-up", [c for c in ("lr",) if c in cols], False),
        ("health: foreground fraction", [c for c in cols if _HEALTH.match(c)], True),
        ("gradient norm w.r.t. the logits", [c for c in cols if _GRAD.match(c)], True),
    ]
    fig = Figure(figsize=(9, 13), dpi=80)  # a fixed layout: constrained layout doubles the drawing time
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True)
    streaks = collapse_streaks(collapsed_epochs(log))
    for ax, (title, columns, log_scale) in zip(axes, panels):
        _plot_columns(ax, log, columns, x, log_scale)
        ax.set_title(title, fontsize=9, loc="left")
        ax.grid(True, alpha=0.3)
        for first, last in streaks:
            ax.axvspan(first - 0.5, last + 0.5, color="red", alpha=0.15, linewidth=0)
    if "ramp" in cols:
        twin = axes[2].twinx()
        twin.plot(x, pd.to_numeric(log["ramp"], errors="coerce"), color="tab:orange", linestyle="--", label="ramp")
        twin.set_ylim(-0.05, 1.05)
        twin.set_ylabel("ramp", fontsize=8)
        twin.legend(fontsize=7, loc="lower right")
    for ax in (axes[1],):
        if ax.get_lines():
            ax.set_ylim(-0.02, 1.02)
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    title = f"{csv_path.parent.name}/{csv_path.name}: {len(log)} epoch(s)"
    best = [c for c in cols if re.fullmatch(r"val_dice\d?", c)]
    for c in best:
        values = pd.to_numeric(log[c], errors="coerce")
        if values.notna().any():
            title += f", best {c} {values.max():.4f} at epoch {int(log['epoch'][values.idxmax()])}"
    if streaks:
        shown = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in streaks)
        title += f"\ncollapsed (shaded): epochs {shown}"
    fig.suptitle(title, fontsize=10, color="darkred" if streaks else "black")
    fig.subplots_adjust(left=0.09, right=0.92, bottom=0.04, top=0.93, hspace=0.25)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out


def draw_progress(csv_path: str | os.PathLike) -> Path | None:
    """:func:`plot_progress`, for the training loop: a failure is a warning, never an exception
    (the drawing must not stop a run). Returns the written path, or ``None``."""
    try:
        return plot_progress(csv_path)
    except Exception as e:  # anything from pandas or matplotlib: the run goes on without the picture
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        logger.warning("could not draw %s (%s: %s); training continues", progress_path(csv_path),
                       type(e).__name__, reason)
        return None
