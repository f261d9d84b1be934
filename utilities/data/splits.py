"""Reading the split files: ``subject,phase`` rows, no header (as published)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from utilities.core.files import existing_file
from utilities.core.textdata import check_header

__all__ = ["PHASES", "Split", "as_split", "read_split", "subjects_of"]

PHASES = ("training", "validation", "inference")


def read_split(path: str | os.PathLike) -> pd.DataFrame:
    """Read a split CSV into a DataFrame with columns ``subject`` and ``phase``.

    The published files have no header; a header line ``subject,phase`` is accepted too (one
    that repeats a column, or swaps them, is refused). Every subject is read as the string
    written (``NA``, ``nan``, ``007`` and ``1e3`` are names, not a missing value or a number).
    Raises a one-line error naming the file for a missing or unreadable file, a malformed row,
    an unknown phase or a duplicated subject.
    """
    path = existing_file(path, "split file", " (pass --dataset_split with an existing CSV)",
                         "; pass --dataset_split the split's CSV file (e.g. one splits/make_split.py writes)")
    try:
        # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first subject's name
        df = pd.read_csv(path, header=None, dtype=str, skipinitialspace=True, keep_default_na=False,
                         encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise ValueError(f"cannot read split file {path}: {str(e).splitlines()[0]}; "
                         "expected rows 'subject,phase'") from None
    if df.shape[1] != 2:
        raise ValueError(f"split file {path} has {df.shape[1]} columns, expected 2 ('subject,phase'); fix its rows")
    df.columns = ["subject", "phase"]
    df = df.apply(lambda col: col.str.strip())
    first = df.iloc[0].str.lower().tolist() if len(df) else []
    if first and set(first) <= {"subject", "phase"}:   # a header line (a repeated column is named)
        check_header(first, f"split file {path}")
        if first != ["subject", "phase"]:
            raise ValueError(f"split file {path}: its header is {','.join(df.iloc[0])}; write 'subject,phase' "
                             "(or no header)")
        df = df.iloc[1:].reset_index(drop=True)
    empty = df.index[(df["subject"] == "") | (df["phase"] == "")].tolist()
    if empty:
        raise ValueError(f"split file {path} has an empty subject or phase on row {empty[0] + 1}; fill it in or "
                         "delete the row")
    unknown = sorted(set(df["phase"]) - set(PHASES))
    if unknown:
        raise ValueError(f"split file {path} has unknown phase(s) {unknown}; use one of {list(PHASES)}")
    dup = df["subject"][df["subject"].duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"split file {path} lists subject(s) more than once: {dup[:5]}; keep one row per subject")
    return df


def subjects_of(split: pd.DataFrame | str | os.PathLike, phase: str | None) -> list[str]:
    """Subjects of one phase (``None``: all), in file order."""
    df = split if isinstance(split, pd.DataFrame) else read_split(split)
    if phase is not None and phase not in PHASES:
        raise ValueError(f"--phase must be one of {list(PHASES)}, got {phase!r}")
    return df["subject"].tolist() if phase is None else df.loc[df["phase"] == phase, "subject"].tolist()


@dataclass(frozen=True, eq=False)
class Split:
    """A split file read once: its path (for messages) and its ``subject``/``phase`` table.

    A run reads its split into one ``Split`` and passes it down, so every function that takes
    ``dataset_split`` (a path or a ``Split``, see :func:`as_split`) sees the same rows."""

    path: Path
    table: pd.DataFrame

    @classmethod
    def read(cls, path: str | os.PathLike) -> Split:
        """:func:`read_split` of ``path``."""
        return cls(Path(path), read_split(path))

    def subjects(self, phase: str | None) -> list[str]:
        """:func:`subjects_of` one phase (``None``: all), in file order."""
        return subjects_of(self.table, phase)

    def __str__(self) -> str:   # messages name the file, as they did for a path
        return str(self.path)


def as_split(split: Split | str | os.PathLike) -> Split:
    """``split`` itself, or the split file at that path read now."""
    return split if isinstance(split, Split) else Split.read(split)
