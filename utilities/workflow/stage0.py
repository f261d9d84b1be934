"""Stage 0 of PA-Seg over a split or a folder: read each subject's image and 7-point annotation,
expand the seeds (:mod:`utilities.method.geodesic`) and write them with a settings record.

The expanded seeds are 1 (expanded foreground) and 2 (unknown) inside each lesion's box of
points and 0 (background) outside them, as :mod:`utilities.method.geodesic` computes them.

Annotations that cannot be right are refused with a one-line error naming the subject: a lesion
with fewer than six background points (its box would miss part of the lesion, which would then
become certain background), a foreground point outside the box of its background points (the
"foreground" seeds would lie outside the lesion), and an annotation on another voxel grid than
the image (with ``--reorder_annotation``, one that holds the image's voxels with permuted or
reversed axes is reordered exactly). ``--allow_partial_points`` lifts the first two checks, never
the grid one: stage 1 refuses seeds on another grid than the image. The seeds are written on the
image's grid.

The image is used as it is (the paper's behaviour) unless an intensity normalisation
(:mod:`utilities.method.intensity`) is asked for; a one-line warning names the subjects on which the
intensities make the geodesic term negligible (:func:`euclidean_step_fraction`), and
``stage0_settings.json`` records the style, the normalisation and that test per subject.

This module is the one implementation behind ``data/VS/generate_geodesic_labels.py``,
``data/BraTS/generate_geodesic_labels.py`` (the paper's, raw intensities) and
``data/generate_geodesic_labels.py`` (a user's scans, ``--style`` and a normalisation by
default); those scripts only choose defaults.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm import tqdm

from utilities.core.arguments import ArgumentParser
from utilities.core.logs import log_args, setup_logger, show_progress
from utilities.core.textdata import loads_json
from utilities.data.grid import (
    Grid,
    check_same_grid,
    find_subject_file,
    grid_difference,
    listed,
    missing_files,
    subject_path,
)
from utilities.data.io import (
    ensure_writable_dir,
    exact_format,
    read_image,
    save_csv,
    save_text,
    staged_folders,
    write_like,
)
from utilities.data.splits import PHASES, read_split, subjects_of
from utilities.evaluation.scoring import with_summary
from utilities.method.defaults import GEODESIC_THRESHOLD, GEODESIC_WEIGHT, SEED_FOLDER, SEED_POSTFIX
from utilities.method.geodesic import check_weight_threshold, euclidean_step_fraction, expand_seeds
from utilities.method.intensity import (
    NORMALISATIONS,
    SCAN_DEFAULT,
    euclidean_limit,
    normalisation,
)
from utilities.method.metrics import overlap_metrics
from utilities.workflow.cli import positive_int

__all__ = [
    "output_folder",
    "generate_geodesic_labels",
    "build_parser",
    "run_parsed",
    "STYLES",
    "SETTINGS_NAME",
    "NEGLIGIBLE_FRACTION",
]

_METRIC_COLUMNS = ("precision", "recall", "dice", "jaccard")
#: Stage 0's styles: whether the voxels at the image's minimum are set to background (BraTS: a
#: skull-stripped scan's background; VS: nothing is, which suits any scan).
STYLES: dict[str, bool] = {"vs": False, "brats": True}
#: The settings record stage 0 writes next to its outputs (read by ``plan.py``).
SETTINGS_NAME = "stage0_settings.json"
#: The folder of the distances, beside :data:`SEED_FOLDER`.
DISTANCE_FOLDER = "geodesic_distance"
#: The settings that make two runs' seeds differ (the weight and threshold name the folder).
_SEED_SETTINGS = ("style", "intensity", "geodesic_weight", "geodesic_threshold")
#: A subject whose lesion boxes have at least this fraction of neighbour steps in GeodisTK's
#: Euclidean regime (:func:`utilities.method.intensity.euclidean_step_counts`) gets the warning that
#: its geodesic term is negligible: for most steps the intensity changes the cost by < 11 %.
NEGLIGIBLE_FRACTION = 0.5


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
def output_folder(path_geodesic: str | os.PathLike, weight: float, threshold: float) -> Path:
    """``<path_geodesic>/weight{w}_threshold{t}`` with the values written as ``str(float)``."""
    return Path(path_geodesic) / f"weight{float(weight)}_threshold{float(threshold)}"


def _compare_geometry(ref: Grid, ref_path: Path, other: Grid, other_path: Path, what: str,
                      ref_what: str = "annotation") -> list[str]:
    """Raise if ``other`` differs from ``ref`` (the ``ref_what``) in size, spacing or orientation
    (the project's one comparison, :func:`utilities.data.grid.grid_difference`); return notes (an
    origin difference)."""
    if other.size != ref.size:
        raise ValueError(f"{what} {other_path} has size {list(other.size)} but {ref_what} {ref_path} "
                         f"has {list(ref.size)}; they must be on the same voxel grid (annotated points may lie "
                         f"outside the {what}): resample one of them onto the other's grid")
    if len(other.spacing) != 3:
        raise ValueError(f"{what} {other_path} is {len(other.spacing)}D; expected a 3D volume")
    difference = grid_difference(ref, other)
    if difference is not None and difference[0] == "spacing":
        raise ValueError(f"{what} {other_path} has spacing {list(other.spacing)} but {ref_what} "
                         f"{ref_path} has {list(ref.spacing)}; resample one of them")
    if difference is not None and difference[0] == "orientation":
        raise ValueError(f"{what} {other_path} has orientation {[round(float(v), 4) + 0.0 for v in other.direction]} "
                         f"but {ref_what} {ref_path} has {[round(float(v), 4) + 0.0 for v in ref.direction]}; "
                         "reorient one of them")
    if difference is not None and difference[0] == "origin":
        return [f"{what} {other_path} has origin {list(other.origin)} but {ref_what} has "
                f"{list(ref.origin)}; voxels are matched by index"]
    return []


#: How to put an annotation array on the image's grid: (axis permutation, axes to flip), in
#: SimpleITK index order (x, y, z); ``((0, 1, 2), (False, False, False))`` for the same grid.
GridMapping = tuple[tuple[int, int, int], tuple[bool, bool, bool]]
IDENTITY: GridMapping = ((0, 1, 2), (False, False, False))


def _permuted_header(header: Grid, mapping: GridMapping) -> Grid:
    """The header of ``header``'s volume after :func:`_apply_mapping`: new index axis i is old
    axis ``perm[i]``, reversed where ``flip[i]``; every voxel keeps its physical position."""
    perm, flip = mapping
    direction = np.asarray(header.direction, dtype=np.float64).reshape(3, 3)  # column a: index axis a
    spacing = np.asarray(header.spacing, dtype=np.float64)
    size = np.asarray(header.size)
    start = np.zeros(3)  # old index of the voxel that becomes new index 0
    for i, a in enumerate(perm):
        start[a] = size[a] - 1 if flip[i] else 0
    origin = np.asarray(header.origin) + direction @ (spacing * start)
    columns = np.stack([direction[:, a] * (-1.0 if flip[i] else 1.0) for i, a in enumerate(perm)], axis=1)
    return Grid(tuple(int(size[a]) for a in perm), tuple(float(spacing[a]) for a in perm),
                   tuple(float(v) for v in columns.ravel()), tuple(float(v) for v in origin))


def _grid_mapping(annotation: Grid, image: Grid) -> GridMapping | None:
    """How the annotation's grid is exactly the image's: the same grid (within the tolerances
    of :func:`_compare_geometry`), or the same voxels with the index axes permuted and/or
    reversed; ``None`` when it is another grid (no exact resampling exists)."""
    def same(candidate: Grid) -> bool:
        try:
            return not _compare_geometry(image, Path("image"), candidate, Path("annotation"), "annotation", "image")
        except ValueError:
            return False

    if same(annotation):
        return IDENTITY
    if len(annotation.size) != 3 or len(image.size) != 3:
        return None
    a_dir = np.asarray(annotation.direction, dtype=np.float64).reshape(3, 3)
    i_dir = np.asarray(image.direction, dtype=np.float64).reshape(3, 3)
    dots = i_dir.T @ a_dir  # [image axis, annotation axis]
    p0, p1, p2 = (int(np.argmax(np.abs(dots[i]))) for i in range(3))
    perm = (p0, p1, p2)
    if sorted(perm) != [0, 1, 2]:
        return None
    flip = (bool(dots[0, p0] < 0), bool(dots[1, p1] < 0), bool(dots[2, p2] < 0))
    mapping: GridMapping = (perm, flip)
    return mapping if mapping != IDENTITY and same(_permuted_header(annotation, mapping)) else None


def _apply_mapping(array: np.ndarray, mapping: GridMapping) -> np.ndarray:
    """Reorder a SimpleITK-order (z, y, x) array by ``mapping`` (see :data:`GridMapping`)."""
    if mapping == IDENTITY:
        return array
    perm, flip = mapping
    xyz = np.transpose(array, (2, 1, 0)).transpose(perm)
    for axis, reverse in enumerate(flip):
        if reverse:
            xyz = np.flip(xyz, axis=axis)
    return np.ascontiguousarray(np.transpose(xyz, (2, 1, 0)))


@dataclass(frozen=True)
class _Task:
    subject: str
    image: Path
    annotation: Path
    label: Path | None
    out_label: Path
    out_distance: Path
    weight: float
    threshold: float
    zero_at_min: bool
    mapping: GridMapping = IDENTITY
    allow_partial_points: bool = False
    intensity: str = "none"


@dataclass
class _Result:
    subject: str
    metrics: dict[str, float] | None
    notes: list[str] = field(default_factory=list)
    euclidean_fraction: float = 0.0


def _process(task: _Task) -> _Result:
    """Read one subject, expand its points, write label and distance, score against its label.

    :func:`utilities.data.io.read_image` rejects truncated files and NaN/Inf voxels (which SimpleITK
    would silently read as 0)."""
    annotation_img = read_image(task.annotation, "annotation")
    image_img = read_image(task.image, "image")
    image = sitk.GetArrayFromImage(image_img)
    annotation = _apply_mapping(sitk.GetArrayFromImage(annotation_img), task.mapping)
    spacing = image_img.GetSpacing()[::-1]  # arrays are (z, y, x), GetSpacing() is (x, y, z)
    try:
        label, distance = expand_seeds(image, annotation, spacing, task.weight, task.threshold,
                                       zero_at_min=task.zero_at_min,
                                       allow_partial_points=task.allow_partial_points, intensity=task.intensity)
        fraction = euclidean_step_fraction(image, annotation, task.weight, task.intensity)
    except ValueError as e:
        raise ValueError(f"{task.subject}: annotation {task.annotation}: {e}") from None
    write_like(label, image_img, task.out_label)
    write_like(distance, image_img, task.out_distance)
    notes = [f"{task.subject}: {int(np.count_nonzero(label == 1))} expanded foreground voxels, "
             f"{int(np.count_nonzero(label == 2))} unknown"]
    if task.mapping != IDENTITY:
        notes.append(f"{task.subject}: annotation {task.annotation} reordered onto the image's grid "
                     f"(axes {list(task.mapping[0])}, reversed {list(task.mapping[1])})")
    metrics = None
    if task.label is not None:
        full = sitk.GetArrayFromImage(read_image(task.label, "label"))
        metrics = overlap_metrics(label == 1, full > 0)
    return _Result(task.subject, metrics, notes, fraction)


def _missing_inputs(subjects: Sequence[str], folders: Sequence[tuple[str | os.PathLike, str, str]]) -> str | None:
    """One line naming every missing folder and the missing files (the first ``_MAX_LISTED``
    of them, then a count), or ``None`` when everything is there."""
    problems = []
    missing = []
    for folder, postfix, what in folders:
        if not Path(folder).is_dir():
            state = "is a file, not a folder" if Path(folder).exists() else "does not exist"
            problems.append(f"{what} folder {folder} {state} ({len(subjects)} subject(s) need it)")
            continue
        missing += missing_files(subjects, folder, postfix, what)
    if missing:
        problems.append(f"{len(missing)} file(s) missing: {listed(missing)}")
    return "; ".join(problems) if problems else None


def _checked_subjects(split: pd.DataFrame, dataset_split: str | os.PathLike, phase: str | None,
                      images: tuple[str | os.PathLike, str], annotations: tuple[str | os.PathLike, str]) -> list[str]:
    """The split's subjects (of ``phase``), once every image and annotation file is known to
    exist (all missing ones listed in one error)."""
    subjects = subjects_of(split, phase)
    if not subjects:
        raise ValueError(f"split file {dataset_split} has no subjects"
                         + (f" in phase {phase!r}" if phase is not None else ""))
    missing = _missing_inputs(subjects, [(*images, "image"), (*annotations, "annotation")])
    if missing:
        raise FileNotFoundError(f"{missing} (check --path_images/--image_postfix and "
                                "--path_anno_7points/--anno_7points_postfix)")
    return subjects


def generate_geodesic_labels(dataset_split: str | os.PathLike, path_images: str | os.PathLike,
                             image_postfix: str, path_labels: str | os.PathLike | None,
                             label_postfix: str, path_anno_7points: str | os.PathLike,
                             anno_7points_postfix: str, path_geodesic: str | os.PathLike,
                             geodesic_weight: float, geodesic_threshold: float,
                             zero_at_min: bool = False, num_workers: int = 1,
                             phase: str | None = None, allow_partial_points: bool = False,
                             reorder_annotation: bool = False, intensity: str = "none",
                             overwrite: bool = False) -> Path:
    """Expand the 7-point annotations of every subject of a split (or of one phase).

    Writes, under ``<path_geodesic>/weight{w}_threshold{t}/``: ``geodesic_label/<subject>_
    GeodesicLabel.nii.gz`` (uint8, 0/1/2), ``geodesic_distance/<subject>_GeodesicDistance.nii.gz``
    (float32, distance inside the lesion boxes and 0 outside), both in the image's geometry;
    a log file; for each phase with at least one full label, ``results_<phase>.csv``: the
    precision, recall, Dice and Jaccard of the expanded foreground (label 1) against the full
    label (> 0) per subject, then ``mean`` and ``std`` (population, ddof=0) rows; and
    :data:`SETTINGS_NAME`. ``intensity``: a normalisation of :mod:`utilities.method.intensity`
    (``"none"``: raw intensities, the paper's); see :func:`_write_settings` for the warning.

    All image and annotation files are checked to exist (all missing ones listed at once) and
    each annotation to be on its image's grid before any work: the same grid or, with
    ``reorder_annotation``, the same voxels with permuted or reversed axes (then reordered
    exactly); anything else is a one-line error naming the files. Each lesion needs six
    background points and its foreground point inside their box, unless
    ``allow_partial_points``. A subject whose full label is missing is still expanded; it is
    only left out of the metrics (the log says so).

    Nothing in the output folder changes unless every subject succeeds
    (:func:`utilities.data.io.staged_folders`): a run that stops on a bad annotation leaves the
    seeds of an earlier run as they were. Seeds already there that were made
    with other settings (``style``, ``intensity``; :data:`SETTINGS_NAME`), or with no settings
    record, are refused unless ``overwrite``; then they are all removed (a stage-1 run that trained
    on them would otherwise read a mix). Seeds made with the same settings are kept and the run's
    subjects replace or join them (e.g. one ``phase`` after another).

    Returns:
        The output folder ``<path_geodesic>/weight{w}_threshold{t}``.
    """
    geodesic_weight = float(geodesic_weight)
    geodesic_threshold = float(geodesic_threshold)
    check_weight_threshold(geodesic_weight, geodesic_threshold)
    intensity = normalisation(intensity).name
    if int(num_workers) < 1:
        raise ValueError(f"--num_workers must be at least 1, got {num_workers}")
    num_workers = int(num_workers)
    if path_labels is not None and str(path_labels) == "":
        path_labels = None
    split = read_split(dataset_split)
    subjects = _checked_subjects(split, dataset_split, phase, (path_images, image_postfix),
                                 (path_anno_7points, anno_7points_postfix))
    out_dir = output_folder(path_geodesic, geodesic_weight, geodesic_threshold)
    template = _Task("", Path(), Path(), None, Path(), Path(), geodesic_weight, geodesic_threshold,
                     bool(zero_at_min), IDENTITY, bool(allow_partial_points), intensity)
    earlier = _earlier_settings(out_dir, _settings_of(template), bool(overwrite))
    ensure_writable_dir(out_dir)
    logger = setup_logger(out_dir, name="generate_geodesic_labels")
    given = dict(locals())   # the (normalised) arguments; a comprehension would see its own scope
    log_args(logger, argparse.Namespace(**{k: given[k] for k in _LOGGED}))

    with staged_folders(out_dir / SEED_FOLDER, out_dir / DISTANCE_FOLDER) as (label_dir, distance_dir):
        tasks = [_subject_task(subject, template, (path_images, image_postfix),
                               (path_anno_7points, anno_7points_postfix),
                               None if path_labels is None else (path_labels, label_postfix),
                               (label_dir, distance_dir), reorder_annotation, logger)
                 for subject in subjects]
        if path_labels is not None and tasks and all(t.label is None for t in tasks):
            where = (f"--path_labels {path_labels} does not exist" if not Path(path_labels).is_dir() else
                     f"--path_labels {path_labels} holds no <subject>_{label_postfix} label of any of the "
                     f"{len(tasks)} subject(s) (check --label_postfix; the names are case-sensitive)")
            logger.warning("%s: the expanded seeds are not scored against full labels", where)
        logger.info("expanding %d subject(s) with %d worker(s) into %s", len(tasks), num_workers, out_dir)
        results = _run_tasks(tasks, num_workers)
        if earlier is None:   # --overwrite: the seeds of other settings go, all of them
            _remove_earlier(out_dir, logger)
    _report(results, dict(zip(split["subject"], split["phase"])), template, out_dir, logger, earlier)
    return out_dir


def _settings_of(settings: _Task) -> dict[str, Any]:
    """The :data:`_SEED_SETTINGS` of a run, as :data:`SETTINGS_NAME` records them."""
    return {"style": next(k for k, v in STYLES.items() if v == settings.zero_at_min),
            "intensity": settings.intensity, "geodesic_weight": settings.weight,
            "geodesic_threshold": settings.threshold}


def _existing_seeds(out_dir: Path) -> list[Path]:
    """The seed and distance files already in ``out_dir``."""
    return sorted(p for name in (SEED_FOLDER, DISTANCE_FOLDER) if (out_dir / name).is_dir()
                  for p in (out_dir / name).iterdir() if p.is_file() and not p.name.startswith("."))


def _earlier_settings(out_dir: Path, settings: Mapping[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """The settings record of seeds already in ``out_dir`` that this run may join (made with the
    same settings), ``{}`` when there are none; ``None`` when they are to be replaced
    (``overwrite``). Seeds of other settings, or without a record, are refused unless
    ``overwrite`` (one-line ``FileExistsError``)."""
    existing = _existing_seeds(out_dir)
    if not existing:
        return {}
    record_path = out_dir / SETTINGS_NAME
    try:
        record = (loads_json(record_path.read_text(encoding="utf-8"), str(record_path)) if record_path.is_file()
                  else None)
    except (OSError, UnicodeDecodeError, ValueError):   # unreadable: as if there were none
        record = None
    differs = (["no " + SETTINGS_NAME] if not isinstance(record, dict) else
               [f"{k} {record.get(k)!r}, now {settings[k]!r}" for k in _SEED_SETTINGS if record.get(k) != settings[k]])
    if not differs:
        return record
    if overwrite:
        return None
    raise FileExistsError(f"{out_dir} holds {len(existing)} seed file(s) made with other settings "
                          f"({'; '.join(differs)}); a run trained on them would read a mix: write the new seeds "
                          "elsewhere (--path_geodesic), or pass --overwrite to replace them all")


def _remove_earlier(out_dir: Path, logger: logging.Logger) -> None:
    """Remove the seeds, distances and metrics tables of earlier runs from ``out_dir``."""
    old = _existing_seeds(out_dir) + sorted(out_dir.glob("results_*.csv"))
    for path in old:
        path.unlink()
    if old:
        logger.info("--overwrite: removed %d file(s) of seeds made with other settings", len(old))


#: The arguments of :func:`generate_geodesic_labels` written to its log.
_LOGGED = ("dataset_split", "path_images", "image_postfix", "path_labels", "label_postfix", "path_anno_7points",
           "anno_7points_postfix", "path_geodesic", "geodesic_weight", "geodesic_threshold", "zero_at_min",
           "num_workers", "phase", "allow_partial_points", "reorder_annotation", "intensity", "overwrite")


def _report(results: Sequence[_Result], phase_of: Mapping[str, str], settings: _Task, out_dir: Path,
            logger: logging.Logger, earlier: Mapping[str, Any] | None = None) -> None:
    """The subjects' notes in the log, the metrics tables, the warning and the settings record."""
    for result in results:
        for note in result.notes:
            logger.info("%s", note)
    _write_metrics(results, phase_of, out_dir, logger)
    _write_settings(results, settings, out_dir, logger, earlier)
    logger.info("done: %s", out_dir)


def _write_settings(results: Sequence[_Result], settings: _Task, out_dir: Path, logger: logging.Logger,
                    earlier: Mapping[str, Any] | None = None) -> None:
    """Warn (one line) about the subjects whose geodesic term is negligible and write
    :data:`SETTINGS_NAME`: ``style`` (``vs``/``brats``, see :data:`STYLES`), ``intensity``,
    ``geodesic_weight``, ``geodesic_threshold``, ``euclidean_step_fraction`` per subject and
    ``geodesic_term_negligible`` (the subjects at or above :data:`NEGLIGIBLE_FRACTION`), with the
    subjects of an ``earlier`` record of the same settings that this run did not redo."""
    negligible = [r for r in results if r.euclidean_fraction >= NEGLIGIBLE_FRACTION]
    if negligible:
        worst = max(negligible, key=lambda r: r.euclidean_fraction)
        logger.warning("the geodesic term is negligible for %d of %d subject(s) (%s): with --intensity %s, "
                       "%.0f%% of the steps between neighbouring voxels in %s's lesion boxes change the intensity "
                       "by >= %.3g (9 lambda/(1-lambda) at --geodesic_weight %s), where GeodisTK charges >= 90%% "
                       "of the Euclidean cost, so the seeds are nearly Euclidean balls; normalise the "
                       "intensities (--intensity %s, data/generate_geodesic_labels.py's default)",
                       len(negligible), len(results), listed([r.subject for r in negligible], 3), settings.intensity,
                       100.0 * worst.euclidean_fraction, worst.subject, euclidean_limit(settings.weight),
                       settings.weight, SCAN_DEFAULT)
    fractions = dict((earlier or {}).get("euclidean_step_fraction") or {})
    fractions.update({r.subject: round(r.euclidean_fraction, 4) for r in results})
    record = {**_settings_of(settings), "euclidean_step_fraction": fractions,
              "geodesic_term_negligible": [s for s, f in fractions.items() if f >= NEGLIGIBLE_FRACTION]}
    save_text(json.dumps(record, indent=2) + "\n", out_dir / SETTINGS_NAME)


def _annotation_mapping(subject: str, image_path: Path, annotation_path: Path, reorder: bool,
                        logger: logging.Logger) -> tuple[Grid, GridMapping]:
    """The image's grid and how the annotation's voxels map onto it (identity, or permuted/
    reversed axes with ``reorder``); any other grid is a one-line error naming both files."""
    ann = Grid.read(annotation_path, "annotation")
    if len(ann.size) != 3:
        raise ValueError(f"{subject}: annotation {annotation_path} is {len(ann.size)}D; expected a 3D volume")
    ref = Grid.read(image_path, "image")
    if len(ref.size) != 3:
        raise ValueError(f"{subject}: image {image_path} is {len(ref.size)}D (size {list(ref.size)}); stage 0 "
                         "needs a 3D volume of one channel: save the channel the points were clicked on")
    mapping = _grid_mapping(ann, ref)
    if mapping is not None and mapping != IDENTITY and not reorder:
        raise ValueError(f"{subject}: annotation {annotation_path} holds the image's voxels in another index order "
                         f"(axes {list(mapping[0])}, reversed {list(mapping[1])}), as when it was saved reoriented; "
                         "pass --reorder_annotation to reorder it exactly (no resampling)")
    if mapping is None:
        notes = _compare_geometry(ann, annotation_path, ref, image_path, "image")  # raises for most grids
        differs = (f"image {image_path} has origin {list(ref.origin)} but annotation {annotation_path} has "
                   f"{list(ann.origin)}" if notes else f"annotation {annotation_path} is not on the grid of image "
                   f"{image_path}")
        raise ValueError(f"{subject}: {differs}: the annotation is on another grid than the image (stage 1 "
                         "would refuse its seeds); put the points on the image's grid (e.g. "
                         "data/points_to_annotation.py --to_markups, then back onto the image)")
    if mapping != IDENTITY:
        logger.info("%s: annotation %s is the image's grid with axes permuted/reversed %s; reordered exactly",
                    subject, annotation_path, mapping)
    return ref, mapping


def _subject_task(subject: str, template: _Task, images: tuple[str | os.PathLike, str],
                  annotations: tuple[str | os.PathLike, str], labels: tuple[str | os.PathLike, str] | None,
                  out_dirs: tuple[Path, Path], reorder: bool, logger: logging.Logger) -> _Task:
    """One subject's checked task: its files found, its annotation mapped onto the image's grid,
    its full label (if any) on the image's grid; ``template`` holds the settings."""
    image_path = find_subject_file(images[0], subject, images[1], "image")
    annotation_path = find_subject_file(annotations[0], subject, annotations[1], "annotation")
    ref, mapping = _annotation_mapping(subject, image_path, annotation_path, reorder, logger)
    label_path = None
    if labels is not None:
        candidate = find_subject_file(labels[0], subject, labels[1], "label")
        if candidate.is_file():
            label_path = candidate
            check_same_grid(ref, image_path, "image", Grid.read(candidate, "label"), candidate, "label",
                            "resample it onto the image's voxel grid (the label is used only for the metrics "
                            "of the expanded seeds)")
        else:
            logger.info("%s: no full label %s; no metrics for it", subject, candidate)
    label = exact_format(subject_path(out_dirs[0], subject, SEED_POSTFIX), ref)   # .mha where NIfTI cannot
    ext = label.name.removeprefix(f"{subject}_{SEED_POSTFIX}")                     # hold the grid: both files
    return replace(template, subject=subject, image=image_path, annotation=annotation_path, label=label_path,
                   out_label=label, out_distance=subject_path(out_dirs[1], subject, "GeodesicDistance", ext),
                   mapping=mapping)


def _write_metrics(results: Sequence[_Result], phase_of: Mapping[str, str], out_dir: Path,
                   logger: logging.Logger) -> None:
    """``results_<phase>.csv`` for each phase with at least one scored subject (per subject, then
    ``mean`` and ``std`` rows, ddof 0, told apart by the ``row`` column:
    :func:`utilities.evaluation.scoring.with_summary`), and its means in the log."""
    for phase_name in PHASES:
        rows = [{"subject": r.subject, **{k: r.metrics[k] for k in _METRIC_COLUMNS}}
                for r in results if phase_of[r.subject] == phase_name and r.metrics is not None]
        if not rows:
            continue
        table = with_summary(pd.DataFrame(rows, columns=["subject", *_METRIC_COLUMNS]), _METRIC_COLUMNS)
        save_csv(table, out_dir / f"results_{phase_name}.csv")
        mean = table.iloc[-2]
        logger.info("%s (%d subjects with labels): precision %.4f recall %.4f Dice %.4f Jaccard %.4f",
                    phase_name, len(rows), mean["precision"], mean["recall"], mean["dice"], mean["jaccard"])


def _run_tasks(tasks: list[_Task], num_workers: int) -> list[_Result]:
    """Run ``_process`` on every task (in a process pool when ``num_workers > 1``); results in
    task order. The first failure cancels the tasks not yet started and is raised."""
    bar = tqdm(total=len(tasks), desc="geodesic", unit="subject", disable=not show_progress())
    try:
        if num_workers == 1:
            results = []
            for task in tasks:
                results.append(_process(task))
                bar.update()
            return results
        with cf.ProcessPoolExecutor(max_workers=min(num_workers, len(tasks))) as pool:
            futures = [pool.submit(_process, task) for task in tasks]
            try:
                for future in cf.as_completed(futures):
                    future.result()
                    bar.update()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
            return [future.result() for future in futures]
    finally:
        bar.close()


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
#: The flags a user must give when the entry point has no default for them.
_REQUIRED_WITHOUT_DEFAULT = ("dataset_split", "path_images", "image_postfix", "path_anno_7points",
                             "anno_7points_postfix", "path_geodesic")


def build_parser(defaults: dict[str, Any], description: str | None = None) -> argparse.ArgumentParser:
    """The stage-0 argument parser; ``defaults`` maps each path/postfix flag (without ``--``)
    to its dataset-specific default, and ``intensity`` to the default normalisation (``none``
    when absent). A data flag of :data:`_REQUIRED_WITHOUT_DEFAULT` without a default is required."""
    p = ArgumentParser(description=description or __doc__.splitlines()[0])

    def data_flag(name: str, help: str) -> None:
        required = name in _REQUIRED_WITHOUT_DEFAULT and defaults.get(name) is None
        p.add_argument(f"--{name}", default=defaults.get(name), required=required, help=help)

    data_flag("dataset_split", "split CSV with rows 'subject,phase'")
    data_flag("path_images", "folder of <subject>_<image_postfix>.nii.gz")
    data_flag("image_postfix", "image file postfix")
    data_flag("path_labels", "folder of full labels <subject>_<label_postfix>.nii.gz, used only to score "
                             "the expanded labels (subjects without one are expanded but not scored)")
    data_flag("label_postfix", "full label file postfix")
    data_flag("path_anno_7points", "folder of 7-point annotations <subject>_<anno_7points_postfix>.nii.gz")
    data_flag("anno_7points_postfix", "annotation file postfix")
    data_flag("path_geodesic", "output root; results go to <path_geodesic>/weight{w}_threshold{t}/")
    p.add_argument("--intensity", default=defaults.get("intensity", "none"), choices=sorted(NORMALISATIONS),
                   help="intensity normalisation of each lesion's box before the geodesic distance "
                        "(utilities/method/intensity.py); none: the raw intensities, as in the paper")
    p.add_argument("--geodesic_weight", type=float, default=defaults.get("geodesic_weight", GEODESIC_WEIGHT),
                   help="GeodisTK lambda in [0, 1]: 0 Euclidean distance, 1 intensity changes only")
    p.add_argument("--geodesic_threshold", type=float, default=defaults.get("geodesic_threshold", GEODESIC_THRESHOLD),
                   help="fraction in (0, 1] of the box's largest distance below which a voxel is foreground")
    p.add_argument("--num_workers", type=positive_int, default=min(4, os.cpu_count() or 1),
                   help="parallel processes (1: run in this process)")
    p.add_argument("--phase", default=None, choices=list(PHASES),
                   help="only the subjects of this phase (default: every subject of the split)")
    p.add_argument("--allow_partial_points", action="store_true",
                   help="accept lesions with fewer than six background points or a foreground point outside "
                        "their box (refused by default: such seeds mislabel part of the lesion)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace seeds already in the output folder that were made with other settings (--style, "
                        "--intensity) or have no stage0_settings.json; seeds of the same settings are kept and "
                        "joined without it")
    p.add_argument("--reorder_annotation", action="store_true",
                   help="accept an annotation that holds the image's voxels with permuted or reversed axes "
                        "(e.g. saved in another orientation) and reorder it exactly onto the image's grid")
    return p


def run_parsed(args: argparse.Namespace, zero_at_min: bool) -> Path:
    """Run :func:`generate_geodesic_labels` with the arguments of :func:`build_parser`."""
    return generate_geodesic_labels(
        dataset_split=args.dataset_split, path_images=args.path_images,
        image_postfix=args.image_postfix, path_labels=args.path_labels,
        label_postfix=args.label_postfix, path_anno_7points=args.path_anno_7points,
        anno_7points_postfix=args.anno_7points_postfix, path_geodesic=args.path_geodesic,
        geodesic_weight=args.geodesic_weight, geodesic_threshold=args.geodesic_threshold,
        zero_at_min=zero_at_min, num_workers=args.num_workers, phase=args.phase,
        allow_partial_points=args.allow_partial_points, reorder_annotation=args.reorder_annotation,
        intensity=args.intensity, overwrite=args.overwrite)
