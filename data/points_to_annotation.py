"""Turn points clicked in a viewer into PA-Seg 7-point annotation volumes (and back).

Input, one file per subject (or a folder of them, matched by subject name):

* 3D Slicer Markups JSON (``.mrk.json``, point list), ``coordinateSystem`` ``LPS`` or ``RAS``.
* Legacy Slicer Markups CSV (``.fcsv``): its header line ``# CoordinateSystem = LPS``, ``RAS``
  or ``0`` (the numeric code of RAS; ``1`` is LPS) says the space, ``# columns = ...`` where the
  coordinates and labels are (newer Slicer versions append columns; they are ignored). A file
  without the CoordinateSystem line is RAS, as Slicer assumes (a warning says so).
* A CSV with a header row holding ``x,y,z`` and optionally ``label`` and ``description``:
  world coordinates in mm with ``--csv_space LPS`` or ``RAS``, or 0-based voxel indices
  (i, j, k: the NIfTI / SimpleITK index order, x fastest) with ``--csv_space voxel``.

Which point is which, by each point's label (or, if its label does not follow the convention,
its description; case-insensitive):

* ``bg`` = a background (extreme) point, ``fg`` = the foreground point, of lesion 1;
  ``bg2`` / ``fg2`` of lesion 2 (``background``, ``foreground``, ``bg_2``, ``bg 2`` are
  accepted too). Stage 0 reads at most two lesions per subject, so a third (``bg3``, ...) is
  an error.
* A trailing ``-<n>`` is Slicer's automatic point counter and is ignored: a point list named
  ``bg2`` gives points ``bg2-1`` ... ``bg2-6``, all background points of lesion 2; ``bg-3`` is a
  background point of lesion 1, *not* of lesion 3.
* Without labels (all points named otherwise, e.g. Slicer's ``F-1`` ... ``F-7``) a file must
  hold the 7 points of one lesion: the point strictly inside the box of the other six is the
  foreground point (an error if not exactly one is).

Example labels for two lesions: ``bg-1`` ... ``bg-6``, ``fg``, ``bg2-1`` ... ``bg2-6``, ``fg2``.

Output: ``<path_anno_7points>/<subject>_<anno_7points_postfix>.nii.gz`` (``.mha`` where NIfTI
cannot hold the image's grid exactly), uint8, on the image's
grid (world → voxel with the image's origin, spacing and direction, through SimpleITK; a point
belongs to the voxel whose centre is nearest), 2k − 1 at the six background points and 2k at
the foreground point of lesion k, as ``generate_geodesic_labels.py`` reads it (at most two
lesions). One-line errors, naming the subject and the point: a point outside the image; not
exactly six background points and one foreground point per lesion; more than two lesions; a
foreground point outside the box of its background points; two points on the same voxel. A
warning when two lesions' boxes overlap. Every subject is checked before any file is written.
An annotation of a subject already in the folder, in any image format, is refused without
``--overwrite``; with it, the subject's existing files in other formats are removed once every
new file is in place, so a subject never has two.

With ``--dataset dataset.json`` and a folder of point files, the file's split selects the
subjects, as ``--dataset_split`` does; with one point file the split is not used.

``--to_markups`` does the reverse: it writes each annotation volume as ``.mrk.json`` (LPS,
labels as above, at the voxel centres) to ``--points``, a folder (``<subject>.mrk.json`` in it)
or, with ``--subject``, a file named ``*.mrk.json``, to check the points over the image in
Slicer; converting that file back gives the same volume. A point file of the subject in another
format beside it (``<subject>.fcsv``, ``.csv``) is refused, as the folder would then hold two.

Examples::

    # one subject
    python data/points_to_annotation.py --points ./clicks/vs_gk_5.mrk.json \\
        --path_images ./data/VS/image_crop/ --image_postfix T2 \\
        --path_anno_7points ./data/VS/annotation_7points/ --anno_7points_postfix 7points
    # every subject of a split, from ./clicks/<subject>.mrk.json (or .fcsv, .csv)
    python data/points_to_annotation.py --points ./clicks/ --dataset_split ./splits/split_VS.csv \\
        --path_images ./data/VS/image_crop/ --image_postfix T2 \\
        --path_anno_7points ./data/VS/annotation_7points/ --anno_7points_postfix 7points
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from data.point_files import ControlPoint, parse_role, read_points
from data.simulate_7points import STAGE0_LESIONS, earlier_annotations, remove_replaced
from utilities.core.arguments import ArgumentParser, typed_flags
from utilities.core.errors import OutputError
from utilities.core.logs import LOGGER_NAME, setup_logger
from utilities.data.dataset_file import add_dataset_flag, parse_with_dataset, require
from utilities.data.grid import Grid, find_subject_file, image_extension, listed, missing_paths, subject_path
from utilities.data.io import (
    check_overwrite,
    exact_format,
    read_image,
    save_text,
    staged_folders,
    write_image,
)
from utilities.data.splits import PHASES, subjects_of

__all__ = [
    "EXTENSIONS",
    "MAX_LESIONS",
    "ControlPoint",
    "parse_role",
    "read_points",
    "annotation_from_points",
    "markups_from_annotation",
    "points_to_annotations",
    "annotations_to_markups",
    "main",
]

logger = logging.getLogger(LOGGER_NAME)

#: Point-file extensions, in the order they are looked for.
EXTENSIONS = (".mrk.json", ".fcsv", ".csv")
#: Values 2k must fit in uint8.
MAX_LESIONS = 127
_SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/"
           "Schema/markups-schema-v1.0.3.json#")




# --------------------------------------------------------------------------------------------
# Points → volume
# --------------------------------------------------------------------------------------------
def _name(k: int, point: ControlPoint) -> str:
    return f"point {k + 1} ({point.label!r})" if point.label else f"point {k + 1}"


def _roles(points: Sequence[ControlPoint], continuous: np.ndarray, subject: str) -> list[tuple[int, bool]]:
    """(lesion, is_foreground) of every point, from the labels or, without them, geometrically."""
    roles = [parse_role(p.label) or parse_role(p.description) for p in points]
    if all(r is None for r in roles):
        if len(points) != 7:
            raise ValueError(f"{subject}: the {len(points)} points have no fg/bg labels; without labels a file "
                             "must hold exactly 7 points (one lesion): label them bg, fg (bg2, fg2, ... for more "
                             "lesions)")
        inside = []
        for k in range(7):
            others = np.delete(continuous, k, axis=0)
            if np.all((continuous[k] > others.min(0)) & (continuous[k] < others.max(0))):
                inside.append(k)
        if len(inside) != 1:
            raise ValueError(f"{subject}: the 7 points have no fg/bg labels and {len(inside)} of them lie strictly "
                             "inside the box of the other six, so the foreground point is unclear; label them bg, fg")
        return [(1, k == inside[0]) for k in range(7)]
    for k, role in enumerate(roles):
        if role is None:
            raise ValueError(f"{subject}: {_name(k, points[k])} has no fg/bg label while others have; label every "
                             "point (bg, fg; bg2, fg2 for lesion 2) or none")
        if not 1 <= role[0] <= MAX_LESIONS:
            raise ValueError(f"{subject}: {_name(k, points[k])} names lesion {role[0]}; lesions are numbered 1.."
                             f"{MAX_LESIONS} (bg, fg for lesion 1; bg2, fg2 for lesion 2)")
    return roles  # type: ignore[return-value]


def _lesion_range(lesions: Sequence[int]) -> str:
    if len(lesions) == 1:
        return f"lesion {lesions[0]}"
    if list(lesions) == list(range(lesions[0], lesions[-1] + 1)):
        return f"lesions {lesions[0]}-{lesions[-1]}"
    return "lesions " + ", ".join(map(str, lesions))


def _numbered_hint(points: Sequence[ControlPoint], roles: Sequence[tuple[int, bool]]) -> str:
    """For numbered lesions (2, 3, ...) with no foreground point (``bg1`` ... ``bg6`` read as
    lesions 1..6): which labels were read as which lesions, and the labels meant."""
    with_fg = {lesion for lesion, is_fg in roles if is_fg}
    stray = sorted({lesion for lesion, _ in roles if lesion > 1} - with_fg)
    if not stray:
        return ""
    labels = ", ".join(repr(points[k].label or points[k].description) for k, (lesion, _) in enumerate(roles)
                       if lesion in stray)
    return (f"; {labels} were read as {_lesion_range(stray)} (a number right after bg/fg names the lesion), which "
            f"{'has' if len(stray) == 1 else 'have'} no foreground point: label the six background points of lesion 1 "
            "bg-1 ... bg-6 (or bg), those of lesion 2 bg2-1 ... bg2-6")


def annotation_from_points(points: Sequence[ControlPoint], space: str, reference: sitk.Image,
                           subject: str = "subject") -> np.ndarray:
    """The 7-point annotation of ``points`` on the grid of ``reference``.

    Args:
        points: the subject's points (:func:`read_points`).
        space: ``"LPS"`` (world mm, mapped with the reference's origin, spacing and direction:
            the nearest voxel centre) or ``"voxel"`` (0-based (i, j, k) indices).
        reference: the image whose grid the annotation is on (only its geometry is used).
        subject: name for messages.

    Returns:
        uint8 array in SimpleITK order (z, y, x): 0 elsewhere, 2k − 1 at the six background
        points and 2k at the foreground point of lesion k (k = 1, 2).

    Raises:
        ValueError: one line naming the subject and the point, for every check of the module.
    """
    size = np.array(reference.GetSize())
    continuous, index = _voxels(points, space, reference, size, subject)
    roles = _roles(points, continuous, subject)
    lesions = sorted({lesion for lesion, _ in roles})
    if lesions != list(range(1, len(lesions) + 1)):
        raise ValueError(f"{subject}: the points name lesions {lesions}; number them 1, 2, ... without gaps "
                         "(bg, fg; bg2, fg2; ...)")
    boxes = [_lesion_box(lesion, points, roles, index, subject) for lesion in lesions]
    if len(lesions) > STAGE0_LESIONS:
        extra = lesions[STAGE0_LESIONS:]
        labels = ", ".join(f"bg{k}, fg{k}" for k in extra[:2]) + (", ..." if len(extra) > 2 else "")
        raise ValueError(f"{subject}: the points name {len(lesions)} lesions, but stage 0 "
                         f"(generate_geodesic_labels.py) supports at most {STAGE0_LESIONS} per subject (bg, fg and "
                         "bg2, fg2: values 1,2 and 3,4): "
                         f"keep the points of {STAGE0_LESIONS} lesions and remove those of {_lesion_range(extra)} "
                         f"({labels}); a lesion without points is background for training")
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            (la, loa, hia), (lb, lob, hib) = boxes[a], boxes[b]
            if np.all(loa <= hib) and np.all(lob <= hia):
                logger.warning("%s: the boxes of lesions %d and %d overlap; the geodesic expansion merges them there",
                               subject, la, lb)
    annotation = np.zeros(tuple(size[::-1]), dtype=np.uint8)
    for k, (lesion, is_fg) in enumerate(roles):
        i, j, kk = index[k]
        annotation[kk, j, i] = 2 * lesion if is_fg else 2 * lesion - 1
    return annotation


#: How far (in voxels) past the image's surface a point still counts as on it: rounding of the
#: world coordinates a viewer writes.
_SURFACE_TOLERANCE = 1e-6


def _voxels(points: Sequence[ControlPoint], space: str, reference: sitk.Image, size: np.ndarray,
            subject: str) -> tuple[np.ndarray, np.ndarray]:
    """The points' continuous indices and nearest voxels (x, y, z), each inside the image and
    on a voxel of its own."""
    if space == "voxel":
        continuous = np.array([p.position for p in points], dtype=np.float64)
    elif space == "LPS":
        continuous = np.array([reference.TransformPhysicalPointToContinuousIndex(p.position) for p in points])
    else:
        raise ValueError(f"space must be 'LPS' or 'voxel', got {space!r}")
    # the image covers voxel centres -0.5 .. size - 0.5 (continuous index): a point on its surface,
    # either face, is on the edge voxel (rounding half up alone would keep the near face only)
    index = np.floor(continuous + 0.5).astype(np.int64)
    on_surface = (continuous >= -0.5 - _SURFACE_TOLERANCE) & (continuous <= size - 0.5 + _SURFACE_TOLERANCE)
    for k, point in enumerate(points):
        if not on_surface[k].all():
            where = (f"voxel index {index[k].tolist()}" if space == "voxel"
                     else f"LPS {[round(v, 3) for v in point.position]} mm (voxel {index[k].tolist()})")
            raise ValueError(f"{subject}: {_name(k, point)} at {where} lies outside the image (size "
                             f"{size.tolist()}); is it placed on this image, in the right coordinate system? (for a "
                             "lesion that touches the image's edge, put the point on the edge voxel)")
    index = np.clip(index, 0, size - 1)
    seen: dict[tuple[int, ...], int] = {}
    for k, voxel in enumerate(map(tuple, index.tolist())):
        if voxel in seen:
            j = seen[voxel]
            raise ValueError(f"{subject}: {_name(j, points[j])} and {_name(k, points[k])} fall on the same voxel "
                             f"{list(voxel)}; move one of them")
        seen[voxel] = k
    return continuous, index


def _lesion_box(lesion: int, points: Sequence[ControlPoint], roles: list[tuple[int, bool]], index: np.ndarray,
                subject: str) -> tuple[int, np.ndarray, np.ndarray]:
    """``(lesion, lo, hi)``: the voxel box of a lesion's points, once it has 6 background points
    and 1 foreground point inside their box."""
    members = [k for k, role in enumerate(roles) if role[0] == lesion]
    bg = [k for k in members if not roles[k][1]]
    fg = [k for k in members if roles[k][1]]
    if len(bg) != 6 or len(fg) != 1:
        names = ", ".join(_name(k, points[k]) for k in members)
        raise ValueError(f"{subject}: lesion {lesion} has {len(bg)} background and {len(fg)} foreground "
                         f"point(s) ({names}); expected exactly 6 and 1{_numbered_hint(points, roles)}")
    lo, hi = index[bg].min(0), index[bg].max(0)
    f = fg[0]
    if np.any(index[f] < lo) or np.any(index[f] > hi):
        raise ValueError(f"{subject}: the foreground {_name(f, points[f])} of lesion {lesion} at voxel "
                         f"{index[f].tolist()} lies outside the box {lo.tolist()}..{hi.tolist()} of its "
                         "background points; check its label or its position")
    return lesion, np.minimum(lo, index[f]), np.maximum(hi, index[f])


# --------------------------------------------------------------------------------------------
# Volume → markups
# --------------------------------------------------------------------------------------------
def markups_from_annotation(annotation: sitk.Image, subject: str = "annotation") -> dict:
    """A Slicer ``.mrk.json`` point list (LPS, voxel centres) of a 7-point annotation volume.

    Labels follow the module's convention: ``bg-1`` ... ``bg-6`` and ``fg`` for lesion 1,
    ``bg2-1`` ... and ``fg2`` for lesion 2, ...; the description says the voxel index.
    """
    values = sitk.GetArrayViewFromImage(annotation)
    if annotation.GetDimension() != 3:
        raise ValueError(f"{subject}: the annotation is {annotation.GetDimension()}D; expected a 3D volume")
    nonzero = values[values != 0]
    if nonzero.size == 0:
        raise ValueError(f"{subject}: the annotation has no points (all 0)")
    if np.any(nonzero != np.round(nonzero)) or np.any(nonzero < 0) or np.any(nonzero > 2 * MAX_LESIONS):
        bad = np.unique(nonzero[(nonzero != np.round(nonzero)) | (nonzero < 0) | (nonzero > 2 * MAX_LESIONS)])
        raise ValueError(f"{subject}: the annotation holds values {bad[:5].tolist()}; expected integers "
                         f"0..{2 * MAX_LESIONS}")
    control_points: list[ControlPoint] = []
    for value in np.unique(nonzero).astype(int).tolist():
        lesion, is_fg = (value + 1) // 2, value % 2 == 0
        stem = ("fg" if is_fg else "bg") + ("" if lesion == 1 else str(lesion))
        voxels = np.argwhere(values == value)[:, ::-1]  # (z, y, x) → index (i, j, k)
        for n, voxel in enumerate(voxels.tolist(), start=1):
            label = stem if is_fg and len(voxels) == 1 else f"{stem}-{n}"
            position = annotation.TransformIndexToPhysicalPoint([int(v) for v in voxel])
            control_points.append({
                "id": str(len(control_points) + 1), "label": label,
                "description": f"lesion {lesion} {'foreground' if is_fg else 'background'}, voxel {voxel}",
                "position": [float(v) for v in position], "positionStatus": "defined",
            })
    return {"@schema": _SCHEMA,
            "markups": [{"type": "Fiducial", "coordinateSystem": "LPS", "coordinateUnits": "mm",
                         "controlPoints": control_points}]}


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _points_stem(subject: str, points_postfix: str) -> str:
    return f"{subject}_{points_postfix}" if points_postfix else subject


def _subject_of_file(path: Path, points_postfix: str) -> str | None:
    for ext in EXTENSIONS:
        if path.name.lower().endswith(ext):
            stem = path.name[: -len(ext)]
            if points_postfix:
                return stem[: -len(points_postfix) - 1] if stem.endswith(f"_{points_postfix}") else None
            return stem
    return None


def _reference(path: Path) -> sitk.Image:
    """An image with the geometry of ``path`` (read from its header only)."""
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path} (check --path_images/--image_postfix)")
    grid = Grid.read(path)
    if len(grid.size) != 3:
        raise ValueError(f"image file {path} is {len(grid.size)}D; expected a 3D volume")
    image = sitk.Image(list(grid.size), sitk.sitkUInt8)
    image.SetOrigin(grid.origin)
    image.SetSpacing(grid.spacing)
    image.SetDirection(grid.direction)
    return image


def _find_point_files(folder: Path, subjects: Sequence[str] | None, points_postfix: str) -> dict[str, Path]:
    """Subject → point file in ``folder``; every subject must have exactly one. A file in no
    point format is named in an error (hidden files, ``.name``, are ignored); point files of
    other subjects or postfixes are named in a warning."""
    files: dict[str, list[Path]] = {}
    unmatched, not_points = [], []
    # a name spelled with decomposed accents (NFD, as macOS stores file names) is the split's subject
    by_nfc = {} if subjects is None else {unicodedata.normalize("NFC", s): s for s in subjects}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        subject = _subject_of_file(path, points_postfix)
        if subject is not None:
            subject = by_nfc.get(unicodedata.normalize("NFC", subject), subject)
        if not path.name.lower().endswith(EXTENSIONS):
            not_points.append(path.name)
        elif subject is None or (subjects is not None and subject not in subjects):
            unmatched.append(path.name)
        else:
            files.setdefault(subject, []).append(path)
    if not_points:
        raise ValueError(f"--points {folder} holds {len(not_points)} file(s) in no point format: {listed(not_points)}; "
                         f"move them out of the folder or convert them to one of {', '.join(EXTENSIONS)} (hidden "
                         "files, named .*, are ignored)")
    if subjects is None:
        subjects = sorted(files)
        if not subjects:
            raise FileNotFoundError(f"no point files ({', '.join(EXTENSIONS)}) in {folder}"
                                    + (f" named <subject>_{points_postfix}.*" if points_postfix else ""))
    missing = [f"{folder / _points_stem(s, points_postfix)}.*" for s in subjects if s not in files]
    if missing:
        raise FileNotFoundError(f"{len(missing)} subject(s) have no point file ({', '.join(EXTENSIONS)}): "
                                f"{listed(missing)}; check --points and --points_postfix")
    several = {s: p for s, p in files.items() if len(p) > 1}
    if several:
        s, paths = next(iter(several.items()))
        raise ValueError(f"{s} has several point files: {', '.join(p.name for p in paths)}; keep one")
    if unmatched:
        logger.warning("%d file(s) in %s match no subject and are not used: %s", len(unmatched), folder,
                       ", ".join(unmatched[:10]) + (" ..." if len(unmatched) > 10 else ""))
    return {s: files[s][0] for s in subjects}


def _point_files(points: Path, dataset_split: str | os.PathLike | None, phase: str | None, subject: str | None,
                 points_postfix: str) -> dict[str, Path]:
    """Subject -> point file: every file of a folder (or the split's subjects), or one file."""
    if points.is_dir():
        if subject is not None:
            raise ValueError("--subject goes with a single point file, but --points is a folder; use --dataset_split")
        if phase is not None and dataset_split is None:
            raise ValueError(f"--phase {phase} selects subjects of a split, but no split is given: pass "
                             "--dataset_split (or --dataset with a split), or drop --phase to convert every point file "
                             "of the folder")
        subjects = None if dataset_split is None else subjects_of(dataset_split, phase)
        if subjects is not None and not subjects:
            raise ValueError(f"split file {dataset_split} lists no subjects" + (f" of phase {phase}" if phase else ""))
        return _find_point_files(points, subjects, points_postfix)
    if points.is_file():
        if dataset_split is not None:
            raise ValueError(f"--dataset_split goes with a folder of point files, but --points {points} is one file")
        if phase is not None:
            raise ValueError(f"--phase {phase} selects subjects of a split, but --points {points} is one file; drop "
                             "--phase, or pass a folder of point files")
        name = subject or _subject_of_file(points, points_postfix)
        if not name:
            raise ValueError(f"cannot tell the subject of {points} from its name; pass --subject")
        return {name: points}
    raise FileNotFoundError(f"--points {points} does not exist (a point file or a folder of them)")


def _annotation_of_file(name: str, path: Path, csv_space: str | None, path_images: str | os.PathLike,
                        image_postfix: str) -> tuple[np.ndarray, sitk.Image]:
    """One subject's annotation array and the image whose grid it is on (nothing written)."""
    control_points, space = read_points(path, csv_space)
    image_path = find_subject_file(path_images, name, image_postfix, "image")
    stem, _, postfix = name.rpartition("_")
    if not image_path.is_file() and stem and find_subject_file(path_images, stem, image_postfix).is_file():
        raise FileNotFoundError(f"image file not found: {image_path}; the point file {path.name} was read as "
                                f"subject {name!r}: if {postfix!r} is a postfix of the point files, pass "
                                f"--points_postfix {postfix}")
    reference = _reference(image_path)
    try:
        return annotation_from_points(control_points, space, reference, name), reference
    except ValueError as e:
        raise ValueError(f"{e} [point file {path}]") from None


def points_to_annotations(points: str | os.PathLike, path_images: str | os.PathLike, image_postfix: str,
                          path_anno_7points: str | os.PathLike, anno_7points_postfix: str = "7points",
                          dataset_split: str | os.PathLike | None = None, phase: str | None = None,
                          subject: str | None = None, points_postfix: str = "",
                          csv_space: str | None = None, overwrite: bool = False) -> list[Path]:
    """Write the annotation volume of every subject's point file (an existing one is replaced
    only with ``overwrite``).

    Args:
        points: one point file, or a folder of ``<subject>[_<points_postfix>].<ext>`` files.
        path_images, image_postfix: the images, ``<path_images>/<subject>_<image_postfix>.nii.gz``.
        path_anno_7points, anno_7points_postfix: where the annotations go.
        dataset_split, phase: with a folder, the subjects to convert (default: every file in it).
        subject: with one file, its subject (default: the file name without extension/postfix).
        points_postfix: the postfix of the point files' names.
        csv_space: ``LPS``, ``RAS`` or ``voxel`` for CSV files.

    Returns:
        The written files, in subject order. Nothing is written if any subject fails a check;
        an annotation of a subject already in ``path_anno_7points``, in any image format, is
        refused without ``overwrite`` and removed with it once the new files are in place.
    """
    if csv_space is not None and csv_space not in ("LPS", "RAS", "voxel"):
        raise ValueError(f"--csv_space must be LPS, RAS or voxel, got {csv_space!r}")
    files = _point_files(Path(points), dataset_split, phase, subject, points_postfix)
    out_dir = Path(path_anno_7points)
    earlier = earlier_annotations(out_dir, list(files), anno_7points_postfix, overwrite)
    prepared = [(name, *_annotation_of_file(name, path, csv_space, path_images, image_postfix))
                for name, path in files.items()]
    written = []
    with staged_folders(out_dir) as (staging,):   # a file that cannot be written leaves none of the others
        for name, annotation, reference in prepared:
            image = sitk.GetImageFromArray(annotation)
            image.CopyInformation(reference)
            path = exact_format(subject_path(out_dir, name, anno_7points_postfix), Grid.of(reference))
            write_image(image, staging / path.name)
            logger.info("%s: %d lesion(s) → %s", name, (int(annotation.max()) + 1) // 2, path)
            written.append(path)
    remove_replaced(earlier, written)   # after the move: a failed run keeps every existing annotation
    logger.info("wrote %d annotation(s) to %s", len(written), out_dir)
    return written


def _annotated_subjects(folder: Path, postfix: str) -> list[str]:
    """The subjects of the ``<subject>_<postfix><ext>`` annotation files in ``folder``, in any
    format of :data:`utilities.data.grid.IMAGE_EXTENSIONS`."""
    if not folder.is_dir():
        raise FileNotFoundError(f"annotation folder {folder} does not exist (check --path_anno_7points)")
    subjects = set()
    for path in folder.iterdir():
        ext = image_extension(path)
        if ext is not None and path.name.endswith(f"_{postfix}{ext}") and path.is_file():
            subjects.add(path.name[: -len(f"_{postfix}{ext}")])
    return sorted(subjects)


def _other_point_files(target: Path) -> list[Path]:
    """The point files beside ``target`` (a ``.mrk.json`` to write) of the same name in another
    point format or case of the extension (``<stem>.fcsv``, ``<stem>.csv``, ...)."""
    stem = target.name[: -len(".mrk.json")]
    if not target.parent.is_dir():
        return []
    return sorted(p for p in target.parent.iterdir()
                  if p.name != target.name and p.is_file() and _subject_of_file(p, "") == stem)


def _markups_targets(points: Path, path_anno_7points: str | os.PathLike, anno_7points_postfix: str,
                     dataset_split: str | os.PathLike | None, phase: str | None, subject: str | None,
                     points_postfix: str) -> dict[str, Path]:
    """Subject -> the ``.mrk.json`` file ``--to_markups`` writes for it."""
    if points.name.lower().endswith(".mrk.json"):
        if subject is None:
            raise ValueError(f"--to_markups writes one file {points}: pass --subject")
        if dataset_split is not None or phase is not None:
            flag = "--dataset_split" if dataset_split is not None else f"--phase {phase}"
            raise ValueError(f"{flag} selects the subjects of a folder of markups, but --points {points} is one file "
                             f"(of --subject {subject}); drop {flag.split()[0]}, or pass a folder as --points")
        return {subject: points}
    if points.name.lower().endswith((".json", *EXTENSIONS)):
        stem = points.name[: -len(next(e for e in (*EXTENSIONS, ".json") if points.name.lower().endswith(e)))]
        raise ValueError(f"--points {points}: --to_markups writes Slicer .mrk.json files, into a folder or to one "
                         f"file named *.mrk.json (with --subject): name it {points.with_name(stem + '.mrk.json')}")
    if points.exists() and not points.is_dir():
        raise ValueError(f"--points {points} is a file; --to_markups writes .mrk.json files into a folder, or to one "
                         "file named *.mrk.json (with --subject)")
    if subject is not None and (dataset_split is not None or phase is not None):
        raise ValueError("--subject names one subject, --dataset_split/--phase select those of a split; pass one of "
                         "them")
    if phase is not None and dataset_split is None:
        raise ValueError(f"--phase {phase} selects subjects of a split, but no split is given: pass --dataset_split "
                         "(or --dataset with a split), or drop --phase")
    if subject is not None:
        subjects = [subject]
    elif dataset_split is not None:
        subjects = subjects_of(dataset_split, phase)
        if not subjects:
            raise ValueError(f"split file {dataset_split} lists no subjects" + (f" of phase {phase}" if phase else ""))
    else:
        subjects = _annotated_subjects(Path(path_anno_7points), anno_7points_postfix)
        if not subjects:
            raise ValueError(f"no subjects to convert (no *_{anno_7points_postfix}.<ext> image file in "
                             f"{path_anno_7points}; check --path_anno_7points/--anno_7points_postfix)")
    return {s: points / f"{_points_stem(s, points_postfix)}.mrk.json" for s in subjects}


def annotations_to_markups(points: str | os.PathLike, path_anno_7points: str | os.PathLike,
                           anno_7points_postfix: str = "7points", dataset_split: str | os.PathLike | None = None,
                           phase: str | None = None, subject: str | None = None,
                           points_postfix: str = "", overwrite: bool = False) -> list[Path]:
    """Write each annotation volume as a Slicer ``.mrk.json`` (the reverse of
    :func:`points_to_annotations`); an existing one is replaced only with ``overwrite``. A
    point file of a subject in another format beside the one written is refused (the folder
    would hold two point files of the subject). All files or none are written.

    Args:
        points: output ``.mrk.json`` file (with ``subject``) or folder, which gets
            ``<subject>[_<points_postfix>].mrk.json``.
        dataset_split, phase: the subjects (default: every annotation in ``path_anno_7points``).
    """
    points = Path(points)
    targets = _markups_targets(points, path_anno_7points, anno_7points_postfix, dataset_split, phase, subject,
                               points_postfix)
    sources = {s: find_subject_file(path_anno_7points, s, anno_7points_postfix, "annotation") for s in targets}
    missing = missing_paths(sources.values())
    if missing:
        raise FileNotFoundError(f"{len(missing)} annotation file(s) missing: {listed(missing)}; "
                                "check --path_anno_7points/--anno_7points_postfix")
    folders = [t for t in targets.values() if t.is_dir()]
    if folders:
        raise OutputError(f"--points: {folders[0]} is a folder, where a markups file of that name goes; move it out "
                          "of the way or choose another --points")
    others = [p for t in targets.values() for p in _other_point_files(t)]
    if others:
        folder = points.parent if points.name.lower().endswith(".mrk.json") else points
        raise ValueError(f"--points {folder} holds {len(others)} point file(s) of the subject(s) in another format: "
                         f"{listed([p.name for p in others])}; "
                         "with a .mrk.json beside them a subject would have two point files: write the markups into "
                         "another folder (e.g. ./clicks_check/)")
    check_overwrite(list(targets.values()), "--points", overwrite, "markups file")
    documents = {s: markups_from_annotation(read_image(sources[s], "annotation"), s) for s in targets}
    folder = next(iter(targets.values())).parent
    written = []
    with staged_folders(folder) as (staging,):   # a file that cannot be written leaves none of the others
        for s, target in targets.items():
            save_text(json.dumps(documents[s], indent=2) + "\n", staging / target.name)
            written.append(target)
    logger.info("wrote %d markups file(s)", len(written))
    return written


def main(argv: list[str] | None = None) -> list[Path]:
    parser = ArgumentParser(description=__doc__.splitlines()[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog="Point labels: bg / fg for lesion 1, bg2 / fg2 for lesion 2, ...; a "
                                   "trailing -<n> (Slicer's counter) is ignored. See the module docstring.")
    parser.add_argument("--points", required=True,
                        help="point file (.mrk.json, .fcsv, .csv) of one subject, or a folder of "
                             "<subject>[_<points_postfix>].<ext>; with --to_markups the output folder, or a file "
                             "named *.mrk.json (with --subject)")
    parser.add_argument("--subject", default=None, help="with one point file: its subject (default: from its name)")
    parser.add_argument("--dataset_split", default=None,
                        help="with a folder: convert the subjects of this split (default: every file; with "
                             "--dataset: the file's split)")
    parser.add_argument("--phase", default=None, choices=list(PHASES), help="only the subjects of this phase")
    parser.add_argument("--path_images", default="./data/VS/image_crop/", help="folder of the images")
    parser.add_argument("--image_postfix", default="T2", help="images are <subject>_<postfix>.nii.gz")
    parser.add_argument("--path_anno_7points", default="./data/VS/annotation_7points/",
                        help="folder of the annotation volumes (output; input with --to_markups)")
    parser.add_argument("--anno_7points_postfix", default="7points",
                        help="annotations are <subject>_<postfix>.nii.gz")
    parser.add_argument("--points_postfix", default="",
                        help="point files are <subject>_<postfix>.<ext> ('' : <subject>.<ext>)")
    parser.add_argument("--csv_space", default=None, choices=["LPS", "RAS", "voxel"],
                        help="coordinates of CSV point files: world mm in LPS or RAS, or 0-based voxel indices i,j,k")
    parser.add_argument("--to_markups", action="store_true",
                        help="the reverse: write the annotation volumes as .mrk.json to --points")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the subjects' existing annotation files, in any image format (with --to_markups: "
                             "existing .mrk.json files)")
    add_dataset_flag(parser)
    args = parse_with_dataset(parser, argv, optional=("images", "image_postfix"))
    if args.dataset is not None and "dataset_split" not in typed_flags(parser, argv):
        one = (args.subject is not None or args.points.lower().endswith(".mrk.json") if args.to_markups
               else Path(args.points).is_file())
        if one:   # the file's split selects among a folder's files; one file (or --subject) is its own choice
            args.dataset_split = None
    if not args.to_markups:
        require(args, "images", "image_postfix")
    setup_logger(None)
    if args.to_markups:
        if args.csv_space is not None:
            raise ValueError(f"--csv_space {args.csv_space} reads CSV point files, but --to_markups writes .mrk.json "
                             "files (LPS); drop one of them")
        return annotations_to_markups(args.points, args.path_anno_7points, args.anno_7points_postfix,
                                      args.dataset_split, args.phase, args.subject, args.points_postfix,
                                      args.overwrite)
    return points_to_annotations(args.points, args.path_images, args.image_postfix, args.path_anno_7points,
                                 args.anno_7points_postfix, args.dataset_split, args.phase, args.subject,
                                 args.points_postfix, args.csv_space, args.overwrite)


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
