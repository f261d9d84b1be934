"""Atomic file writing and image reading shared by every script.

Everything the project writes goes through :func:`atomic_path`: the content is written to a
temporary file in the destination folder and renamed into place, so a crash mid-write never
leaves a half-written file where a good one was.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch

__all__ = [
    "atomic_path",
    "save_torch",
    "save_csv",
    "save_text",
    "read_image",
    "write_image",
    "write_like",
    "ensure_writable_dir",
    "prediction_path",
]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The temporary name keeps the file's suffixes (``.nii.gz``) so writers that choose the
    format from the extension work. On any exception the temporary file is removed and the
    existing ``path`` (if any) is left untouched.
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def ensure_writable_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (with parents) and check that files can be created in it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create output folder {folder}: {e.strerror}; choose a writable location") from e
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {folder} is not writable; fix its permissions or choose another")
    return folder


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_csv(df: pd.DataFrame, path: str | os.PathLike, **kwargs: Any) -> None:
    """``DataFrame.to_csv`` through a temporary file and an atomic rename."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)


def save_text(text: str, path: str | os.PathLike) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_image(path: str | os.PathLike, what: str = "image") -> sitk.Image:
    """Read a NIfTI (or any SimpleITK-readable) file, with a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else "unknown reason"
        raise ValueError(f"cannot read {what} file {path} (unreadable or truncated: {first}); "
                         "re-create or re-download it") from None


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> None:
    """Write a SimpleITK image atomically (compressed NIfTI for ``.nii.gz``)."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress)


def write_like(array: np.ndarray, reference: sitk.Image, path: str | os.PathLike) -> None:
    """Write ``array`` (SimpleITK index order z, y, x) with the geometry of ``reference``."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    write_image(image, path)


def prediction_path(model_dir: str | os.PathLike, network: str, subject: str, postfix: str) -> Path:
    """Where ``inference.py`` writes a subject's segmentation and ``scores.py`` reads it:
    ``<model_dir>/<network>/output_pred/<subject>_<postfix>/<subject>_<postfix>_seg.nii.gz``."""
    name = f"{subject}_{postfix}"
    return Path(model_dir) / network / "output_pred" / name / f"{name}_seg.nii.gz"
