"""Atomic file writing and image reading shared by every script.

Everything the project writes goes through :func:`atomic_path`: the content is written to a
temporary file in the destination folder and renamed into place, so a crash mid-write never
leaves a half-written file where a good one was; the files of one output (a table and its CSVs)
are renamed together once all are written (:func:`save_together`), the files of many subjects
once every subject is written (:func:`staged_folders`); an existing output is replaced only when
the user asked (:func:`check_overwrite`). Images are read by one reader (:func:`read_image`: readable,
one geometry, real and finite voxels, in every format) and written by one writer
(:func:`write_image`: a grid the format cannot store exactly is refused). The file names and
grid rules live in :mod:`utilities.data.grid` (re-exported here).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import nibabel as nib
import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch

from utilities.core.errors import OutputError
from utilities.data.grid import (
    GRID_TOLERANCE,
    IMAGE_EXTENSIONS,
    MAX_NAME_BYTES,
    Grid,
    check_geometry,
    check_name_length,
    check_readable,
    grid_difference,
    image_extension,
    ras_affine,
    unreadable,
)

__all__ = [
    "OutputError",
    "TEMP_PREFIX",
    "is_temporary",
    "remove_temporaries",
    "atomic_path",
    "staged_folders",
    "save_torch",
    "STATE_DICT_ACCEPTED",
    "load_torch",
    "save_csv",
    "save_text",
    "save_together",
    "Content",
    "read_image",
    "write_image",
    "write_like",
    "save_nifti",
    "count_nonfinite",
    "check_voxels",
    "check_label_values",
    "check_overwrite",
    "check_storable",
    "exact_format",
    "ensure_writable_dir",
    "check_writable_dir",
    "IMAGE_EXTENSIONS",
    "image_extension",
    "check_geometry",
    "check_readable",
    "check_name_length",
    "GRID_TOLERANCE",
    "ras_affine",
    "MAX_NAME_BYTES",
]

def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: What marks the temporary file of :func:`atomic_path`: ``.<name>.tmp-<random><suffixes>``.
TEMP_PREFIX = ".tmp-"


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is the temporary file of an :func:`atomic_path` write (left behind only
    when the process was killed mid-write); never a result."""
    name = Path(path).name
    return name.startswith(".") and TEMP_PREFIX in name[1:]


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the :func:`atomic_path` temporaries under ``folder`` (recursively), left there by a
    killed process; returns what was removed. Call only while no other process writes there."""
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for path in sorted(folder.rglob(".*")):
            if path.is_file() and is_temporary(path):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
    return removed


#: Permissions of a new file (``mkstemp`` would leave 0600: outputs readable only by their owner).
_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The temporary name keeps the file's suffixes (``.nii.gz``) so writers that choose the
    format from the extension work. The data are flushed to disk before the rename. On any
    exception the temporary file is removed and the existing ``path`` (if any) is left
    untouched; an I/O failure (disk full, permissions: ``OSError``, or the ``RuntimeError`` that
    torch and SimpleITK raise for them) becomes a one-line ``OSError`` naming ``path``.
    """
    path, tmp_path = _temporary_beside(path)
    try:
        yield tmp_path
        _commit(tmp_path, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(e, (OSError, RuntimeError)):
            raise _write_error(path, e) from e
        raise


#: What :func:`save_together` writes: a table (as ``save_csv``), a text (as ``save_text``) or a
#: writer called with the temporary path (``fig.savefig``).
Content: TypeAlias = "pd.DataFrame | str | Callable[[Path], Any]"


def save_together(contents: Mapping[Path, Content]) -> None:
    """Write several files as one output (a table, its CSVs, its figure): each is written to its
    temporary file (as by :func:`atomic_path`), and all are flushed and renamed into place only
    when every one is written, so a failure writing any of them leaves every file as it was, never
    new CSVs beside an old table. A rename that fails after others puts back the files renamed
    before it."""
    staged: list[tuple[Path, Path]] = []
    try:
        for target, content in contents.items():
            path, tmp_path = _temporary_beside(target)
            staged.append((path, tmp_path))
            try:
                _write_content(content, tmp_path)
            except (OSError, RuntimeError) as e:
                raise _write_error(path, e) from e
        for path, tmp_path in staged:
            try:
                _flush(tmp_path, path)
            except OSError as e:
                raise _write_error(path, e) from e
        _rename_all(staged)
    finally:
        for _, tmp_path in staged:
            with contextlib.suppress(OSError):
                tmp_path.unlink()


def _rename_all(staged: Sequence[tuple[Path, Path]]) -> None:
    """Rename every ``(path, temporary)`` into place, or none: each earlier file is first kept
    under a temporary name (a hard link, or a copy where the file system has none), and a failed
    rename restores the files renamed before it."""
    earlier: list[Path | None] = []
    try:
        for path, _ in staged:
            earlier.append(_keep_beside(path))
        done = 0
        try:
            for path, tmp_path in staged:
                os.replace(tmp_path, path)
                done += 1
        except OSError as e:
            for i in reversed(range(done)):   # the earlier versions back in place, new files removed
                path, kept = staged[i][0], earlier[i]
                with contextlib.suppress(OSError):
                    if kept is None:
                        path.unlink()
                    else:
                        os.replace(kept, path)
                        earlier[i] = None
            raise _write_error(staged[done][0], e) from e
    finally:
        for kept in earlier:
            if kept is not None:
                with contextlib.suppress(OSError):
                    kept.unlink()


def _keep_beside(path: Path) -> Path | None:
    """``path``'s current file under a temporary name beside it: a hard link, or a copy where the
    file system has none (``None`` where there is no file)."""
    if not path.is_file():
        return None
    _, kept = _temporary_beside(path)
    try:
        kept.unlink()
        try:
            os.link(path, kept)
        except OSError:
            shutil.copy2(path, kept)
    except OSError as e:
        with contextlib.suppress(OSError):
            kept.unlink()
        raise _write_error(path, e) from e
    return kept


def _write_content(content: Content, tmp: Path) -> None:
    if isinstance(content, pd.DataFrame):
        content.to_csv(tmp, index=False)
    elif isinstance(content, str):
        tmp.write_text(content, encoding="utf-8")
    else:
        content(tmp)


def _temporary_beside(path: str | os.PathLike) -> tuple[Path, Path]:
    """``path`` (checked) and a new hidden temporary file beside it, named after it."""
    path = check_name_length(path)
    ensure_writable_dir(path.parent)
    suffix = image_extension(path) or path.suffix or ".tmp"
    # ``.<name>.tmp-<8 random><suffix>``, the name cut so that the whole stays a legal file name
    room = MAX_NAME_BYTES - len(f".{TEMP_PREFIX}{suffix}".encode()) - 8
    stem = path.name.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}{TEMP_PREFIX}", suffix=suffix, dir=path.parent)
    except OSError as e:
        raise _write_error(path, e) from e
    os.close(fd)
    return path, Path(tmp)


