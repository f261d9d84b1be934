"""Why stage 1 of PA-Seg can collapse to empty predictions: measurements with the project's own losses.

Writes ``docs/results/collapse.md`` (the numbers and what they support), its CSVs and four plots
``collapse_*.png`` in ``docs/results/data/collapse/``. Everything is computed with :mod:`utilities.method.losses` and
:mod:`utilities.method.schedules` on synthetic data, single-threaded, in about a minute:

1. mCRF energy of the true mask, a dilated, an eroded and an empty mask on the down-sampled grid
   against the lesion size there (σ_xy = 6, r = 5 in voxels of that grid), for lesion contrasts
   and noise levels in units of σ_rgb = 0.1 (z-normalised intensities);
2. on realistic cases (the VS-like demo data and the BraTS-like ``brats_small`` data of
   ``data/demo/make_demo_data.py``, 7 points simulated, stage-0 expanded seeds), the gradient
   of each loss term (partial DiceCE, mCRF, VM) w.r.t. the logits of a correct soft prediction,
   at ramp weights 0..1, and the total loss of the true, seeds-only and empty predictions;
3. the ramp-up counted in epochs, translated into SGD steps for the paper and small datasets;
4. logit saturation: each term's gradient against the logit margin, for the correct and for
   the collapsed (all-background) prediction.

An existing page, CSV or plot is replaced only with ``--overwrite`` (the page's sections on
training runs below its marker are kept then).

This file is the command line; the measurements are in ``experiments/collapse/measurements.py``,
the plots and the page in ``experiments/collapse/report.py``.

Example::

    OMP_NUM_THREADS=1 python experiments/collapse_analysis.py --output_dir docs/results
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch

from experiments.collapse.measurements import (
    TABLES,
    crf_settings,
    crf_vs_size,
    gradient_balance,
    margin_logits,
    mask_margin,
    rampup_table,
    realistic_cases,
    saturation,
    value_and_grad,
)
from experiments.collapse.report import PLOTS, plot_all, report
from utilities.core.arguments import ArgumentParser
from utilities.data.io import Content, check_overwrite, save_together

__all__ = ["crf_vs_size", "realistic_cases", "gradient_balance", "crf_settings", "rampup_table", "saturation", "main",
           "margin_logits", "mask_margin", "value_and_grad"]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output_dir", default="./docs/results/",
                   help="where collapse.md goes; its CSVs and PNGs go to <output_dir>/data/collapse/")
    p.add_argument("--cases", type=int, default=4, help="realistic cases per dataset")
    p.add_argument("--seed", type=int, default=0, help="data seed of the synthetic cases")
    p.add_argument("--overwrite", action="store_true",
                   help="replace collapse.md (its sections on training runs are kept), its CSVs and plots")
    return p


#: Where the CSVs and plots go, relative to ``--output_dir`` (the page links the plots there).
DATA_DIR = Path("data") / "collapse"

#: In ``collapse.md``, the line after which the sections on training runs (written from their
#: logs, not measured here) begin; a new measurement rewrites the page above it and keeps them.
KEPT_MARKER = "<!-- Sections below: training runs, from their logs; collapse_analysis.py keeps them. -->"


def with_kept_sections(text: str, page: Path) -> str:
    """``text`` followed by ``page``'s part from :data:`KEPT_MARKER` on (when it has one)."""
    if page.is_file():
        old = page.read_text(encoding="utf-8")
        at = old.find(KEPT_MARKER)
        if at >= 0:
            return text + old[at:]
    return text


def outputs(output_dir: Path) -> list[Path]:
    """Every file :func:`run` writes under ``output_dir``."""
    data = output_dir / DATA_DIR
    return [output_dir / "collapse.md", *(data / f"{name}.csv" for name in TABLES), *(data / name for name in PLOTS)]


def run(output_dir: Path, per_dataset: int, seed: int) -> dict[str, pd.DataFrame]:
    """All measurements; writes the CSVs and the plots under ``<output_dir>/data/collapse/``."""
    torch.set_num_threads(1)
    t0 = time.time()
    size = crf_vs_size(radii=(1.0, 2.0, 3.0, 4.0, 6.0, 8.0), contrasts=(0.5, 1.0, 2.0, 5.0, 10.0, 20.0),
                       noises=(0.0, 0.5, 1.0, 2.0), seed=seed)
    cases = realistic_cases(per_dataset, seed)
    balance, ramp_grads = gradient_balance(cases)
    settings = crf_settings(cases)
    ramp = rampup_table()
    sat = pd.concat([saturation(c).assign(dataset=c.dataset, case=c.name)
                     for c in (cases[0], cases[per_dataset])], ignore_index=True)
    results = dict(zip(TABLES, (size, balance, ramp_grads, settings, ramp, sat), strict=True))
    page = output_dir / "collapse.md"
    outputs: dict[Path, Content] = {output_dir / DATA_DIR / f"{name}.csv": df for name, df in results.items()}
    try:   # the tables, plots and page together: a failure midway leaves the previous set as it was
        outputs |= plot_all(size, balance, ramp_grads, sat, 1.0, output_dir / DATA_DIR)
        outputs[page] = with_kept_sections(report(results, time.time() - t0), page)
        save_together(outputs)
    finally:
        plt.close("all")
    print(f"measured in {time.time() - t0:.0f} s; wrote {output_dir / 'collapse.md'}")
    return results


def main(argv: list[str] | None = None) -> dict[str, pd.DataFrame]:
    args = build_parser().parse_args(argv)
    if args.cases < 1:
        raise ValueError(f"--cases must be at least 1, got {args.cases}")
    check_overwrite(outputs(Path(args.output_dir)), "--output_dir", args.overwrite, "file")
    return run(Path(args.output_dir), args.cases, args.seed)


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
