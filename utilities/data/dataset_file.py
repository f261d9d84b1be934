"""The dataset file: one JSON file that names a dataset's split, folders and file postfixes once,
read by every script that takes data paths with ``--dataset dataset.json`` (in the spirit of
nnU-Net's ``dataset.json``; docs/guide/own_data.md). Example::

    {"split": "split.csv", "images": "image", "image_postfix": "T2",
     "annotations": "annotation_7points", "labels": "label", "modality": "MR"}

The keys are :data:`KEYS`, every value a string: the split and the folders are paths relative to
the file's folder (an absolute path stays as it is; the operating system resolves a ``..`` after
following a symlink, so the writers write a path absolute where the relative one would lead
elsewhere); a postfix names the files
``<subject>_<postfix><ext>`` (``image_postfix`` is needed with ``images``; the others default to
the names stage 0 and the scripts use: ``Label``, ``7points``, ``GeodesicLabel``); ``modality``
is nnU-Net's channel name (``CT`` selects nnU-Net's CT normalisation). An unknown key, a repeated
key or a value of another type is a one-line error naming the file and the key.

How a script reads it (:func:`parse_with_dataset`): a value of the file is the default of its
flag, so a flag typed on the command line wins over the file and the file over the script's
default. With ``--dataset`` no default of a data flag applies (they name the paper's VS data):
what the script needs and neither the command line nor the file gives is one line naming the key
to add or the flag to pass. Without ``--dataset`` nothing changes (the paper's commands).

``splits/make_split.py --write_dataset`` and ``plan.py`` write the file (:func:`write_dataset`);
:func:`check_distinct` refuses, before a script writes anything, two of its files that are one.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utilities.core.arguments import ArgumentParser, clear_origins, record_origins, typed_flags
from utilities.core.files import existing_file
from utilities.core.textdata import loads_json
from utilities.data.io import check_overwrite, save_text
from utilities.method.defaults import ANNOTATION_POSTFIX, LABEL_POSTFIX, SEED_POSTFIX

__all__ = ["KEYS", "DatasetKey", "Dataset", "read_dataset", "dataset_text", "write_dataset", "same_values",
           "names_same", "same_file", "check_distinct", "add_dataset_flag", "given_dataset", "typed_flags",
           "parse_with_dataset", "require"]


@dataclass(frozen=True)
class DatasetKey:
    """One key of the file: the flags (argparse ``dest``) it fills, what it names, whether its value
    is a ``path`` (relative to the file's folder), a file-name ``postfix`` or a ``name``, and the
    default a postfix has when the file leaves it out."""

    dests: tuple[str, ...]
    what: str
    kind: str
    default: str | None = None


#: The keys of a dataset file, in the order a written file lists them.
KEYS: dict[str, DatasetKey] = {
    "split": DatasetKey(("dataset_split",), "the split CSV of subject,phase rows", "path"),
    "images": DatasetKey(("path_images", "images_dir"), "the images' folder", "path"),
    "image_postfix": DatasetKey(("image_postfix",), "the images' postfix", "postfix"),
    "annotations": DatasetKey(("path_anno_7points",), "the 7-point annotations' folder", "path"),
    "annotation_postfix": DatasetKey(("anno_7points_postfix",), "the annotations' postfix", "postfix",
                                     ANNOTATION_POSTFIX),
    "labels": DatasetKey(("path_labels",), "the full labels' folder", "path"),
    "label_postfix": DatasetKey(("label_postfix",), "the full labels' postfix", "postfix", LABEL_POSTFIX),
    "seeds": DatasetKey(("path_geodesic_labels",), "the expanded seeds' folder (stage 0's geodesic_label)", "path"),
    "seed_postfix": DatasetKey(("geodesic_label_postfix",), "the expanded seeds' postfix", "postfix", SEED_POSTFIX),
    "modality": DatasetKey(("channel_name", "modality"), "the image modality (nnU-Net's channel name, e.g. MR or CT)",
                           "name"),
}
_KEY_OF_DEST = {dest: key for key, spec in KEYS.items() for dest in spec.dests}


@dataclass(frozen=True)
class Dataset:
    """A dataset file read: its ``path`` and ``values`` (key -> value; paths joined onto the
    file's folder, the postfixes' defaults filled in)."""

    path: Path
    values: Mapping[str, str]

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def need(self, *keys: str) -> list[str]:
        """The values of ``keys``; a key the file lacks is a one-line ``ValueError`` naming it."""
        missing = [key for key in keys if key not in self.values]
        if missing:
            raise ValueError(f"--dataset {self.path}: " + "; ".join(f"no {key!r} ({KEYS[key].what}): add it to the "
                                                                    "file" for key in missing))
        return [self.values[key] for key in keys]


def _checked(data: Mapping[str, Any], path: Path) -> dict[str, str]:
    """The values of the JSON object ``data`` of the file ``path``, checked (module docstring)."""
    where = f"--dataset {path}"
    for key in data:
        if key not in KEYS:
            close = difflib.get_close_matches(key, list(KEYS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where}: unknown key {key!r}{hint}; the keys are {', '.join(KEYS)}")
    values = {}
    for key, value in data.items():
        spec = KEYS[key]
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: {key!r} must be a non-empty string ({spec.what}), got {json.dumps(value)}")
        if spec.kind == "postfix" and ("/" in value or "\\" in value):
            raise ValueError(f"{where}: {key!r} is a file-name postfix (files <subject>_<postfix>.nii.gz), not a "
                             f"path; got {value!r}")
        values[key] = str(path.parent / value) if spec.kind == "path" else value
    if "images" in values and "image_postfix" not in values:
        raise ValueError(f"{where}: 'images' needs 'image_postfix' (the images are <subject>_<image_postfix>.nii.gz "
                         "or another image format); add it")
    return {**{key: spec.default for key, spec in KEYS.items() if spec.default is not None}, **values}


def read_dataset(path: str | os.PathLike) -> Dataset:
    """Read and check a dataset file; every problem is a one-line ``ValueError`` (or
    ``FileNotFoundError``) naming the file and, where it is one key's, the key."""
    advice = " (write one with splits/make_split.py --write_dataset or by hand: docs/guide/own_data.md)"
    path = existing_file(path, "--dataset file", advice, advice)
    try:
        data = loads_json(path.read_text(encoding="utf-8"), f"--dataset {path}")
    except UnicodeDecodeError:
        raise ValueError(f"--dataset {path} is not UTF-8 text; save it as UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"--dataset {path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--dataset {path} must hold one JSON object of keys ({', '.join(KEYS)}), got "
                         f"{type(data).__name__}")
    return Dataset(path, _checked(data, path))


def _normal(key: str, value: str) -> str:
    return os.path.realpath(value) if KEYS[key].kind == "path" else value


def same_values(a: Mapping[str, str | None], b: Mapping[str, str | None]) -> bool:
    """Whether two sets of values name the same dataset (paths compared as the files they lead to:
    symlinks followed, as the operating system does)."""
    def normal(values: Mapping[str, str | None]) -> dict[str, str]:
        return {k: _normal(k, v) for k, v in values.items() if v is not None}
    return normal(a) == normal(b)


#: The folder key each postfix goes with: a written file holds a postfix only with its folder.
_POSTFIX_OF = {"image_postfix": "images", "annotation_postfix": "annotations", "label_postfix": "labels",
               "seed_postfix": "seeds"}


def _written_path(value: str, folder: Path) -> str:
    """``value`` (relative to the working folder, or absolute) as a dataset file in ``folder``
    writes it: an absolute path as it is; else relative to ``folder`` when that relative path
    leads to the same file, else absolute. ``os.path.relpath`` works on the names alone, but the
    operating system resolves ``folder/../x`` after following a symlink in ``folder``, so the
    relative answer can lead elsewhere."""
    if os.path.isabs(value):
        return value
    target = os.path.realpath(value)
    relative = os.path.relpath(value, folder)
    if os.path.realpath(os.path.join(folder, relative)) == target:
        return relative
    absolute = os.path.abspath(value)
    return absolute if os.path.realpath(absolute) == target else target


def _document(path: Path, values: Mapping[str, str | None]) -> dict[str, str]:
    """The JSON object of the dataset file ``path`` for ``values`` (see :func:`dataset_text`)."""
    values = {**{postfix: KEYS[postfix].default for postfix in _POSTFIX_OF if values.get(postfix) is None},
              **{k: v for k, v in values.items() if v is not None}}
    return {key: _written_path(value, path.parent) if KEYS[key].kind == "path" else value
            for key in KEYS if (value := values.get(key)) is not None
            and values.get(_POSTFIX_OF.get(key, key)) is not None}


def names_same(dataset: Dataset, values: Mapping[str, str | None]) -> bool:
    """Whether the file ``dataset`` names the dataset of ``values`` (as :func:`dataset_text`
    would write it; paths compared as absolute paths)."""
    return same_values(dataset.values, _checked(_document(dataset.path, values), dataset.path))


def dataset_text(path: str | os.PathLike, values: Mapping[str, str | None], overwrite: bool = False,
                 flag: str = "--write_dataset") -> str | None:
    """The text of the dataset file ``path`` for ``values`` (key -> value as the scripts read it:
    paths relative to the working folder or absolute; ``None``: left out; a postfix: written with
    its folder only, its default when not given), paths written relative to the file's folder
    (absolute ones as they are; absolute too where a symlink would make the relative one lead
    elsewhere).
    ``None`` when ``path`` names the same dataset already (it is kept); another file there is
    refused without ``overwrite`` (``flag`` names it), before anything is written."""
    path = Path(path)
    document = _document(path, values)
    _checked(document, path)
    if path.is_file():
        try:
            if names_same(read_dataset(path), values):
                return None
        except ValueError:
            pass  # a broken file: replaced with --overwrite like any other
    check_overwrite([path], flag, overwrite)
    return json.dumps(document, indent=2) + "\n"


def write_dataset(path: str | os.PathLike, values: Mapping[str, str | None], overwrite: bool = False,
                  flag: str = "--write_dataset") -> bool:
    """Write the dataset file of :func:`dataset_text` (atomically); returns whether it was written
    (``False``: the file there names the same dataset and is kept)."""
    text = dataset_text(path, values, overwrite, flag)
    if text is not None:
        save_text(text, path)
    return text is not None


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether the paths ``a`` and ``b`` lead to one file (symlinks followed; two existing names
    of one file, such as hard links, too), whether or not it exists yet."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_distinct(files: Sequence[tuple[str, str | os.PathLike | None]],
                   hint: str = "give them different paths") -> None:
    """Refuse, with a one-line ``ValueError`` ending in ``hint``, two of a command's ``files``
    that are one file (:func:`same_file`): each is ``(what, path)``, ``what`` naming the flag and
    what the command does with the file (e.g. ``"--output (the split written)"``), ``path``
    ``None`` when not given. Called before anything is written, with every file the command
    writes and every file it reads that a written one must not replace."""
    given = [(what, path) for what, path in files if path is not None]
    for i, (what_a, a) in enumerate(given):
        for what_b, b in given[i + 1:]:
            if same_file(a, b):
                shown = str(b) if str(a) == str(b) else f"{a} and {b}"
                raise ValueError(f"{what_a} and {what_b} are one file ({shown}): one would replace the other; "
                                 f"{hint}")


# ------------------------------------------------------------------------------ the command line
def add_dataset_flag(parser: argparse.ArgumentParser) -> None:
    """``--dataset FILE``, read by :func:`parse_with_dataset`."""
    parser.add_argument("--dataset", default=None, metavar="FILE",
                        help="dataset file (dataset.json: docs/guide/own_data.md) naming the split, folders and "
                             "postfixes: they become the data flags' defaults (a flag given here wins) and no "
                             "default of the paper's VS data applies")


def given_dataset(argv: Sequence[str] | None) -> str | None:
    """The ``--dataset`` of ``argv`` (the last one given), or ``None``."""
    pre = ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--dataset", default=None)
    known, _ = pre.parse_known_args(argv)
    return known.dataset


def _missing_message(path: str, keys: Sequence[tuple[str, str]], flags: Sequence[str]) -> str:
    parts = [f"no {key!r} ({KEYS[key].what}): add it to the file or pass --{dest}" for key, dest in keys]
    parts += [f"--{dest} has no default with --dataset (its default is for the paper's VS data): pass it"
              for dest in flags]
    return f"--dataset {path}: " + "; ".join(parts)


def _fill_defaults(parser: argparse.ArgumentParser, dataset: Dataset, skip: Collection[str],
                   optional: Collection[str], flags: Collection[str]) -> tuple[list[str], list[str]]:
    """Make the file's values the defaults of their flags and drop every other default of a data
    flag (and of ``flags``); returns the dests that must then be typed or in the file (those with a
    default or required before, unless their key is ``optional``) and the ``flags``."""
    needed, needed_flags = [], []
    for action in parser._actions:
        key = _KEY_OF_DEST.get(action.dest)
        if key is not None and key not in skip:
            if (action.required or action.default is not None) and key not in optional:
                needed.append(action.dest)
            action.default, action.required = dataset.get(key), False
        elif action.dest in flags:
            needed_flags.append(action.dest)
            action.default, action.required = None, False
        else:
            continue
        parser._defaults.pop(action.dest, None)
    return needed, needed_flags


def parse_with_dataset(parser: argparse.ArgumentParser, argv: Sequence[str] | None, optional: Collection[str] = (),
                       skip: Collection[str] = (), unless: Mapping[str, Collection[str]] | None = None,
                       flags: Collection[str] = (),
                       parse: Callable[[argparse.ArgumentParser, Sequence[str] | None], argparse.Namespace] | None
                       = None) -> argparse.Namespace:
    """Parse ``argv`` with ``parser`` (by ``parse(parser, argv)``, default ``parser.parse_args``)
    and, when ``--dataset FILE`` is given, with the file's values as the defaults of their flags
    (module docstring). Without ``--dataset`` the parse is the plain one.

    Args:
        optional: keys a script runs without (e.g. ``labels``): absent, their flags are ``None``.
        skip: keys the script never takes from the file.
        unless: ``{dest: keys}``: when the flag ``dest`` is typed, ``keys`` are not taken from the
            file (e.g. ``inference.py --input_folder``: not the split's images).
        flags: other flags whose default names the paper's VS data (an output folder): with
            ``--dataset`` they must be typed.

    Raises:
        ValueError, FileNotFoundError: the file is unreadable or wrong, or a needed value is in
            neither the command line nor the file (one line naming the key and the flag).
    """
    clear_origins()   # this parse's origins only (a process may parse several command lines)
    parse = parse or (lambda p, a: p.parse_args(a))
    path = given_dataset(argv)
    if path is None:
        return parse(parser, argv)
    dataset = read_dataset(path)
    needed, needed_flags = _fill_defaults(parser, dataset, skip, optional, flags)
    args = parse(parser, argv)
    typed = typed_flags(parser, argv)
    dropped = {key for dest, keys in (unless or {}).items() if dest in typed for key in keys}
    for dest in _KEY_OF_DEST.keys() & vars(args).keys():
        if _KEY_OF_DEST[dest] in dropped and dest not in typed:
            setattr(args, dest, None)
    from_file = [action.option_strings[0] for action in parser._actions if action.option_strings
                 and action.dest in _KEY_OF_DEST and action.dest not in typed and getattr(args, action.dest, None)
                 is not None and _KEY_OF_DEST[action.dest] not in dropped]
    record_origins(from_file, f"--dataset {path}")
    keys = [(_KEY_OF_DEST[d], d) for d in needed if getattr(args, d) is None and _KEY_OF_DEST[d] not in dropped]
    missing_flags = [d for d in needed_flags if getattr(args, d) is None]
    if keys or missing_flags:
        raise ValueError(_missing_message(path, keys, missing_flags))
    return args


def require(args: argparse.Namespace, *keys: str) -> None:
    """With ``--dataset``: refuse, in one line naming each key and its flag, the ``keys`` whose
    flags are ``None`` (neither typed nor in the file); without it, nothing."""
    path = getattr(args, "dataset", None)
    if path is None:
        return
    missing = [(key, dest) for key in keys for dest in KEYS[key].dests
               if hasattr(args, dest) and getattr(args, dest) is None]
    if missing:
        raise ValueError(_missing_message(path, missing, []))
