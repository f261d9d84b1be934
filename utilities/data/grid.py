"""One home for file names and voxel grids: the image formats and the ``<subject>_<postfix><ext>``
paths (one file per subject and postfix, in any of :data:`IMAGE_EXTENSIONS`), the check that a
subject name can be a file-name part, the list of missing files, the check that a file can be
read at all, the rules a file's geometry must follow, and the check that two images share a
voxel grid (one tolerance, :data:`GRID_TOLERANCE`, one message), used by training, inference,
scoring, the report and data preparation alike.

One geometry: a grid is what SimpleITK reads from the file (TorchIO, every reader and every
writer of the project go through SimpleITK). A file whose axes are not at right angles (a
sheared or scaled direction, in any format), and a NIfTI file on which SimpleITK's and
nibabel's rules would give two different geometries (its qform and sform disagree), are refused
when read (:func:`check_geometry`)."""
from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from utilities.core.files import existing_file

__all__ = ["IMAGE_EXTENSIONS", "MAX_NAME_BYTES", "image_extension", "check_name_length", "GRID_TOLERANCE",
           "unreadable", "check_readable", "data_files", "ras_affine", "check_direction", "check_geometry",
           "check_subject_name", "subject_path", "find_subject_file", "missing_files",
           "missing_paths", "listed", "MAX_LISTED", "Grid",
           "grid_difference", "check_same_grid", "OUTPUT_FORMATS", "output_extension"]

#: The image file formats every reader of the project accepts for ``<subject>_<postfix><ext>``
#: (matched as whole name endings);
#: outputs are ``.nii.gz`` unless a script's ``--output_format`` says otherwise.
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

#: The longest file name (in bytes, UTF-8) the usual file systems (ext4, XFS, APFS, NTFS) allow.
MAX_NAME_BYTES = 255

#: What ``--output_format`` may ask for (default ``nii.gz``); the extension of every written volume.
OUTPUT_FORMATS = tuple(ext.lstrip(".") for ext in IMAGE_EXTENSIONS if ext not in (".nhdr", ".mhd"))

#: The project's one geometry tolerance. Two grids are the same when their sizes are equal, their
#: spacings agree to this relative tolerance, their direction cosines to this absolute tolerance
#: and their origins to this fraction of the largest voxel size (:func:`grid_difference`). The
#: same number bounds the rest: a direction is orthonormal when ``DᵀD`` is the identity within it
#: (:func:`check_direction`), the qform and sform of one NIfTI file agree when every entry is
#: within this fraction of its largest voxel size, and a volume is written exactly when the file
#: read back is its grid (:func:`utilities.data.io.write_image`).
GRID_TOLERANCE = 1e-3

# ITK's own warnings (e.g. a NIfTI sform with "unexpected scales") are printed by the C++ library
# as several lines on stderr; what they warn of is checked here and refused in one line
# (check_geometry), so they are not shown.
sitk.ProcessObject.SetGlobalWarningDisplay(False)


def image_extension(path: str | os.PathLike) -> str | None:
    """The :data:`IMAGE_EXTENSIONS` entry ``path``'s name ends with (``None``: no image name)."""
    name = Path(path).name
    return next((ext for ext in IMAGE_EXTENSIONS if name.endswith(ext)), None)


def check_name_length(path: str | os.PathLike) -> Path:
    """Refuse a file name longer than :data:`MAX_NAME_BYTES` with a one-line ``ValueError``
    (the file system's "File name too long" would otherwise come mid-run)."""
    path = Path(path)
    size = len(path.name.encode("utf-8", "surrogateescape"))
    if size > MAX_NAME_BYTES:
        raise ValueError(f"file name {path.name[:40]}...{path.name[-20:]} is {size} bytes long, more than the "
                         f"{MAX_NAME_BYTES} a file system allows (in {path.parent}); shorten the subject name "
                         "or the postfix")
    return path


def unreadable(path: str | os.PathLike, what: str, reason: str) -> ValueError:
    """The one-line error of a file that exists and may be read but cannot be decoded."""
    return ValueError(f"cannot read {what} file {path} (unreadable or truncated: {reason}); "
                      "re-create or re-download it")