def _commit(tmp_path: Path, path: Path) -> None:
    """Give ``tmp_path`` the permissions ``path`` has (or a new file's), flush it, rename it to ``path``."""
    _flush(tmp_path, path)
    os.replace(tmp_path, path)


def _flush(tmp_path: Path, path: Path) -> None:
    """Give ``tmp_path`` the permissions ``path`` has (or a new file's) and flush it to disk."""
    mode = path.stat().st_mode & 0o777 if path.is_file() else _FILE_MODE
    os.chmod(tmp_path, mode)
    _fsync(tmp_path)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _write_error(path: Path, error: BaseException) -> OSError:
    reason = getattr(error, "strerror", None) or (str(error).strip().splitlines() or [type(error).__name__])[-1]
    err = OutputError(f"cannot write {path}: {reason}; check the free disk space and that {path.parent} is "
                  f"writable (any previous {path.name} is unchanged)")
    err.errno = getattr(error, "errno", None)
    return err


def ensure_writable_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (with parents) and check that files can be created in it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output folder {folder}: {e.strerror}; choose a writable location") from e
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {folder} is not writable; fix its permissions or choose another")
    return folder


def check_writable_dir(folder: str | os.PathLike) -> Path:
    """Check that ``folder`` could be created and written to, without creating it: for a command
    that may still refuse its inputs (a model that does not load) and must then leave nothing
    behind. Its writer creates it with the first file (:func:`atomic_path`)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"cannot create output folder {folder}: a file of that name exists; choose another")
    existing = next((p for p in (folder, *folder.absolute().parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise OutputError(f"cannot create output folder {folder}: {existing} is not a folder; choose a writable "
                          "location")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "output folder" if existing == folder else f"folder {existing}, where output folder {folder} would be,"
        raise PermissionError(f"{what} is not writable; fix its permissions or choose another")
    return folder


@contextlib.contextmanager
def staged_folders(*folders: str | os.PathLike) -> Iterator[list[Path]]:
    """Yield one staging folder inside each of ``folders`` (created if missing), for a writer of
    many files, e.g. one per subject. When the block succeeds, every file written into staging
    folder k is moved into ``folders[k]`` under its own name (a rename within one folder); when it
    fails, the staging folders are removed and ``folders`` hold what they held before. A run that
    stops on its tenth subject leaves no file of the nine before it, so neither a mix of two runs
    nor files that a rerun would have to ``--overwrite``. The staging folders are hidden
    (``.staging.tmp-...``; :func:`is_temporary`), as the temporaries of :func:`atomic_path` are.
    Folders the block's failure would leave empty that did not exist before are removed too."""
    created = [p for f in folders for p in (Path(f), *Path(f).absolute().parents) if not p.exists()]
    finals = [ensure_writable_dir(f) for f in folders]
    stagings: list[Path] = []
    done = False
    try:
        for final in finals:
            try:
                stagings.append(Path(tempfile.mkdtemp(prefix=f".staging{TEMP_PREFIX}", dir=final)))
            except OSError as e:
                raise _write_error(final, e) from e
        yield stagings
        for staging, final in zip(stagings, finals, strict=True):
            for path in sorted(staging.iterdir()):
                os.replace(path, final / path.name)
        done = True
    finally:
        for staging in stagings:
            shutil.rmtree(staging, ignore_errors=True)
        if not done:  # deepest first; a folder something else has written into meanwhile stays
            for folder in sorted(set(created), key=lambda p: len(p.absolute().parts), reverse=True):
                with contextlib.suppress(OSError):
                    folder.rmdir()


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


