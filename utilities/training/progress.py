"""``progress.png``: a training run's curves at a glance, drawn from its ``log.csv``.

Five panels over the epochs: the loss terms, the validation Dice (and seed Dice), the learning
rate and the ramp-up weight, the health columns (predicted foreground fractions of the training
patches and validation volumes against the seeds' or teachers'), and the gradient norms of each
loss term. The loss, health and gradient panels are on a log scale with numbers on their y axes
(decades; 2 and 5, or 2, 3 and 5 between them when the curves span less; evenly spaced values
on a curve within a few per cent).

Shaded red in every panel: exactly the collapses the training's log warned about. The engine's
watch (:mod:`utilities.training.engine`) marks each epoch in which a model counts as collapsed
(``collapsed<k>`` = 1; a log without that column is judged by :mod:`utilities.method.health`'s rule
from its other columns), counts a model's consecutive collapsed epochs, starts counting afresh
after a recovery (``recovered`` = 1), and warns when the count reaches ``--collapse_patience``;
:func:`warned_streaks` replays that count. A shorter streak is not shaded (the log printed no
warning for it); a warned one is shaded from its first epoch to its last.

Shaded orange: a flood after a recovery that the rule does not judge (stage 1, ``--on_collapse
recover``): the recovery restarts the mCRF/VM ramp-up, and until it is back at full weight the
flood rule is off, so a flooded epoch (:mod:`utilities.method.health`: most of the predicted foreground
outside the points' boxes) then draws no warning; :func:`unjudged_floods` finds them with the
rule's own thresholds.

Stage 1's ``log.csv`` gives ``progress.png``, SCM's ``log_SCM.csv`` ``progress_SCM.png``, in the
same folder. Drawn with matplotlib's Agg backend (no display), written atomically.
"""
from __future__ import annotations

import logging
import math
import os
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import LogFormatterSciNotation, LogLocator, MaxNLocator, NullLocator

from utilities.core.textdata import read_csv_table
from utilities.data.io import atomic_path
from utilities.method.health import (
    Streak,
    collapsed_rows,
    log_column,
    model_flags,
    model_suffixes,
    warned_streaks,
    watch_for,
)

__all__ = ["DEFAULT_PATIENCE", "Streak", "progress_path", "collapsed_epochs", "collapse_streaks", "warned_streaks",
           "unjudged_floods", "recorded_patience", "progress_figure", "log_figure", "plot_progress",
           "draw_progress"]

logger = logging.getLogger("paseg")

#: ``--collapse_patience``'s default in both trainers: the patience of a log whose run recorded none.
DEFAULT_PATIENCE = 3

_LOSS = re.compile(r"^(loss(_\w+)?|self\d|kd\d|loss\d)$")
_VAL = re.compile(r"^val_(seed_)?dice\d?$")
_HEALTH = re.compile(r"^(fg_train\d?|val_fg_fraction\d?|seed_fg|teacher_fg\d)$")
_GRAD = re.compile(r"^grad_\w+$")
_WARNED_COLOUR, _FLOOD_COLOUR = "red", "darkorange"


def progress_path(csv_path: str | os.PathLike) -> Path:
    """``log.csv`` -> ``progress.png``, ``log_SCM.csv`` -> ``progress_SCM.png`` (same folder)."""
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.stem.replace("log", "progress", 1) + ".png")


def collapsed_epochs(log: pd.DataFrame) -> list[int]:
    """The epochs (the ``epoch`` column) in which some model counts as collapsed
    (:func:`utilities.method.health.collapsed_rows`), warned about or not."""
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


def unjudged_floods(log: pd.DataFrame) -> list[Streak]:
    """Stage 1: the epochs after a recovery that the flood rule would call a flood but for the
    restarted ramp-up (below full weight the rule is off), as consecutive streaks."""
    if "ramp" not in log.columns or "recovered" not in log.columns:
        return []
    watch = watch_for("")
    ramp = watch.ramp_column or "ramp"
    recovered = np.flatnonzero(log_column(log, "recovered") > 0)
    records = log.to_dict("records")
    flagged = model_flags(log, "", records)
    epochs = log["epoch"].to_numpy(int)
    flooded = [int(epochs[r]) for r, record in enumerate(records)
               if len(recovered) and r > recovered[0] and not flagged[r]
               and watch.state({**record, ramp: 1.0}) == "flooded"]
    return [Streak(watch.model, a, b) for a, b in collapse_streaks(flooded)]


def recorded_patience(csv_path: str | os.PathLike) -> int | None:
    """The ``--collapse_patience`` the run of ``csv_path`` logged: the last ``--collapse_patience``
    line of its newest text log (``<csv stem>_<time>.txt`` beside it); ``None`` when none says."""
    csv_path = Path(csv_path)
    name = re.compile(re.escape(csv_path.stem) + r"_\d{8}-\d{6}\.txt")
    logs = sorted(p for p in csv_path.parent.glob(f"{csv_path.stem}_*.txt") if name.fullmatch(p.name))
    for path in reversed(logs):
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        found = [m.group(1) for line in lines if (m := re.search(r"\s--collapse_patience (\d+)\s*$", line))]
        if found:
            return int(found[-1])
    return None


