"""Stage 0's intensity normalisations on dataset-family members at raw scanner intensities.

For each family seed, the member is written with ``--raw_intensities`` (int16, a per-case gain
and offset; reused when already there), then stage 0 (``utilities.workflow.stage0``, weight 0.5,
threshold 0.2) runs once per style and candidate normalisation. Per case: precision, recall and
Dice of the expanded foreground against the full label, and the fraction of neighbour steps in
GeodisTK's Euclidean regime (the warning's test). Writes to ``--output_dir``: ``per_case.csv``,
``table.csv`` (per member and style and candidate, then the mean over members) and
``table.md``.

Example (docs/results/stage0_intensity.md)::

    python experiments/stage0_intensity.py --family_seeds 0 1 2 3 4 5 6 7 \\
        --work_dir ./stage0_intensity --output_dir docs/results/data/stage0_intensity/development
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from utilities.core.arguments import ArgumentParser

ROOT = Path(__file__).resolve().parents[1]

from data.family.make_family_data import (  # noqa: E402
    ANNOTATION_POSTFIX,
    FOLDERS,
    IMAGE_POSTFIX,
    LABEL_POSTFIX,
    draw_member,
    generate_member,
)
from utilities.data.io import ensure_writable_dir, save_together  # noqa: E402
from utilities.data.splits import PHASES  # noqa: E402
from utilities.evaluation.scoring import read_scores  # noqa: E402
from utilities.method.intensity import NORMALISATIONS  # noqa: E402
from utilities.workflow.cli import nonnegative_int, positive_int  # noqa: E402
from utilities.workflow.stage0 import SETTINGS_NAME, STYLES, generate_geodesic_labels  # noqa: E402

__all__ = ["member_data", "measure_member", "summarize", "main"]

WEIGHT, THRESHOLD = 0.5, 0.2
METRICS = ("dice", "precision", "recall")


def member_data(seed: int, work_dir: Path) -> Path:
    """The member's raw-intensity data folder, written unless a finished one is there."""
    data = work_dir / f"f{seed:03d}" / "data"
    if not (data / "intensities.csv").is_file():
        generate_member(draw_member(seed), data, raw=True)
    return data


def measure_member(seed: int, data: Path, work_dir: Path, styles: Sequence[str], candidates: Sequence[str],
                   workers: int) -> pd.DataFrame:
    """One row per case, style and candidate: the seed metrics and the Euclidean step fraction."""
    rows = []
    for style in styles:
        for name in candidates:
            out = generate_geodesic_labels(
                data / "split.csv", data / FOLDERS[0], IMAGE_POSTFIX, data / FOLDERS[1], LABEL_POSTFIX,
                data / FOLDERS[2], ANNOTATION_POSTFIX, work_dir / f"f{seed:03d}" / f"geodesic_{style}_{name}",
                WEIGHT, THRESHOLD, zero_at_min=STYLES[style], num_workers=workers, intensity=name)
            fractions = json.loads((out / SETTINGS_NAME).read_text())["euclidean_step_fraction"]
            for phase in PHASES:
                path = out / f"results_{phase}.csv"
                if path.is_file():
                    cases, _ = read_scores(path)
                    for case in cases.to_dict("records"):
                        rows.append({"member": seed, "subject": case["subject"], "style": style, "intensity": name,
                                     **{m: float(case[m]) for m in METRICS},
                                     "euclidean_fraction": float(fractions[case["subject"]])})
    return pd.DataFrame(rows)


def summarize(per_case: pd.DataFrame) -> pd.DataFrame:
    """Per member, style and candidate the mean over cases (and the cases whose geodesic term
    is negligible), then per style and candidate the mean over members (member ``mean``)."""
    per_case = per_case.assign(negligible=per_case["euclidean_fraction"] >= 0.5)
    keys = ["style", "intensity", "member"]
    table = per_case.groupby(keys, sort=False).agg(
        cases=("subject", "size"), **{m: (m, "mean") for m in METRICS},
        negligible=("negligible", "sum")).reset_index()
    means = table.groupby(["style", "intensity"], sort=False).agg(
        cases=("cases", "sum"), **{m: (m, "mean") for m in METRICS}, negligible=("negligible", "sum")).reset_index()
    means.insert(2, "member", "mean")
    return pd.concat([table, means], ignore_index=True)


def _markdown(table: pd.DataFrame) -> str:
    """Per style, one table: a row per member, Dice / precision / recall per candidate."""
    lines = []
    candidates = list(dict.fromkeys(table["intensity"]))
    for style in dict.fromkeys(table["style"]):
        part = table[table["style"] == style]
        lines += [f"Style `{style}`: Dice / precision / recall of the expanded seeds (cases whose geodesic term "
                  "the warning calls negligible)", "",
                  "| member | cases | " + " | ".join(f"`{c}`" for c in candidates) + " |",
                  "|---|---|" + "---|" * len(candidates)]
        for member in dict.fromkeys(part["member"]):
            rows = part[part["member"] == member].set_index("intensity")
            cells = [f"{r.dice:.3f} / {r.precision:.3f} / {r.recall:.3f} ({int(r.negligible)})"
                     for r in (rows.loc[c] for c in candidates)]
            label = f"**{member}**" if member == "mean" else str(member)
            lines.append(f"| {label} | {int(rows.iloc[0]['cases'])} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family_seeds", type=nonnegative_int, nargs="+", required=True, help="the members to measure")
    p.add_argument("--candidates", nargs="+", choices=list(NORMALISATIONS), default=list(NORMALISATIONS),
                   help="the normalisations to compare (utilities/method/intensity.py)")
    p.add_argument("--styles", nargs="+", choices=list(STYLES), default=["brats", "vs"], help="stage-0 styles")
    p.add_argument("--work_dir", required=True, help="where the members' data and stage-0 outputs go")
    p.add_argument("--output_dir", required=True, help="where per_case.csv, table.csv and table.md go")
    p.add_argument("--num_workers", type=positive_int, default=1, help="stage 0's processes")
    return p


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Measure every member, write the tables; returns the summary table."""
    args = build_parser().parse_args(argv)
    work_dir, output_dir = Path(args.work_dir), ensure_writable_dir(Path(args.output_dir))
    per_case = pd.concat([measure_member(seed, member_data(seed, work_dir), work_dir, args.styles, args.candidates,
                                         args.num_workers) for seed in args.family_seeds], ignore_index=True)
    table = summarize(per_case)
    save_together({output_dir / "per_case.csv": per_case.round(6), output_dir / "table.csv": table.round(6),
                   output_dir / "table.md": _markdown(table)})
    return table


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
