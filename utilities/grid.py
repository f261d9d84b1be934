"""One home for file names and voxel grids: the ``<subject>_<postfix>.nii.gz`` path, the list of
missing files, and the check that two images share a voxel grid (one tolerance, one message),
used by training, inference, scoring and data preparation alike."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk

__all__ = ["GRID_TOLERANCE", "subject_path", "missing_files", "Grid", "grid_difference", "check_same_grid"]

#: Two grids are the same when their sizes are equal, their spacings agree to this relative
#: tolerance, their direction cosines to this absolute tolerance, and their origins to this
#: fraction of the largest voxel size (NIfTI headers store float32: their rounding is far below).
GRID_TOLERANCE = 1e-3


def subject_path(folder: str | os.PathLike, subject: str, postfix: str) -> Path:
    """``<folder>/<subject>_<postfix>.nii.gz``: where every script reads or writes a subject's file."""
    return Path(folder) / f"{subject}_{postfix}.nii.gz"


def missing_files(subjects: Iterable[str], folder: str | os.PathLike, postfix: str, what: str) -> list[str]:
    """``"<what> <path>"`` for each subject whose :func:`subject_path` is not a file."""
    return [f"{what} {path}" for path in (subject_path(folder, s, postfix) for s in subjects) if not path.is_file()]


@dataclass(frozen=True)
class Grid:
    """A voxel grid in SimpleITK's terms: size and spacing (x, y, z), direction cosines
    (row-major 3×3), origin (LPS mm)."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    direction: tuple[float, ...]
    origin: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image | sitk.ImageFileReader) -> Grid:
        return cls(tuple(int(s) for s in image.GetSize()), tuple(float(s) for s in image.GetSpacing()),
                   tuple(float(d) for d in image.GetDirection()), tuple(float(o) for o in image.GetOrigin()))

    @classmethod
    def read(cls, path: str | os.PathLike, what: str = "image") -> Grid:
        """The grid of a file, from its header only."""
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as e:
            reason = (str(e).strip().splitlines() or ["unknown reason"])[-1]
            raise ValueError(f"cannot read {what} file {path} (unreadable or truncated: {reason}); "
                             "re-create or re-download it") from None
        return cls.of(reader)


def _shown(values: Sequence[float]) -> list[float]:
    return [round(float(v), 4) + 0.0 for v in values]


def grid_difference(ref: Grid, other: Grid) -> tuple[str, list, list] | None:
    """The first property in which ``other`` is not ``ref``'s grid, as ``(name, other's value,
    ref's value)``; ``None`` when they are the same grid (within :data:`GRID_TOLERANCE`)."""
    if other.size != ref.size:
        return "size", list(other.size), list(ref.size)
    if not np.allclose(other.spacing, ref.spacing, rtol=GRID_TOLERANCE, atol=0.0):
        return "spacing", _shown(other.spacing), _shown(ref.spacing)
    if len(other.direction) != len(ref.direction) or not np.allclose(other.direction, ref.direction, rtol=0.0,
                                                                     atol=GRID_TOLERANCE):
        return "orientation", _shown(other.direction), _shown(ref.direction)
    if not np.allclose(other.origin, ref.origin, rtol=0.0, atol=GRID_TOLERANCE * max(ref.spacing)):
        return "origin", _shown(other.origin), _shown(ref.origin)
    return None


def check_same_grid(ref: Grid, ref_path: str | os.PathLike, ref_what: str, other: Grid,
                    other_path: str | os.PathLike, other_what: str, hint: str) -> None:
    """Raise the one-line ``ValueError`` ``"<other_what> <other_path> has <property> <value> but
    <ref_what> <ref_path> has <value>; <hint>"`` unless the two grids are the same (size and
    spacing in x, y, z order and mm; orientation: the direction cosines; origin: LPS mm)."""
    difference = grid_difference(ref, other)
    if difference is not None:
        name, got, want = difference
        raise ValueError(f"{other_what} {other_path} has {name} {got} but {ref_what} {ref_path} has {want}; {hint}")
