"""What the runs give: each run's health (from its training log), its optimisation steps (as it
recorded them), the per-variant statistics with the paired Wilcoxon test against the baseline,
and the outputs ``table.md``, ``table.csv``, ``per_case.csv``, ``health.csv`` and ``boxplot.png``."""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from utilities.core.textdata import md_cell, read_csv_table
from utilities.data.io import Content, save_together
from utilities.data.layout import RunLayout

from .commands import Run
from .config import Config, Variant
from .markers import ARGS_NAME, read_json
from .scripts import NNUNET_NETWORK, planned_args

__all__ = ["recorded_args", "budget_text", "run_budget", "wilcoxon_p", "run_health", "health_table", "summarize",
           "table_markdown", "write_outputs"]


def recorded_args(run: Run) -> dict[str, Any] | None:
    """The arguments ``run``'s training recorded in its resumable state (``CP_latest.pth``,
    SCM ``CP_latest_SCM.pth``): what it ran with, its plan's flags included; for a run restored
    from a record (no checkpoint), the copy the record kept (``ablate_args.json``); ``None`` when
    it kept none."""
    from utilities.models.model_package import run_args

    args = run_args(run.folder, run.network, "final_model1" if run.variant.kind == "scm" else "final")
    return args if args is not None else read_json(run.folder / ARGS_NAME)


def budget_text(epochs: int, batch_size: int, training_cases: int) -> str:
    """``"<steps> (<epochs> × <per epoch>), batch <b>"``: one step per ``batch_size`` training
    cases (the last batch of an epoch may be smaller)."""
    return _steps_text(epochs, math.ceil(training_cases / batch_size), batch_size)


def _steps_text(epochs: int, per_epoch: int, batch_size: int) -> str:
    return f"{epochs * per_epoch} ({epochs} × {per_epoch}), batch {batch_size}"


@dataclass(frozen=True)
class _Recorded:
    """A run's training as the run recorded it: epochs, steps per epoch, batch, patch (``None``:
    not recorded) and, for nnU-Net, its training seconds (``budget.json``)."""

    epochs: int
    per_epoch: int
    batch: int
    patch: tuple[int, ...] | None
    seconds: float | None = None


def _recorded(run: Run, training_cases: int) -> _Recorded | None:
    """:class:`_Recorded` of a trained run (nnU-Net: its ``budget.json``; PA-Seg: the arguments in
    its resumable state, one step per ``batch_size`` training cases), ``None`` when it recorded nothing."""
    if run.variant.kind == "nnunet":
        b = read_json(RunLayout(run.folder, NNUNET_NETWORK).folder / "budget.json")
        if b is None:
            return None
        return _Recorded(b["epochs"], b["iterations_per_epoch"], b["batch_size"], tuple(b["patch_size"]),
                         float(b["training_seconds"]))
    args = recorded_args(run)
    if args is None or not all(isinstance(args.get(k), int) for k in ("max_epochs", "batch_size")):
        return None
    shape = args.get("spatial_shape")
    patch = tuple(shape) if isinstance(shape, (list, tuple)) and all(isinstance(s, int) for s in shape) else None
    return _Recorded(args["max_epochs"], math.ceil(training_cases / args["batch_size"]), args["batch_size"], patch)


def run_budget(run: Run, training_cases: int) -> str:
    """The optimisation steps of a run's training as the run recorded them (:func:`budget_text`
    of its recorded ``max_epochs`` and ``batch_size``; nnU-Net: its ``budget.json``), never
    from the config: a ``--plan`` or a changed default is what the run did. ``"—"`` for the
    expanded seeds, ``"?"`` when the run recorded nothing."""
    return _budget(run, None if run.variant.kind == "seeds" else _recorded(run, training_cases))


def _budget(run: Run, recorded: _Recorded | None) -> str:
    if run.variant.kind == "seeds":
        return "—"
    return "?" if recorded is None else _steps_text(recorded.epochs, recorded.per_epoch, recorded.batch)


def _cost(run: Run, recorded: _Recorded | None) -> tuple[float, float]:
    """``(voxels seen, training seconds)`` of a run's training as the run recorded them: the
    steps of :func:`run_budget` × batch × patch voxels (nnU-Net: its ``budget.json``, its own
    planned batch and patch), and the seconds its epochs took (the ``time_s`` column of its
    ``log.csv``/``log_SCM.csv``; nnU-Net: ``training_seconds``). ``(0, 0)`` for the expanded
    seeds, NaN where nothing was recorded. Budgets of different engines compare by voxels seen,
    not by steps (a batch of 2 larger patches sees more per step)."""
    nan = float("nan")
    if run.variant.kind == "seeds":
        return 0.0, 0.0
    voxels = nan
    if recorded is not None and recorded.patch is not None:
        voxels = float(recorded.epochs * recorded.per_epoch * recorded.batch * math.prod(recorded.patch))
    if run.variant.kind == "nnunet":
        return voxels, nan if recorded is None or recorded.seconds is None else recorded.seconds
    log = RunLayout(run.folder, run.network).log_csv(scm=run.variant.kind == "scm")
    try:
        seconds = float(pd.read_csv(log)["time_s"].sum())
    except (OSError, KeyError, pd.errors.ParserError, pd.errors.EmptyDataError):
        seconds = nan
    return voxels, seconds