#: What a file of weights may be, for the messages of :func:`load_torch` and the checkpoint loaders.
STATE_DICT_ACCEPTED = ("pass a state dict (save model.state_dict(), not the model), a CP_*.pth of this project or "
                       "one of the authors' released checkpoints")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def _pickled_globals(path: Path, error: Exception) -> list[str]:
    """The classes and functions a file's pickle names that ``weights_only`` refuses (read
    without running them); first the one torch stopped at (a whole model: the model's class)."""
    names = _UNSAFE_GLOBAL.findall(str(error))
    try:
        names += sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # a legacy (non-zip) file: only the name in torch's message
        pass
    return list(dict.fromkeys(names))


def _is_pickle_or_zip(path: Path) -> bool:
    """Whether the file starts as ``torch.save`` writes: a zip archive, or a (legacy) pickle of
    protocol 2 or later."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _refused_pickle(path: Path, error: Exception, advice: str) -> str:
    names = _pickled_globals(path, error)
    modules = [n for n in names if n.startswith("torch.nn.modules.")]
    refused = "that torch.load refuses (weights_only=True: loading it would run code from the file)"
    if modules:  # a whole model was saved: its own class first, else the first torch layer
        own = [n for n in names if not n.startswith("torch.")]
        return (f"{path} is a pickled model object ({(own or modules)[0]}, the whole model saved by torch.save) "
                f"{refused}; {advice}")
    shown = f" ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" if names else ""
    return f"{path} holds pickled Python objects{shown} {refused}; {advice}"


def load_torch(path: str | os.PathLike, map_location: Any = "cpu", advice: str = STATE_DICT_ACCEPTED) -> Any:
    """``torch.load(path, weights_only=True)``, the one reader of ``.pth`` files.

    Raises:
        ValueError: one line saying what the file is when it cannot be read: a pickled model
            object (``torch.save(model)``) or other pickled objects, which ``weights_only``
            refuses, or no PyTorch file (text, truncated, empty); then ``advice``.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing them
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as e:  # pickle, zip and torch raise many types for damaged files
        text = _ANSI.sub("", str(e))
        weights_only = text.startswith("Weights only load failed")
        if weights_only and _is_pickle_or_zip(path):
            raise ValueError(_refused_pickle(path, e, advice)) from None
        first = (text.strip().splitlines() or [""])[0].split(". ")[0].strip().rstrip(".")
        if path.is_file() and path.stat().st_size == 0:
            reason = "empty file"
        elif weights_only:  # torch's unpickler stopped at the first byte: text or another format
            reason = "neither a zip archive nor a pickle"
        else:
            reason = first[:160] or type(e).__name__
        raise ValueError(f"{path} is not a PyTorch file, or a truncated or damaged one ({reason}); {advice}") from None