#: The header line naming a detached data file: NRRD's ``data file:`` (or ``datafile:``),
#: MetaImage's ``ElementDataFile =``.
_DATA_FILE = re.compile(r"^\s*(?:data\s?file\s*:|ElementDataFile\s*=)\s*(.*?)\s*$", re.I)


def data_files(path: str | os.PathLike) -> list[Path]:
    """The data file named by the header ``path`` (``.nhdr``, ``.mhd``; a ``.nrrd`` or ``.mha``
    may be a detached header too), as a path beside the header; ``[]`` for a NIfTI file, data
    in the file itself (``LOCAL``) or a list or pattern of files (``LIST``, ``%d``: left to the
    reader)."""
    path = Path(path)
    ext = image_extension(path)
    if ext not in (".nhdr", ".nrrd", ".mhd", ".mha"):
        return []
    with open(path, "rb") as f:
        head = f.read(65536).decode("latin-1")
    for line in head.splitlines():
        if not line.strip() and ext in (".nhdr", ".nrrd"):
            break  # a NRRD header ends at the first blank line; the data follow
        found = _DATA_FILE.match(line)
        if found:
            name = found.group(1)
            if not name or name.upper() == "LOCAL" or name.upper().startswith("LIST") or "%" in name:
                return []
            return [path.parent / name]
    return []


def _denied(what: str, file: Path) -> PermissionError:
    return PermissionError(f"{what} file {file} cannot be read: permission denied; give this user read permission "
                           f"(chmod a+r {file}) or copy the file somewhere readable")


def check_readable(path: str | os.PathLike, what: str = "image") -> Path:
    """Refuse, in one line naming the file, a file that is missing or that this user may not
    read, and a detached header whose data file is missing or unreadable (the readers would
    call each of them truncated). Returns ``path``."""
    path = Path(path)
    try:  # a folder on the way that this user may not search: permission denied, not "not found"
        existing_file(path, f"{what} file")
        files = [path, *data_files(path)]
    except PermissionError:
        raise _denied(what, path) from None
    for file in files:
        try:
            if not file.is_file():
                raise FileNotFoundError(f"{what} file {path} is a header whose data file {file} does not exist; put "
                                        "the data file beside the header (or correct the header's data file line)")
            with open(file, "rb"):
                pass
        except PermissionError:
            raise _denied(what, file) from None
    return path


def ras_affine(spacing: Sequence[float], direction: Sequence[float], origin: Sequence[float]) -> np.ndarray:
    """The 4×4 voxel (x, y, z index) → RAS mm affine of a SimpleITK geometry (LPS, direction
    row-major 3×3), as TorchIO and nibabel use it."""
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    cosines = np.asarray(direction, dtype=float).reshape(len(spacing), len(spacing))[:3, :3]
    out = np.eye(4)
    out[:3, :3] = lps_to_ras @ cosines @ np.diag(np.asarray(spacing, dtype=float)[:3])
    out[:3, 3] = lps_to_ras @ np.asarray(origin, dtype=float)[:3]
    return out


def _is_nifti(path: Path) -> bool:
    return path.name.endswith((".nii", ".nii.gz"))


def _where(affine: np.ndarray) -> str:
    """Orientation, voxel size and origin of a voxel → RAS affine, as a message shows them."""
    spacing = [round(float(v), 4) + 0.0 for v in np.linalg.norm(affine[:3, :3], axis=0)]
    origin = [round(float(v), 4) + 0.0 for v in affine[:3, 3]]
    return f"{''.join(nib.aff2axcodes(affine))}, spacing {spacing}, origin {origin}"


#: How a NIfTI file's spatial unit converts to mm (SimpleITK converts, nibabel does not).
_TO_MM = {"meter": 1000.0, "micron": 0.001}


