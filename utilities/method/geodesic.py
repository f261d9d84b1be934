"""Stage 0's maths: expand the 7 annotated points of each lesion with a geodesic distance.

The annotation marks, per lesion, six extreme points on the lesion's boundary ("background"
points, value 1) and one point inside it ("foreground", value 2); BraTS cases may carry a second
lesion as values 3 (its extreme points) and 4 (its foreground point). For each lesion the image
is cropped (inclusive) to the bounding box of its points, the geodesic distance from the
foreground point is computed in that box with GeodisTK's raster scan, and the box is split into
"expanded foreground" (label 1: distance below ``threshold`` times the box's largest distance)
and "unknown" (label 2). Everything outside the boxes is background (label 0). The expanded
seeds train stage 1 with a partial cross-entropy that ignores label 2.

Annotations that cannot be right are refused with a one-line error: a lesion with fewer than six
background points (its box would miss part of the lesion, which would then become certain
background) and a foreground point outside the box of its background points, unless partial
points are allowed. Arrays in, arrays out: stage 0 over a split or a folder of files is
:mod:`utilities.workflow.stage0`.
"""
from __future__ import annotations

from collections.abc import Sequence

import GeodisTK
import numpy as np

from utilities.method.intensity import IntensityNormalisation, euclidean_step_counts, normalisation

__all__ = [
    "LESIONS",
    "BACKGROUND_POINTS",
    "RASTER_SCAN_ITERATIONS",
    "expand_seeds",
    "merge_labels",
    "check_weight_threshold",
    "euclidean_step_fraction",
]

#: (background value, foreground value) of each supported lesion in a 7-point annotation.
LESIONS: tuple[tuple[int, int], ...] = ((1, 2), (3, 4))
#: Forward/backward raster-scan passes given to GeodisTK.
RASTER_SCAN_ITERATIONS = 4
#: Background (extreme) points a lesion needs: one beyond each end of each axis.
BACKGROUND_POINTS = 6



# --------------------------------------------------------------------------------------------
# Array level
# --------------------------------------------------------------------------------------------
def check_weight_threshold(weight: float, threshold: float) -> None:
    # GeodisTK's local speed is (1 - λ) + λ / (|ΔI| + 1e-5): λ > 1 makes it negative for large
    # intensity steps (negative path lengths), so λ is limited to [0, 1].
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"--geodesic_weight must be in [0, 1] (0: Euclidean distance, "
                         f"1: intensity only), got {weight}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"--geodesic_threshold must be in (0, 1], got {threshold}")


def _check_annotation_values(annotation: np.ndarray) -> np.ndarray:
    """Return the annotation as int64 after checking it holds only 0..4 (one-line errors)."""
    values = np.unique(annotation)
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise ValueError("annotation holds NaN or Inf values; expected only 0, 1, 2, 3, 4")
    bad = values[(values != np.round(values)) | (values < 0)]
    if bad.size:
        raise ValueError(f"annotation holds unexpected values {bad[:5].tolist()}; expected only "
                         "0 (unlabelled), 1/3 (background extreme points), 2/4 (foreground point)")
    top = 2 * len(LESIONS)
    extra = values[values > top]
    if extra.size:
        raise ValueError(f"annotation holds values {extra[:5].tolist()}: more lesions than supported "
                         f"(at most {len(LESIONS)}: points 1,2 and 3,4)")
    return np.asarray(annotation).astype(np.int64)


def merge_labels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Merge the seed labels of two lesions: 1 if either is 1, 0 if both are 0, else 2.

    Args:
        a, b: uint8 arrays of the same shape with values in {0, 1, 2}.

    Returns:
        uint8 array of that shape.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"cannot merge labels of shapes {a.shape} and {b.shape}")
    merged = np.full(a.shape, 2, dtype=np.uint8)
    merged[(a == 0) & (b == 0)] = 0
    merged[(a == 1) | (b == 1)] = 1
    return merged


