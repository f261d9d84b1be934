"""Scoring segmentations against the full labels (the library behind ``utilities/scores.py``).

Per case: Dice, Jaccard, precision, recall (overlap) and HD95, ASSD (mm, the label's voxel
spacing), with ``mean`` and ``std`` rows. A case with an empty prediction or label is kept: its
overlap metrics are computed, its surface metrics are NaN, and the summary names it and says
over how many cases each mean was taken.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import SimpleITK as sitk

from utilities.grid import Grid, check_same_grid, find_subject_file, listed, missing_paths
from utilities.io import check_label_values, read_image, save_csv
from utilities.layout import RunLayout
from utilities.metrics import OVERLAP_METRICS, SURFACE_METRICS, all_metrics
from utilities.report import ReportCase, write_report
from utilities.splits import read_split, subjects_of

__all__ = ["METRICS", "score_cases", "summarize", "run_scores"]

METRICS = OVERLAP_METRICS + SURFACE_METRICS


def score_cases(pairs: list[tuple[str, Path, Path]]) -> pd.DataFrame:
    """Metrics of each ``(subject, prediction, label)``; rows in the given order.

    Raises a one-line error listing every missing file, naming a pair whose grids (size,
    spacing, orientation, origin) differ, or a label that is not integer-valued.
    """
    missing = missing_paths(p for _, pred, lab in pairs for p in (pred, lab))
    if missing:
        raise FileNotFoundError(f"{len(missing)} file(s) to score are missing: {listed(missing)}; run inference.py "
                                "first or check the flags")
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
    # path_images is set whenever report is (checked above)
    images = ([find_subject_file(path_images, s, image_postfix) for s in subjects]
              if report and path_images is not None else [])
    missing = missing_paths(images)
    if missing:
        raise FileNotFoundError(f"--report: {len(missing)} image(s) missing: {listed(missing)}; check "
                                "--path_images/--image_postfix")
    table, lines = summarize(score_cases(pairs))
    save_csv(table, out)
    print(f"{name} on {phase}: " + "\n".join(lines) + f"\nwritten {out}")
    if report:
        cases = [ReportCase(s, image, lab, pred) for (s, pred, lab), image in zip(pairs, images)]
        page = write_report(pd.read_csv(out), cases, out.parent / f"report_{phase}", f"{name} on {phase}", lines)
        print(f"written {page}")
    return out
