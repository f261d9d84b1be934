"""Scoring segmentations against the full labels (the library behind ``utilities/scores.py``).

Per case: Dice, Jaccard, precision, recall (overlap) and HD95, ASSD (mm, the label's voxel
spacing), with ``mean`` and ``std`` rows. A case with an empty prediction or label is kept: its
overlap metrics are computed, its surface metrics are NaN, and the summary names it and says
over how many cases each mean was taken.

A scores table's last column ``row`` says what each row is: ``case`` (``subject`` is the
subject) or ``summary`` (``subject`` is the statistic, ``mean`` or ``std``), so a subject named
``mean`` is a case like any other. :func:`read_scores` reads one back (names as strings) and
splits it; a table written before the ``row`` column existed ends with its ``mean`` and ``std``
rows, and is read by that position.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from utilities.grid import Grid, check_same_grid, find_subject_file, listed, missing_paths
from utilities.io import check_label_values, read_image, save_csv
from utilities.layout import RunLayout
from utilities.metrics import OVERLAP_METRICS, SURFACE_METRICS, all_metrics
from utilities.report import ReportCase, write_report
from utilities.splits import read_split, subjects_of
from utilities.textdata import read_csv_table

__all__ = ["METRICS", "ROW", "CASE", "SUMMARY", "score_cases", "with_summary", "summarize", "read_scores",
           "run_scores"]

METRICS = OVERLAP_METRICS + SURFACE_METRICS
#: The column that tells a case row (:data:`CASE`) from a summary row (:data:`SUMMARY`).
ROW, CASE, SUMMARY = "row", "case", "summary"
_STATISTICS = ("mean", "std")


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


def with_summary(per_case: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """``per_case`` (a ``subject`` column and ``metrics``) followed by the ``mean`` and ``std``
    rows (ddof 0, NaN ignored) of ``metrics``, with the :data:`ROW` column last: what
    :func:`read_scores` reads back."""
    stats = per_case[list(metrics)]
    summary = pd.DataFrame([{"subject": "mean", **stats.mean(skipna=True).to_dict()},
                            {"subject": "std", **stats.std(skipna=True, ddof=0).to_dict()}])
    table = pd.concat([per_case.assign(**{ROW: CASE}), summary.assign(**{ROW: SUMMARY})], ignore_index=True)
    return table[[c for c in table.columns if c != ROW] + [ROW]]


def read_scores(path: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A scores CSV (``results_<phase>.csv``) read back: ``(cases, summary)``, the case rows in
    file order with ``subject`` as written (strings, whatever the name), and the summary rows
    indexed by statistic (``summary.loc["mean", "dice"]``); neither has the :data:`ROW` column.

    Raises a one-line ``ValueError`` naming the file for a repeated column, no ``subject``
    column, or a ``row`` value other than ``case`` and ``summary``.
    """
    path = Path(path)
    table = read_csv_table(path, "scores table", ("subject", ROW))
    if "subject" not in table.columns:
        raise ValueError(f"scores table {path} has no 'subject' column; is it a results_<phase>.csv of "
                         "utilities/scores.py?")
    if ROW in table.columns:
        unknown = sorted(set(table[ROW]) - {CASE, SUMMARY})
        if unknown:
            raise ValueError(f"scores table {path}: column {ROW!r} holds {unknown}; each row is {CASE!r} or "
                             f"{SUMMARY!r}")
        is_case = (table[ROW] == CASE).to_numpy()
    else:  # written before the row column: the mean and std rows are the last two
        legacy = len(table) >= 2 and table["subject"].iloc[-2:].tolist() == list(_STATISTICS)
        is_case = np.arange(len(table)) < len(table) - (2 if legacy else 0)
    table = table.drop(columns=ROW, errors="ignore")
    return table[is_case].reset_index(drop=True), table[~is_case].set_index("subject")


def summarize(per_case: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Per-case rows plus ``mean`` and ``std`` rows (NaN ignored; :func:`with_summary`), and
    summary lines."""
    table = with_summary(per_case, METRICS)
    stats = per_case[list(METRICS)]
    mean, std = table.iloc[-2], table.iloc[-1]
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
        scored, summary = read_scores(out)   # the CSV as written
        page = write_report(pd.concat([scored, summary.reset_index()], ignore_index=True), cases,
                            out.parent / f"report_{phase}", f"{name} on {phase}", lines)
        print(f"written {page}")
    return out