def _lesion_box(points: np.ndarray) -> tuple[slice, ...]:
    """Inclusive bounding box of the non-zero voxels of ``points`` as slices."""
    coords = np.nonzero(points)
    return tuple(slice(int(c.min()), int(c.max()) + 1) for c in coords)


def _check_points(annotation: np.ndarray, lesion: int, bg: int, fg: int) -> None:
    """One lesion needs six background points and its foreground point(s) inside their box."""
    background = np.argwhere(annotation == bg)
    if len(background) < BACKGROUND_POINTS:
        raise ValueError(f"lesion {lesion} has {len(background)} background point(s) (value {bg}), expected "
                         f"{BACKGROUND_POINTS} (one beyond each end of each axis): with fewer, its box misses part "
                         "of the lesion, which then becomes certain background; add the missing points "
                         "(or pass --allow_partial_points)")
    lo, hi = background.min(0), background.max(0)
    for point in np.argwhere(annotation == fg):
        if np.any(point < lo) or np.any(point > hi):
            raise ValueError(f"lesion {lesion}: the foreground point (value {fg}) at array index {point.tolist()} "
                             f"lies outside the box {lo.tolist()}..{hi.tolist()} of its background points, so "
                             "its seeds would lie outside the lesion; check the point values "
                             "(or pass --allow_partial_points)")