def save_csv(df: pd.DataFrame, path: str | os.PathLike, **kwargs: Any) -> None:
    """``DataFrame.to_csv`` through a temporary file and an atomic rename."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)


def save_text(text: str, path: str | os.PathLike) -> None:
    """Write a UTF-8 text file atomically (whatever the locale: a C extension may have set it
    to ASCII)."""
    save_together({Path(path): text})


def _is_nifti(path: Path) -> bool:
    return path.name.endswith((".nii", ".nii.gz"))


#: SimpleITK's complex pixel types (a complex scan: k-space, or phase and magnitude in one file).
_COMPLEX = (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64)


def _refuse_complex(path: Path, what: str, type_name: str) -> None:
    raise ValueError(f"{what} file {path} holds complex values ({type_name}); the project reads real intensities: "
                     "save the magnitude (e.g. numpy.abs of the data) as a real-valued image")


def _nifti_data(path: Path, what: str) -> np.ndarray:
    """Every stored voxel of a NIfTI file, decoded by nibabel (unscaled)."""
    try:
        loaded: Any = nib.load(str(path))  # a NIfTI image (nibabel declares the base FileBasedImage)
        proxy = loaded.dataobj
        return np.asanyarray(proxy.get_unscaled() if hasattr(proxy, "get_unscaled") else proxy)
    except (EOFError, OSError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as e:
        raise unreadable(path, what, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from None


def _sitk_read(path: Path, what: str) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise unreadable(path, what, str(e).strip().splitlines()[-1] if str(e).strip() else "unknown reason") from None


def count_nonfinite(path: str | os.PathLike, what: str = "image", image: sitk.Image | None = None) -> int:
    """Decode every voxel of an image file (any format); return how many are NaN or Inf.

    SimpleITK (and TorchIO, which reads through it) silently fills a truncated NIfTI file with
    zeros and turns its NaN/Inf into 0, so a NIfTI file's stored data are decoded once more
    with nibabel, which notices both; the other formats keep NaN/Inf through SimpleITK
    (``image``: the file as already read, to decode it once only).

    Raises:
        FileNotFoundError, PermissionError: the file (or a header's data file) is missing or
            may not be read (:func:`utilities.data.grid.check_readable`).
        ValueError: naming the file, if it is unreadable, holds fewer voxels than its header
            says, or holds complex values.
    """
    path = check_readable(path, what)
    if _is_nifti(path):
        data = _nifti_data(path, what)
        if np.iscomplexobj(data):
            _refuse_complex(path, what, str(data.dtype))
    else:
        image = _sitk_read(path, what) if image is None else image
        if image.GetPixelID() in _COMPLEX:
            _refuse_complex(path, what, image.GetPixelIDTypeAsString())
        data = sitk.GetArrayViewFromImage(image)
    if not np.issubdtype(data.dtype, np.inexact):
        return 0
    return int(np.count_nonzero(~np.isfinite(data)))


def check_voxels(path: str | os.PathLike, what: str = "image", image: sitk.Image | None = None) -> None:
    """Raise a one-line error naming the file if it cannot be read, is truncated, holds complex
    values or holds NaN/Inf (:func:`count_nonfinite`), whatever its format."""
    bad = count_nonfinite(path, what, image)
    if bad:
        raise ValueError(f"{what} file {path} has {bad} NaN or Inf voxel(s) (NaN/Inf values are not allowed); "
                         "fix or re-export it")


def check_label_values(array: np.ndarray, path: str | os.PathLike, what: str = "label") -> None:
    """A label holds integers (0 background, 1.. lesions): a smoothed or probability map would
    otherwise count every voxel above 0 as lesion. Raises a one-line ``ValueError`` naming the file."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.inexact):
        fractional = array[array != np.round(array)]
        if fractional.size:
            example = float(fractional[0])
            raise ValueError(f"{what} {path} holds {fractional.size} non-integer value(s) (e.g. {example:.4g}); "
                             "a label must hold integers (0 background, 1 lesion): threshold it or re-export it "
                             "as an integer label")


def read_image(path: str | os.PathLike, what: str = "image") -> sitk.Image:
    """The one reader: any file of :data:`IMAGE_EXTENSIONS` (or SimpleITK-readable), with a
    one-line error naming it.

    The file must be readable (:func:`utilities.data.grid.check_readable`: a missing file, a missing
    permission or a detached header's missing data file are named as such), hold one world
    geometry with axes at right angles (:func:`utilities.data.grid.check_geometry`), and all its
    voxels, real and finite (:func:`check_voxels`: a NIfTI file's NaN/Inf and missing voxels
    SimpleITK would silently replace by zeros).
    """
    path = check_readable(path, what)
    image = _sitk_read(path, what)
    check_geometry(path, what)
    check_voxels(path, what, None if _is_nifti(path) else image)
    return image


def check_overwrite(targets: Sequence[str | os.PathLike], flag: str, overwrite: bool,
                    what: str | None = None) -> list[Path]:
    """The targets that exist already; unless ``overwrite``, refused with a one-line
    ``FileExistsError``: ``"<flag> <file> exists; pass --overwrite ..."`` for a flag that names
    the file (``what=None``), ``"<n> <what>(s) exist already, e.g. <file>; pass --overwrite ..."``
    for the files a script writes into the folder ``flag`` names. Every writer of a user's
    files asks this before writing anything (nothing is replaced without ``--overwrite``)."""
    existing = [Path(t) for t in targets if os.path.lexists(t)]
    if existing and not overwrite:
        if what is None:
            raise FileExistsError(f"{flag} {existing[0]} exists; pass --overwrite to replace it, or choose another "
                                  f"{flag}")
        raise FileExistsError(f"{len(existing)} {what}(s) exist already, e.g. {existing[0]}; pass --overwrite to "
                              f"replace them, or choose another {flag}")
    return existing


def _read_back_difference(image: sitk.Image, written: Path) -> tuple[str, list, list] | None:
    """How the grid of the file ``written`` differs from ``image``'s (sizes aside), or ``None``."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(written))
    reader.ReadImageInformation()
    return grid_difference(Grid.of(image), dataclasses.replace(Grid.of(reader), size=tuple(image.GetSize())))


def _inexact(path: Path, difference: tuple[str, list, list]) -> ValueError:
    name, stored, wanted = difference
    why = " (NIfTI stores float32 numbers)" if _is_nifti(path) else ""
    return ValueError(f"cannot write {path} exactly: its {name} would read back as {stored} instead of {wanted}{why}, "
                      "beyond the grid tolerance; write it as .mha or .nrrd, which store the grid exactly "
                      "(inference.py: --output_format mha)")


def check_storable(grid: Grid, path: str | os.PathLike) -> None:
    """Refuse, before anything is computed, a volume on ``grid`` that the format of ``path``
    cannot hold exactly (:func:`write_image` would refuse it): a one-voxel file of that format
    on that grid is written to a temporary file and read back."""
    path = Path(path)
    probe = sitk.Image([1] * len(grid.size), sitk.sitkUInt8)
    probe.SetSpacing(grid.spacing)
    probe.SetDirection(grid.direction)
    probe.SetOrigin(grid.origin)
    fd, tmp = tempfile.mkstemp(prefix="paseg-probe-", suffix=image_extension(path) or path.suffix)
    os.close(fd)
    try:
        sitk.WriteImage(probe, tmp)
        difference = _read_back_difference(probe, Path(tmp))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    if difference is not None:
        raise _inexact(path, difference)


def exact_format(path: Path, grid: Grid) -> Path:
    """``path``, or the same name as ``.mha`` when its format (NIfTI: float32 numbers) cannot
    hold ``grid`` exactly (:func:`check_storable`): where a script that writes a volume on an
    image's grid (stage 0's seeds, an annotation) puts it; every reader finds a subject's file
    in any format."""
    try:
        check_storable(grid, path)
    except ValueError:
        name = path.name[: -len(image_extension(path) or path.suffix)]
        return path.with_name(f"{name}.mha")
    return path


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> None:
    """The one writer: a SimpleITK image, atomically, in the format of ``path``'s extension
    (compressed for ``.nii.gz``, ``.nrrd`` and ``.mha``). A grid the format cannot hold
    exactly (a NIfTI origin far from 0) is refused and nothing is written."""
    path = Path(path)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
        difference = _read_back_difference(image, tmp)
        if difference is not None:  # raised inside: the temporary file is removed, any old file kept
            raise _inexact(path, difference)


def save_nifti(image: nib.Nifti1Image, path: str | os.PathLike) -> None:
    """Write a nibabel image atomically."""
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))


def write_like(array: np.ndarray, reference: Any, path: str | os.PathLike) -> None:
    """Write ``array`` (SimpleITK index order z, y, x) with the geometry of ``reference``: a
    SimpleITK image or a :class:`utilities.data.grid.Grid` (spacing, direction, origin)."""
    image = sitk.GetImageFromArray(array)
    if isinstance(reference, sitk.Image):
        image.CopyInformation(reference)
    else:
        if tuple(image.GetSize()) != tuple(reference.size):
            raise ValueError(f"cannot write {path}: array of size {list(image.GetSize())} on a grid of size "
                             f"{list(reference.size)}")
        image.SetSpacing(reference.spacing)
        image.SetDirection(reference.direction)
        image.SetOrigin(reference.origin)
    write_image(image, path)
