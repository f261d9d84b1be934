"""Score the segmentations written by ``inference.py`` against the full labels.

Per case: Dice, Jaccard, precision, recall (overlap) and HD95, ASSD (mm, the label's voxel
spacing), with ``mean`` and ``std`` rows, to ``<model_dir>/<network>/results_<phase>.csv``; its
last column ``row`` is ``case`` or ``summary`` (a subject may be named ``mean``).
A case with an empty prediction or label is kept: its overlap metrics are computed, its surface
metrics are NaN, and the summary names it and says over how many cases each mean was taken.

``--prediction_dir DIR`` scores a flat folder of predictions instead, ``DIR/<subject><prediction_postfix>
.nii.gz`` (an nnU-Net v2 output folder: ``<case>.nii.gz``, postfix ``''``), and writes
``DIR/results_<phase>.csv`` with the same columns, so both methods go in one table.

``--report --path_images DIR`` also writes ``report_<phase>/report.html`` beside the CSV: the
table worst case first and three orthogonal slices per case (:mod:`utilities.report`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utilities.scoring import run_scores
from utilities.splits import PHASES

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_dir", default="./models/debug/", help="run folder given to inference.py")
    p.add_argument("--network", default="U_Net2D5", help="network name (sub-folder of --model_dir)")
    p.add_argument("--dataset_split", default="./splits/split_VS.csv", help="CSV of 'subject,phase' rows")
    p.add_argument("--image_postfix", default="T2", help="image postfix used by inference.py")
    p.add_argument("--phase", default="inference", choices=list(PHASES), help="which subjects to score")
    p.add_argument("--path_labels", default="./data/VS/label_crop/", help="folder of full labels")
    p.add_argument("--label_postfix", default="Label", help="label file postfix")
    p.add_argument("--prediction_dir", default=None,
                   help="score <prediction_dir>/<subject><prediction_postfix>.nii.gz instead of inference.py's "
                        "output (e.g. an nnU-Net v2 prediction folder); --model_dir/--network are then unused")
    p.add_argument("--prediction_postfix", default="",
                   help="with --prediction_dir: file name after the subject, before .nii.gz ('' for nnU-Net)")
    p.add_argument("--report", action="store_true",
                   help="also write report_<phase>/report.html beside the CSV: the table worst case first and three "
                        "slices through each lesion with the label and the prediction outlined (needs --path_images)")
    p.add_argument("--path_images", default=None,
                   help="with --report: folder of <subject>_<image_postfix> images, the images predicted")
    return p


def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    return run_scores(args.model_dir, args.network, args.dataset_split, args.image_postfix, args.phase,
                      args.path_labels, args.label_postfix, args.prediction_dir, args.prediction_postfix,
                      args.report, args.path_images)


if __name__ == "__main__":
    from utilities.cli import run_main

    sys.exit(run_main(main))
