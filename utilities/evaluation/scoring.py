"""Scoring segmentations against the full labels (the library behind ``utilities/scores.py``).

Per case: Dice, Jaccard, precision, recall (overlap) and HD95, ASSD (mm, the label's voxel
spacing), with ``mean`` and ``std`` rows. A case with an empty prediction or label is kept: its
overlap metrics are computed, its surface metrics are NaN, and the summary names it and says
over how many cases each mean was taken.

What is scored: the subjects of a split's phase (``inference.py``'s run folder, or a flat
folder of ``<subject><postfix>`` predictions), or, with no split, a folder of predictions
against a folder of labels paired by subject name (:func:`pair_folders`, like nnU-Net v2's
``nnUNetv2_evaluate_folder``). Every image format of :data:`utilities.data.grid.IMAGE_EXTENSIONS`
is read; each prediction is checked to lie on its label's grid.

A scores table's last column ``row`` says what each row is: ``case`` (``subject`` is the
subject) or ``summary`` (``subject`` is the statistic, ``mean`` or ``std``), so a subject named
``mean`` is a case like any other. :func:`read_scores` reads one back (names as strings) and
splits it; a table written before the ``row`` column existed ends with its ``mean`` and ``std``
rows, and is read by that position.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from utilities.core.textdata import read_csv_table
from utilities.data.grid import (
    IMAGE_EXTENSIONS,
    Grid,
    check_readable,
    check_same_grid,
    data_files,
    find_subject_file,
    image_extension,
    listed,
    missing_paths,
)
from utilities.data.io import check_label_values, read_image, save_csv
from utilities.data.layout import RunLayout
from utilities.data.splits import read_split, subjects_of
from utilities.evaluation.report import ReportCase, write_report
from utilities.method.metrics import OVERLAP_METRICS, SURFACE_METRICS, all_metrics

__all__ = ["METRICS", "ROW", "CASE", "SUMMARY", "FOLDER_PHASE", "score_cases", "with_summary", "summarize",
           "read_scores", "ImageFolder", "Pairing", "pair_folders", "report_images", "Scoring", "split_scoring",
           "folder_scoring", "write_scores", "run_scores", "run_folder_scores"]

METRICS = OVERLAP_METRICS + SURFACE_METRICS
#: The column that tells a case row (:data:`CASE`) from a summary row (:data:`SUMMARY`).
ROW, CASE, SUMMARY = "row", "case", "summary"
_STATISTICS = ("mean", "std")
#: Folder against folder: the scores go to ``<path_predictions>/results_all.csv`` and the report
#: to ``report_all/`` (every pair of the two folders, where a split's phase would stand).
FOLDER_PHASE = "all"
#: The name ending of a probability map written beside a mask (``inference.py --save_probabilities``).
_PROBABILITY = "_prob"


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


@dataclass(frozen=True)
class ImageFolder:
    """The image files of one folder (not recursive), by name without the extension.

    ``files``: name -> its files (more than one: the same name in several formats, refused when
    that name is looked up); ``left_out``: the entries read as no image (files in no image
    format, sub-folders), named in a line by the caller; hidden files (``.name``) and the data
    files of detached headers (``.nhdr``, ``.mhd``) are neither.
    """

    folder: Path
    flag: str
    files: dict[str, tuple[Path, ...]]
    left_out: tuple[str, ...] = ()

    @classmethod
    def read(cls, folder: str | os.PathLike, flag: str) -> ImageFolder:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{flag} {folder} is not a folder; pass the folder of the images")
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        images = [p for p in entries if p.is_file() and image_extension(p) is not None]
        data: set[str] = set()
        for path in images:
            try:
                data |= {d.name for d in data_files(path)}
            except OSError:  # unreadable: refused with its reason when looked up (find)
                pass
        files: dict[str, tuple[Path, ...]] = {}
        for path in images:
            stem = path.name[: -len(image_extension(path) or "")]
            files[stem] = (*files.get(stem, ()), path)
        left_out = tuple(p.name + ("/" if p.is_dir() else "") for p in entries
                         if p not in images and p.name not in data)
        return cls(folder, flag, files, left_out)

    def find(self, stem: str, what: str) -> Path | None:
        """The one file named ``<stem><ext>`` (checked readable); ``None`` when there is none.
        Raises a one-line ``ValueError`` naming both files of a name in two formats."""
        found = self.files.get(stem, ())
        if len(found) > 1:
            raise ValueError(f"{what} {stem!r} exists in {len(found)} formats in {self.flag} {self.folder}: "
                             f"{' and '.join(p.name for p in found)}; keep one of them")
        return check_readable(found[0], what) if found else None

    def only(self, stem: str, what: str) -> Path:
        """:meth:`find` for a name of :attr:`files`."""
        path = self.find(stem, what)
        if path is None:
            raise KeyError(stem)
        return path

    def note(self) -> list[str]:
        """The line naming what was left out (none when nothing was)."""
        if not self.left_out:
            return []
        return [f"{self.flag} {self.folder}: {len(self.left_out)} entr{'y' if len(self.left_out) == 1 else 'ies'} "
                f"in no image format not read: {listed(list(self.left_out))}"]


@dataclass(frozen=True)
class Pairing:
    """Predictions and labels paired by subject (:func:`pair_folders`)."""

    pairs: list[tuple[str, Path, Path]]
    labels_alone: list[Path] = field(default_factory=list)
    predictions_alone: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _label_subjects(labels: ImageFolder, label_postfix: str) -> dict[str, Path]:
    """Subject -> label file: ``<subject>_<label_postfix><ext>`` or ``<subject><ext>``."""
    by_subject: dict[str, list[str]] = {}
    ending = f"_{label_postfix}" if label_postfix else ""
    for stem in labels.files:
        subject = stem[: -len(ending)] if ending and stem.endswith(ending) and len(stem) > len(ending) else stem
        by_subject.setdefault(subject, []).append(stem)
    subjects = {}
    for subject, stems in by_subject.items():
        if len(stems) > 1:
            raise ValueError(f"--path_labels {labels.folder} holds two labels of subject {subject!r}: "
                             f"{' and '.join(p.name for s in stems for p in labels.files[s])}; keep one of them")
        subjects[subject] = labels.only(stems[0], "label")
    return subjects


def _prediction_subject(stem: str, subjects: set[str], postfix: str | None) -> tuple[str, str]:
    """``(subject, postfix)`` of a prediction named ``stem``: with ``postfix`` given, the name
    without it (or the whole name); without, the label subject the name is, or the longest
    label subject it starts with followed by ``_`` (the rest is its postfix)."""
    if postfix is not None:
        if postfix and stem.endswith(postfix) and len(stem) > len(postfix):
            return stem[: -len(postfix)], postfix
        return stem, ""
    if stem in subjects:
        return stem, ""
    heads = [s for s in subjects if stem.startswith(s + "_")]
    if heads:
        head = max(heads, key=len)
        return head, stem[len(head):]
    return stem, ""


def _prediction_subjects(predictions: ImageFolder, subjects: set[str],
                         postfix: str | None) -> tuple[dict[str, Path], list[str]]:
    """Subject -> prediction file, and the note on a postfix read from the names."""
    stems = [s for s in predictions.files
             if not (s.endswith(_PROBABILITY) and s[: -len(_PROBABILITY)] in predictions.files)]
    named = {stem: _prediction_subject(stem, subjects, postfix) for stem in stems}
    tails = sorted({tail for _, tail in named.values() if tail})
    if postfix is None and len(tails) > 1:
        shown = ", ".join(f"{stem}: {tail!r}" for stem, (_, tail) in named.items() if tail)
        raise ValueError(f"--path_predictions {predictions.folder}: the predictions' names end in different postfixes "
                         f"after the subject ({shown}); pass --prediction_postfix to say which names to read")
    by_subject: dict[str, list[str]] = {}
    for stem, (subject, _) in named.items():
        by_subject.setdefault(subject, []).append(stem)
    found = {}
    for subject, group in by_subject.items():
        if len(group) > 1:
            raise ValueError(f"--path_predictions {predictions.folder} holds {len(group)} predictions of subject "
                             f"{subject!r}: {' and '.join(p.name for s in group for p in predictions.files[s])}; "
                             "keep one of them (or pass --prediction_postfix)")
        found[subject] = predictions.only(group[0], "prediction")
    maps = len(predictions.files) - len(stems)
    notes = [f"--path_predictions: {maps} probability map(s) (<mask>{_PROBABILITY}) not scored"] if maps else []
    if postfix is None and tails:
        notes.append(f"prediction postfix {tails[0]!r} read from the names (--prediction_postfix sets it)")
    return found, notes


def _unpaired(labels_alone: Sequence[Path], predictions_alone: Sequence[Path]) -> list[str]:
    parts = []
    if labels_alone:
        parts.append(f"{len(labels_alone)} label(s) without a prediction: {listed([p.name for p in labels_alone])}")
    if predictions_alone:
        parts.append(f"{len(predictions_alone)} prediction(s) without a label: "
                     f"{listed([p.name for p in predictions_alone])}")
    return parts


def pair_folders(path_predictions: str | os.PathLike, path_labels: str | os.PathLike, label_postfix: str = "Label",
                 prediction_postfix: str | None = None, allow_missing: bool = False) -> Pairing:
    """Pair the predictions of one folder with the labels of another by subject, in subject order.

    A label is ``<subject>_<label_postfix><ext>`` or ``<subject><ext>``; a prediction
    ``<subject><prediction_postfix><ext>`` or ``<subject><ext>``. Without ``prediction_postfix``
    a prediction is the label subject its name is, or the longest label subject its name starts
    with followed by ``_`` (``brain1_T2`` for ``brain1``: ``inference.py --input_folder`` names a
    mask after its image); all such names must share one postfix. ``<ext>`` is any of
    :data:`utilities.data.grid.IMAGE_EXTENSIONS`, and a probability map beside its mask
    (``<mask>_prob``) is not a prediction.

    As ``nnUNetv2_evaluate_folder``, a label without a prediction is an error unless
    ``allow_missing`` (its ``--chill``); here a prediction without a label is one too (nnU-Net
    stops on it reading the missing reference), and ``allow_missing`` lets both go, named in
    :attr:`Pairing.notes`.

    Raises:
        FileNotFoundError: a folder is missing; files left unpaired (without ``allow_missing``);
            no pair at all.
        ValueError: both arguments are one folder; a subject with two labels or predictions; a
            name in two formats; predictions whose names end in different postfixes.
    """
    if Path(path_predictions).resolve() == Path(path_labels).resolve():
        raise ValueError(f"--path_predictions {path_predictions} is --path_labels: pass the folder of the "
                         "predictions and the folder of the labels")
    labels = ImageFolder.read(path_labels, "--path_labels")
    predictions = ImageFolder.read(path_predictions, "--path_predictions")
    label_of = _label_subjects(labels, label_postfix)
    pred_of, notes = _prediction_subjects(predictions, set(label_of), prediction_postfix)
    labels_alone = [label_of[s] for s in sorted(set(label_of) - set(pred_of))]
    predictions_alone = [pred_of[s] for s in sorted(set(pred_of) - set(label_of))]
    unpaired = _unpaired(labels_alone, predictions_alone)
    rule = (f"a label <subject>[_{label_postfix}] pairs with the prediction <subject>"
            f"[{prediction_postfix if prediction_postfix is not None else '_<postfix>'}] in any image format")
    if unpaired and not allow_missing:
        raise FileNotFoundError(f"--path_predictions {predictions.folder} and --path_labels {labels.folder} do not "
                                f"pair up: {'; '.join(unpaired)} ({rule}); check --label_postfix/--prediction_postfix, "
                                "or pass --allow_missing to score the pairs found and list the others")
    common = sorted(set(label_of) & set(pred_of))
    if not common:
        raise FileNotFoundError(f"no prediction in --path_predictions {predictions.folder} pairs with a label in "
                                f"--path_labels {labels.folder} ({len(pred_of)} prediction(s), {len(label_of)} "
                                f"label(s); {rule}); check both folders and --label_postfix/--prediction_postfix")
    notes += [f"not scored (--allow_missing): {part}" for part in unpaired]
    notes += labels.note() + predictions.note()
    return Pairing([(s, pred_of[s], label_of[s]) for s in common], labels_alone, predictions_alone, notes)


def _stem(path: Path) -> str:
    return path.name[: -len(image_extension(path) or "")]


def report_images(path_images: str | os.PathLike, pairs: Sequence[tuple[str, Path, Path]],
                  image_postfix: str | None, by_prediction_name: bool = False) -> list[Path]:
    """The image each prediction was made from, for the report: in ``path_images``, the first of
    ``<subject>_<image_postfix>`` (when given), with ``by_prediction_name`` the prediction's own
    name (``inference.py --input_folder`` names a mask after its image), and ``<subject>``, in
    any image format; never the prediction or the label file itself.

    Raises a one-line ``FileNotFoundError`` listing every subject without an image."""
    images = ImageFolder.read(path_images, "--path_images")
    found, missing = [], []
    for subject, prediction, label in pairs:
        names = [f"{subject}_{image_postfix}"] if image_postfix else []
        names = list(dict.fromkeys([*names, *([_stem(prediction)] if by_prediction_name else []), subject]))
        paths = (images.find(n, "image") for n in names)
        path = next((p for p in paths if p is not None and p.resolve() not in (prediction.resolve(),
                                                                               label.resolve())), None)
        if path is None:
            missing.append(" or ".join(names))
        else:
            found.append(path)
    if missing:
        raise FileNotFoundError(f"--report: {len(missing)} image(s) missing in --path_images {images.folder}: "
                                f"{listed(missing)} (any of {', '.join(IMAGE_EXTENSIONS)}); check "
                                "--path_images/--image_postfix")
    return found


@dataclass(frozen=True)
class Scoring:
    """What to score and where: the ``(subject, prediction, label)`` pairs, the CSV, the heading
    of the printed summary and the report, the report's folder, its images and the notes
    printed before the metrics."""

    pairs: list[tuple[str, Path, Path]]
    out: Path
    heading: str
    report_folder: Path
    images: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def split_scoring(model_dir: str | Path | None, network: str, dataset_split: str | Path, image_postfix: str,
                  phase: str, path_labels: str | Path, label_postfix: str, prediction_dir: str | Path | None = None,
                  prediction_postfix: str | None = "", report: bool = False,
                  path_images: str | Path | None = None) -> Scoring:
    """The subjects of ``phase``: predictions ``inference.py``'s (under ``model_dir/network``)
    or, with ``prediction_dir``, ``<prediction_dir>/<subject><prediction_postfix><ext>`` in any
    image format (e.g. nnU-Net's output folder); the CSV next to them. ``prediction_postfix``
    ``None`` (not given): ``<subject>`` (nnU-Net's names) or ``<subject>_<image_postfix>``
    (``inference.py --output_folder``'s), whichever exists; a subject with both is an error."""
    subjects = subjects_of(read_split(dataset_split), phase)
    if not subjects:
        raise ValueError(f"split file {dataset_split} lists no subject for phase {phase!r}")
    if prediction_dir is not None:
        folder = Path(prediction_dir)
        if not folder.is_dir():
            state = "is a file, not a folder" if folder.exists() else "does not exist"
            raise FileNotFoundError(f"--prediction_dir {folder} {state}; pass the folder of "
                                    "<subject><prediction_postfix> predictions")
        files = ImageFolder.read(folder, "--prediction_dir")
        postfixes = ("", f"_{image_postfix}") if prediction_postfix is None else (prediction_postfix,)
        predictions = []
        for s in subjects:
            found = [p for p in (files.find(f"{s}{x}", "prediction") for x in postfixes) if p is not None]
            if len(found) > 1:
                raise ValueError(f"--prediction_dir {folder} holds 2 predictions of subject {s!r}: {found[0].name} "
                                 f"and {found[1].name}; keep one of them, or pass --prediction_postfix")
            predictions.append(found[0] if found else folder / f"{s}{postfixes[0]}.nii.gz")
        layout, name = RunLayout.of_folder(folder), folder.name
    else:
        layout, name = RunLayout(model_dir or ".", network), network
        predictions = [layout.prediction(s, image_postfix) for s in subjects]
    pairs = [(s, pred, find_subject_file(path_labels, s, label_postfix, "label"))
             for s, pred in zip(subjects, predictions)]
    images = report_images(path_images, pairs, image_postfix) if report and path_images is not None else []
    out = layout.results(phase)
    return Scoring(pairs, out, f"{name} on {phase}", out.parent / f"report_{phase}", images)


def folder_scoring(path_predictions: str | Path, path_labels: str | Path, label_postfix: str = "Label",
                   prediction_postfix: str | None = None, allow_missing: bool = False, report: bool = False,
                   path_images: str | Path | None = None, image_postfix: str | None = None) -> Scoring:
    """Every prediction of ``path_predictions`` against its label in ``path_labels``
    (:func:`pair_folders`); the CSV ``<path_predictions>/results_all.csv``."""
    pairing = pair_folders(path_predictions, path_labels, label_postfix, prediction_postfix, allow_missing)
    images = (report_images(path_images, pairing.pairs, image_postfix, by_prediction_name=True)
              if report and path_images is not None else [])
    layout = RunLayout.of_folder(path_predictions)
    out = layout.results(FOLDER_PHASE)
    return Scoring(pairing.pairs, out, f"{layout.folder.name} against {Path(path_labels).name}",
                   out.parent / f"report_{FOLDER_PHASE}", images, pairing.notes)


def write_scores(scoring: Scoring, report: bool = False) -> Path:
    """Score, write the CSV (atomically) and print the summary; with ``report``, the HTML report
    of the CSV as written. Returns the CSV."""
    table, lines = summarize(score_cases(scoring.pairs))
    lines = [*scoring.notes, *lines]
    replaced = scoring.out.is_file()   # a table derived from the files scored: replaced, and said so
    save_csv(table, scoring.out)
    print(f"{scoring.heading}: " + "\n".join(lines) + f"\n{'replaced' if replaced else 'written'} {scoring.out}")
    if report:
        cases = [ReportCase(s, image, lab, pred) for (s, pred, lab), image in zip(scoring.pairs, scoring.images)]
        scored, summary = read_scores(scoring.out)   # the CSV as written
        page = write_report(pd.concat([scored, summary.reset_index()], ignore_index=True), cases,
                            scoring.report_folder, scoring.heading, lines)
        print(f"written {page}")
    elif (scoring.report_folder / "report.html").is_file():
        print(f"warning: {scoring.report_folder / 'report.html'} is an earlier scoring's report, not of the table just "
              f"written; pass --report (with --path_images) to write it again, or delete {scoring.report_folder}",
              file=sys.stderr)
    return scoring.out


def _check_report(report: bool, path_images: str | Path | None) -> None:
    if report and path_images is None:
        raise ValueError("--report needs --path_images, the folder of the images the predictions were made from")


def run_scores(model_dir: str | Path | None, network: str, dataset_split: str | Path, image_postfix: str, phase: str,
               path_labels: str | Path, label_postfix: str, prediction_dir: str | Path | None = None,
               prediction_postfix: str | None = "", report: bool = False,
               path_images: str | Path | None = None) -> Path:
    """Score every subject of ``phase`` (:func:`split_scoring`); returns the written CSV.
    ``report``: also the HTML report of the CSV as written, with the images of ``path_images``."""
    _check_report(report, path_images)
    return write_scores(split_scoring(model_dir, network, dataset_split, image_postfix, phase, path_labels,
                                      label_postfix, prediction_dir, prediction_postfix, report, path_images), report)


def run_folder_scores(path_predictions: str | Path, path_labels: str | Path, label_postfix: str = "Label",
                      prediction_postfix: str | None = None, allow_missing: bool = False, report: bool = False,
                      path_images: str | Path | None = None, image_postfix: str | None = None) -> Path:
    """Score a folder of predictions against a folder of labels, no split
    (:func:`folder_scoring`); returns the written CSV."""
    _check_report(report, path_images)
    return write_scores(folder_scoring(path_predictions, path_labels, label_postfix, prediction_postfix,
                                       allow_missing, report, path_images, image_postfix), report)
