"""One home for file names and voxel grids: the ``<subject>_<postfix><ext>`` paths (one file per
subject and postfix, in any of :data:`utilities.io.IMAGE_EXTENSIONS`), the check that a subject
name can be a file-name part, the list of missing files, and the check that two images share a
voxel grid (one tolerance, one message), used by training, inference, scoring and data
preparation alike.

One geometry: a grid is what SimpleITK reads from the file (TorchIO, every reader and every
writer of the project go through SimpleITK); a NIfTI file on which SimpleITK's and nibabel's
rules would give two different geometries (its qform and sform disagree) is refused when read
(:func:`utilities.io.check_geometry`)."""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from utilities.io import IMAGE_EXTENSIONS, check_geometry, check_name_length, ras_affine

__all__ = ["GRID_TOLERANCE", "check_subject_name", "subject_path", "find_subject_file", "missing_files",
           "missing_paths", "listed", "MAX_LISTED", "Grid",
           "grid_difference", "check_same_grid", "OUTPUT_FORMATS", "output_extension"]

#: What ``--output_format`` may ask for (default ``nii.gz``); the extension of every written volume.
OUTPUT_FORMATS = tuple(ext.lstrip(".") for ext in IMAGE_EXTENSIONS if ext not in (".nhdr", ".mhd"))

#: Two grids are the same when their sizes are equal, their spacings agree to this relative
#: tolerance, their direction cosines to this absolute tolerance, and their origins to this
#: fraction of the largest voxel size (NIfTI headers store float32: their rounding is far below).
GRID_TOLERANCE = 1e-3


def check_subject_name(subject: str) -> str:
    """Refuse a subject name that cannot be a file-name part: empty, ``.`` or ``..``, holding a
    path separator or a control character (it would read or write outside its folder), or with
    a leading or trailing space (the split reader strips it, so the file would never be found).
    Returns ``subject``; raises a one-line ``ValueError`` naming it."""
    if not isinstance(subject, str) or subject.strip() in ("", ".", ".."):
        raise ValueError(f"subject name {subject!r} cannot be part of a file name; rename the subject")
    bad = sorted({c for c in subject if c in "/\\" or ord(c) < 32 or c == "\x7f"})
    if bad:
        raise ValueError(f"subject name {subject!r} holds {' and '.join(map(repr, bad))}, which cannot be part of a "
                         "file name (a path separator would read or write outside the folder); rename the subject")
    if subject != subject.strip():
        raise ValueError(f"subject name {subject!r} has a leading or trailing space, which split files cannot "
                         "keep; rename the subject (and its files)")
    return subject


def output_extension(output_format: str = "nii.gz") -> str:
    """``.nii.gz`` for ``nii.gz``: the extension of written volumes (``--output_format``)."""
    ext = "." + output_format.lstrip(".")
    if ext not in IMAGE_EXTENSIONS or ext in (".nhdr", ".mhd"):
        raise ValueError(f"--output_format must be one of {list(OUTPUT_FORMATS)}, got {output_format!r}")
    return ext


def subject_path(folder: str | os.PathLike, subject: str, postfix: str, ext: str = ".nii.gz") -> Path:
    """``<folder>/<subject>_<postfix><ext>``: where a script writes a subject's file (and, for
    ``.nii.gz``, the name a missing input is reported under). The subject name is checked
    (:func:`check_subject_name`), and so is the length of the file name."""
    check_subject_name(subject)
    path = Path(folder) / f"{subject}_{postfix}{ext}"
    check_name_length(path)
    return path


def find_subject_file(folder: str | os.PathLike, subject: str, postfix: str, what: str = "image") -> Path:
    """The one existing ``<folder>/<subject>_<postfix><ext>`` for ``ext`` in
    :data:`utilities.io.IMAGE_EXTENSIONS`; the ``.nii.gz`` path when none exists (the caller
    reports it missing).

    Raises:
        ValueError: one line naming both files when the subject has files in two formats.
    """
    check_subject_name(subject)
    found = [p for p in (Path(folder) / f"{subject}_{postfix}{ext}" for ext in IMAGE_EXTENSIONS) if p.is_file()]
    if len(found) > 1:
        raise ValueError(f"{what} of subject {subject!r} exists in {len(found)} formats: "
                         f"{' and '.join(str(p) for p in found)}; keep one of them")
    return found[0] if found else subject_path(folder, subject, postfix)


def missing_files(subjects: Iterable[str], folder: str | os.PathLike, postfix: str, what: str) -> list[str]:
    """``"<what> <path>"`` for each subject without a file (:func:`find_subject_file`)."""
    return missing_paths((find_subject_file(folder, s, postfix, what) for s in subjects), what)


#: How many missing files a message names before it gives their count.
MAX_LISTED = 10


def missing_paths(paths: Iterable[str | os.PathLike], what: str = "") -> list[str]:
    """``"<what> <path>"`` (``"<path>"`` without ``what``) for each path that is not a file."""
    return [f"{what} {p}".strip() for p in paths if not Path(p).is_file()]


def listed(items: Sequence[str], limit: int = MAX_LISTED) -> str:
    """The first ``limit`` items joined by ``"; "``, then ``"; ... (<n> in all)"`` when there are
    more: how every missing-files message of the project lists them."""
    shown = "; ".join(items[:limit])
    return shown + (f"; ... ({len(items)} in all)" if len(items) > limit else "")


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
        check_geometry(path, what)
        return cls.of(reader)

    def affine(self) -> np.ndarray:
        """The 4×4 voxel (x, y, z index) → RAS mm affine of this grid, as TorchIO and nibabel
        use it (SimpleITK's LPS with the first two world axes negated)."""
        return ras_affine(self.spacing, self.direction, self.origin)


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
