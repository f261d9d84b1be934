"""Tiny synthetic cases in the VS layout, for tests: a bright irregular blob in a textured volume."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def blob_case(shape_zyx: Sequence[int] = (16, 32, 32), seed: int = 0,
              radius: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, label uint8) in SimpleITK (z, y, x) order; the blob never touches the border."""
    rng = np.random.default_rng(seed)
    shape = np.array(shape_zyx)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    center = shape / 2 + rng.uniform(-2, 2, 3)
    scale = np.array([2.0, 1.0, 1.0])  # z voxels are thicker
    d = np.sqrt(((zz - center[0]) * scale[0]) ** 2 + (yy - center[1]) ** 2 + (xx - center[2]) ** 2)
    label = (d < radius).astype(np.uint8)
    image = 100 + 10 * rng.standard_normal(shape) + 200 * label
    image[:, :2, :] = 0  # a padded border at the image minimum
    return image.astype(np.float32), label


def seven_points(label: np.ndarray) -> np.ndarray:
    """A simple 7-point annotation: the label's centre voxel (2) and one voxel beyond each extreme (1)."""
    anno = np.zeros(label.shape, np.uint8)
    idx = np.argwhere(label > 0)
    lo, hi = idx.min(0), idx.max(0)
    centre = np.round(idx.mean(0)).astype(int)
    anno[tuple(centre)] = 2
    for axis in range(3):
        for value in (lo[axis] - 1, hi[axis] + 1):
            point = centre.copy()
            point[axis] = np.clip(value, 0, label.shape[axis] - 1)
            anno[tuple(point)] = 1
    return anno


def seeds_from_label(label: np.ndarray, anno: np.ndarray) -> np.ndarray:
    """Expanded-seed-like labels without GeodisTK: 1 inside an eroded label, 0 outside the
    annotation's box, 2 (unknown) elsewhere in the box."""
    from scipy import ndimage

    seeds = np.zeros(label.shape, np.uint8)
    idx = np.argwhere(anno > 0)
    lo, hi = idx.min(0), idx.max(0) + 1
    seeds[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 2
    seeds[ndimage.binary_erosion(label > 0, iterations=2)] = 1
    return seeds


def write(array: np.ndarray, path: Path, spacing=(0.5, 0.5, 1.5), direction=None, origin=(1.0, -2.0, 3.0)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def make_vs_dataset(root: Path, n_train: int = 2, n_val: int = 1, n_inf: int = 1,
                    shape_zyx: Sequence[int] = (16, 32, 32), direction=None) -> dict[str, Path]:
    """Write a VS-layout dataset (image_crop, label_crop, annotation_7points, geodesic labels, split)."""
    paths = {k: root / k for k in ("image_crop", "label_crop", "annotation_7points", "geodesic_label")}
    rows = []
    phases = ["training"] * n_train + ["validation"] * n_val + ["inference"] * n_inf
    for i, phase in enumerate(phases):
        name = f"vs_gk_{i + 1}"
        image, label = blob_case(shape_zyx, seed=i)
        anno = seven_points(label)
        write(image, paths["image_crop"] / f"{name}_T2.nii.gz", direction=direction)
        write(label, paths["label_crop"] / f"{name}_Label.nii.gz", direction=direction)
        write(anno, paths["annotation_7points"] / f"{name}_7points.nii.gz", direction=direction)
        write(seeds_from_label(label, anno), paths["geodesic_label"] / f"{name}_GeodesicLabel.nii.gz",
              direction=direction)
        rows.append(f"{name},{phase}")
    split = root / "split.csv"
    split.write_text("\n".join(rows) + "\n")
    paths["split"] = split
    return paths


def ellipsoid_case(center=(6, 12, 11), radii=(3.5, 6, 5), shape=(12, 24, 24), noise=0.01, seed=0):
    """A bright ellipsoid (100) in a dark volume (10) with slight noise, and its 7 points: the
    six extreme points one voxel outside the blob along each axis (1) and the centre (2); arrays
    (z, y, x). Stage 0's case (tests/utilities/method/test_geodesic.py, and the files and SHA-256
    of the paper's outputs in tests/utilities/workflow/test_stage0.py)."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)) <= 1
    image = (np.where(inside, 100.0, 10.0) + rng.normal(0, noise, shape)).astype(np.float32)
    annotation = np.zeros(shape, np.uint8)
    for axis in range(3):
        coords = np.nonzero(inside)[axis]
        for v in (coords.min() - 1, coords.max() + 1):
            p = list(center)
            p[axis] = v
            annotation[tuple(p)] = 1
    annotation[center] = 2
    return image, annotation, inside
