"""Generate the synthetic vestibular-schwannoma-like (VS-like) demo dataset of PA-Seg.

Each case is a small anisotropic T2-like volume (default 64 x 64 x 32 voxels of 0.5 x 0.5 x
1.5 mm) with one irregular lesion and the things that make segmenting it from 7 points a
real task rather than a threshold:

* tissue with a smooth texture (low-pass filtered noise) and patchy grey/white-like regions;
* a dark bone region (petrous-bone-like) with a wavy edge on one side of the lesion;
* the lesion: an ellipsoid 6-14 mm across, deformed by a random low-frequency radial
  function, sometimes with a tapered extension (like the intracanalicular part of a VS),
  with an internal texture and often a darker cystic part;
* a CSF-filled tube (canal/cistern-like), homogeneous and a little brighter than the lesion
  (their intensity ranges overlap), that runs touching or next to the lesion, so a threshold
  or an intensity-based geodesic leaks into it, and a second CSF pocket elsewhere;
* partial-volume blur, a smooth multiplicative bias field, Rician noise, a per-case gain.

Files are written in the VS layout under ``--output_dir``: ``image_crop/<s>_T2.nii.gz``
(float32; T2-like integer levels 0..1000 stored divided by 1000, see ``--intensity_max``),
``label_crop/<s>_Label.nii.gz`` (uint8, 1 =
lesion) and ``annotation_7points/<s>_7points.nii.gz`` (the simulated 7 points, one lesion:
six 1s and one 2), plus the split CSV ``--split_file`` (``subject,phase`` rows, no header).
A case depends only on ``--seed`` and its subject name ``demo_<nnn>``; the same seed gives
byte-identical arrays.

At the end the mean Dice of the stage-0 geodesic seeds (weight 0.5, threshold 0.2) and of the
best single intensity threshold are logged (:func:`seed_dice_report`).

Why the images are stored in 0..1 by default: GeodisTK's raster scan (stage 0) charges a step
of length ``d`` the cost ``d / ((1 - w) + w / (|dI| + 1e-5))``, which for ``w = 0.5`` is ``~2 d``
as soon as ``|dI| >> 1``. On raw 0..1000 intensities with noise every step costs ``~2 d``, so
the geodesic distance is just a scaled Euclidean distance and the expanded seeds are a small
ball around the foreground point (Dice ~0.14 on the default dataset, ``--intensity_max 1000``);
with intensities in 0..1 the distance follows the image edges (Dice ~0.56). The networks
z-normalise the image, so nothing else depends on the scale.

``--preset brats_small`` writes a second, BraTS-like dataset instead (:func:`make_brats_case`):
whole-volume FLAIR-like brain scans (default 64 x 64 x 48 voxels of 2.5 x 2.5 x 3 mm, 16/4/8
cases) with one or two small hyperintense lesions (9-18 mm and 7-12 mm across, i.e. 3-7 voxels
in plane, so the paper's 2x in-plane down-sampling for the mCRF leaves 1.5-3.5 voxels), written
in the BraTS naming ``image/<s>_flair.nii.gz``, ``label/<s>_seg.nii.gz`` (uint8, 1 = whole
lesion), ``annotation_7points/<s>_7points.nii.gz`` (points 1, 2 and 3, 4 for a second lesion),
subjects ``bsmall_<nnn>``, split ``./splits/split_brats_small.csv``. The skull-stripped
background is exactly 0 (stage 0 for BraTS sets voxels at the image minimum to background).

Example::

    python data/demo/make_demo_data.py --output_dir ./data/demo/ --split_file ./splits/split_demo.csv \\
        --preview ./data/demo/preview.png
    python data/demo/make_demo_data.py --preset brats_small   # ./data/brats_small/, ./splits/split_brats_small.csv
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from data.demo.brats_like import make_brats_case
from data.demo.synthesis import (
    DEFAULT_INTENSITY_MAX,
    DEFORM_MAX,
    MAX_INTENSITY,
    check_geometry,
    check_intensity_max,
    lesion_offsets,
    radial_deformation,
    rician,
    smooth_noise,
    soft,
    tube_distance,
    tube_offset,
    unit_vector,
)
from data.simulate_7points import simulate_points, subject_rng
from utilities.core.arguments import ArgumentParser
from utilities.core.logs import LOGGER_NAME, setup_logger
from utilities.data.grid import subject_path
from utilities.data.io import atomic_path, check_overwrite, ensure_writable_dir, read_image, save_csv, write_image
from utilities.data.splits import PHASES, read_split, subjects_of
from utilities.method.geodesic import expand_seeds
from utilities.method.metrics import overlap_metrics
from utilities.workflow.cli import nonnegative_int, positive_float, positive_int

__all__ = [
    "IMAGE_POSTFIX",
    "LABEL_POSTFIX",
    "ANNOTATION_POSTFIX",
    "QUICK",
    "DEFAULT_INTENSITY_MAX",
    "subject_names",
    "make_case",
    "make_brats_case",
    "Preset",
    "PRESETS",
    "generate",
    "seed_dice_report",
    "save_preview",
    "main",
]

logger = logging.getLogger(LOGGER_NAME)

IMAGE_POSTFIX = "T2"
LABEL_POSTFIX = "Label"
ANNOTATION_POSTFIX = "7points"
#: ``--quick``: (num_training, num_validation, num_inference) and size (X, Y, Z) for tests.
QUICK = {"counts": (4, 2, 2), "size": (32, 32, 16)}
DEFAULT_COUNTS = (16, 4, 4)
DEFAULT_SIZE = (64, 64, 32)
DEFAULT_SPACING = (0.5, 0.5, 1.5)

# Lesion geometry (mm) and the intensity model (T2-like, before bias field and noise).
_DIAMETER_MM = (6.0, 14.0)   # nominal lesion diameter range
_MARGIN_MM = 1.5             # the lesion keeps at least this far (and >= 2 voxels) from the border
_TISSUE = 300.0
_BONE = 70.0


# --------------------------------------------------------------------------------------------
# Random fields and shapes (arrays in SimpleITK order (z, y, x); sizes in mm)
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# One case
# --------------------------------------------------------------------------------------------
def make_case(rng: np.random.Generator, size_xyz: Sequence[int], spacing: Sequence[float],
              intensity_max: float = DEFAULT_INTENSITY_MAX) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic VS-like case.

    Args:
        rng: the case's random generator (the result depends only on its state).
        size_xyz: volume size (X, Y, Z) in voxels, each divisible by 16.
        spacing: voxel size (X, Y, Z) in mm.
        intensity_max: the T2-like intensities, integers in 0..1000, are returned multiplied
            by ``intensity_max / 1000`` (1000: unchanged). Only the stage-0 geodesic expansion
            depends on the scale (the networks z-normalise the image).

    Returns:
        ``(image, label)`` in SimpleITK order (Z, Y, X): float32 intensities in
        0..``intensity_max`` and uint8 label with exactly one 6-connected lesion (1), at least
        ``max(2 voxels, 1.5 mm)`` away from every border.
    """
    size, spacing_xyz = check_geometry(size_xyz, spacing)
    check_intensity_max(intensity_max)
    shape = tuple(reversed(size))
    sp = spacing_xyz[::-1].copy()                 # (z, y, x) mm
    label, centre, voxels = _vs_lesion(rng, shape, sp, size, spacing_xyz)
    lesion = label.astype(bool)
    points_mm = voxels * sp                           # lesion voxels relative to the centre (mm)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    pos = (grid - centre) * sp                        # every voxel relative to the centre (mm)
    image = _vs_tissue_and_bone(rng, shape, sp, pos, points_mm)
    # Lesion brightness; CSF a little brighter (as on T2) and homogeneous, their ranges overlapping.
    lesion_level = rng.uniform(520.0, 600.0)
    csf_level = lesion_level * rng.uniform(1.1, 1.3)
    csf_texture = csf_level * (1 + 0.03 * smooth_noise(rng, shape, 2.0, sp))
    csf = _vs_csf(rng, pos, points_mm)
    image = image * (1 - csf) + csf_texture * csf
    image = np.where(lesion, _vs_interior(rng, shape, sp, pos, lesion, centre, lesion_level), image)

    # Partial volume, bias field, gain, Rician noise.
    image = ndimage.gaussian_filter(image, sigma=np.array([0.5, 0.35, 0.35]) / sp, mode="nearest")
    extent = np.array(shape) * sp
    unit_pos = (grid * sp) / extent - 0.5             # in [-0.5, 0.5]
    coeffs = rng.uniform(-0.35, 0.35, size=3)
    quad = rng.uniform(-0.4, 0.4, size=3)
    bias = np.exp(unit_pos @ coeffs + (unit_pos ** 2) @ quad + 0.05 * smooth_noise(rng, shape, 8.0, sp))
    image = rician(rng, image * bias * rng.uniform(0.9, 1.1), (22.0, 32.0))
    image = np.clip(np.round(image), 0.0, MAX_INTENSITY)
    return (image * (intensity_max / MAX_INTENSITY)).astype(np.float32), label