def _disagreement_hint(header: Any) -> str:
    """What to do about a NIfTI file that SimpleITK and nibabel read differently, from its
    header: a spatial unit other than mm, or a pixdim that its sform's voxel sizes contradict."""
    unit = header.get_xyzt_units()[0]
    if unit in _TO_MM:
        k = _TO_MM[unit]
        return (f"its spatial unit is {unit}, which SimpleITK converts to mm and nibabel does not; re-save it in mm, "
                f"e.g. in Python: img = nibabel.load(f); a = numpy.diag([{k:g}, {k:g}, {k:g}, 1]) @ img.affine; "
                "img.set_sform(a); img.set_qform(a); img.header.set_xyzt_units('mm'); nibabel.save(img, f)")
    return ("its voxel sizes (pixdim) contradict its sform, whose scales one reader takes and the other not; re-save "
            "it with one geometry, e.g. in Python: img = nibabel.load(f); img.set_qform(img.get_sform()); "
            "nibabel.save(img, f)")


def check_direction(direction: Sequence[float], path: str | os.PathLike, what: str = "image") -> None:
    """Refuse, in one line naming the file, a direction whose axes are not at right angles or
    not of unit length (a sheared or scaled grid). ITK reads such a matrix from ``.mha`` or
    ``.nrrd`` as it is, but NIfTI cannot hold it (ITK's NIfTI writer replaces it by another
    matrix) and tools resample it differently, so a mask written for it would not overlay its
    image: every format gets the rule the NIfTI reader applies to a sheared qform/sform."""
    n = int(round(len(direction) ** 0.5))
    matrix = np.asarray(direction, dtype=float).reshape(n, n)
    if not np.allclose(matrix.T @ matrix, np.eye(n), rtol=0.0, atol=GRID_TOLERANCE):
        shown = [round(float(v), 4) + 0.0 for v in matrix.ravel()]
        raise ValueError(f"{what} file {path} has a sheared direction {shown} (its axes are not at right angles or "
                         "not of unit length), which NIfTI cannot store and tools resample differently; resample it "
                         "onto a grid with an orthonormal direction and save it again")


def _check_nifti_geometry(path: Path, what: str, mine: np.ndarray) -> None:
    """The NIfTI rules of :func:`check_geometry`; ``mine``: SimpleITK's affine of the file."""
    try:
        image: Any = nib.load(str(path))  # a NIfTI image (nibabel declares the base FileBasedImage)
        header = image.header
        zoom = max(float(z) for z in header.get_zooms()[:3]) or 1.0
    except Exception:  # an unreadable file is reported by the reader itself
        return
    tol = GRID_TOLERANCE * zoom
    hint = ("re-save it with one geometry, e.g. in Python: img = nibabel.load(f); img.set_qform(img.get_sform()); "
            "nibabel.save(img, f) (or set_sform(get_qform()) if the qform is the right one)")
    if int(header["qform_code"]) > 0 and int(header["sform_code"]) > 0:
        qform, sform = header.get_qform(), header.get_sform()
        if not np.allclose(qform, sform, rtol=0.0, atol=tol):
            raise ValueError(f"{what} file {path} holds two world geometries: its qform ({_where(qform)}) and its "
                             f"sform ({_where(sform)}) disagree, and tools differ on which to use; {hint}")
    if not np.allclose(mine, image.affine, rtol=0.0, atol=tol):
        raise ValueError(f"{what} file {path} has a geometry that SimpleITK ({_where(mine)}) and nibabel "
                         f"({_where(image.affine)}) read differently; {_disagreement_hint(header)}")


