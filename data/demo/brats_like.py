"""One BraTS-like case of the demo's ``--preset brats_small`` (:func:`make_brats_case`): a
whole-volume FLAIR-like brain with one or two small hyperintense lesions."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from data.demo.synthesis import (
    DEFAULT_INTENSITY_MAX,
    DEFORM_MAX,
    MAX_INTENSITY,
    check_geometry,
    check_intensity_max,
    deformed_ellipsoid,
    lesion_offsets,
    rician,
    smooth_noise,
    soft,
)

_BRATS_LESION_MM = ((9.0, 18.0), (7.0, 12.0))  # nominal diameters of the first and the second lesion
_BRATS_WM, _BRATS_GM, _BRATS_CSF = 330.0, 420.0, 110.0  # FLAIR-like levels (CSF suppressed)


def make_brats_case(rng: np.random.Generator, size_xyz: Sequence[int], spacing: Sequence[float],
                    intensity_max: float = DEFAULT_INTENSITY_MAX) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic BraTS-like (FLAIR, skull-stripped, whole-volume) case with small lesions.

    The brain is a deformed ellipsoid filling ~85 % of the field of view, background exactly 0;
    inside: white matter with texture, a 2.5-4.5 mm cortical grey-matter ribbon (brighter, as on
    FLAIR), dark suppressed CSF (two lateral ventricles and sulcal CSF at the surface) and a
    bright periventricular rim (a hyperintense distractor). One lesion (two in half of the
    cases) of 9-18 mm (second: 7-12 mm) across, hyperintense (1.25-1.45x white matter at the
    boundary, up to 1.25x more in the core) with
    internal texture, in the white matter away from the ventricles; partial-volume blur, a
    bias field, Rician noise, gain.

    Args:
        rng: the case's random generator (the result depends only on its state).
        size_xyz: volume size (X, Y, Z) in voxels, each divisible by 16.
        spacing: voxel size (X, Y, Z) in mm.
        intensity_max: intensities are integers in 0..1000 times ``intensity_max / 1000``.

    Returns:
        ``(image, label)`` in SimpleITK order (Z, Y, X): float32 and uint8 (1 = lesion); the
        lesions are separate 26-connected components.
    """
    size, spacing_xyz = check_geometry(size_xyz, spacing)
    check_intensity_max(intensity_max)
    shape = tuple(reversed(size))
    sp = spacing_xyz[::-1].copy()                      # (z, y, x) mm
    extent = np.array(shape) * sp
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    pos = (grid - (np.array(shape) - 1) / 2.0) * sp    # mm from the volume centre

    image, brain, depth, ventricle_dist = _brats_anatomy(rng, shape, sp, pos, extent)
    image, label = _brats_lesions(rng, image, shape, sp, (brain, depth, ventricle_dist), size, spacing_xyz)

    # Partial volume, bias field, gain, Rician noise; background exactly 0 (skull-stripped).
    image = ndimage.gaussian_filter(image * brain, sigma=0.45, mode="nearest")
    unit_pos = pos / extent
    bias = np.exp(unit_pos @ rng.uniform(-0.3, 0.3, size=3) + (unit_pos ** 2) @ rng.uniform(-0.3, 0.3, size=3))
    image = rician(rng, image * bias * rng.uniform(0.9, 1.1), (15.0, 25.0))
    image = np.clip(np.round(image), 1.0, MAX_INTENSITY) * brain
    return (image * (intensity_max / MAX_INTENSITY)).astype(np.float32), label