def _checked_inputs(image: np.ndarray, annotation: np.ndarray, spacing: Sequence[float], weight: float,
                    threshold: float) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """:func:`expand_seeds`' inputs checked (one-line ValueErrors) and normalised."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be 3D, got shape {image.shape}")
    if np.shape(annotation) != image.shape:
        raise ValueError(f"annotation shape {np.shape(annotation)} differs from image shape {image.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive sizes in mm, got {list(spacing)}")
    check_weight_threshold(weight, threshold)
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise ValueError(f"image must hold real numbers, got dtype {image.dtype}")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"image holds {int(np.count_nonzero(~np.isfinite(image)))} NaN/Inf voxels; "
                         "fix or re-export the image")
    return image, _check_annotation_values(np.asarray(annotation)), spacing


def _present_lesions(annotation: np.ndarray, allow_partial_points: bool) -> list[tuple[int, int]]:
    """The ``(background, foreground)`` values of the annotated lesions, each checked to have
    both kinds of point (and, unless ``allow_partial_points``, six background points around
    its foreground point)."""
    present = []
    for lesion, (bg, fg) in enumerate(LESIONS, start=1):
        has_bg = bool(np.any(annotation == bg))
        has_fg = bool(np.any(annotation == fg))
        if has_bg and not has_fg:
            raise ValueError(f"lesion {lesion} has background points (value {bg}) but no "
                             f"foreground point (value {fg}); add its foreground point")
        if has_fg and not has_bg:
            raise ValueError(f"lesion {lesion} has a foreground point (value {fg}) but no "
                             f"background points (value {bg}); add its extreme points")
        if has_fg:
            if not allow_partial_points:
                _check_points(annotation, lesion, bg, fg)
            present.append((bg, fg))
    if not present:
        raise ValueError("annotation has no annotated points (all 0); expected values 1 and 2")
    return present


def expand_seeds(image: np.ndarray, annotation: np.ndarray, spacing: Sequence[float],
                 weight: float, threshold: float,
                 zero_at_min: bool = False, allow_partial_points: bool = False,
                 intensity: str | IntensityNormalisation = "none") -> tuple[np.ndarray, np.ndarray]:
    """Expand a 7-point annotation into a seed label by geodesic distance.

    For each lesion present (points 1, 2 and points 3, 4), the image intensities are cropped
    to the inclusive bounding box of that lesion's points, normalised by ``intensity`` (raw by
    default: :mod:`utilities.method.intensity`), and
    ``GeodisTK.geodesic3d_raster_scan(crop, foreground_point_mask, spacing, weight, 4)`` gives
    the distance ``d`` from the foreground point(s). Inside the box the label is 1 where
    ``d < threshold * d.max()`` (and at the foreground points themselves, which matters only for
    a degenerate box whose largest distance is 0) and 2 elsewhere; outside it is 0. Two lesions
    are merged with :func:`merge_labels`.

    Args:
        image: (A, B, C) intensities (any real dtype; used as float32).
        annotation: (A, B, C) integer-valued points: 0, 1/2 (lesion 1), 3/4 (lesion 2).
        spacing: voxel size in mm in the arrays' axis order (for a SimpleITK array, which is
            (z, y, x), pass ``image.GetSpacing()[::-1]``).
        weight: GeodisTK's λ in [0, 1] (0: Euclidean distance, 1: intensity changes only).
        threshold: fraction in (0, 1] of the box's largest distance below which a voxel is
            expanded foreground.
        zero_at_min: also set the voxels at the image's minimum value to 0 (BraTS: the
            skull-stripped background).
        allow_partial_points: accept a lesion with fewer than six background points or with its
            foreground point outside their box (by default a ValueError).
        intensity: the name of a normalisation of :data:`utilities.method.intensity.NORMALISATIONS`
            (or one), applied to each lesion's crop; ``"none"``: the raw intensities.
            ``zero_at_min`` reads the raw image.

    Returns:
        ``(label, distance)``: (A, B, C) uint8 in {0, 1, 2} and (A, B, C) float32, the geodesic
        distance inside the box(es) (the smaller of the two where two boxes overlap) and 0
        outside them.
    """
    image, annotation, spacing = _checked_inputs(image, annotation, spacing, weight, threshold)
    normalise = normalisation(intensity)
    present = _present_lesions(annotation, allow_partial_points)
    label = np.zeros(image.shape, dtype=np.uint8)
    distance = np.full(image.shape, np.inf, dtype=np.float32)
    for index, (bg, fg) in enumerate(present):
        box = _lesion_box((annotation == bg) | (annotation == fg))
        crop = normalise.crop(image, box)
        seeds = np.ascontiguousarray(annotation[box] == fg, dtype=np.uint8)
        d = GeodisTK.geodesic3d_raster_scan(crop, seeds, list(spacing), float(weight),
                                            RASTER_SCAN_ITERATIONS)
        d = np.asarray(d, dtype=np.float32)
        lesion_label = np.zeros(image.shape, dtype=np.uint8)
        inside = np.where((d < threshold * float(d.max())) | (seeds > 0), 1, 2).astype(np.uint8)
        lesion_label[box] = inside
        label = lesion_label if index == 0 else merge_labels(label, lesion_label)
        distance[box] = np.minimum(distance[box], d)
    distance[~np.isfinite(distance)] = 0.0
    if zero_at_min:
        label[image == image.min()] = 0
    return label, distance


def euclidean_step_fraction(image: np.ndarray, annotation: np.ndarray, weight: float,
                            intensity: str | IntensityNormalisation = "none") -> float:
    """The fraction of steps between neighbouring voxels, inside the lesion boxes of
    ``annotation`` and after ``intensity``'s normalisation, that GeodisTK charges at least 90 %
    of their Euclidean cost at weight ``weight`` (:func:`utilities.method.intensity.euclidean_step_counts`).

    No step can cost more than its Euclidean limit ``l / (1 - weight)``, so where most steps of
    uniform tissue already cost >= 90 % of it, an edge raises a step by at most 11 % and the
    expansion is nearly a Euclidean ball: the geodesic term is negligible. The spacing scales
    every step alike and does not enter. 0 for ``weight`` 0 or 1 (Euclidean or intensity-only
    by choice). Expects an annotation :func:`expand_seeds` accepted.
    """
    if not 0.0 < weight < 1.0:
        return 0.0
    image = np.asarray(image)
    annotation = np.asarray(annotation).astype(np.int64)
    normalise = normalisation(intensity)
    euclidean = total = 0
    for bg, fg in LESIONS:
        points = (annotation == bg) | (annotation == fg)
        if points.any():
            counts = euclidean_step_counts(normalise.crop(image, _lesion_box(points)), weight)
            euclidean, total = euclidean + counts[0], total + counts[1]
    return euclidean / total if total else 0.0