def wilcoxon_p(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided paired Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon(x, y)``); NaN when it
    is undefined (fewer than one non-zero difference)."""
    from scipy.stats import wilcoxon

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"paired samples differ in length: {len(x)} and {len(y)}")
    if not np.any(x - y != 0):
        return float("nan")
    return float(wilcoxon(x, y).pvalue)


def _patience(run: Run) -> int:
    """The ``--collapse_patience`` ``run`` trained with: recorded with it (else what its command
    gives, its plan included)."""
    recorded = recorded_args(run) or {}
    patience = recorded.get("collapse_patience")
    return patience if isinstance(patience, int) else int(planned_args(run.train).collapse_patience)


def run_health(log_csv: Path, patience: int = 3) -> dict[str, Any]:
    """What a training run's ``log.csv`` says about its health.

    Returns ``collapsed_epochs`` (epochs in which any model was collapsed:
    :func:`utilities.method.health.collapsed_rows`, the engine's ``collapsed*`` columns or, for logs
    without them, the rule on their other columns),
    ``longest_streak`` (consecutive epochs in which some model was collapsed), ``warned`` (the
    collapse warning fired: :func:`utilities.method.health.warned_streaks` replays the engine's
    count, per model, afresh after each recovery),
    ``best_epoch`` (1-based; NaN when not logged), ``ramp_end`` (the first epoch whose mean
    ramp weight reached 0.999; NaN if it never did, or when the run has no mCRF/VM term:
    ``grad_crf`` and ``grad_vm`` all zero), ``best_before_ramp`` (the best checkpoint comes
    from before the ramp-up ended: it never met the full loss), ``recoveries`` (``--on_collapse
    recover``), ``recovered`` (the warning fired, and the run came back: its best checkpoint
    comes after the last recovery and its last epoch is not collapsed) and ``below_seeds`` (its
    last epoch, or its best checkpoint's, is below its own seeds:
    :func:`utilities.method.health.ends_below_seeds`)."""
    from utilities.method.health import collapsed_rows, ends_below_seeds, warned_streaks

    log = read_csv_table(log_csv, "training log")
    flags = collapsed_rows(log)
    streak = longest = 0
    for f in flags:
        streak = streak + 1 if f else 0
        longest = max(longest, streak)
    best_epoch = float(log["best_epoch"].iloc[-1]) if "best_epoch" in log.columns and len(log) else math.nan
    regularised = any(c in log.columns and (log[c].fillna(0) != 0).any() for c in ("grad_crf", "grad_vm"))
    ramp_end = math.nan
    if regularised and "ramp" in log.columns:
        reached = log.index[log["ramp"] >= 0.999]
        ramp_end = float(log.loc[reached[0], "epoch"]) if len(reached) else math.inf
    before = bool(regularised and not math.isnan(best_epoch) and best_epoch < ramp_end)
    recovered_at = log.loc[log["recovered"].fillna(0) > 0, "epoch"] if "recovered" in log.columns else pd.Series([])
    warned = bool(warned_streaks(log, patience))
    came_back = bool(warned and len(recovered_at) and best_epoch > float(recovered_at.max()) and not flags[-1:].any())
    return {"collapsed_epochs": int(flags.sum()), "longest_streak": longest, "warned": warned,
            "best_epoch": best_epoch, "ramp_end": ramp_end, "best_before_ramp": before,
            "recoveries": int(len(recovered_at)), "recovered": came_back, "below_seeds": bool(ends_below_seeds(log))}


def health_table(runs: Sequence[Run], per_case: pd.DataFrame) -> pd.DataFrame:
    """Per (variant, seed): :func:`run_health` of its training log plus ``empty`` (every
    inference prediction empty) and ``failed`` = empty, warned (and not recovered), best before
    the ramp-up ended or below its seeds."""
    rows = []
    for run in runs:
        seed = "-" if run.seed is None else run.seed
        preds = per_case[(per_case["variant"] == run.variant.name) & (per_case["seed"] == seed)]["pred_voxels"]
        empty = bool(len(preds) and preds.max() == 0)
        log_csv = RunLayout(run.folder, run.network).log_csv(scm=run.variant.kind == "scm")
        health: dict[str, Any] = {"collapsed_epochs": 0, "longest_streak": 0, "warned": False,
                                  "best_epoch": math.nan, "ramp_end": math.nan, "best_before_ramp": False,
                                  "recoveries": 0, "recovered": False, "below_seeds": False}
        if run.variant.kind != "seeds" and log_csv.is_file():
            health = run_health(log_csv, _patience(run))
        rows.append({"variant": run.variant.name, "seed": seed, **health, "empty": empty,
                     "failed": bool(empty or (health["warned"] and not health["recovered"])
                                    or health["best_before_ramp"] or health["below_seeds"])})
    return pd.DataFrame(rows)


def summarize(cfg: Config, runs: Sequence[Run], names: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-variant table and the long per-case table (variant, seed, subject, dice, assd, pred_voxels).

    Per variant: mean ± sample std (ddof 1) over training seeds of the per-seed mean Dice and ASSD
    over the inference cases (ASSD over the cases where it is defined), the number of failed
    seeds (every inference prediction empty, or the collapse warning fired, or the best
    checkpoint comes from before the ramp-up ended: :func:`health_table`, also returned as
    ``table.attrs["health"]``), the epochs each seed spent collapsed, and the paired Wilcoxon
    signed-rank p-value against the baseline, computed per case on the Dice averaged over the
    seeds of each variant (pairs = the inference cases)."""
    from utilities.evaluation.scoring import read_scores

    rows = []
    for run in runs:
        for r in read_scores(run.results)[0].itertuples():   # every case, whatever its name
            rows.append({"variant": run.variant.name, "seed": "-" if run.seed is None else run.seed,
                         "subject": r.subject, "dice": float(r.dice), "assd": float(r.assd),
                         "pred_voxels": int(r.pred_voxels)})
    per_case = pd.DataFrame(rows)
    health = health_table(runs, per_case)
    from utilities.data.splits import read_split, subjects_of

    training_cases = len(subjects_of(read_split(cfg.dataset["split_file"]), "training"))
    budgets: dict[str, list[str]] = {}
    costs: dict[str, list[tuple[float, float]]] = {}
    for r in runs:   # each seed's own record (read once for both); seeds that differ are all shown
        recorded = None if r.variant.kind == "seeds" else _recorded(r, training_cases)
        budgets.setdefault(r.variant.name, [])
        budget = _budget(r, recorded)
        if budget not in budgets[r.variant.name]:
            budgets[r.variant.name].append(budget)
        costs.setdefault(r.variant.name, []).append(_cost(r, recorded))
    case_mean = per_case.groupby(["variant", "subject"])["dice"].mean()
    base = case_mean.loc[cfg.baseline]
    table = []
    for name in names:
        v: Variant = cfg.variants[name]
        sub = per_case[per_case["variant"] == name]
        by_seed = sub.groupby("seed", sort=False)
        dice = by_seed["dice"].mean()
        assd = by_seed["assd"].mean()          # NaN cases skipped
        mine_health = health[health["variant"] == name]
        collapsed = int(mine_health["failed"].sum())
        recovered = int((mine_health["recovered"] & ~mine_health["failed"]).sum())
        streaks = "/".join(str(int(n)) for n in mine_health["collapsed_epochs"])
        mine = case_mean.loc[name].reindex(base.index)
        p = float("nan") if name == cfg.baseline else wilcoxon_p(mine.to_numpy(), base.to_numpy())
        table.append({"variant": name, "label": v.label, "kind": v.kind, "seeds": len(dice),
                      "cases": int(sub["subject"].nunique()), "dice_mean": float(dice.mean()),
                      "dice_std": float(dice.std(ddof=1)) if len(dice) > 1 else float("nan"),
                      "assd_mean": float(assd.mean()),
                      "assd_std": float(assd.std(ddof=1)) if assd.notna().sum() > 1 else float("nan"),
                      "collapsed": collapsed, "recovered": recovered, "collapsed_epochs": streaks, "wilcoxon_p": p,
                      "budget": " / ".join(budgets.get(name, ["—"])),
                      "voxels": _mean(c[0] for c in costs.get(name, [])),
                      "train_s": _mean(c[1] for c in costs.get(name, []))})
    out = pd.DataFrame(table)
    out.attrs["health"] = health
    return out, per_case


