"""Reading clicked points: 3D Slicer markups (``.mrk.json``), Slicer's older ``.fcsv`` and
plain CSV files, into :class:`ControlPoint` records, and the role a point's label names
(``fg``/``bg`` and a lesion number; :func:`parse_role`). Used by ``data/points_to_annotation.py``."""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utilities.core.files import existing_file
from utilities.core.logs import LOGGER_NAME
from utilities.core.textdata import check_header, loads_json

__all__ = ["ControlPoint", "parse_role", "read_points"]

logger = logging.getLogger(LOGGER_NAME)

#: Voxel indices read from a CSV must be integers up to this much.
_INDEX_TOL = 1e-6
_ROLE = re.compile(r"^(fg|bg|foreground|background)(?:[ _]?(\d+))?(?:-\d+)?$", re.IGNORECASE)


@dataclass(frozen=True)
class ControlPoint:
    """One clicked point: its label and description as written, and its position (LPS mm, or a
    voxel index for a ``--csv_space voxel`` CSV)."""

    label: str
    description: str
    position: tuple[float, float, float]


def parse_role(text: str) -> tuple[int, bool] | None:
    """``(lesion, is_foreground)`` named by a point label, or ``None`` if it names no role.

    >>> parse_role("bg-3"), parse_role("FG2"), parse_role("bg2-4"), parse_role("F-1")
    ((1, False), (2, True), (2, False), None)
    """
    match = _ROLE.match(text.strip())
    if match is None:
        return None
    lesion = int(match.group(2)) if match.group(2) else 1
    return lesion, match.group(1).lower() in ("fg", "foreground")


# --------------------------------------------------------------------------------------------
# Reading point files
# --------------------------------------------------------------------------------------------
def _space(text: str, path: Path, what: str) -> str:
    value = text.strip().upper()
    if value in ("LPS", "1"):
        return "LPS"
    if value in ("RAS", "0"):
        return "RAS"
    raise ValueError(f"point file {path}: {what} {text.strip()!r} is not LPS, RAS, 0 (RAS) or 1 (LPS)")


def _number(text: str, path: Path, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"point file {path}: {where} is {text!r}, not a number") from None
    if not np.isfinite(value):
        raise ValueError(f"point file {path}: {where} is {text!r}, not a finite number")
    return value


def _kind(value: object) -> str:
    """What a JSON value is, for messages: ``null``, a number, a string, a list or an object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    names = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _text(value: object, path: Path, where: str) -> str:
    """A string field of a ``.mrk.json`` (absent: ``""``)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"point file {path}: {where} is {_kind(value)}, expected a string; re-save it from Slicer")
    return value


