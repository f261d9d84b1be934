"""The one check of a path that must name an existing file (a split, a dataset or plan file, a
checkpoint, an image, a point file): a folder given in its place and a missing path are each one
line naming the path, in the same words wherever a file is read."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["existing_file"]


def existing_file(path: str | os.PathLike, what: str, hint: str = "", folder_hint: str = "") -> Path:
    """``path`` as a ``Path``, when it is an existing file.

    Args:
        what: what the file is, as the message names it (``"split file"``, ``"checkpoint"``).
        hint: appended to the missing-file message (e.g. ``" (write one with plan.py)"``).
        folder_hint: appended to the folder message (e.g. ``"; pass a checkpoint file"``).

    Raises:
        ValueError: ``<what> <path> is a folder, not a file<folder_hint>``.
        FileNotFoundError: ``<what> not found: <path><hint>``.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder, not a file{folder_hint}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}{hint}")
    return path
