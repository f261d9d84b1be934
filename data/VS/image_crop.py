"""Crop the VS images and labels to a fixed box around the tumour.

For every subject of the split, ``<data_dir>/image/<s>_<image_postfix>.nii.gz`` and
``<data_dir>/label/<s>_<label_postfix>.nii.gz`` are padded (symmetrically, image with its
minimum, label with 0) to at least ``--crop_size`` (z y x, default 48 128 128) and a box of that
size centred on the label's bounding box, clamped to the (padded) image, is written to
``<data_dir>/image_crop/`` and ``<data_dir>/label_crop/`` under the same file names.

Unlike the reference script (which kept the uncropped origin), the crops keep their true
geometry: the origin moves to the box's first voxel (through the padding, which extends the
grid), spacing and direction are unchanged, so a crop overlays the original in a viewer. The
minimum image shape and the largest tumour extent over the split are reported at the end.

Example::

    python data/VS/image_crop.py --data_dir ./data/VS/ --dataset_split ./splits/split_VS.csv \\
        --image_postfix T2 --label_postfix Label
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages first

from utilities.core.arguments import ArgumentParser
from utilities.core.logs import LOGGER_NAME, setup_logger, show_progress
from utilities.data.grid import (
    Grid,
    check_same_grid,
    find_subject_file,
    grid_difference,
    listed,
    missing_paths,
    subject_path,
)
from utilities.data.io import check_overwrite, read_image, staged_folders, write_image
from utilities.data.splits import subjects_of

__all__ = ["DEFAULT_CROP_SIZE", "CropStats", "bounding_box", "crop_box_start", "pad_to_size", "crop_subject",
           "crop_dataset", "main"]

logger = logging.getLogger(LOGGER_NAME)

DEFAULT_CROP_SIZE = (48, 128, 128)  # z, y, x


@dataclass
class CropStats:
    """Summary over the cropped subjects; shapes in voxels, (z, y, x) order."""

    subjects: int
    min_image_shape: tuple[int, int, int]
    max_tumour_extent: tuple[int, int, int]


def _check_crop_size(crop_size: Sequence[int]) -> tuple[int, int, int]:
    size = tuple(int(s) for s in crop_size)
    if len(size) != 3 or any(s <= 0 for s in size):
        raise ValueError(f"--crop_size needs three positive sizes (z y x), got {list(crop_size)}")
    return size  # type: ignore[return-value]


def bounding_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive per-axis minimum and maximum index of the nonzero voxels of ``mask``."""
    nonzero = np.nonzero(mask)
    return np.array([ax.min() for ax in nonzero]), np.array([ax.max() for ax in nonzero])