def _mrk_position(value: object, path: Path, where: str) -> tuple[float, float, float]:
    """The ``position`` of a ``.mrk.json`` control point: a list of 3 finite numbers."""
    if (not isinstance(value, list) or len(value) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        shown = json.dumps(value) if len(json.dumps(value)) <= 80 else json.dumps(value)[:77] + "..."
        raise ValueError(f"point file {path}: {where} has position {shown}; expected a list of 3 numbers (x, y, z "
                         "in mm)")
    return tuple(_number(str(v), path, f"{where} position") for v in value)  # type: ignore[return-value]


def _read_mrk_json(path: Path) -> tuple[list[ControlPoint], str]:
    try:
        data = loads_json(path.read_text(encoding="utf-8-sig"), f"point file {path}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"point file {path} is not valid JSON ({e}); re-save it from Slicer") from None
    markups = data.get("markups") if isinstance(data, dict) else None
    if not isinstance(markups, list) or not markups:
        raise ValueError(f"point file {path} has no 'markups' list; expected a Slicer .mrk.json point list")
    points: list[ControlPoint] = []
    spaces = set()
    for m, markup in enumerate(markups):
        if not isinstance(markup, dict):
            raise ValueError(f"point file {path}: markup {m} is {_kind(markup)}, expected an object with "
                             "'type', 'coordinateSystem' and 'controlPoints'")
        kind = markup.get("type", "Fiducial")
        if kind != "Fiducial":
            shown = repr(kind) if isinstance(kind, str) else f"type {json.dumps(kind)}"
            raise ValueError(f"point file {path}: markup {m} is a {shown}, expected a point list ('Fiducial')")
        if "coordinateSystem" not in markup:
            raise ValueError(f"point file {path}: markup {m} has no 'coordinateSystem'; add "
                             "\"coordinateSystem\": \"LPS\" (or \"RAS\") as Slicer writes it")
        system = markup["coordinateSystem"]
        if not isinstance(system, str):
            raise ValueError(f"point file {path}: markup {m} has coordinateSystem {json.dumps(system)}; expected "
                             "\"LPS\" or \"RAS\"")
        spaces.add(_space(system, path, "coordinateSystem"))
        units = markup.get("coordinateUnits", "mm")
        if units != "mm":
            raise ValueError(f"point file {path}: markup {m} has coordinateUnits {json.dumps(units)}; expected \"mm\"")
        control_points = markup.get("controlPoints", [])
        if not isinstance(control_points, list):
            raise ValueError(f"point file {path}: markup {m} has controlPoints {_kind(control_points)}, expected a "
                             "list of points (an empty list [] for none)")
        for c, point in enumerate(control_points):
            if not isinstance(point, dict):
                raise ValueError(f"point file {path}: markup {m} control point {c} is {_kind(point)}, expected an "
                                 "object with 'label' and 'position'")
            label = _text(point.get("label"), path, f"control point {c} label")
            where = f"control point {c} ({label!r})"
            status = point.get("positionStatus", "defined")
            if status != "defined":
                raise ValueError(f"point file {path}: {where} has positionStatus {json.dumps(status)}, not "
                                 "\"defined\"; place it or delete it")
            if "position" not in point:
                raise ValueError(f"point file {path}: {where} has no 'position'; expected a list of 3 numbers (x, y, "
                                 "z in mm)")
            xyz = _mrk_position(point["position"], path, where)
            points.append(ControlPoint(label, _text(point.get("description"), path, f"{where} description"), xyz))
    if len(spaces) > 1:
        raise ValueError(f"point file {path} mixes coordinate systems {sorted(spaces)}; save it in one")
    return points, spaces.pop()


def _read_fcsv(path: Path) -> tuple[list[ControlPoint], str]:
    text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is no part of the first row
    space = None
    columns = None
    versioned = False
    rows = []
    for line in text.splitlines():
        if line.startswith("#"):
            body = line[1:].strip()
            key, _, value = body.partition("=")
            key = key.strip().lower()
            if key == "coordinatesystem":
                space = _space(value, path, "CoordinateSystem")
            elif key == "columns":
                columns = check_header([c.strip().lower() for c in value.split(",")],
                                       f"point file {path} ('# columns' line)")
            elif key.startswith("markups fiducial file version"):
                versioned = True
        elif line.strip():
            rows.append(line)
    if not versioned and columns is None:
        raise ValueError(f"point file {path} has no '# Markups fiducial file version' header; "
                         "re-save it from Slicer 4 or later")
    if space is None:
        logger.warning("point file %s has no '# CoordinateSystem' line: reading it as RAS, as Slicer does", path)
        space = "RAS"
    explicit = columns is not None
    columns = columns or ["id", "x", "y", "z", "ow", "ox", "oy", "oz", "vis", "sel", "lock", "label", "desc",
                          "associatednodeid"]
    try:
        ix, iy, iz = (columns.index(c) for c in ("x", "y", "z"))
    except ValueError:
        raise ValueError(f"point file {path}: its '# columns' line has no x, y, z: {columns}") from None
    il = columns.index("label") if "label" in columns else None
    idesc = columns.index("desc") if "desc" in columns else None
    # with a '# columns' line every column read must be there; Slicer's default layout needs x, y, z
    read = [i for i in ((ix, iy, iz, il, idesc) if explicit else (ix, iy, iz)) if i is not None]
    points = []
    for r, fields in enumerate(csv.reader(io.StringIO("\n".join(rows)))):
        where = f"row {r + 1}"
        if len(fields) <= max(read):
            raise ValueError(f"point file {path}: {where} has {len(fields)} fields; expected at least "
                             f"{max(read) + 1} (up to column {columns[max(read)]!r})")
        if explicit and len(fields) > len(columns):
            raise ValueError(f"point file {path}: {where} has {len(fields)} fields but its '# columns' line names "
                             f"{len(columns)}; a value would be dropped: fix the row (a comma inside a label or "
                             "description needs double quotes) or the '# columns' line")
        label = fields[il] if il is not None and il < len(fields) else ""
        desc = fields[idesc] if idesc is not None and idesc < len(fields) else ""
        xyz = tuple(_number(fields[i], path, f"{where} ({label!r}) {c}") for i, c in ((ix, "x"), (iy, "y"), (iz, "z")))
        points.append(ControlPoint(label, desc, xyz))  # type: ignore[arg-type]
    return points, space


def _read_csv(path: Path, csv_space: str | None) -> tuple[list[ControlPoint], str]:
    if csv_space is None:
        raise ValueError(f"point file {path} is a CSV: pass --csv_space LPS, RAS (world mm) or voxel (indices)")
    if csv_space not in ("LPS", "RAS", "voxel"):
        raise ValueError(f"--csv_space must be LPS, RAS or voxel, got {csv_space!r}")
    # lines starting with '#' are comments, as in Slicer's .fcsv (a note on who clicked, when)
    lines = [line for line in path.read_text(encoding="utf-8-sig").splitlines(keepends=True)
             if not line.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("".join(lines)), skipinitialspace=True)
    header = check_header([(h or "").strip().lower() for h in (reader.fieldnames or [])], f"point file {path}")
    if not {"x", "y", "z"} <= set(header):
        raise ValueError(f"point file {path} needs a header row with columns x, y, z (and optionally label, "
                         f"description); got {header}")
    reader.fieldnames = header
    points = []
    for r, row in enumerate(reader):
        label = (row.get("label") or "").strip()
        where = f"row {r + 1} ({label!r})"
        if None in row:   # csv.DictReader's key for the values beyond the header
            raise ValueError(f"point file {path}: {where} has {len(header) + len(row[None])} fields but the header "
                             f"has {len(header)} ({', '.join(header)}); a value would be dropped: fix the row (a comma "
                             "inside a label or description needs double quotes) or add the column to the header")
        xyz = tuple(_number((row.get(c) or "").strip(), path, f"{where} {c}") for c in ("x", "y", "z"))
        if csv_space == "voxel" and any(abs(v - round(v)) > _INDEX_TOL for v in xyz):
            raise ValueError(f"point file {path}: {where} has voxel index {list(xyz)}; voxel indices must be integers "
                             "(if these are millimetres, pass --csv_space LPS or RAS)")
        points.append(ControlPoint(label, (row.get("description") or "").strip(), xyz))  # type: ignore[arg-type]
    return points, csv_space


def read_points(path: str | os.PathLike, csv_space: str | None = None) -> tuple[list[ControlPoint], str]:
    """Read a point file; returns the points and their space, ``"LPS"`` or ``"voxel"``.

    RAS positions are turned into LPS (x and y negated), the space SimpleITK works in.

    Raises:
        FileNotFoundError, ValueError: one line naming the file (and the point).
    """
    path = existing_file(path, "point file")
    name = path.name.lower()
    try:
        if name.endswith(".mrk.json") or name.endswith(".json"):
            points, space = _read_mrk_json(path)
        elif name.endswith(".fcsv"):
            points, space = _read_fcsv(path)
        elif name.endswith(".csv"):
            points, space = _read_csv(path, csv_space)
        else:
            raise ValueError(f"point file {path}: unknown extension; use .mrk.json, .fcsv or .csv")
    except UnicodeDecodeError:
        raise ValueError(f"point file {path} is not UTF-8 text; re-save it") from None
    if not points:
        raise ValueError(f"point file {path} holds no points")
    if space == "RAS":
        points = [ControlPoint(p.label, p.description, (-p.position[0], -p.position[1], p.position[2]))
                  for p in points]
        space = "LPS"
    return points, space