def _mean(values: Iterable[float]) -> float:
    """The mean of ``values``; NaN when there are none or one is NaN (a run that recorded nothing)."""
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def _pm(mean: float, std: float, digits: int) -> str:
    if np.isnan(mean):
        return "—"
    return f"{mean:.{digits}f}" + ("" if np.isnan(std) else f" ± {std:.{digits}f}")


def _voxels(value: float) -> str:
    """``"24.9 M"``; ``"—"`` for none (the expanded seeds) or not recorded."""
    return "—" if not value > 0 else f"{value / 1e6:.3g} M"


def _seconds(value: float) -> str:
    return "—" if not value > 0 else f"{value:.0f}"


def table_markdown(cfg: Config, table: pd.DataFrame, note: str = "") -> str:
    lines = [f"# {md_cell(cfg.title)}", "", *([note, ""] if note else []),
             f"Inference cases of `{cfg.dataset['split_file'].name}`; mean ± std (ddof 1) over training seeds of the "
             "per-seed mean over the cases; *failed*: seeds whose every inference prediction is empty, whose "
             "collapse warning fired (unless `--on_collapse recover` brought the run back: best checkpoint after "
             "the last recovery, last epoch healthy; counted as *recovered*), whose best checkpoint comes from "
             "before the ramp-up ended, or whose last epoch or best checkpoint is below its own seeds (worse than "
             "the expanded seeds as the prediction whatever the lesion in the points' boxes) (health.csv); "
             "*collapsed epochs*: per seed, the epochs in which the predictions were collapsed; "
             f"*p*: two-sided paired Wilcoxon signed-rank test against `{cfg.baseline}` on the per-case Dice "
             "averaged over each variant's seeds (pairs = cases; scipy.stats.wilcoxon); *steps*: optimisation "
             "steps of the training (epochs × steps per epoch) and its batch size, as the run recorded them "
             "(`?`: not recorded); *voxels seen*: steps × batch × patch voxels, and *training s*: the wall "
             "seconds of its epochs, each the mean over seeds.", "",
             "| Variant | Seeds | Dice | ASSD (mm) | Failed | Collapsed epochs | p vs baseline | Steps | Voxels seen | "
             "Training s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        p = "baseline" if r.variant == cfg.baseline else ("—" if np.isnan(r.wilcoxon_p) else f"{r.wilcoxon_p:.3g}")
        lines.append(f"| {md_cell(r.label)} (`{md_cell(r.variant)}`) | {r.seeds} | {_pm(r.dice_mean, r.dice_std, 3)} | "
                     f"{_pm(r.assd_mean, r.assd_std, 2)} | {r.collapsed}/{r.seeds}"
                     f"{f' ({r.recovered} recovered)' if getattr(r, 'recovered', 0) else ''} | "
                     f"{r.collapsed_epochs or '—'} | {p} | {r.budget} | {_voxels(getattr(r, 'voxels', np.nan))} | "
                     f"{_seconds(getattr(r, 'train_s', np.nan))} |")
    return "\n".join(lines) + "\n"


def write_outputs(cfg: Config, table: pd.DataFrame, per_case: pd.DataFrame, output_dir: Path, suffix: str = "",
                  note: str = "") -> None:
    """``table{suffix}.md`` (with ``note`` under its title), ``table{suffix}.csv``,
    ``per_case{suffix}.csv``, ``health{suffix}.csv`` and ``boxplot{suffix}.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markdown = table_markdown(cfg, table, note)
    names = table["variant"].tolist()
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(names), 4.2))
    case_mean = per_case.groupby(["variant", "subject"])["dice"].mean()
    ax.boxplot([case_mean.loc[n].to_numpy() for n in names], showmeans=True)
    for i, n in enumerate(names, 1):
        seed_means = per_case[per_case["variant"] == n].groupby("seed")["dice"].mean()
        ax.plot(np.full(len(seed_means), i) + np.linspace(-0.12, 0.12, len(seed_means)), seed_means, "o",
                color="C3", ms=4, label="per-seed mean" if i == 1 else None)
    ax.set_xticks(range(1, len(names) + 1))
    ax.set_xticklabels(table["label"].tolist(), rotation=20, ha="right", fontsize=8)
    ax.set(ylabel="Dice (per case, averaged over seeds)", title=cfg.title, ylim=(0, 1))
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    outputs: dict[Path, Content] = {output_dir / f"table{suffix}.csv": table,
                                    output_dir / f"per_case{suffix}.csv": per_case}
    if "health" in table.attrs:
        outputs[output_dir / f"health{suffix}.csv"] = table.attrs["health"]
    outputs[output_dir / f"boxplot{suffix}.png"] = lambda tmp: fig.savefig(tmp, format="png", dpi=90)
    outputs[output_dir / f"table{suffix}.md"] = markdown
    try:   # all of them or none: a failure midway leaves no new CSV beside an old table
        save_together(outputs)
    finally:
        plt.close(fig)
    health = f", health{suffix}.csv" if "health" in table.attrs else ""
    print("\n" + markdown + f"\nwritten {output_dir / f'table{suffix}.md'}, table{suffix}.csv, "
          f"per_case{suffix}.csv{health}, boxplot{suffix}.png")