def _brats_anatomy(rng: np.random.Generator, shape: tuple[int, ...], sp: np.ndarray, pos: np.ndarray,
                   extent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The brain without lesions: ``(image, brain mask, depth below the surface in mm, distance
    to the ventricles in mm)``."""
    semi_brain = 0.5 * extent * rng.uniform(0.8, 0.88, size=3)
    brain = deformed_ellipsoid(rng, pos, semi_brain, 0.06) <= 1.0
    depth = ndimage.distance_transform_edt(brain, sampling=sp)
    wm = _BRATS_WM * rng.uniform(0.95, 1.05) * (1 + 0.06 * smooth_noise(rng, shape, 3.0, sp))
    ribbon = rng.uniform(2.5, 4.5) + 1.5 * smooth_noise(rng, shape, 4.0, sp)
    gm = soft(depth - ribbon, 0.8)
    image = wm * (1 - gm) + _BRATS_GM * (1 + 0.05 * smooth_noise(rng, shape, 1.5, sp)) * gm
    sulci = soft(depth - (0.8 + 1.2 * np.clip(smooth_noise(rng, shape, 2.0, sp), 0, None)), 0.4)

    # Lateral ventricles: two deformed ellipsoids either side of the midline (x is the last axis).
    vent = np.zeros(shape)
    gap = rng.uniform(4.0, 8.0)
    vent_semi = np.array([rng.uniform(6.0, 10.0), rng.uniform(14.0, 20.0), rng.uniform(4.0, 7.0)])  # z, y, x mm
    for side in (-1, 1):
        at = np.array([rng.uniform(-4, 4), rng.uniform(-6, 6), side * (gap + vent_semi[2])])
        r = deformed_ellipsoid(rng, pos - at, vent_semi, 0.2)
        vent = np.maximum(vent, soft((r - 1.0) * vent_semi.min(), 0.5))
    ventricle_dist = ndimage.distance_transform_edt(vent < 0.5, sampling=sp)
    rim = soft(ventricle_dist - rng.uniform(1.5, 3.0), 0.6) * (vent < 0.5)
    image = image * (1 - rim) + 1.35 * _BRATS_WM * rim
    csf = np.maximum(vent, sulci)
    image = image * (1 - csf) + _BRATS_CSF * (1 + 0.1 * smooth_noise(rng, shape, 2.0, sp)) * csf
    return image, brain, depth, ventricle_dist


def _brats_lesions(rng: np.random.Generator, image: np.ndarray, shape: tuple[int, ...], sp: np.ndarray,
                   anatomy: tuple[np.ndarray, np.ndarray, np.ndarray], size: tuple[int, ...],
                   spacing_xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One or two lesions in the white matter, away from the ventricles and from each other:
    the image with them, and the label."""
    brain, depth, ventricle_dist = anatomy
    label = np.zeros(shape, dtype=np.uint8)
    n_lesions = 2 if rng.random() < 0.5 else 1
    taken = np.zeros(shape, dtype=bool)
    for k in range(n_lesions):
        diameter = rng.uniform(*_BRATS_LESION_MM[k])
        bound = diameter / 2.0 * (1.0 + DEFORM_MAX)
        allowed = (depth > bound + 6.0) & (ventricle_dist > bound + 2.0)
        if taken.any():
            allowed &= ndimage.distance_transform_edt(~taken, sampling=sp) > bound + 4.0
        candidates = np.argwhere(allowed)
        if len(candidates) == 0:
            if k == 0:
                raise ValueError(f"--size {list(size)} at spacing {list(spacing_xyz)} mm leaves no room for a "
                                 "lesion inside the brain; use a larger volume")
            break
        centre = candidates[rng.integers(len(candidates))]
        idx = lesion_offsets(rng, diameter, sp) + centre
        inside = np.all((idx >= 0) & (idx < np.array(shape)), axis=1)
        idx = idx[inside]
        lesion = np.zeros(shape, dtype=bool)
        lesion[idx[:, 0], idx[:, 1], idx[:, 2]] = True
        lesion &= brain
        label[lesion] = 1
        taken |= lesion
        # brighter core, fading towards the boundary (oedema-like): 1.3-1.6x white matter on average
        core = np.clip(ndimage.distance_transform_edt(lesion, sampling=sp) / max(diameter / 4.0, 1e-6), 0, 1)
        level = _BRATS_WM * rng.uniform(1.25, 1.45) * (1 + 0.25 * core)
        interior = level * (1 + 0.1 * smooth_noise(rng, shape, 1.5, sp))
        image = np.where(lesion, interior, image)
    return image, label