def _vs_lesion(rng: np.random.Generator, shape: tuple[int, ...], sp: np.ndarray, size: tuple[int, ...],
               spacing_xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The VS case's label, its centre voxel and its voxels' offsets from it: one lesion at a
    random place at least ``_MARGIN_MM`` (and 2 voxels) from every border."""
    margin = np.maximum(2, np.ceil(_MARGIN_MM / sp - 1e-9)).astype(np.int64)
    room = (np.array(shape) - 2 * margin - 1) * sp  # extent (mm) the lesion's box may span
    if np.any(room <= 0):
        raise ValueError(f"--size {list(size)} is too small for a lesion with a {_MARGIN_MM} mm margin "
                         f"at spacing {list(spacing_xyz)} mm")
    # The lesion lies in a ball of radius diameter / 2 * (1 + DEFORM_MAX): keep it in the room.
    cap = float(room.min()) / (1.0 + DEFORM_MAX)
    d_hi = min(_DIAMETER_MM[1], cap)
    d_lo = min(_DIAMETER_MM[0], 0.6 * d_hi)
    voxels = lesion_offsets(rng, rng.uniform(d_lo, d_hi), sp)
    lo_off, hi_off = voxels.min(axis=0), voxels.max(axis=0)
    centre = np.array([rng.integers(margin[a] - lo_off[a], shape[a] - margin[a] - hi_off[a]) for a in range(3)])
    label = np.zeros(shape, dtype=np.uint8)
    idx = voxels + centre
    label[idx[:, 0], idx[:, 1], idx[:, 2]] = 1
    return label, centre, voxels


def _vs_tissue_and_bone(rng: np.random.Generator, shape: tuple[int, ...], sp: np.ndarray, pos: np.ndarray,
                        points_mm: np.ndarray) -> np.ndarray:
    """Tissue (smooth texture, grey/white-like patches) and dark bone beyond a wavy plane on one
    side of the lesion (it may fall outside the field of view)."""
    image = (_TISSUE * rng.uniform(0.9, 1.1)
             + 45.0 * np.tanh(2.5 * smooth_noise(rng, shape, 3.0, sp))
             + 15.0 * smooth_noise(rng, shape, 1.0, sp))
    bone_dir = unit_vector(rng)
    wave = 1.5 * smooth_noise(rng, shape, 4.0, sp)
    bone_at = float((points_mm @ bone_dir).max()) + rng.uniform(1.0, 6.0) + 3.0
    bone = soft(bone_at + wave - pos @ bone_dir, 0.4)
    return image * (1 - bone) + (_BONE + 10.0 * smooth_noise(rng, shape, 1.0, sp)) * bone


def _vs_csf(rng: np.random.Generator, pos: np.ndarray, points_mm: np.ndarray) -> np.ndarray:
    """The CSF share of each voxel: a tube touching or next to the lesion, and a deformed pocket
    away from it."""
    direction = unit_vector(rng)
    normal = np.cross(direction, unit_vector(rng))
    normal /= np.linalg.norm(normal)
    binormal = np.cross(direction, normal)
    tube_radius = rng.uniform(1.2, 2.4)
    closest = tube_radius + rng.uniform(-0.5, 1.0) * tube_radius
    offset = tube_offset(points_mm, normal, binormal, closest)
    tube = soft(tube_distance(pos, offset * normal, direction, normal, rng.uniform(0.0, 0.03)) - tube_radius, 0.25)
    away = unit_vector(rng)
    pocket_r = rng.uniform(2.0, 4.0)
    pocket_at = away * (float((points_mm @ away).max()) + 1.3 * pocket_r + rng.uniform(1.0, 8.0))
    rel = pos - pocket_at
    dist = np.linalg.norm(rel, axis=-1)
    dirs = np.divide(rel, dist[..., None], out=np.zeros_like(rel), where=dist[..., None] > 0)
    pocket = soft(dist - pocket_r * radial_deformation(rng, dirs, 0.3), 0.3)
    return np.maximum(tube, pocket)


def _vs_interior(rng: np.random.Generator, shape: tuple[int, ...], sp: np.ndarray, pos: np.ndarray,
                 lesion: np.ndarray, centre: np.ndarray, lesion_level: float) -> np.ndarray:
    """The lesion's intensities: texture and, in 60 % of the cases, a darker cystic part."""
    interior = lesion_level * (1 + 0.10 * smooth_noise(rng, shape, 1.0, sp)
                               + 0.05 * smooth_noise(rng, shape, 2.5, sp))
    if rng.random() < 0.6:
        depth = ndimage.distance_transform_edt(lesion, sampling=sp)
        inner = np.argwhere(depth >= 0.35 * depth.max())
        cyst_at = (inner[rng.integers(len(inner))] - centre) * sp
        cyst_r = rng.uniform(0.3, 0.55) * float(depth.max())
        interior *= 1.0 - rng.uniform(0.25, 0.4) * soft(np.linalg.norm(pos - cyst_at, axis=-1) - cyst_r, 0.4)
    return interior


# --------------------------------------------------------------------------------------------
# One BraTS-like case (--preset brats_small)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """A synthetic dataset: its generator, layout, naming and default sizes."""

    name: str
    make: Callable[..., tuple[np.ndarray, np.ndarray]]
    folders: tuple[str, str, str]        # image, label, 7-point annotation sub-folders
    postfixes: tuple[str, str, str]      # image, label, annotation file postfixes
    prefix: str                          # subject names <prefix>_<nnn>
    counts: tuple[int, int, int]
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    quick_counts: tuple[int, int, int]
    quick_size: tuple[int, int, int]
    max_instances: int                   # lesions annotated with 7 points each
    zero_at_min: bool                    # stage 0 sets the image minimum to background (BraTS)
    output_dir: str
    split_file: str


PRESETS: dict[str, Preset] = {
    "vs": Preset("vs", make_case, ("image_crop", "label_crop", "annotation_7points"),
                 (IMAGE_POSTFIX, LABEL_POSTFIX, ANNOTATION_POSTFIX), "demo", DEFAULT_COUNTS, DEFAULT_SIZE,
                 DEFAULT_SPACING, QUICK["counts"], QUICK["size"], 1, False,
                 "./data/demo/", "./splits/split_demo.csv"),
    "brats_small": Preset("brats_small", make_brats_case, ("image", "label", "annotation_7points"),
                          ("flair", "seg", ANNOTATION_POSTFIX), "bsmall", (16, 4, 8), (64, 64, 48),
                          (2.5, 2.5, 3.0), (4, 2, 2), (32, 32, 32), 2, True,
                          "./data/brats_small/", "./splits/split_brats_small.csv"),
}
"""``--preset`` name -> dataset; ``vs`` is the default demo dataset."""


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------
def subject_names(count: int, start: int = 0, prefix: str = "demo") -> list[str]:
    """``demo_000``, ``demo_001``, ...; at least three digits."""
    return [f"{prefix}_{i:03d}" for i in range(start, start + count)]


def _reference(size: tuple[int, ...], spacing_xyz: np.ndarray) -> sitk.Image:
    ref = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    ref.SetSpacing([float(s) for s in spacing_xyz])
    return ref


def _as_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def generate(output_dir: str | os.PathLike = "./data/demo/", split_file: str | os.PathLike = "./splits/split_demo.csv",
             num_training: int = DEFAULT_COUNTS[0], num_validation: int = DEFAULT_COUNTS[1],
             num_inference: int = DEFAULT_COUNTS[2], size: Sequence[int] = DEFAULT_SIZE,
             spacing: Sequence[float] = DEFAULT_SPACING, seed: int = 0,
             intensity_max: float = DEFAULT_INTENSITY_MAX, preset: str = "vs") -> pd.DataFrame:
    """Write the demo cases (image, label, 7-point annotation) and the split CSV.

    Args:
        output_dir: root of ``image_crop/``, ``label_crop/`` and ``annotation_7points/``.
        split_file: where the ``subject,phase`` CSV (no header) is written.
        num_training, num_validation, num_inference: cases per phase (training >= 1).
        size: volume size (X, Y, Z) in voxels, each divisible by 16.
        spacing: voxel size (X, Y, Z) in mm.
        seed: a case depends only on this and its subject name.
        intensity_max: intensity scale, see :func:`make_case`.
        preset: a key of :data:`PRESETS`: the case generator, sub-folders, postfixes and
            subject names (``output_dir`` holds that preset's sub-folders).

    Returns:
        The split as a DataFrame with columns ``subject`` and ``phase``.
    """
    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
    kind = PRESETS[preset]
    size, spacing_xyz = check_geometry(size, spacing)
    check_intensity_max(intensity_max)
    counts = (num_training, num_validation, num_inference)
    if num_training < 1 or min(counts) < 0:
        raise ValueError(f"case counts need at least one training case and none negative, got "
                         f"training/validation/inference = {list(counts)}")
    out = Path(output_dir)
    folders = [ensure_writable_dir(out / k) for k in kind.folders]
    subjects = subject_names(sum(counts), prefix=kind.prefix)
    phases = [p for p, n in zip(PHASES, counts) for _ in range(n)]
    split = pd.DataFrame({"subject": subjects, "phase": phases})
    reference = _reference(size, spacing_xyz)
    for subject in subjects:
        image, label = kind.make(subject_rng(seed, subject), size, spacing_xyz, intensity_max)
        points = simulate_points(label, spacing_xyz[::-1], max_instances=kind.max_instances, jitter_mm=0.0,
                                 rng=subject_rng(seed, subject), name=subject)
        for array, folder, postfix in zip((image, label, points), folders, kind.postfixes):
            write_image(_as_image(array, reference), subject_path(folder, subject, postfix))
    save_csv(split, split_file, header=False)
    logger.info("wrote %d demo case(s) (%s) of %s voxels at %s mm to %s; split %s", len(subjects),
                ", ".join(f"{n} {p}" for p, n in zip(PHASES, counts)), list(size),
                [float(s) for s in spacing_xyz], out, split_file)
    return split


# --------------------------------------------------------------------------------------------
# How hard the task is
# --------------------------------------------------------------------------------------------
def _load_case(output_dir: Path, subject: str,
               preset: str = "vs") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    (fi, fl, fa), (pi, pl, pa) = PRESETS[preset].folders, PRESETS[preset].postfixes
    image = read_image(subject_path(output_dir / fi, subject, pi))
    label = read_image(subject_path(output_dir / fl, subject, pl), what="label")
    anno = read_image(subject_path(output_dir / fa, subject, pa), what="annotation")
    spacing_zyx = np.array(image.GetSpacing()[::-1])
    return (sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(label) > 0,
            sitk.GetArrayFromImage(anno), spacing_zyx)


def _threshold_curves(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                      levels: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Dice of ``image >= t`` against the label for the thresholds ``t_k = k * top / levels``,
    ``k = 0..levels``, ``top`` the largest intensity over all cases (integers 0..1000 for the
    default scale). Returns ``(thresholds (levels + 1,), dice (cases, levels + 1))``."""
    top = max(float(image.max()) for image in images)
    top = top if top > 0 else 1.0
    thresholds = np.arange(levels + 1) * (top / levels)
    curves = []
    for image, label in zip(images, labels):
        # image >= t_k  <=>  ceil(image * levels / top) >= k for an integer k
        bins = np.clip(np.ceil(image.astype(np.float64) * (levels / top) - 1e-9), 0, levels).astype(np.int64)
        above_all = np.cumsum(np.bincount(bins.ravel(), minlength=levels + 1)[::-1])[::-1]
        above_fg = np.cumsum(np.bincount(bins[label], minlength=levels + 1)[::-1])[::-1]
        curves.append(2.0 * above_fg / (above_all + int(label.sum())))
    return thresholds, np.stack(curves)


def _contrast_to_noise(image: np.ndarray, label: np.ndarray, sp: np.ndarray, brain_only: bool) -> tuple[float, float]:
    """The lesion against its 1-3 mm shell: ``(mean - mean_shell) / std_shell`` and ``(mean -
    median_shell) / sigma``, sigma the noise from in-plane neighbour differences (inside the
    brain when ``brain_only``)."""
    away = ndimage.distance_transform_edt(~label, sampling=sp)
    lesion_v = image[label].astype(np.float64)
    shell_v = image[(away > 1.0) & (away <= 3.0)].astype(np.float64)
    diff = np.diff(image.astype(np.float64), axis=2)
    if brain_only:  # only pairs inside the (skull-stripped) brain
        diff = diff[(image[:, :, 1:] > image.min()) & (image[:, :, :-1] > image.min())]
    diff = diff.ravel()
    sigma = 1.4826 * np.median(np.abs(diff - np.median(diff))) / np.sqrt(2.0)
    return (float((lesion_v.mean() - shell_v.mean()) / shell_v.std()),
            float((lesion_v.mean() - np.median(shell_v)) / sigma))


def seed_dice_report(output_dir: str | os.PathLike, split: pd.DataFrame | str | os.PathLike,
                     weight: float = 0.5, threshold: float = 0.2, phase: str | None = None,
                     preset: str = "vs") -> dict[str, Any]:
    """How hard the demo task is, measured on the written files.

    * ``seed_dice`` (``seed_precision``, ``seed_recall``): the stage-0 expanded foreground
      (label 1 of :func:`utilities.method.geodesic.expand_seeds` with ``weight`` and ``threshold``)
      against the label;
    * ``threshold_dice``: Dice of ``image >= t`` with the one threshold ``t`` (``best_threshold``,
      searched on 1001 levels) that maximizes the mean Dice over the cases;
    * ``oracle_threshold_dice``: the same with the best threshold chosen per case (an upper
      bound for any single threshold);
    * ``cnr``: lesion against its surrounding shell (1-3 mm from the lesion; tissue, CSF and
      bone): ``(mean_lesion - mean_shell) / std_shell``;
    * ``cnr_noise``: ``(mean_lesion - median_shell) / sigma``, ``sigma`` the noise level
      estimated from in-plane neighbour differences (``1.4826 * MAD / sqrt(2)``).

    Args:
        output_dir: root of ``image_crop/``, ``label_crop/``, ``annotation_7points/``.
        split: split CSV path or DataFrame (columns ``subject``, ``phase``).
        weight, threshold: geodesic expansion parameters.
        phase: only this phase's subjects (``None``: all).
        preset: the dataset's :data:`PRESETS` key (layout; BraTS-like: voxels at the image
            minimum are background in stage 0, as ``data/BraTS/generate_geodesic_labels.py`` does).

    Returns:
        Per-case lists, their means (``<name>_mean``) and ``best_threshold``.
    """
    out = Path(output_dir)
    subjects = subjects_of(split if isinstance(split, pd.DataFrame) else read_split(split), phase)
    if not subjects:
        raise ValueError(f"split {split} lists no subjects" + (f" of phase {phase}" if phase else ""))
    per_case: dict[str, list[float]] = {k: [] for k in ("seed_dice", "seed_precision", "seed_recall",
                                                        "cnr", "cnr_noise")}
    images, labels = [], []
    for subject in subjects:
        image, label, anno, sp = _load_case(out, subject, preset)
        expanded, _ = expand_seeds(image, anno, sp, weight, threshold, zero_at_min=PRESETS[preset].zero_at_min)
        scores = overlap_metrics(expanded == 1, label)
        for key in ("dice", "precision", "recall"):
            per_case[f"seed_{key}"].append(scores[key])
        cnr, cnr_noise = _contrast_to_noise(image, label, sp, PRESETS[preset].zero_at_min)
        per_case["cnr"].append(cnr)
        per_case["cnr_noise"].append(cnr_noise)
        images.append(image)
        labels.append(label)
    thresholds, curves = _threshold_curves(images, labels)
    best = int(np.argmax(curves.mean(axis=0)))
    per_case["threshold_dice"] = curves[:, best].tolist()
    per_case["oracle_threshold_dice"] = curves.max(axis=1).tolist()
    report: dict[str, Any] = {"subjects": subjects, "best_threshold": float(thresholds[best])}
    for key, values in per_case.items():
        report[key] = values
        report[f"{key}_mean"] = float(np.mean(values))
    return report


# --------------------------------------------------------------------------------------------
# Preview and command line
# --------------------------------------------------------------------------------------------
def save_preview(output_dir: str | os.PathLike, subject: str, path: str | os.PathLike, preset: str = "vs") -> None:
    """PNG of the axial, coronal and sagittal slices through the (first) lesion's foreground point of ``subject``,
    with the label's contour (red) and the 7 points (cyan: background, yellow: foreground) lying
    on each slice; drawn with the mm aspect ratio."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image, label, anno, sp = _load_case(Path(output_dir), subject, preset)
    cz, cy, cx = np.argwhere(anno == 2)[0] if (anno == 2).any() else np.round(ndimage.center_of_mass(label)).astype(int)
    views = [(f"axial (z={cz:d})", image[cz], label[cz], anno[cz], sp[1] / sp[2]),
             (f"coronal (y={cy:d})", image[:, cy], label[:, cy], anno[:, cy], sp[0] / sp[2]),
             (f"sagittal (x={cx:d})", image[:, :, cx], label[:, :, cx], anno[:, :, cx], sp[0] / sp[1])]
    fig, axes = plt.subplots(2, 3, figsize=(12, 8.5))
    vmax = float(np.percentile(image, 99.95))
    for col, (title, img, lab, pts, aspect) in enumerate(views):
        for row in range(2):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=0, vmax=vmax, aspect=aspect, origin="lower", interpolation="nearest")
            if row == 1:
                if lab.any():
                    ax.contour(lab.astype(float), levels=[0.5], colors="r", linewidths=1.0)
                for value, colour in ((1, "c"), (2, "y"), (3, "c"), (4, "y")):
                    rr, cc = np.nonzero(pts == value)
                    ax.plot(cc, rr, "+", color=colour, markersize=9, markeredgewidth=2)
            ax.set_title(f"{subject} {title}" + (" + label, points" if row == 1 else ""), fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="vs", choices=sorted(PRESETS),
                   help="vs: the VS-like demo data; brats_small: BraTS-like whole brains with small lesions "
                        "(its own defaults for the folders, counts, size and spacing)")
    p.add_argument("--output_dir", default=None,
                   help="root of the image, label and annotation_7points/ folders (default ./data/demo/; "
                        "brats_small: ./data/brats_small/)")
    p.add_argument("--split_file", default=None, help="split CSV to write (subject,phase) (default "
                   "./splits/split_demo.csv; brats_small: ./splits/split_brats_small.csv)")
    p.add_argument("--num_training", type=positive_int, default=None,
                   help=f"training cases (default {DEFAULT_COUNTS[0]}; {QUICK['counts'][0]} with --quick)")
    p.add_argument("--num_validation", type=nonnegative_int, default=None,
                   help=f"validation cases (default {DEFAULT_COUNTS[1]}; {QUICK['counts'][1]} with --quick)")
    p.add_argument("--num_inference", type=nonnegative_int, default=None,
                   help=f"inference cases (default {DEFAULT_COUNTS[2]}; {QUICK['counts'][2]} with --quick)")
    p.add_argument("--size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help=f"volume size in voxels, each divisible by 16 (default {list(DEFAULT_SIZE)}; "
                        f"{list(QUICK['size'])} with --quick)")
    p.add_argument("--spacing", type=positive_float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help=f"voxel size in mm (default {list(DEFAULT_SPACING)}; brats_small: "
                        f"{list(PRESETS['brats_small'].spacing)})")
    p.add_argument("--seed", type=int, default=0, help="random seed; a case depends only on it and its name")
    p.add_argument("--intensity_max", type=positive_float, default=DEFAULT_INTENSITY_MAX,
                   help="store the T2-like intensities (integers 0..1000) scaled to 0..this (1000: raw levels); "
                        "only the stage-0 geodesic expansion, which uses raw intensities, depends on it")
    p.add_argument("--quick", action="store_true",
                   help="tiny dataset for tests; explicit --num_* and --size flags still win")
    p.add_argument("--preview", default=None, help="also write a PNG of the first case's mid-lesion slices here")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the split file, the cases and the preview if they exist")
    p.add_argument("--no_report", action="store_true",
                   help="skip the closing report (seed and best-threshold Dice, contrast-to-noise)")
    return p


def _check_outputs(args: argparse.Namespace, counts: Sequence[int]) -> None:
    """Refuse to replace the split file, a case's file or the preview without ``--overwrite``."""
    kind = PRESETS[args.preset]
    out = Path(args.output_dir)
    check_overwrite([args.split_file], "--split_file", args.overwrite)
    check_overwrite([subject_path(out / folder, subject, postfix)
                     for subject in subject_names(sum(counts), prefix=kind.prefix)
                     for folder, postfix in zip(kind.folders, kind.postfixes, strict=True)],
                    "--output_dir", args.overwrite, "file")
    if args.preview:
        check_overwrite([args.preview], "--preview", args.overwrite)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Parse the arguments, write the dataset, log the report; returns the split."""
    args = build_parser().parse_args(argv)
    setup_logger(None)
    quick = args.quick
    kind = PRESETS[args.preset]
    counts = list(kind.quick_counts if quick else kind.counts)
    for i, value in enumerate((args.num_training, args.num_validation, args.num_inference)):
        if value is not None:
            counts[i] = value
    size = args.size if args.size is not None else (kind.quick_size if quick else kind.size)
    spacing = args.spacing if args.spacing is not None else kind.spacing
    args.output_dir = args.output_dir if args.output_dir is not None else kind.output_dir
    args.split_file = args.split_file if args.split_file is not None else kind.split_file
    _check_outputs(args, counts)
    start = time.perf_counter()
    split = generate(args.output_dir, args.split_file, *counts, size=size, spacing=spacing, seed=args.seed,
                     intensity_max=args.intensity_max, preset=args.preset)
    logger.info("generated in %.1f s", time.perf_counter() - start)
    if args.preview:
        save_preview(args.output_dir, split["subject"].iloc[0], args.preview, args.preset)
        logger.info("preview written to %s", args.preview)
    if not args.no_report:
        report = seed_dice_report(args.output_dir, split, preset=args.preset)
        logger.info("mean over %d case(s): expanded seeds (weight 0.5, threshold 0.2) Dice %.3f (precision %.3f, "
                    "recall %.3f); best single threshold (%g) Dice %.3f, best threshold per case Dice %.3f; "
                    "lesion CNR vs. its 1-3 mm shell %.2f, vs. noise %.1f", len(split), report["seed_dice_mean"],
                    report["seed_precision_mean"], report["seed_recall_mean"], report["best_threshold"],
                    report["threshold_dice_mean"], report["oracle_threshold_dice_mean"], report["cnr_mean"],
                    report["cnr_noise_mean"])
    return split


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
