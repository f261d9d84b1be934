"""Score segmentations against full labels: a folder against a folder, or a split's subjects.

Per case: Dice, Jaccard, precision, recall (overlap) and HD95, ASSD (mm, the label's voxel
spacing), with ``mean`` and ``std`` rows; the CSV's last column ``row`` is ``case`` or
``summary`` (a subject may be named ``mean``). A case with an empty prediction or label is kept:
its overlap metrics are computed, its surface metrics are NaN, and the summary names it and says
over how many cases each mean was taken. Every image format the project reads is read; each
prediction must lie on its label's grid.

What to score (one of three):

``--path_predictions DIR --path_labels DIR``: every prediction of a folder against the label of
the same subject, no split (as nnU-Net v2's ``nnUNetv2_evaluate_folder``): labels named
``<subject>_<label_postfix>`` or ``<subject>``, predictions ``<subject>`` or ``<subject>`` plus a
postfix (``brain1_T2``, as ``inference.py --input_folder`` names them; ``--prediction_postfix``
fixes it). A label without a prediction, or a prediction without a label, is an error naming
them; ``--allow_missing`` scores the pairs found and lists the others. Writes
``DIR/results_all.csv``.

``--model_dir DIR --dataset_split CSV``: ``inference.py``'s predictions of the split's ``--phase``
subjects, to ``<model_dir>/<network>/results_<phase>.csv``.

``--prediction_dir DIR --dataset_split CSV``: a flat folder of ``<subject><prediction_postfix>``
predictions of the split's subjects (without ``--prediction_postfix``: ``<subject>``, as an nnU-Net
v2 output folder names them, or ``<subject>_<image_postfix>``, as ``inference.py --output_folder``
does; a subject with both is an error), to ``DIR/results_<phase>.csv`` with the same columns, so
both methods go in one table.

``--report --path_images DIR`` also writes ``report_<phase>/report.html`` (``report_all/``) beside
the CSV: the table worst case first and three orthogonal slices per case
(:mod:`utilities.evaluation.report`); the image of a subject is ``<subject>_<image_postfix>``, the
prediction's own name or ``<subject>``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from utilities.core.arguments import ArgumentParser, Inert, warn_inert_flags
from utilities.data.dataset_file import add_dataset_flag, parse_with_dataset
from utilities.data.splits import PHASES
from utilities.evaluation.scoring import run_folder_scores, run_scores
from utilities.method.defaults import IMAGE_POSTFIX, LABEL_POSTFIX, PRIMARY_NETWORK

__all__ = ["build_parser", "main"]

#: Split modes: the network and the image postfix ``inference.py`` names its run-folder
#: predictions with when neither is given (its own split-mode defaults).
RUN_NETWORK, RUN_IMAGE_POSTFIX = PRIMARY_NETWORK, IMAGE_POSTFIX
_SOURCES = ("path_predictions", "prediction_dir", "model_dir")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    what = p.add_argument_group("what to score (one of)")
    what.add_argument("--path_predictions", default=None,
                      help="folder of predictions scored against --path_labels by subject name, no split")
    what.add_argument("--prediction_dir", default=None,
                      help="folder of <subject><prediction_postfix> predictions of the --dataset_split subjects "
                           "(e.g. an nnU-Net v2 prediction folder)")
    what.add_argument("--model_dir", default=None, help="run folder given to inference.py (with --dataset_split)")
    p.add_argument("--path_labels", default=None, help="folder of full labels (required)")
    p.add_argument("--label_postfix", default=LABEL_POSTFIX,
                   help="label file postfix: <subject>_<label_postfix> (--path_predictions: or <subject>)")
    p.add_argument("--prediction_postfix", default=None,
                   help="file name after the subject ('' for nnU-Net; default: --prediction_dir <subject> or "
                        "<subject>_<image_postfix>, --path_predictions read from the names)")
    p.add_argument("--allow_missing", action="store_true",
                   help="--path_predictions: score the pairs found and list the labels without a prediction and "
                        "the predictions without a label (else an error, as nnUNetv2_evaluate_folder without --chill)")
    p.add_argument("--dataset_split", default=None,
                   help="CSV of 'subject,phase' rows (required with --model_dir or --prediction_dir)")
    p.add_argument("--phase", default=None, choices=list(PHASES),
                   help="with --dataset_split: which subjects to score (default inference)")
    p.add_argument("--network", default=None, help=f"--model_dir: network sub-folder (default {RUN_NETWORK})")
    p.add_argument("--image_postfix", default=None,
                   help=f"the images' postfix: --model_dir's prediction names (default {RUN_IMAGE_POSTFIX}, as "
                        "inference.py) and --report's images <subject>_<image_postfix> (or <subject>)")
    p.add_argument("--report", action="store_true",
                   help="also write report_<phase>/report.html beside the CSV: the table worst case first and three "
                        "slices through each lesion with the label and the prediction outlined (needs --path_images)")
    p.add_argument("--path_images", default=None, help="with --report: folder of the images predicted")
    add_dataset_flag(p)
    return p


def check_args(args: argparse.Namespace) -> str:
    """Refuse a missing or contradictory choice of what to score, in one line naming the flags;
    returns the source flag's name (``path_predictions``, ``prediction_dir`` or ``model_dir``)."""
    given = [s for s in _SOURCES if getattr(args, s) is not None]
    if not given:
        raise ValueError("pass what to score: --path_predictions DIR (a folder against --path_labels, no split), "
                         "or --model_dir DIR / --prediction_dir DIR with --dataset_split CSV")
    if len(given) > 1:
        raise ValueError(f"--{given[0]} excludes --{given[1]}; pass one of them")
    source = given[0]
    if args.path_labels is None:
        raise ValueError("--path_labels is required: the folder of the full labels to score against")
    if source == "path_predictions":
        split_only = [f for f in ("dataset_split", "phase", "network") if getattr(args, f) is not None]
        if split_only:
            raise ValueError(f"--path_predictions excludes --{split_only[0]}: it scores every prediction of the "
                             "folder, no split (--prediction_dir scores a split's subjects)")
        return source
    if args.dataset_split is None:
        raise ValueError(f"--{source} needs --dataset_split, the CSV naming the subjects to score (or score a folder "
                         "against a folder: --path_predictions DIR --path_labels DIR)")
    if args.allow_missing:
        raise ValueError("--allow_missing applies to --path_predictions only: a split's subjects are all scored")
    if source == "model_dir" and args.prediction_postfix is not None:
        raise ValueError("--prediction_postfix applies to --prediction_dir and --path_predictions; --model_dir's "
                         "predictions are named by --image_postfix")
    if source == "prediction_dir" and args.network is not None:
        raise ValueError("--network applies to --model_dir only; --prediction_dir is read as it is")
    return source


def main(argv: list[str] | None = None) -> Path:
    parser = build_parser()
    args = parse_with_dataset(parser, argv, unless={"path_predictions": ("split",)})
    source = check_args(args)
    warn_inert_flags(parser, argv, args, [Inert(("path_images",), lambda a: not a.report,
                                                "without --report: only the report shows the images")])
    if source == "path_predictions":
        return run_folder_scores(args.path_predictions, args.path_labels, args.label_postfix, args.prediction_postfix,
                                 args.allow_missing, args.report, args.path_images, args.image_postfix)
    return run_scores(args.model_dir, args.network or RUN_NETWORK, args.dataset_split,
                      args.image_postfix or RUN_IMAGE_POSTFIX, args.phase or "inference", args.path_labels,
                      args.label_postfix, args.prediction_dir, args.prediction_postfix, args.report,
                      args.path_images)


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
