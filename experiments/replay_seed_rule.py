"""Would the seed rule have called these runs below their seeds? Replayed from their logs at several margins.

The rule (``utilities/method/health.py``) reads only what the points say; this script checks it
against what the masks say. For each training run of each ``--runs`` folder (a committed table
folder: ``per_case*.csv`` with the runs' per-case Dice, and a per-epoch log per run named
``<variant>_seed<k>_log.csv``), the training-patch readings of the rule (the core reading's ratio
under the margin, or the certain reading) are applied to the run's best and last epochs, as in
:func:`utilities.method.health.ends_below_seeds`, for each ``--margins`` value. Each run is
then compared with its expanded seeds' mean Dice over the same cases (the ``seeds`` variant of
the folder's ``SEEDS_CSV``): clearly below (under 0.9 of the seeds' Dice), within 10 % under it,
or at or above it. The validation reading is left out: it needs per-volume counts that older logs
do not have. Writes ``replay.csv`` (a row per run and margin) and ``replay.md`` (counts per margin).

Example (the development runs behind ``SEED_MARGIN``)::

    python experiments/replay_seed_rule.py --output_dir ./ablation/replay_seed_rule \\
        --runs docs/results/data/ingredients/f006=docs/results/data/two_by_two/f006/per_case_finished.csv \\
               docs/results/data/guard/f020=docs/results/data/guard/f020/per_case.csv
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from utilities.core.arguments import ArgumentParser

ROOT = Path(__file__).resolve().parents[1]

from utilities.core.textdata import md_cell  # noqa: E402
from utilities.data.io import save_together  # noqa: E402
from utilities.method import health  # noqa: E402

LOG_NAME = re.compile(r"^(?P<variant>.+)_seed(?P<seed>\d+)_log\.csv$")
CLEARLY_BELOW = 0.9


def _folder_and_seeds(text: str) -> tuple[Path, Path]:
    folder, sep, seeds = text.partition("=")
    if not sep or not folder or not seeds:
        raise argparse.ArgumentTypeError(f"expected FOLDER=SEEDS_CSV, got {text!r}")
    return Path(folder), Path(seeds)


def _per_case(folder: Path) -> pd.DataFrame:
    files = sorted(folder.glob("per_case*.csv"))
    if not files:
        raise FileNotFoundError(f"{folder}: no per_case*.csv (the runs' per-case Dice)")
    table = pd.concat([pd.read_csv(f) for f in files]).drop_duplicates(["variant", "seed", "subject"])
    return table.astype({"seed": str})


def ends_below(log: pd.DataFrame, margin: float) -> bool:
    """The training-patch readings of the seed rule (:func:`utilities.method.health.judge_seeds`
    without the validation reading) at ``margin``, at the log's best and last epochs
    (:func:`utilities.method.health.final_epochs_below`)."""
    if not len(log) or not set(health.SEED_SHARES) <= set(log.columns):
        return False
    below = np.array([bool(health.judge_seeds({c: row[c] for c in health.SEED_SHARES}, margin=margin)["below_seeds"])
                      for _, row in log.iterrows()])
    return bool(health.final_epochs_below(log, below))


def replay(runs: list[tuple[Path, Path]], margins: list[float]) -> pd.DataFrame:
    rows = []
    for folder, seeds_csv in runs:
        cases = _per_case(folder)
        seeds = pd.read_csv(seeds_csv)
        seeds = seeds[seeds["variant"] == "seeds"].drop_duplicates("subject").set_index("subject")["dice"]
        if seeds.empty:
            raise ValueError(f"{seeds_csv}: no rows of the 'seeds' variant (the expanded seeds' Dice)")
        for log_path in sorted([*folder.glob("*_log.csv"), *folder.glob("logs/*_log.csv")]):
            match = LOG_NAME.match(log_path.name)
            if not match:
                continue
            run = cases[(cases["variant"] == match["variant"]) & (cases["seed"] == match["seed"])]
            if run.empty:
                raise ValueError(f"{log_path}: no per-case rows for variant {match['variant']} seed {match['seed']}")
            missing = set(run["subject"]) - set(seeds.index)
            if missing:
                raise ValueError(f"{seeds_csv}: no seeds' Dice for {sorted(missing)[:3]} (cases of {log_path.name})")
            dice, seeds_dice = float(run["dice"].mean()), float(seeds[run["subject"]].mean())
            truth = ("clearly below" if dice < CLEARLY_BELOW * seeds_dice
                     else "within 10 % under" if dice < seeds_dice else "at or above")
            log = pd.read_csv(log_path)
            for margin in margins:
                rows.append({"folder": folder.as_posix(), "variant": match["variant"], "seed": int(match["seed"]),
                             "dice": dice, "seeds_dice": seeds_dice, "truth": truth, "margin": margin,
                             "flagged": ends_below(log, margin)})
    if not rows:
        raise ValueError("no <variant>_seed<k>_log.csv with per-case rows in the --runs folders")
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> str:
    truths = ["clearly below", "within 10 % under", "at or above"]
    runs = table[table["margin"] == table["margin"].iloc[0]]
    lines = ["| margin | " + " | ".join(f"{t} ({int((runs['truth'] == t).sum())} runs): flagged" for t in truths)
             + " | flagged at or above their seeds |", "|---" * 5 + "|"]
    for margin, group in table.groupby("margin"):
        counts = [int(group[group["truth"] == t]["flagged"].sum()) for t in truths]
        above = group[(group["truth"] == "at or above") & group["flagged"]]
        names = ", ".join(f"{Path(r.folder).name} {r.variant} seed {r.seed} ({r.dice:.3f} vs {r.seeds_dice:.3f})"
                          for r in above.itertuples()) or "none"
        lines.append(f"| {margin:g} | " + " | ".join(map(str, counts)) + f" | {md_cell(names)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=_folder_and_seeds, nargs="+", required=True, metavar="FOLDER=SEEDS_CSV",
                   help="a table folder (per_case*.csv and <variant>_seed<k>_log.csv) and the per-case CSV "
                        "holding its expanded seeds' Dice (variant 'seeds')")
    p.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.5, 0.7, 0.9],
                   help="core-reading margins to replay (0: the certain reading alone)")
    p.add_argument("--output_dir", required=True, help="where replay.csv and replay.md go")
    args = p.parse_args(argv)
    for folder, seeds_csv in args.runs:
        for path in (folder, seeds_csv):
            if not path.exists():
                raise FileNotFoundError(f"--runs: {path} does not exist")
    table = replay(args.runs, args.margins)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = summary(table)
    command = " ".join(["python experiments/replay_seed_rule.py", *(sys.argv[1:] if argv is None else argv)])
    page = ("# The seed rule's training-patch readings against the masks\n\n"
            "Runs per row: how many of the runs in each class (by their inference Dice against their "
            "expanded seeds') the readings flag at the margin.\n\n" + text + f"\n\n```text\n{command}\n```\n")
    save_together({out / "replay.csv": table, out / "replay.md": page})
    print(text)
    return table


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
