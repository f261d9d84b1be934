"""Score the segmentations written by ``inference.py`` against the full labels.

Per case: Dice, Jaccard, precision, recall (overlap) and HD95, ASSD (mm, the label's voxel
spacing), with ``mean`` and ``std`` rows, to ``<model_dir>/<network>/results_<phase>.csv``.
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

import pandas as pd
import SimpleITK as sitk

from utilities.grid import Grid, check_same_grid, find_subject_file
from utilities.io import check_label_values, read_image, save_csv
from utilities.layout import RunLayout
from utilities.metrics import OVERLAP_METRICS, SURFACE_METRICS, all_metrics
from utilities.report import ReportCase, write_report
from utilities.splits import PHASES, read_split, subjects_of

__all__ = ["score_cases", "summarize", "main"]

METRICS = OVERLAP_METRICS + SURFACE_METRICS


def score_cases(pairs: list[tuple[str, Path, Path]]) -> pd.DataFrame:
    """Metrics of each ``(subject, prediction, label)``; rows in the given order.

    Raises a one-line error listing every missing file, naming a pair whose grids (size,
    spacing, orientation, origin) differ, or a label that is not integer-valued.
    """
    missing = [str(p) for _, pred, lab in pairs for p in (pred, lab) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} file(s) to score are missing: {'; '.join(missing[:10])}"
                                f"{' ...' if len(missing) > 10 else ''}; run inference.py first or check the flags")
    rows = []
    for subject, pred_path, label_path in pairs:
        pred_img = read_image(pred_path, "prediction")
        label_img = read_image(label_path, "label")
        # the one grid check of every script: size, spacing, orientation and origin (a prediction
        # shifted by more than the field of view would otherwise be scored)
        check_same_grid(Grid.of(label_img), label_path, "label", Grid.of(pred_img), pred_path, "prediction",
                        "predict on the images that match the labels")
        for path, img, what in ((label_path, label_img, "label"), (pred_path, pred_img, "prediction")):
            check_label_values(sitk.GetArrayViewFromImage(img), path, what)
        pred = sitk.GetArrayViewFromImage(pred_img) > 0
        label = sitk.GetArrayViewFromImage(label_img) > 0
        spacing = label_img.GetSpacing()[::-1]  # array order is (z, y, x)
        rows.append({"subject": subject, **all_metrics(pred, label, spacing),
                     "pred_voxels": int(pred.sum()), "label_voxels": int(label.sum())})
    return pd.DataFrame(rows, columns=["subject", *METRICS, "pred_voxels", "label_voxels"])


def summarize(per_case: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Per-case rows plus ``mean`` and ``std`` rows (NaN ignored), and summary lines."""
    stats = per_case[list(METRICS)]
    mean = {"subject": "mean", **stats.mean(skipna=True).to_dict()}
    std = {"subject": "std", **stats.std(skipna=True, ddof=0).to_dict()}
    table = pd.concat([per_case, pd.DataFrame([mean, std])], ignore_index=True)
    n = len(per_case)
    lines = [f"{n} case(s) scored"]
    empty_pred = per_case.loc[per_case["pred_voxels"] == 0, "subject"].tolist()
    empty_label = per_case.loc[per_case["label_voxels"] == 0, "subject"].tolist()
    if empty_pred:
        lines.append(f"empty prediction ({len(empty_pred)}): {', '.join(empty_pred)}")
    if empty_label:
        lines.append(f"empty label ({len(empty_label)}): {', '.join(empty_label)}")
    for m in METRICS:
        count = int(stats[m].notna().sum())
        lines.append(f"{m:>9}: {mean[m]:.4f} ± {std[m]:.4f}  (over {count} of {n} cases)")
    return table, lines


def run_scores(model_dir: str | Path, network: str, dataset_split: str | Path, image_postfix: str, phase: str,
               path_labels: str | Path, label_postfix: str, prediction_dir: str | Path | None = None,
               prediction_postfix: str = "", report: bool = False, path_images: str | Path | None = None) -> Path:
    """Score every subject of ``phase``; returns the written CSV.

    Predictions are ``inference.py``'s (under ``model_dir/network``) or, with ``prediction_dir``,
    ``<prediction_dir>/<subject><prediction_postfix>.nii.gz`` (e.g. nnU-Net's output folder),
    and the CSV goes next to them (``<model_dir>/<network>/`` or ``<prediction_dir>/``).
    ``report``: also the HTML report of the CSV as written, with the images of ``path_images``.
    """
    if report and path_images is None:
        raise ValueError("--report needs --path_images, the folder of the images the predictions were made from")
    subjects = subjects_of(read_split(dataset_split), phase)
    if not subjects:
        raise ValueError(f"split file {dataset_split} lists no subject for phase {phase!r}")
    if prediction_dir is not None:
        folder = Path(prediction_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"--prediction_dir {folder} does not exist; pass the folder of "
                                    "<subject><prediction_postfix>.nii.gz predictions")
        predictions = [folder / f"{s}{prediction_postfix}.nii.gz" for s in subjects]
        out, name = RunLayout.of_folder(folder).results(phase), folder.name
    else:
        layout = RunLayout(model_dir, network)
        predictions = [layout.prediction(s, image_postfix) for s in subjects]
        out, name = layout.results(phase), network
    pairs = [(s, pred, find_subject_file(path_labels, s, label_postfix, "label"))
             for s, pred in zip(subjects, predictions)]
    images = [find_subject_file(path_images, s, image_postfix) for s in subjects] if report else []
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"--report: {len(missing)} image(s) missing, e.g. {missing[0]}; check "
                                "--path_images/--image_postfix")
    table, lines = summarize(score_cases(pairs))
    save_csv(table, out)
    print(f"{name} on {phase}: " + "\n".join(lines) + f"\nwritten {out}")
    if report:
        cases = [ReportCase(s, image, lab, pred) for (s, pred, lab), image in zip(pairs, images)]
        page = write_report(pd.read_csv(out), cases, out.parent / f"report_{phase}", f"{name} on {phase}", lines)
        print(f"written {page}")
    return out


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
