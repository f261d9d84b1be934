"""Gather the BraTS 2019 FLAIR volumes and whole-tumour labels into one folder pair.

For each case folder in ``<original_dir>/HGG`` and ``<original_dir>/LGG``,
``<case>_flair.nii.gz`` is copied byte for byte to ``<destination_dir>/image/<case>_Flair.nii.gz``
and ``<destination_dir>/label/<case>_Label.nii.gz`` is written as ``seg != 0`` (the union of
enhancing tumour, tumour core and oedema = whole tumour), uint8, in the seg's geometry.
All cases are checked first (both files present, FLAIR and seg of size 240 x 240 x 155), so
a bad case stops the run, naming it, before anything is written.

Example::

    python data/BraTS/merge_and_move.py --original_dir ./data/BraTS2019/MICCAI_BraTS_2019_Data_Training/ \\
        --destination_dir ./data/BraTS/
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages first

from utilities.core.arguments import ArgumentParser
from utilities.core.logs import LOGGER_NAME, setup_logger, show_progress
from utilities.data.grid import Grid, check_same_grid, missing_paths, subject_path
from utilities.data.io import atomic_path, check_overwrite, read_image, staged_folders, write_like

__all__ = ["GRADES", "BRATS_SHAPE", "find_cases", "check_case", "merge_and_move", "main"]

logger = logging.getLogger(LOGGER_NAME)

GRADES = ("HGG", "LGG")
BRATS_SHAPE = (240, 240, 155)  # x, y, z (SimpleITK order)


def find_cases(original_dir: str | os.PathLike) -> list[tuple[str, Path]]:
    """Case folders of ``HGG/`` and ``LGG/`` as ``(case, folder)``, sorted by grade then name.

    A missing grade folder or a case name found twice is an error; files beside the case
    folders are logged and ignored.
    """
    original_dir = Path(original_dir)
    cases: dict[str, Path] = {}
    for grade in GRADES:
        grade_dir = original_dir / grade
        if not grade_dir.is_dir():
            raise FileNotFoundError(f"{grade_dir} not found: --original_dir must be the "
                                    "MICCAI_BraTS_2019_Data_Training folder holding HGG/ and LGG/")
        for entry in sorted(grade_dir.iterdir()):
            if not entry.is_dir():
                logger.warning("ignoring file %s (not a case folder)", entry)
                continue
            if entry.name in cases:
                raise ValueError(f"case {entry.name} found twice: {cases[entry.name]} and {entry}")
            cases[entry.name] = entry
    if not cases:
        raise ValueError(f"no case folders in {original_dir}/HGG or {original_dir}/LGG")
    return list(cases.items())


def _size(path: Path) -> tuple[int, ...]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        read_image(path)  # raises the one-line "cannot read" error naming the file
        raise
    return tuple(reader.GetSize())


def check_case(case: str, folder: Path, expected_shape: Sequence[int] = BRATS_SHAPE) -> tuple[Path, Path]:
    """Paths of the FLAIR and seg files of one case, after checking that both exist and have
    size ``expected_shape`` (x, y, z); a ``ValueError``/``FileNotFoundError`` names the case."""
    flair, seg = folder / f"{case}_flair.nii.gz", folder / f"{case}_seg.nii.gz"
    missing = [Path(m).name for m in missing_paths((flair, seg))]
    if missing:
        raise FileNotFoundError(f"case {case} ({folder}) lacks {', '.join(missing)}")
    expected = tuple(int(s) for s in expected_shape)
    for path in (flair, seg):
        size = _size(path)
        if size != expected:
            raise ValueError(f"case {case}: {path.name} has size {list(size)}, expected {list(expected)} (x, y, z)")
    check_same_grid(Grid.read(flair, "FLAIR"), flair, "FLAIR", Grid.read(seg, "segmentation"), seg, "segmentation",
                    "the whole-tumour label would not overlay its image: resample the segmentation onto the FLAIR")
    return flair, seg


def merge_and_move(original_dir: str | os.PathLike, destination_dir: str | os.PathLike,
                   expected_shape: Sequence[int] = BRATS_SHAPE, overwrite: bool = False) -> list[str]:
    """Copy the FLAIR volumes and write the whole-tumour labels (existing ones are replaced
    only with ``overwrite``); returns the case names."""
    if len(expected_shape) != 3 or any(int(s) <= 0 for s in expected_shape):
        raise ValueError(f"--expected_shape needs three positive sizes (x y z), got {list(expected_shape)}")
    cases = find_cases(original_dir)
    checked = [(case, *check_case(case, folder, expected_shape)) for case, folder in cases]
    check_overwrite([subject_path(Path(destination_dir) / folder, case, postfix) for case, _ in cases
                     for folder, postfix in (("image", "Flair"), ("label", "Label"))], "--destination_dir", overwrite,
                    "file")
    image_dir, label_dir = Path(destination_dir) / "image", Path(destination_dir) / "label"
    with staged_folders(image_dir, label_dir) as (image_stage, label_stage):   # all cases, or none
        for case, flair, seg in tqdm(checked, desc="BraTS cases", unit="case", disable=not show_progress()):
            with atomic_path(subject_path(image_stage, case, "Flair")) as tmp:
                shutil.copyfile(flair, tmp)
            seg_image = read_image(seg, what="segmentation")
            label = (sitk.GetArrayViewFromImage(seg_image) != 0).astype(np.uint8)
            write_like(label, seg_image, subject_path(label_stage, case, "Label"))
    logger.info("wrote %d FLAIR image(s) to %s and whole-tumour label(s) to %s", len(checked), image_dir, label_dir)
    return [case for case, _, _ in checked]


def main(argv: list[str] | None = None) -> list[str]:
    parser = ArgumentParser(description="Copy the BraTS 2019 FLAIR volumes and merge the tumour "
                                        "labels into one whole-tumour label")
    parser.add_argument("--original_dir", default="./data/BraTS2019/MICCAI_BraTS_2019_Data_Training/",
                        help="folder holding HGG/ and LGG/")
    parser.add_argument("--destination_dir", default="./data/BraTS/", help="image/ and label/ are created here")
    parser.add_argument("--expected_shape", type=int, nargs=3, default=list(BRATS_SHAPE), help=argparse.SUPPRESS)
    parser.add_argument("--overwrite", action="store_true", help="replace existing files of image/ and label/")
    args = parser.parse_args(argv)
    setup_logger(None)
    return merge_and_move(args.original_dir, args.destination_dir, args.expected_shape, args.overwrite)


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
