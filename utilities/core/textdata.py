"""Text files read back as data: CSV tables, JSON documents and Markdown table cells.

A subject, variant or label name is data, never a sentinel: a CSV column of names is read as
strings (``NA``, ``nan``, ``None``, ``1e3`` and ``007`` stay what they say; pandas would turn
them into a missing value or a number), a header that repeats a column is refused (pandas
would rename the second ``subject.1`` and read the first), a JSON object that repeats a key is
refused (``json`` keeps the last value silently), and a name written into a Markdown table
cannot split or end its row.
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["NA_STRINGS", "check_header", "csv_header", "read_csv_table", "loads_json", "md_cell"]

#: What reads as a missing value in a column of numbers (pandas' own list, minus nothing): never
#: applied to a column of names.
NA_STRINGS = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
              "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")


def check_header(columns: Iterable[str], where: str) -> list[str]:
    """``columns`` as a list; a column named twice is a one-line ``ValueError`` naming
    ``where`` (e.g. ``"scores table <path>"``) and the column."""
    seen: set[str] = set()
    out = list(columns)
    for name in out:
        if name in seen:
            raise ValueError(f"{where}: its header names column {name!r} twice; rename or delete one of them "
                             "(only one of the two would be read)")
        seen.add(name)
    return out


def csv_header(path: str | os.PathLike, what: str) -> list[str]:
    """The header row of the CSV file ``path`` (a byte-order mark is no part of it), checked by
    :func:`check_header`; an empty file is a one-line ``ValueError`` naming it."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh), None)
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not UTF-8 text; re-save it") from None
    except csv.Error as e:
        raise ValueError(f"cannot read {what} {path}: {e}") from None
    if not header:
        raise ValueError(f"{what} {path} is empty (no header row)")
    return check_header(header, f"{what} {path}")


def read_csv_table(path: str | os.PathLike, what: str, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read a CSV table with a header row: the ``text_columns`` (names: subjects, variants,
    labels) as strings exactly as written, every other column with pandas' usual parsing
    (numbers; :data:`NA_STRINGS` as missing).

    Raises a one-line ``ValueError`` naming the file (``what``: e.g. ``"scores table"``) for a
    repeated column, an empty or unparsable file.
    """
    path = Path(path)
    header = csv_header(path, what)
    texts = [c for c in header if c in text_columns]
    try:
        return pd.read_csv(path, encoding="utf-8-sig", dtype=dict.fromkeys(texts, str), keep_default_na=False,
                           na_values={c: list(NA_STRINGS) for c in header if c not in texts})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"cannot read {what} {path}: {str(e).splitlines()[0]}") from None


def _unique_keys(where: str) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(f"{where}: key {key!r} appears twice in one JSON object (the second would silently "
                                 "replace the first); keep one")
            out[key] = value
        return out
    return hook


def loads_json(text: str, where: str) -> Any:
    """``json.loads`` that refuses a key repeated in any object with a one-line ``ValueError``
    naming ``where`` (e.g. ``"config <path>"``) and the key. A leading byte-order mark (what
    Windows editors write before UTF-8 text) is no part of the document, as in the CSV readers. A
    syntax error is ``json``'s own ``JSONDecodeError``, for the caller to word."""
    return json.loads(text.removeprefix("\ufeff"), object_pairs_hook=_unique_keys(where))


def md_cell(value: object) -> str:
    """``value`` as the text of one Markdown table cell: ``|`` escaped (it would start a new
    cell, also inside a code span) and line breaks as spaces (they would end the row). Text
    without either is returned unchanged."""
    text = str(value).replace("|", "\\|")
    lines = text.splitlines()
    return text if lines == [text] else " ".join(lines)