def crop_box_start(bbox_min: Sequence[int], bbox_max: Sequence[int], shape: Sequence[int],
                   crop_size: Sequence[int]) -> tuple[int, ...]:
    """First index of a ``crop_size`` box centred on the bounding box, clamped to ``shape``.

    All arguments in the same axis order; ``shape >= crop_size`` on every axis (pad first).
    """
    start = []
    for lo, hi, n, c in zip(bbox_min, bbox_max, shape, crop_size):
        if n < c:
            raise ValueError(f"image size {list(shape)} is smaller than the crop {list(crop_size)}; pad first")
        centre = (int(lo) + int(hi)) // 2
        start.append(min(max(centre - c // 2, 0), n - c))
    return tuple(start)


def pad_to_size(image: sitk.Image, min_size_zyx: Sequence[int], value: float) -> tuple[sitk.Image, tuple[int, ...]]:
    """Pad ``image`` symmetrically (extra voxel after) to at least ``min_size_zyx``.

    Returns the padded image (grid extended, so its origin moves by the lower padding) and the
    lower padding in (z, y, x) order.
    """
    size_zyx = image.GetSize()[::-1]
    total = [max(c - n, 0) for n, c in zip(size_zyx, min_size_zyx)]
    lower = [t // 2 for t in total]
    upper = [t - lo for t, lo in zip(total, lower)]
    if not any(total):
        return image, (0, 0, 0)
    padded = sitk.ConstantPad(image, [int(v) for v in lower[::-1]], [int(v) for v in upper[::-1]], float(value))
    return padded, tuple(lower)


def _same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    return grid_difference(Grid.of(a), Grid.of(b)) is None


def crop_subject(image: sitk.Image, label: sitk.Image, crop_size: Sequence[int] = DEFAULT_CROP_SIZE,
                 name: str = "subject") -> tuple[sitk.Image, sitk.Image]:
    """Pad and crop one image/label pair to ``crop_size`` (z, y, x) around the label.

    Both outputs keep their physical geometry (origin of the box's first voxel, same spacing
    and direction). Raises ``ValueError`` naming ``name`` for different sizes or an empty label.
    """
    crop_size = _check_crop_size(crop_size)
    if image.GetSize() != label.GetSize():
        raise ValueError(f"{name}: image size {image.GetSize()} differs from label size {label.GetSize()} (x, y, z)")
    check_same_grid(Grid.of(image), f"of {name}", "image", Grid.of(label), f"of {name}", "label",
                    "resample the label onto the image's voxel grid before cropping")
    label_arr = sitk.GetArrayViewFromImage(label)
    if not label_arr.any():
        raise ValueError(f"{name}: the label is empty, no tumour to centre the crop on")
    bbox_min, bbox_max = bounding_box(label_arr)
    image_min = float(sitk.GetArrayViewFromImage(image).min())
    image_pad, lower = pad_to_size(image, crop_size, image_min)
    label_pad, _ = pad_to_size(label, crop_size, 0.0)
    shape_zyx = image_pad.GetSize()[::-1]
    start = crop_box_start(bbox_min + np.array(lower), bbox_max + np.array(lower), shape_zyx, crop_size)
    z, y, x = start
    cz, cy, cx = crop_size
    return (image_pad[x:x + cx, y:y + cy, z:z + cz], label_pad[x:x + cx, y:y + cy, z:z + cz])


def crop_dataset(data_dir: str | os.PathLike, dataset_split: str | os.PathLike, image_postfix: str = "T2",
                 label_postfix: str = "Label", crop_size: Sequence[int] = DEFAULT_CROP_SIZE,
                 overwrite: bool = False) -> CropStats:
    """Crop every subject of the split into ``image_crop/`` and ``label_crop/`` of ``data_dir``
    (existing crops are replaced only with ``overwrite``)."""
    crop_size = _check_crop_size(crop_size)
    data_dir = Path(data_dir)
    subjects = subjects_of(dataset_split, None)
    if not subjects:
        raise ValueError(f"split file {dataset_split} lists no subjects")
    pairs = [(s, find_subject_file(data_dir / "image", s, image_postfix, "image"),
              find_subject_file(data_dir / "label", s, label_postfix, "label")) for s in subjects]
    missing = missing_paths(p for _, img, lab in pairs for p in (img, lab))
    if missing:
        raise FileNotFoundError(f"{len(missing)} file(s) listed by {dataset_split} are missing: {listed(missing)}")
    check_overwrite([subject_path(data_dir / folder, s, postfix) for s in subjects
                     for folder, postfix in (("image_crop", image_postfix), ("label_crop", label_postfix))],
                    "--data_dir", overwrite, "cropped file")
    image_out, label_out = data_dir / "image_crop", data_dir / "label_crop"
    min_shape = np.full(3, np.iinfo(np.int64).max)
    max_extent = np.zeros(3, dtype=np.int64)
    with staged_folders(image_out, label_out) as (image_stage, label_stage):   # all subjects, or none
        for subject, image_path, label_path in tqdm(pairs, desc="cropping", unit="subject",
                                                    disable=not show_progress()):
            image = read_image(image_path)
            label = read_image(label_path, what="label")
            shape_zyx = np.array(image.GetSize()[::-1])
            min_shape = np.minimum(min_shape, shape_zyx)
            image_crop, label_crop = crop_subject(image, label, crop_size, name=subject)
            lo, hi = bounding_box(sitk.GetArrayViewFromImage(label))
            extent = hi - lo + 1
            max_extent = np.maximum(max_extent, extent)
            if np.any(extent > np.array(crop_size)):
                logger.warning("%s: tumour extent %s (z, y, x) exceeds the crop %s, the crop cuts it",
                               subject, extent.tolist(), list(crop_size))
            logger.debug("%s: image shape %s, tumour extent %s (z, y, x)", subject, shape_zyx.tolist(),
                         extent.tolist())
            write_image(image_crop, subject_path(image_stage, subject, image_postfix))
            write_image(label_crop, subject_path(label_stage, subject, label_postfix))
    stats = CropStats(len(pairs), tuple(int(v) for v in min_shape), tuple(int(v) for v in max_extent))
    logger.info("cropped %d subject(s) to %s (z, y, x) into %s and %s", stats.subjects, list(crop_size),
                image_out, label_out)
    logger.info("minimum image shape (z, y, x): %s", list(stats.min_image_shape))
    logger.info("maximum tumour extent (z, y, x): %s", list(stats.max_tumour_extent))
    return stats


def main(argv: list[str] | None = None) -> CropStats:
    parser = ArgumentParser(description="Crop VS images and labels to a fixed box around the tumour")
    parser.add_argument("--data_dir", default="./data/VS/", help="folder holding image/ and label/")
    parser.add_argument("--dataset_split", default="./splits/split_VS.csv", help="split CSV (subject,phase)")
    parser.add_argument("--image_postfix", default="T2", help="image files are <subject>_<postfix>.nii.gz")
    parser.add_argument("--label_postfix", default="Label", help="label files are <subject>_<postfix>.nii.gz")
    parser.add_argument("--crop_size", type=int, nargs=3, default=list(DEFAULT_CROP_SIZE), metavar=("Z", "Y", "X"),
                        help="box size in voxels, slice axis first")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing files of image_crop/ and label_crop/")
    args = parser.parse_args(argv)
    setup_logger(None)
    return crop_dataset(args.data_dir, args.dataset_split, args.image_postfix, args.label_postfix, args.crop_size,
                        args.overwrite)


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
