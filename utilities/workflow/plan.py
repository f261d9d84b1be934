"""The plan step: read a dataset's fingerprint and choose the stage-1 and SCM flags from it.

nnU-Net configures itself from a dataset fingerprint; this does the same for point supervision.
What is read: the cases that train (the training cases; with :func:`every_case_trains`, the
validation cases too; inference cases are never looked at), in any image format the other
scripts read, and every size in the trainers' frame (the R, A, S axes the trainers reorient
each volume to, :func:`utilities.data.loading.canonical_axes`), so that a scan stored (z, y, x) plans
as the same scan stored RAS:

* the images' headers (voxel size, volume size) and intensities (mean, std, percentiles over
  the non-zero voxels of each image, nnU-Net style);
* the 7-point annotations: each lesion's box from its six extreme points (the lesion spans the
  voxels strictly between them), its size in voxels and mm, lesions per case;
* optionally the expanded seeds: the foreground share of the volume and of the annotated voxels,
  and the share of the points' boxes (labels 1 and 2) that the seed cores (label 1) fill in the
  median case (``seed_core_of_boxes``; no rule reads it: on the third held-back set of the
  dataset family it did not tell where the full-weight mCRF costs, docs/results/family.md).

The rules, each giving :class:`Choice` records (a flag, its value and the reason written next to
it in ``plan.json``; :func:`make_plan` makes the sections and ``why`` from them):

* ``--spatial_shape``: the whole volume (rounded up to 16) when it has at most
  ``max_patch_voxels`` voxels; otherwise the axis with the most room over twice the
  90th-percentile lesion box gives way, 16 voxels at a time, until it fits or that box stops it
  (then the plan's ``warnings`` give the patch's voxels and the limit; patches are drawn
  uniformly from the volume, one per case and epoch: a patch much larger than the lesion is one
  that usually holds it, and with it the foreground seeds);
* ``--down_size`` (the mCRF grid): the in-plane axes halved, as in the paper, only when the
  25th-percentile lesion keeps at least ``min_crf_voxels`` (100) voxels on the halved grid;
  otherwise full resolution (docs/results/collapse.md §1: small lesions on a coarse grid are mostly
  boundary and the mCRF shrinks them); the through-plane axis is never down-sampled;
* ``--kernel_radius`` and ``--crf_sigma_xy`` in voxels of that grid: the paper's 5 and 6 when the
  25th-percentile lesion spans at least 11 grid voxels in plane, else a window that fits it
  (radius ``max(2, d // 2)``, sigma radius + 1);
* the seed loss, from the share of a patch the median case's lesions cover (``lesions_per_case``
  x ``lesion_voxels_p50`` / patch voxels): at least ``min_fg_dice_lesion_share`` (0.1 %),
  nnU-Net's Dice+CE (``--seg_dice foreground``, the plain CE), which starts empty and grows
  (``--empty_start_epochs``); below it, the paper's Dice with ``--seg_class_balance``, without
  which the background seeds pull every prediction to empty in the first epoch
  (docs/guide/collapse.md). On the development data (docs/results/ingredients.md, sixth to
  eighth rounds): nnU-Net's Dice+CE equalled the class-balanced loss on the VS-like demo data
  (0.86 % of a patch; 0.883 against 0.880), beat it on the dataset family's members 6 and 15
  (0.20 % and 0.15 %; 0.643 against 0.030, 0.852 against 0.835), never started on brats_small
  (0.02 %; 0.001 against 0.937) and started in one of two runs on brats_small cut to 64x64x16
  patches (0.06 %; eighth round);
* the recipe's optimiser (:data:`utilities.method.defaults.RECIPE`: momentum 0.9, gradient clipping 12);
* the schedule in optimisation steps: ``--max_epochs`` so that the run makes about
  ``target_steps`` steps (at least ``min_epochs`` epochs), the ramp-up over a quarter of them,
  advanced per step (``--rampup_unit step``), after a warm-up of a tenth (at least one epoch) of
  partial DiceCE alone; SCM half as many epochs, teachers refreshed five times;
* ``--train_on_all_cases`` when the split has no validation case or fewer than
  ``min_cases_for_validation`` (5) training + validation cases: every case trains and the best
  checkpoint is chosen on the training cases' expanded seeds (``seed_dice``);
* ``--on_collapse recover``: a collapse the health rule sees (``utilities/method/health.py``: empty
  predictions, or a flood) restores the last healthy epoch and continues with the change its
  kind calls for (``train_gatedcrfloss3d22d_multiview_varianceloss.Stage1Recovery``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import SimpleITK as sitk

from utilities.core.arguments import ArgumentParser, record_origins, typed_flags
from utilities.core.files import existing_file
from utilities.core.textdata import loads_json
from utilities.data.grid import Grid, check_same_grid, find_subject_file, listed, missing_files
from utilities.data.io import image_extension, read_image, save_text
from utilities.data.loading import in_trainer_frame
from utilities.data.splits import Split, as_split, read_split, subjects_of
from utilities.method.defaults import (
    AUXILIARY_NETWORK,
    CRF_SIGMA_XY,
    GEODESIC_THRESHOLD,
    GEODESIC_WEIGHT,
    KERNEL_RADIUS,
    LABEL_POSTFIX,
    PRIMARY_NETWORK,
    RECIPE,
    SEED_FOLDER,
    SEED_POSTFIX,
    SPATIAL_SHAPE,
    STAGE0_SCRIPT,
    STAGE1_SCRIPT,
)
from utilities.method.intensity import SCAN_DEFAULT
from utilities.method.sequence import command, flag_args, teacher_args
from utilities.workflow.stage0 import output_folder

__all__ = ["PLAN_VERSION", "PlanRules", "Fingerprint", "fingerprint", "every_case_trains", "lesion_boxes",
           "lesion_share", "Choice", "flags_of", "reasons_of",
           "make_plan", "read_plan", "write_plan", "apply_plan", "add_off_switches", "flag_args", "SECTIONS",
           "STAGE1_SCRIPT", "STAGE0_SCRIPT", "DataPaths", "Workspace", "stage0_phases", "dataset_values",
           "pipeline_commands"]

PLAN_VERSION = 1
#: The sections of ``plan.json`` a script reads with ``--plan``.
SECTIONS = ("stage1", "scm", "inference")


@dataclass(frozen=True)
class PlanRules:
    """The knobs of the rules (module docstring); the defaults are what ``plan.py`` uses.

    ``min_cases_for_validation``: with fewer training + validation cases than this, every case
    trains (``--train_on_all_cases``): one held-out case would cost a large share of the data and
    select checkpoints on a single volume. ``min_fg_dice_lesion_share``: the share of a patch the
    median case's lesions must cover for nnU-Net's Dice+CE (else the class-balanced paper loss)."""

    target_steps: int = 12000
    min_epochs: int = 20
    max_patch_voxels: int = math.prod(SPATIAL_SHAPE)
    min_crf_voxels: float = 100.0
    rampup_fraction: float = 0.25
    warmup_fraction: float = 0.1
    min_cases_for_validation: int = 5
    min_fg_dice_lesion_share: float = 0.001


@dataclass(frozen=True)
class Fingerprint:
    """What the plan reads from the cases that train, in the trainers' frame (R, A, S axes after
    their reorientation, :func:`utilities.data.loading.canonical_axes`; sizes in voxels unless mm).

    ``training_cases``: the cases read (those that train); ``validation_cases``: the split's
    validation cases kept for checkpoint selection (0 when every case trains)."""

    training_cases: int
    spacing_mm: tuple[float, float, float]
    volume_size: tuple[int, int, int]
    intensity: dict[str, float]
    lesions: int
    lesions_per_case: float
    box_p25: tuple[float, float, float]
    box_p50: tuple[float, float, float]
    box_p90: tuple[float, float, float]
    lesion_voxels_p25: float
    lesion_voxels_p50: float
    lesion_mm_p50: tuple[float, float, float]
    seed_fg_share: float | None          # expanded seeds: foreground voxels / all voxels
    seed_fg_of_annotated: float | None   # foreground voxels / (foreground + background) voxels
    validation_cases: int = 0
    image_format: str = ".nii.gz"        # the images' file format (the most frequent one)
    seed_core_of_boxes: float | None = None  # median case: the seed cores (1) / the boxes (1 and 2)


def _rounded(values: Iterable[Any], digits: int) -> tuple[float, float, float]:
    """``values`` (x, y, z of 3D images) as a tuple of floats rounded to ``digits``."""
    return cast("tuple[float, float, float]", tuple(round(float(v), digits) for v in values))


def lesion_boxes(annotation: np.ndarray) -> list[np.ndarray]:
    """Per lesion (points 2k - 1 background, 2k foreground) of a (z, y, x) annotation: the
    lesion's extent in voxels per axis (z, y, x), the voxels strictly between its extreme points."""
    boxes = []
    values = set(np.unique(annotation).astype(int).tolist()) - {0}
    for k in range(1, max(values, default=0) // 2 + 2):
        points = np.argwhere(annotation == 2 * k - 1)
        if len(points) == 0:
            continue
        boxes.append(np.maximum(points.max(0) - points.min(0) - 1, 1).astype(float))
    return boxes


def every_case_trains(split: Split | str | os.PathLike, rules: PlanRules = PlanRules()) -> bool:
    """Whether every training and validation case trains (no validation): the split lists no
    validation case, or fewer than ``rules.min_cases_for_validation`` training + validation cases."""
    split = as_split(split)
    n_val = len(split.subjects("validation"))
    return n_val == 0 or len(split.subjects("training")) + n_val < rules.min_cases_for_validation


@dataclass
class _Cases:
    """The per-case measurements (trainers' frame) gathered by :func:`fingerprint`."""

    spacings: list[tuple[float, ...]]
    sizes: list[tuple[int, ...]]
    stats: list[list[float]]
    boxes: list[tuple[float, ...]]
    per_case: list[int]
    formats: list[str]
    fg: int = 0
    bg: int = 0
    total: int = 0
    core_shares: list[float] = field(default_factory=list)


def _check_inputs(subjects: Sequence[str], folders: Sequence[tuple[str | os.PathLike, str, str, str]]) -> None:
    """Every file of every subject exists (all missing ones named in one error)."""
    missing, flags = [], []
    for folder, postfix, what, flag in folders:
        found = missing_files(subjects, folder, postfix, what)
        missing += found
        flags += [flag] if found else []
    if missing:
        raise FileNotFoundError(f"{len(missing)} file(s) of the cases the plan reads are missing: {listed(missing)}; "
                                f"check {' and '.join(flags)} or the split")


def _read_case(cases: _Cases, subject: str, images: tuple[str | os.PathLike, str],
               annotations: tuple[str | os.PathLike, str], seeds: tuple[str | os.PathLike, str] | None) -> None:
    """Measure one case into ``cases``: its image, annotation (and seeds) on one grid."""
    image_path = find_subject_file(images[0], subject, images[1], "image")
    image = read_image(image_path, "image")
    grid = Grid.of(image)
    affine = grid.affine()
    cases.spacings.append(in_trainer_frame(image.GetSpacing(), affine))
    cases.sizes.append(in_trainer_frame(image.GetSize(), affine))
    cases.formats.append(image_extension(image_path) or ".nii.gz")
    array = sitk.GetArrayViewFromImage(image)
    values = array[array != 0] if np.any(array != 0) else array.ravel()
    cases.stats.append([values.mean(), values.std(), *np.percentile(values, [0.5, 99.5])])
    anno_path = find_subject_file(annotations[0], subject, annotations[1], "7-point annotation")
    anno_image = read_image(anno_path, "7-point annotation")
    check_same_grid(grid, image_path, "image", Grid.of(anno_image), anno_path, "7-point annotation",
                    "write the points on the image's grid (data/points_to_annotation.py)")
    mine = lesion_boxes(sitk.GetArrayFromImage(anno_image))
    if not mine:
        raise ValueError(f"{subject}: the 7-point annotation {anno_path} has no lesion (no background points 1, "
                         "3, ...); the plan needs every training case annotated")
    cases.boxes += [in_trainer_frame(box[::-1].tolist(), affine) for box in mine]   # (z, y, x) -> x, y, z -> R, A, S
    cases.per_case.append(len(mine))
    if seeds is not None:
        seeds_path = find_subject_file(seeds[0], subject, seeds[1], "expanded seeds")
        seeds_image = read_image(seeds_path, "expanded seeds")
        check_same_grid(grid, image_path, "image", Grid.of(seeds_image), seeds_path, "expanded seeds",
                        "run stage 0 on these images again")
        labels = sitk.GetArrayViewFromImage(seeds_image)
        core, unknown = int(np.count_nonzero(labels == 1)), int(np.count_nonzero(labels == 2))
        cases.fg += core
        cases.bg += int(np.count_nonzero(labels == 0))
        cases.total += labels.size
        if core + unknown:
            cases.core_shares.append(core / (core + unknown))


def fingerprint(dataset_split: Split | str | os.PathLike, path_images: str | os.PathLike, image_postfix: str,
                path_anno_7points: str | os.PathLike, anno_7points_postfix: str,
                path_geodesic_labels: str | os.PathLike | None = None,
                geodesic_label_postfix: str = SEED_POSTFIX, rules: PlanRules = PlanRules()) -> Fingerprint:
    """Read the cases that train (see the module docstring): the split's training cases, and its
    validation cases too when :func:`every_case_trains`. Images are read in any format of
    :data:`utilities.data.io.IMAGE_EXTENSIONS`; every size is measured in the trainers' frame."""
    split = as_split(dataset_split)
    every = every_case_trains(split, rules)
    subjects = split.subjects("training") + (split.subjects("validation") if every else [])
    if not subjects:
        raise ValueError(f"split file {split} has no training case; the plan reads the training cases")
    folders = [(path_images, image_postfix, "image", "--path_images/--image_postfix"),
               (path_anno_7points, anno_7points_postfix, "7-point annotation",
                "--path_anno_7points/--anno_7points_postfix")]
    if path_geodesic_labels is not None:
        folders.append((path_geodesic_labels, geodesic_label_postfix, "expanded seeds",
                        "--path_geodesic_labels/--geodesic_label_postfix"))
    _check_inputs(subjects, folders)
    cases = _Cases([], [], [], [], [], [])
    seeds = None if path_geodesic_labels is None else (path_geodesic_labels, geodesic_label_postfix)
    for subject in subjects:
        _read_case(cases, subject, (path_images, image_postfix), (path_anno_7points, anno_7points_postfix), seeds)
    return _summary(cases, 0 if every else len(split.subjects("validation")), seeds is not None)


def _summary(cases: _Cases, validation_cases: int, with_seeds: bool) -> Fingerprint:
    """The :class:`Fingerprint` of the measured cases (medians and percentiles over them)."""
    box = np.array(cases.boxes, dtype=float)              # R, A, S voxels
    spacing = np.median(np.array(cases.spacings, dtype=float), axis=0)
    voxels = math.pi / 6 * np.prod(box, axis=1)           # an ellipsoid in the box
    s = np.median(np.array(cases.stats), axis=0)
    return Fingerprint(
        training_cases=len(cases.sizes), spacing_mm=_rounded(spacing, 4),
        volume_size=cast("tuple[int, int, int]", tuple(int(v) for v in np.median(np.array(cases.sizes), axis=0))),
        intensity={"mean": round(float(s[0]), 6), "std": round(float(s[1]), 6), "p00_5": round(float(s[2]), 6),
                   "p99_5": round(float(s[3]), 6)},
        lesions=len(box), lesions_per_case=round(float(np.mean(cases.per_case)), 3),
        box_p25=_rounded(np.percentile(box, 25, axis=0), 2),
        box_p50=_rounded(np.percentile(box, 50, axis=0), 2),
        box_p90=_rounded(np.percentile(box, 90, axis=0), 2),
        lesion_voxels_p25=round(float(np.percentile(voxels, 25)), 1),
        lesion_voxels_p50=round(float(np.percentile(voxels, 50)), 1),
        lesion_mm_p50=_rounded(np.percentile(box * spacing, 50, axis=0), 2),
        seed_fg_share=round(cases.fg / max(cases.total, 1), 6) if with_seeds else None,
        seed_fg_of_annotated=round(cases.fg / max(cases.fg + cases.bg, 1), 6) if with_seeds else None,
        validation_cases=validation_cases, image_format=max(sorted(set(cases.formats)), key=cases.formats.count),
        seed_core_of_boxes=(round(float(np.median(cases.core_shares)), 6) if with_seeds and cases.core_shares
                            else None))


def _ceil16(n: float) -> int:
    return max(16, int(math.ceil(n / 16.0)) * 16)


def _patch(fp: Fingerprint, rules: PlanRules) -> list[int]:
    lower = [_ceil16(2.0 * b + 2) for b in fp.box_p90]            # twice the 90th-percentile lesion box
    patch = [_ceil16(v) for v in fp.volume_size]                   # the whole volume, when it fits
    lower = [min(lo, p) for lo, p in zip(lower, patch)]
    while math.prod(patch) > rules.max_patch_voxels:
        slack = [p / lo if p - 16 >= lo else 0.0 for p, lo in zip(patch, lower)]
        if max(slack) == 0.0:
            break                                                  # the lesion boxes need more than the budget
        patch[int(np.argmax(slack))] -= 16
    return patch


def _patch_reason(fp: Fingerprint, rules: PlanRules, patch: list[int]) -> tuple[str, str | None]:
    """Why ``patch`` (the ``why`` entry of ``--spatial_shape``) and, when it exceeds the budget,
    the warning that says so."""
    voxels, limit = math.prod(patch), rules.max_patch_voxels
    whole = [_ceil16(v) for v in fp.volume_size]
    if patch == whole and voxels <= limit:
        return (f"the whole volume {list(fp.volume_size)}, as {patch} ({voxels} voxels), fits --max_patch_voxels "
                f"{limit}"), None
    if voxels <= limit:
        return (f"{voxels} voxels within --max_patch_voxels {limit} (the volume {list(fp.volume_size)} would be "
                f"{math.prod(whole)}), at least twice the 90th-percentile lesion box {list(fp.box_p90)} where it "
                "allows"), None
    warning = (f"the patch {patch} has {voxels} voxels, more than --max_patch_voxels {limit}: twice the "
               f"90th-percentile lesion box {list(fp.box_p90)} needs it; raise --max_patch_voxels if the device "
               "holds it, or pass the trainers a smaller --spatial_shape (patches then cut the largest lesions)")
    return warning, warning


def _every_case_reason(fp: Fingerprint, rules: PlanRules) -> str:
    return (f"{fp.training_cases} case(s) and no validation case held out (the split lists none, or fewer than "
            f"{rules.min_cases_for_validation} training + validation cases): every case trains, CP_best is chosen "
            "by seed_dice on the training cases' expanded seeds (their fit to the seeds), CP_final is the last epoch")


@dataclass(frozen=True)
class Choice:
    """One flag the plan chooses: its value (as ``plan.json`` holds it) and, where the rule has
    one, the reason written next to it (``plan.json``'s ``why``, the comment ``plan.py`` prints)."""

    flag: str
    value: Any
    reason: str | None = None


def flags_of(choices: Sequence[Choice]) -> dict[str, Any]:
    """``{flag: value}`` of ``choices``, in their order (a section of ``plan.json``)."""
    return {c.flag: c.value for c in choices}


def reasons_of(choices: Sequence[Choice]) -> dict[str, str]:
    """``{flag: reason}`` of the ``choices`` that give one, in their order (``plan.json``'s ``why``)."""
    return {c.flag: c.reason for c in choices if c.reason is not None}


def _crf_window(fp: Fingerprint, rules: PlanRules, patch: list[int]) -> list[Choice]:
    """The mCRF grid and window (module docstring), with their reasons."""
    halved = fp.lesion_voxels_p25 / 4.0 >= rules.min_crf_voxels and min(patch[:2]) >= 64
    factor = 2 if halved else 1
    diameter = min(fp.box_p25[0], fp.box_p25[1]) / factor      # in-plane lesion span on the mCRF grid
    if diameter >= 2 * KERNEL_RADIUS[0] + 1:
        radius, sigma = KERNEL_RADIUS[0], CRF_SIGMA_XY
    else:
        radius = max(2, int(diameter // 2))
        sigma = float(radius + 1)
    down = (f"in plane halved: the 25th-percentile lesion keeps {fp.lesion_voxels_p25 / 4:.0f} voxels "
            f">= {rules.min_crf_voxels:.0f} on the halved grid" if halved else
            f"full resolution: the 25th-percentile lesion ({fp.lesion_voxels_p25:.0f} voxels) would "
            f"keep {fp.lesion_voxels_p25 / 4:.0f} < {rules.min_crf_voxels:.0f} voxels on a halved grid"
            if min(patch[:2]) >= 64 else "full resolution: the patch is under 64 voxels in plane")
    return [Choice("--down_size", [patch[0] // factor, patch[1] // factor, patch[2]], down),
            Choice("--kernel_radius", [radius, radius, KERNEL_RADIUS[2]],
                   f"the 25th-percentile lesion spans {diameter:.1f} voxels in plane on the mCRF grid"),
            Choice("--crf_sigma_xy", sigma)]


def _recipe() -> list[Choice]:
    """The recipe's optimiser (:data:`utilities.method.defaults.RECIPE`)."""
    reasons = {"--momentum": "the recipe's optimiser (momentum 0.99 overshoots into saturated logits)"}
    return [Choice(flag, value, reasons.get(flag)) for flag, value in RECIPE.flags().items()]


def _stage1_choices(fp: Fingerprint, rules: PlanRules, patch: list[int], patch_why: str) -> list[Choice]:
    """The stage-1 section of the plan (module docstring), each flag with its reason."""
    n = fp.training_cases
    epochs = _epochs(fp, rules)
    rampup = max(1, int(round(rules.rampup_fraction * epochs)))
    warmup = max(1, int(round(rules.warmup_fraction * epochs)))
    return [
        Choice("--network", PRIMARY_NETWORK),
        Choice("--spatial_shape", patch, patch_why),
        *_crf_window(fp, rules, patch),
        *_seed_loss(fp, rules, patch),
        *_recipe(),
        Choice("--max_epochs", epochs,
               f"about {rules.target_steps} steps over {n} training cases (at least {rules.min_epochs})"),
        Choice("--rampup_epochs", rampup, f"a quarter of the run, advanced per step ({rampup * n} steps)"),
        Choice("--rampup_unit", "step"),
        Choice("--warmup_epochs", warmup,
               f"a tenth of the run (at least one epoch) of partial DiceCE alone ({warmup * n} steps)"),
        Choice("--on_collapse", "recover",
               "the safety net: a collapse (empty predictions, or a flood of the full-weight mCRF on small lesions) "
               "restores the last healthy epoch and continues with what it calls for"),
        *_every_case(fp, rules),
    ]


def lesion_share(fp: Fingerprint, patch: Sequence[int]) -> float:
    """The share of a patch the median case's lesions cover: ``lesions_per_case`` x
    ``lesion_voxels_p50`` / the patch's voxels."""
    return fp.lesions_per_case * fp.lesion_voxels_p50 / math.prod(patch)


def _seed_loss(fp: Fingerprint, rules: PlanRules, patch: Sequence[int]) -> list[Choice]:
    """nnU-Net's Dice+CE, or the paper's Dice with the class-balanced CE (module docstring)."""
    share = lesion_share(fp, patch)
    if share >= rules.min_fg_dice_lesion_share:
        return [Choice("--seg_dice", "foreground",
                       f"the median case's lesions cover {share:.3%} of a patch (>= "
                       f"{rules.min_fg_dice_lesion_share:.2%}): nnU-Net's Dice+CE, which starts empty and then grows")]
    seeds = ("" if fp.seed_fg_of_annotated is None
             else f"; the foreground seeds are {fp.seed_fg_of_annotated:.3%} of the annotated voxels")
    return [Choice("--seg_class_balance", True,
                   f"the median case's lesions cover {share:.3%} of a patch (< {rules.min_fg_dice_lesion_share:.2%}), "
                   f"where nnU-Net's Dice+CE did not start: the paper's Dice, the CE class-balanced{seeds}")]


def _epochs(fp: Fingerprint, rules: PlanRules) -> int:
    """Stage 1's epochs: about ``rules.target_steps`` steps, at least ``rules.min_epochs``."""
    return max(rules.min_epochs, int(math.ceil(rules.target_steps / fp.training_cases)))


def _every_case(fp: Fingerprint, rules: PlanRules) -> list[Choice]:
    """``--train_on_all_cases`` when no validation case is held out."""
    return [Choice("--train_on_all_cases", True, _every_case_reason(fp, rules))] if fp.validation_cases == 0 else []


def _scm_choices(fp: Fingerprint, rules: PlanRules, patch: list[int]) -> list[Choice]:
    """SCM: stage 1's patch and recipe, half its epochs, the teachers refreshed five times."""
    scm_epochs = max(4, _epochs(fp, rules) // 2)
    return [Choice("--network1", PRIMARY_NETWORK), Choice("--network2", AUXILIARY_NETWORK),
            Choice("--spatial_shape", patch), *_recipe(), Choice("--max_epochs", scm_epochs),
            Choice("--iterative_epochs", max(1, scm_epochs // 5)), *_every_case(fp, rules)]


def make_plan(fp: Fingerprint, rules: PlanRules = PlanRules()) -> dict[str, Any]:
    """The plan: per section the flags, and per flag the reason; ``warnings``: what the user
    must know (a patch over the budget)."""
    patch = _patch(fp, rules)
    patch_why, patch_warning = _patch_reason(fp, rules, patch)
    stage1 = _stage1_choices(fp, rules, patch, patch_why)
    inference = [Choice("--network", PRIMARY_NETWORK), Choice("--spatial_shape", patch)]
    return {"version": PLAN_VERSION, "fingerprint": asdict(fp), "rules": asdict(rules), "stage1": flags_of(stage1),
            "scm": flags_of(_scm_choices(fp, rules, patch)), "inference": flags_of(inference),
            "why": reasons_of(stage1), "warnings": [patch_warning] if patch_warning else []}


# ------------------------------------------------------------------------------ the commands
#: Stage 0 as the plan prints it: the entry point for a user's scans (``STAGE0_SCRIPT``), in the
#: VS style (no voxel is zeroed at the image's minimum, which suits any scan) with the intensity
#: normalisation chosen for raw scanner intensities, at the paper's weight and threshold.
STAGE0_WEIGHT, STAGE0_THRESHOLD = GEODESIC_WEIGHT, GEODESIC_THRESHOLD
#: The postfix stage 0 writes the expanded seeds with.
STAGE0_POSTFIX = SEED_POSTFIX


@dataclass(frozen=True)
class DataPaths:
    """The data flags given to ``plan.py`` (or named by its ``--dataset``); every printed command
    reads them from the dataset file of :func:`dataset_values`.
    ``path_labels`` ``None``: points only; ``path_geodesic_labels`` ``None``: stage 0 writes the
    expanded seeds into the :class:`Workspace`."""

    dataset_split: str
    path_images: str
    image_postfix: str
    path_anno_7points: str
    anno_7points_postfix: str
    path_labels: str | None = None
    label_postfix: str = LABEL_POSTFIX
    path_geodesic_labels: str | None = None
    geodesic_label_postfix: str = STAGE0_POSTFIX


@dataclass(frozen=True)
class Workspace:
    """Where the printed commands write, under one folder (``plan.py --work_dir``)."""

    root: Path

    def geodesic(self) -> Path:
        """Stage 0's ``--path_geodesic``."""
        return self.root / "geodesic"

    def seeds(self) -> Path:
        """The expanded seeds stage 0 writes there."""
        return output_folder(self.geodesic(), STAGE0_WEIGHT, STAGE0_THRESHOLD) / SEED_FOLDER

    def model(self, name: str) -> Path:
        """A run's ``--model_dir``: ``stage1_m1``, ``stage1_m2`` or ``scm``."""
        return self.root / "runs" / name

    def predictions(self) -> Path:
        """Folder prediction's ``--output_folder``."""
        return self.root / "predictions"


def stage0_phases(split: Split, paths: DataPaths) -> list[str | None]:
    """The ``--phase`` of each stage-0 command: one command for the whole split (``None``) when
    every case of it has an annotation, else one per phase that trains or validates."""
    if not missing_files(split.subjects(None), paths.path_anno_7points, paths.anno_7points_postfix, "annotation"):
        return [None]
    return [phase for phase in ("training", "validation") if split.subjects(phase)]


def dataset_values(paths: DataPaths, work: Workspace) -> dict[str, str | None]:
    """The values of the dataset file (:mod:`utilities.data.dataset_file`) the printed commands read:
    the data flags given to ``plan.py``, and the expanded seeds (given, or stage 0's in ``work``)."""
    seeds = paths.path_geodesic_labels or str(work.seeds())
    return {"split": paths.dataset_split, "images": paths.path_images, "image_postfix": paths.image_postfix,
            "annotations": paths.path_anno_7points, "annotation_postfix": paths.anno_7points_postfix,
            "labels": paths.path_labels, "label_postfix": paths.label_postfix, "seeds": seeds,
            "seed_postfix": paths.geodesic_label_postfix if paths.path_geodesic_labels else STAGE0_POSTFIX}


def _stage0(dataset: str, work: Workspace, phase: str | None) -> list[str]:
    return command("stage0", ["--style", "vs", "--intensity", SCAN_DEFAULT, "--dataset", dataset,
                              "--path_geodesic", str(work.geodesic()), "--geodesic_weight", str(STAGE0_WEIGHT),
                              "--geodesic_threshold", str(STAGE0_THRESHOLD), *(["--phase", phase] if phase else [])])


def _format_flag(image_format: str) -> str:
    """``--output_format`` for images of ``image_format`` (a header/data pair: its one-file form)."""
    return {".nhdr": "nrrd", ".mhd": "mha"}.get(image_format, image_format.lstrip("."))


def pipeline_commands(paths: DataPaths, work: Workspace, plan_path: str | os.PathLike,
                      dataset_path: str | os.PathLike, plan: dict[str, Any],
                      stage0: Sequence[str | None] = ()) -> dict[str, str]:
    """The command lines, in the order they run, for the data the plan read: stage 0 (one per
    ``stage0`` phase; none when the seeds exist), both stage-1 networks, SCM, folder prediction
    and (with labels) scoring. Every command reads the data from the dataset file
    ``dataset_path`` (of :func:`dataset_values`) by ``--dataset``, so that none falls back to a
    default naming another dataset; without labels, or when every case trains, checkpoints are
    selected by ``seed_dice``. Every path is absolute (the commands run from the repository
    root, wherever plan.py ran). The prediction covers every image of the folder; the score only the
    split's held-out cases (:func:`scored_phase`), in ``results_<phase>.csv``, so that no mean
    Dice mixes in the cases the networks trained on."""
    metric = "dice" if paths.path_labels and plan["fingerprint"]["validation_cases"] else "seed_dice"
    # absolute: the commands run from the repository root (python inference.py ...), not from
    # where plan.py ran
    work = Workspace(Path(os.path.abspath(work.root)))
    dataset = os.path.abspath(dataset_path)
    data = ["--dataset", dataset, "--val_metric", metric]
    use = ["--plan", os.path.abspath(plan_path)]
    m1, m2, scm = (str(work.model(name)) for name in ("stage1_m1", "stage1_m2", "scm"))
    lines: dict[str, list[str]] = {f"stage0_{phase}" if phase else "stage0": _stage0(dataset, work, phase)
                                   for phase in stage0}
    lines["stage1"] = command("stage1", use, data, ["--model_dir", m1])
    lines["stage1_aux"] = command("stage1", use, ["--network", plan["scm"]["--network2"]], data, ["--model_dir", m2])
    lines["scm"] = command("scm", use, data, teacher_args(m1, m2), ["--model_dir", scm])
    lines["predict"] = command("inference", plan["inference"],
                               ["--model_dir", scm, "--epoch_inf", "best_model1", "--dataset", dataset,
                                "--input_folder", os.path.abspath(paths.path_images),
                                "--output_folder", str(work.predictions()),
                                "--output_format", _format_flag(plan["fingerprint"]["image_format"])])
    if paths.path_labels:
        lines["score"] = command("scores", ["--dataset", dataset, "--prediction_dir", str(work.predictions()),
                                            "--prediction_postfix", f"_{paths.image_postfix}",
                                            "--phase", scored_phase(paths.dataset_split)])
    return {name: shlex.join(line) for name, line in lines.items()}


def scored_phase(dataset_split: str | os.PathLike) -> str:
    """The phase whose cases the printed score command measures: ``inference`` (held out from
    training and checkpoint selection) when the split has any, else ``validation``, else
    ``training`` (every case trained: the table's name says so)."""
    split = read_split(dataset_split)
    return next((phase for phase in ("inference", "validation") if subjects_of(split, phase)), "training")


def write_plan(plan: dict[str, Any], path: str | os.PathLike) -> None:
    save_text(json.dumps(plan, indent=2) + "\n", path)


def read_plan(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``plan.json`` with one-line errors naming the file."""
    path = existing_file(path, "--plan file", " (write one with plan.py)", "; pass the plan.json that plan.py wrote")
    try:
        plan = loads_json(path.read_text(encoding="utf-8"), f"--plan {path}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--plan {path} is not valid JSON ({e}); write it again with plan.py") from None
    if not isinstance(plan, dict) or plan.get("version") != PLAN_VERSION:
        raise ValueError(f"--plan {path} is not a plan of version {PLAN_VERSION} (written by plan.py); "
                         "write it again with plan.py")
    for section in SECTIONS:
        if not isinstance(plan.get(section), dict):
            raise ValueError(f"--plan {path} has no {section!r} section of flags; write it again with plan.py")
    return plan


def _convert(action: argparse.Action, value: Any, flag: str, path: Path) -> Any:
    if value is None:
        raise ValueError(f"--plan {path}: {flag} is null; give it a value, or remove the key to keep the script's "
                         "default")
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ValueError(f"--plan {path}: {flag} is a switch, its value must be true or false, got {value!r}")
        return value
    values = value if isinstance(value, list) else [value]
    convert = action.type if callable(action.type) else str
    try:
        out = [convert(str(v)) for v in values]
    except (argparse.ArgumentTypeError, ValueError) as e:
        raise ValueError(f"--plan {path}: {flag} {value!r}: {e}") from None
    if action.choices is not None and any(v not in action.choices for v in out):
        raise ValueError(f"--plan {path}: {flag} must be one of {list(action.choices)}, got {value!r}")
    if action.nargs is None or action.nargs == "?":
        if len(out) != 1:
            raise ValueError(f"--plan {path}: {flag} takes one value, got {value!r}")
        return out[0]
    if isinstance(action.nargs, int) and len(out) != action.nargs:
        raise ValueError(f"--plan {path}: {flag} takes {action.nargs} values, got {value!r}")
    return out


def add_off_switches(parser: argparse.ArgumentParser) -> None:
    """Give every switch ``--<name>`` of ``parser`` (a ``store_true`` flag) its off form
    ``--no_<name>`` (unless it has one), so that a switch a plan turns on can be turned off on the
    command line; the last of the two given wins."""
    options = {option for action in parser._actions for option in action.option_strings}
    for action in list(parser._actions):
        if not isinstance(action, argparse._StoreTrueAction):
            continue
        for option in action.option_strings:
            off = f"--no_{option[2:]}"
            if option.startswith("--") and off not in options:
                parser.add_argument(off, dest=action.dest, action="store_false", default=argparse.SUPPRESS,
                                    help=f"turn {option} off (e.g. where a --plan turns it on)")
                options.add(off)


def apply_plan(parser: argparse.ArgumentParser, argv: Sequence[str] | None, section: str) -> argparse.Namespace:
    """Parse ``argv`` with the flags of ``--plan``'s ``section`` as defaults: a flag given on
    the command line overrides the plan, a switch the plan turns on is turned off by its
    ``--no_<name>`` form (:func:`add_off_switches`). The parser must have a ``--plan`` argument."""
    add_off_switches(parser)
    pre = ArgumentParser(add_help=False)
    pre.add_argument("--plan", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.plan:
        path = Path(known.plan)
        flags = read_plan(path)[section]
        actions = {option: a for a in parser._actions for option in a.option_strings}
        defaults = {}
        for flag, value in flags.items():
            if flag not in actions:
                raise ValueError(f"--plan {path}: {flag} in its {section!r} section is not a flag of this script; "
                                 "write the plan again with plan.py")
            defaults[actions[flag].dest] = _convert(actions[flag], value, flag, path)
        parser.set_defaults(**defaults)
        args = parser.parse_args(argv)
        typed = typed_flags(parser, argv)
        record_origins([flag for flag in flags if actions[flag].dest not in typed], f"--plan {path}")
        return args
    return parser.parse_args(argv)