def check_geometry(path: str | os.PathLike, what: str = "image") -> None:
    """Refuse, with a one-line ``ValueError``, a file whose world geometry the project cannot
    keep: a sheared or scaled direction in any format (:func:`check_direction`), and a NIfTI
    file that holds two world geometries.

    The project's one geometry is SimpleITK's reading (TorchIO, every reader and every writer
    use it). A NIfTI header has two places for it, the qform and the sform; when both are set
    and disagree, tools differ on which they use (nibabel and SimpleITK prefer the sform, older
    ITK and some viewers the qform; SimpleITK falls back to the qform for a sheared sform), so a
    mask written by one would be mirrored or shifted in another. Such a file (and one on which
    nibabel's and SimpleITK's readings differ for any other reason) is refused.
    """
    path = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:  # an unreadable file is reported by the reader itself
        return
    check_direction(reader.GetDirection(), path, what)
    if _is_nifti(path) and reader.GetDimension() >= 3:
        _check_nifti_geometry(path, what, ras_affine(reader.GetSpacing(), reader.GetDirection(), reader.GetOrigin()))


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
    :data:`IMAGE_EXTENSIONS`, checked to be readable (:func:`check_readable`); the ``.nii.gz``
    path when none exists (the caller reports it missing).

    Raises:
        ValueError: one line naming both files when the subject has files in two formats.
        PermissionError, FileNotFoundError: the file may not be read, or is a header whose data
            file is missing.
    """
    check_subject_name(subject)
    found = [p for p in (Path(folder) / f"{subject}_{postfix}{ext}" for ext in IMAGE_EXTENSIONS) if p.is_file()]
    if not found:
        found = _unicode_twins(Path(folder), f"{subject}_{postfix}")
    if len(found) > 1:
        raise ValueError(f"{what} of subject {subject!r} exists in {len(found)} formats: "
                         f"{' and '.join(str(p) for p in found)}; keep one of them")
    return check_readable(found[0], what) if found else subject_path(folder, subject, postfix)


def _unicode_twins(folder: Path, stem: str) -> list[Path]:
    """The image files of ``folder`` named ``stem`` + an image extension once both names are in
    Unicode's composed form (NFC): the same name written with decomposed accents (NFD, as macOS
    file systems store ``ä``) is the same subject, though its bytes differ."""
    def nfc(text: str) -> str:
        return unicodedata.normalize("NFC", text)

    if nfc(stem) == stem == unicodedata.normalize("NFD", stem) or not folder.is_dir():
        return []   # a name without accents has no other spelling
    wanted = {nfc(stem + ext) for ext in IMAGE_EXTENSIONS}
    return sorted(p for p in folder.iterdir() if nfc(p.name) in wanted and p.is_file())


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
        """The grid of a file, from its header only (checked: :func:`check_readable`,
        :func:`check_geometry`)."""
        check_readable(path, what)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as e:
            raise unreadable(path, what, (str(e).strip().splitlines() or ["unknown reason"])[-1]) from None
        check_geometry(path, what)
        return cls.of(reader)

    def affine(self) -> np.ndarray:
        """The 4×4 voxel (x, y, z index) → RAS mm affine of this grid, as TorchIO and nibabel
        use it (SimpleITK's LPS with the first two world axes negated)."""
        return ras_affine(self.spacing, self.direction, self.origin)


def _shown(values: Sequence[float], digits: int = 4) -> list[float]:
    return [round(float(v), digits) + 0.0 for v in values]


def _shown_apart(other: Sequence[float], ref: Sequence[float]) -> tuple[list[float], list[float]]:
    """Both lists rounded to 4 decimals, or to as many more (up to 12) as they need to differ
    in the message (a difference of 1e-5 mm between two origins of -512.3 mm)."""
    digits = next((d for d in range(4, 13) if _shown(other, d) != _shown(ref, d)), 12)
    return _shown(other, digits), _shown(ref, digits)


def grid_difference(ref: Grid, other: Grid) -> tuple[str, list, list] | None:
    """The first property in which ``other`` is not ``ref``'s grid, as ``(name, other's value,
    ref's value)``; ``None`` when they are the same grid (within :data:`GRID_TOLERANCE`)."""
    if other.size != ref.size:
        return "size", list(other.size), list(ref.size)
    if not np.allclose(other.spacing, ref.spacing, rtol=GRID_TOLERANCE, atol=0.0):
        return "spacing", *_shown_apart(other.spacing, ref.spacing)
    if len(other.direction) != len(ref.direction) or not np.allclose(other.direction, ref.direction, rtol=0.0,
                                                                     atol=GRID_TOLERANCE):
        return "orientation", *_shown_apart(other.direction, ref.direction)
    if not np.allclose(other.origin, ref.origin, rtol=0.0, atol=GRID_TOLERANCE * max(ref.spacing)):
        return "origin", *_shown_apart(other.origin, ref.origin)
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
