"""The plan step: read a dataset's fingerprint and choose the stage-1 and SCM flags from it.

nnU-Net configures itself from a dataset fingerprint; this does the same for point supervision.
What is read (training cases only; validation and inference cases are never looked at):

* the images' headers (voxel size, volume size) and intensities (mean, std, percentiles over
  the non-zero voxels of each image, nnU-Net style);
* the 7-point annotations: each lesion's box from its six extreme points (the lesion spans the
  voxels strictly between them), its size in voxels and mm, lesions per case;
* optionally the expanded seeds: the foreground share of the volume and of the annotated voxels.

The rules (each one a reason written next to the flag in ``plan.json``):

* ``--spatial_shape``: the whole volume (rounded up to 16) when it has at most
  ``max_patch_voxels`` voxels; otherwise the axis with the most room over twice the
  90th-percentile lesion box gives way, 16 voxels at a time, until it fits (patches are drawn
  uniformly from the volume, one per case and epoch: a patch much larger than the lesion is one
  that usually holds it, and with it the foreground seeds);
* ``--down_size`` (the mCRF grid): the in-plane axes halved, as in the paper, only when the
  25th-percentile lesion keeps at least ``min_crf_voxels`` (100) voxels on the halved grid;
  otherwise full resolution (docs/collapse.md §1: small lesions on a coarse grid are mostly
  boundary and the mCRF shrinks them); the through-plane axis is never down-sampled;
* ``--kernel_radius`` and ``--crf_sigma_xy`` in voxels of that grid: the paper's 5 and 6 when the
  25th-percentile lesion spans at least 11 grid voxels in plane, else a window that fits it
  (radius ``max(2, d // 2)``, sigma radius + 1);
* ``--seg_class_balance`` always: the foreground seeds are a small share of the annotated voxels
  in every dataset we measured (0.02-0.5 %), and the plain mean lets the background seeds pull
  every prediction to empty in the first epoch (README, "When stage 1 predicts nothing");
* the recipe's optimiser (``--momentum 0.9 --grad_clip 12``);
* the schedule in optimisation steps: ``--max_epochs`` so that the run makes about
  ``target_steps`` steps (at least ``min_epochs`` epochs), the ramp-up over a quarter of them,
  advanced per step (``--rampup_unit step``), after a warm-up of a tenth (at least one epoch) of
  partial DiceCE alone; SCM half as many epochs, teachers refreshed five times;
* ``--on_collapse recover``: a collapse the health rule sees (``utilities/health.py``: empty
  predictions, or a flood) restores the last healthy epoch and continues with the change its
  kind calls for (``train_gatedcrfloss3d22d_multiview_varianceloss.Stage1Recovery``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import SimpleITK as sitk

from utilities.grid import subject_path
from utilities.io import read_image, save_text
from utilities.splits import read_split, subjects_of

__all__ = ["PLAN_VERSION", "PlanRules", "Fingerprint", "fingerprint", "make_plan", "read_plan", "write_plan",
           "apply_plan", "flag_args", "SECTIONS"]

PLAN_VERSION = 1
#: The sections of ``plan.json`` a script reads with ``--plan``.
SECTIONS = ("stage1", "scm", "inference")
STAGE1_SCRIPT = "train_gatedcrfloss3d22d_multiview_varianceloss.py"


@dataclass(frozen=True)
class PlanRules:
    """The knobs of the rules (module docstring); the defaults are what ``plan.py`` uses."""

    target_steps: int = 12000
    min_epochs: int = 20
    max_patch_voxels: int = 128 * 128 * 48
    min_crf_voxels: float = 100.0
    rampup_fraction: float = 0.25
    warmup_fraction: float = 0.1


@dataclass(frozen=True)
class Fingerprint:
    """What the plan reads from the training cases (axes x, y, z; sizes in voxels unless mm)."""

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


def _rounded(values: Iterable[Any], digits: int) -> tuple[float, float, float]:
    """``values`` (x, y, z of 3D images) as a tuple of floats rounded to ``digits``."""
    return cast("tuple[float, float, float]", tuple(round(float(v), digits) for v in values))


def _xyz(zyx: Sequence[float]) -> tuple[float, float, float]:
    return (float(zyx[2]), float(zyx[1]), float(zyx[0]))


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


def fingerprint(dataset_split: str | os.PathLike, path_images: str | os.PathLike, image_postfix: str,
                path_anno_7points: str | os.PathLike, anno_7points_postfix: str,
                path_geodesic_labels: str | os.PathLike | None = None,
                geodesic_label_postfix: str = "GeodesicLabel") -> Fingerprint:
    """Read the training cases of the split (see the module docstring)."""
    subjects = subjects_of(read_split(dataset_split), "training")
    if not subjects:
        raise ValueError(f"split file {dataset_split} has no training case; the plan reads the training cases")
    spacings, sizes, stats, boxes, per_case = [], [], [], [], []
    fg = bg = total = 0
    for subject in subjects:
        image = read_image(subject_path(path_images, subject, image_postfix), "image")
        spacings.append(image.GetSpacing())
        sizes.append(image.GetSize())
        array = sitk.GetArrayViewFromImage(image)
        values = array[array != 0] if np.any(array != 0) else array.ravel()
        stats.append([values.mean(), values.std(), *np.percentile(values, [0.5, 99.5])])
        anno = sitk.GetArrayFromImage(read_image(subject_path(path_anno_7points, subject, anno_7points_postfix),
                                                 "7-point annotation"))
        mine = lesion_boxes(anno)
        if not mine:
            where = subject_path(path_anno_7points, subject, anno_7points_postfix)
            raise ValueError(f"{subject}: the 7-point annotation {where} has no lesion (no background points 1, "
                             "3, ...); the plan needs every training case annotated")
        boxes += mine
        per_case.append(len(mine))
        if path_geodesic_labels is not None:
            seeds = sitk.GetArrayViewFromImage(read_image(
                subject_path(path_geodesic_labels, subject, geodesic_label_postfix), "expanded seeds"))
            fg += int(np.count_nonzero(seeds == 1))
            bg += int(np.count_nonzero(seeds == 0))
            total += seeds.size
    box = np.array(boxes)[:, ::-1]                     # (x, y, z) voxels
    spacing = np.median(np.array(spacings), axis=0)
    voxels = math.pi / 6 * np.prod(box, axis=1)        # an ellipsoid in the box
    s = np.median(np.array(stats), axis=0)
    return Fingerprint(
        training_cases=len(subjects), spacing_mm=_rounded(spacing, 4),
        volume_size=cast("tuple[int, int, int]", tuple(int(v) for v in np.median(np.array(sizes), axis=0))),
        intensity={"mean": round(float(s[0]), 6), "std": round(float(s[1]), 6), "p00_5": round(float(s[2]), 6),
                   "p99_5": round(float(s[3]), 6)},
        lesions=len(boxes), lesions_per_case=round(float(np.mean(per_case)), 3),
        box_p25=_rounded(np.percentile(box, 25, axis=0), 2),
        box_p50=_rounded(np.percentile(box, 50, axis=0), 2),
        box_p90=_rounded(np.percentile(box, 90, axis=0), 2),
        lesion_voxels_p25=round(float(np.percentile(voxels, 25)), 1),
        lesion_voxels_p50=round(float(np.percentile(voxels, 50)), 1),
        lesion_mm_p50=_rounded(np.percentile(box * spacing, 50, axis=0), 2),
        seed_fg_share=None if path_geodesic_labels is None else round(fg / max(total, 1), 6),
        seed_fg_of_annotated=None if path_geodesic_labels is None else round(fg / max(fg + bg, 1), 6))


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


def make_plan(fp: Fingerprint, rules: PlanRules = PlanRules()) -> dict[str, Any]:
    """The plan: per section the flags, and per flag the reason."""
    patch = _patch(fp, rules)
    halved = fp.lesion_voxels_p25 / 4.0 >= rules.min_crf_voxels and min(patch[:2]) >= 64
    factor = 2 if halved else 1
    down = [patch[0] // factor, patch[1] // factor, patch[2]]
    diameter = min(fp.box_p25[0], fp.box_p25[1]) / factor      # in-plane lesion span on the mCRF grid
    if diameter >= 11:
        radius, sigma = 5, 6.0
    else:
        radius = max(2, int(diameter // 2))
        sigma = float(radius + 1)
    n = fp.training_cases
    epochs = max(rules.min_epochs, int(math.ceil(rules.target_steps / n)))
    rampup = max(1, int(round(rules.rampup_fraction * epochs)))
    warmup = max(1, int(round(rules.warmup_fraction * epochs)))
    scm_epochs = max(4, epochs // 2)
    stage1 = {"--network": "U_Net2D5", "--spatial_shape": patch, "--down_size": down,
              "--kernel_radius": [radius, radius, -1], "--crf_sigma_xy": sigma, "--seg_class_balance": True,
              "--momentum": 0.9, "--grad_clip": 12.0, "--max_epochs": epochs, "--rampup_epochs": rampup,
              "--rampup_unit": "step", "--warmup_epochs": warmup, "--on_collapse": "recover"}
    why = {
        "--spatial_shape": f"the volume {list(fp.volume_size)} within {rules.max_patch_voxels} voxels, at least "
                           f"twice the 90th-percentile lesion box {list(fp.box_p90)} where it allows",
        "--down_size": (f"in plane halved: the 25th-percentile lesion keeps {fp.lesion_voxels_p25 / 4:.0f} voxels "
                        f">= {rules.min_crf_voxels:.0f} on the halved grid" if halved else
                        f"full resolution: the 25th-percentile lesion ({fp.lesion_voxels_p25:.0f} voxels) would "
                        f"keep {fp.lesion_voxels_p25 / 4:.0f} < {rules.min_crf_voxels:.0f} voxels on a halved grid"
                        if min(patch[:2]) >= 64 else "full resolution: the patch is under 64 voxels in plane"),
        "--kernel_radius": f"the 25th-percentile lesion spans {diameter:.1f} voxels in plane on the mCRF grid",
        "--seg_class_balance": "always (foreground seeds are a tiny share of the annotated voxels)"
                               + ("" if fp.seed_fg_of_annotated is None else
                                  f"; here {fp.seed_fg_of_annotated:.3%} of them"),
        "--momentum": "the recipe's optimiser (momentum 0.99 overshoots into saturated logits)",
        "--max_epochs": f"about {rules.target_steps} steps over {n} training cases (at least {rules.min_epochs})",
        "--rampup_epochs": f"a quarter of the run, advanced per step ({rampup * n} steps)",
        "--warmup_epochs": f"a tenth of the run (at least one epoch) of partial DiceCE alone ({warmup * n} steps)",
        "--on_collapse": "the safety net: a collapse (empty predictions, or a flood of the full-weight mCRF on "
                         "small lesions) restores the last healthy epoch and continues with what it calls for",
    }
    scm = {"--network1": "U_Net2D5", "--network2": "AttU_Net", "--spatial_shape": patch, "--momentum": 0.9,
           "--grad_clip": 12.0, "--max_epochs": scm_epochs, "--iterative_epochs": max(1, scm_epochs // 5)}
    inference = {"--network": "U_Net2D5", "--spatial_shape": patch}
    return {"version": PLAN_VERSION, "fingerprint": asdict(fp), "rules": asdict(rules), "stage1": stage1,
            "scm": scm, "inference": inference, "why": why}


def flag_args(flags: dict[str, Any]) -> list[str]:
    """Flags as JSON holds them to an argument list: ``{"--a": 1, "--b": [2, 3], "--c": true,
    "--d": null}`` -> ``["--a", "1", "--b", "2", "3", "--c"]`` (``null``/``false``: left out;
    floats as ``repr``)."""
    args: list[str] = []
    for key, value in flags.items():
        if value is None or value is False:
            continue
        args.append(key)
        if value is True:
            continue
        values = value if isinstance(value, list) else [value]
        args += [repr(v) if isinstance(v, float) else str(v) for v in values]
    return args


def write_plan(plan: dict[str, Any], path: str | os.PathLike) -> None:
    save_text(json.dumps(plan, indent=2) + "\n", path)


def read_plan(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``plan.json`` with one-line errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--plan file not found: {path} (write one with plan.py)")
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
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


def apply_plan(parser: argparse.ArgumentParser, argv: Sequence[str] | None, section: str) -> argparse.Namespace:
    """Parse ``argv`` with the flags of ``--plan``'s ``section`` as defaults: a flag given on
    the command line overrides the plan. The parser must have a ``--plan`` argument."""
    pre = argparse.ArgumentParser(add_help=False)
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
    return parser.parse_args(argv)