def _log_ticks(ax: Any, values: np.ndarray) -> None:
    """Numbers on a log axis whatever its span: decades only over more than 3 decades, 1-2-5
    over more than one, 1-2-3-5 below (where fewer than two of those fall in view, matplotlib's
    log locator places linear ticks). Matplotlib's default formatter labels decades only, so a
    curve within one decade got an axis without a number."""
    positive = values[np.isfinite(values) & (values > 0)]
    span = math.log10(positive.max() / positive.min()) if positive.size else 0.0
    subs = (1.0,) if span > 3 else (1.0, 2.0, 5.0) if span > 1 else (1.0, 2.0, 3.0, 5.0)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    ax.yaxis.set_major_formatter(LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(math.inf, math.inf)))
    ax.yaxis.set_minor_locator(NullLocator())  # minor log ticks cost half the drawing time
    ax.tick_params(axis="y", labelsize=7)


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
            _log_ticks(ax, values.to_numpy(float))
    if drawn:
        ax.legend(fontsize=7, loc="best", ncol=2 if drawn > 4 else 1)
    else:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")


def _shading_text(warned: Sequence[Streak], floods: Sequence[Streak], patience: int, patience_known: bool,
                  models: int) -> str:
    """The title lines naming the shaded epochs."""
    def who(s: Streak) -> str:
        return f"{s.model} " if models > 1 else ""

    lines = []
    if warned:
        shown = ", ".join(f"{who(s)}epochs {s.epochs()} (warned at {s.warned_at})" for s in warned)
        assumed = "" if patience_known else f", patience {patience} assumed: the run's log names none"
        lines.append(f"collapse warnings (shaded red{assumed}): {shown}")
    if floods:
        shown = ", ".join(f"epochs {s.epochs()}" for s in floods)
        lines.append(f"flood after a recovery, not judged while the ramp-up restarts (shaded orange): {shown}")
    return "\n".join(textwrap.fill(line, 120) for line in lines)


def _title(csv_path: Path, log: pd.DataFrame) -> str:
    title = f"{csv_path.parent.name}/{csv_path.name}: {len(log)} epoch(s)"
    for c in [c for c in log.columns if re.fullmatch(r"val_dice\d?", c)]:
        values = pd.to_numeric(log[c], errors="coerce")
        if values.notna().any():
            title += f", best {c} {values.max():.4f} at epoch {int(log['epoch'][values.idxmax()])}"
    return title


def progress_figure(log: pd.DataFrame, csv_path: Path, patience: int, patience_known: bool = True) -> Any:
    """The progress figure of a training log (a matplotlib ``Figure`` on the Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
    warned, floods = warned_streaks(log, patience), unjudged_floods(log)
    for ax, (title, columns, log_scale) in zip(axes, panels):
        _plot_columns(ax, log, columns, x, log_scale)
        # y given: matplotlib then skips placing the title by every tick label (same picture, less time)
        ax.set_title(title, fontsize=9, loc="left", y=1.0)
        ax.grid(True, alpha=0.3)
        for streaks, colour in ((warned, _WARNED_COLOUR), (floods, _FLOOD_COLOUR)):
            for s in streaks:
                ax.axvspan(s.first - 0.5, s.last + 0.5, color=colour, alpha=0.15, linewidth=0)
    if "ramp" in cols:
        twin = axes[2].twinx()
        twin.plot(x, pd.to_numeric(log["ramp"], errors="coerce"), color="tab:orange", linestyle="--", label="ramp")
        twin.set_ylim(-0.05, 1.05)
        twin.set_ylabel("ramp", fontsize=8)
        twin.legend(fontsize=7, loc="lower right")
    if axes[1].get_lines():
        axes[1].set_ylim(-0.02, 1.02)
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    shading = _shading_text(warned, floods, patience, patience_known, len(model_suffixes(log.columns)))
    fig.suptitle(_title(csv_path, log) + ("\n" + shading if shading else ""), fontsize=9,
                 color="darkred" if shading else "black")
    fig.subplots_adjust(left=0.09, right=0.92, bottom=0.04, top=0.93 - 0.01 * shading.count("\n"), hspace=0.25)
    return fig


def log_figure(csv_path: str | os.PathLike, patience: int | None = None) -> Any:
    """:func:`progress_figure` of the training log ``csv_path``, read and checked (a log without
    an ``epoch`` column is refused). ``patience``: the run's ``--collapse_patience`` (default:
    :func:`recorded_patience`, else :data:`DEFAULT_PATIENCE`)."""
    csv_path = Path(csv_path)
    log = read_csv_table(csv_path, "training log")
    if "epoch" not in log.columns:
        raise ValueError(f"{csv_path} has no epoch column; is it a training log.csv?")
    known = patience if patience is not None else recorded_patience(csv_path)
    return progress_figure(log, csv_path, known or DEFAULT_PATIENCE, known is not None)


def plot_progress(csv_path: str | os.PathLike, out: str | os.PathLike | None = None,
                  patience: int | None = None) -> Path:
    """Draw the progress figure of ``csv_path`` (a training ``log.csv``) to ``out`` (default
    :func:`progress_path`); returns the written path. ``patience``: the run's
    ``--collapse_patience`` (default: :func:`recorded_patience`, else :data:`DEFAULT_PATIENCE`)."""
    csv_path = Path(csv_path)
    out = Path(out) if out is not None else progress_path(csv_path)
    fig = log_figure(csv_path, patience)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out


def draw_progress(csv_path: str | os.PathLike, patience: int | None = None) -> Path | None:
    """:func:`plot_progress`, for the training loop: a failure is a warning, never an exception
    (the drawing must not stop a run). Returns the written path, or ``None``."""
    try:
        return plot_progress(csv_path, patience=patience)
    except Exception as e:  # anything from pandas or matplotlib: the run goes on without the picture
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        logger.warning("could not draw %s (%s: %s); training continues", progress_path(csv_path),
                       type(e).__name__, reason)
        return None
