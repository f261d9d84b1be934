"""Simulate the 7-point annotation of PA-Seg from full labels.

Per lesion (connected component of the label, 26-connectivity, largest first, at most
``--max_instances``), one foreground point inside it and six background points just outside
its extreme extents, written as ``<path_anno_7points>/<subject>_<anno_7points_postfix>.nii.gz``
(uint8, in the label's geometry). Values: lesion k (1-based) has its foreground point = 2k and
its six background points = 2k - 1, so 1 = background and 2 = foreground of the largest lesion,
3 and 4 the second's, as read by ``generate_geodesic_labels.py``.

* Foreground: the voxel farthest (in mm, Euclidean distance transform with the voxel spacing)
  from the lesion's boundary (the image border counts as boundary); ties go to the voxel
  nearest the lesion's centroid.
* Background: for each axis, one voxel below the minimum and one above the maximum of the
  lesion along that axis, at the in-plane position of the extreme voxel nearest the centre of
  the extreme face. Where the lesion touches the image border the point is clamped to the
  border slice and moved, within it, to the nearest voxel outside the label (error if none).
* ``--jitter_mm r``: each point moves to a uniformly drawn voxel within r mm that keeps it
  valid (foreground: inside its lesion; background: outside the label, inside the image and on
  the far side of the extreme plane).

The result depends only on ``--seed`` and the subject name (not on the other subjects). The file
is ``.mha`` where NIfTI cannot hold the label's grid exactly. An annotation of a subject already in
the folder, in any image format, is refused without ``--overwrite``; with it, the subject's files
in other formats are removed once every new file is in place. Stage 0 reads at most two lesions
per subject, so ``--max_instances`` is 1 or 2; a warning names the subjects with lesions left out
(stage 0 makes them background).

Example::

    python data/simulate_7points.py --dataset_split ./splits/split_VS.csv --path_labels ./data/VS/label_crop/ \\
        --label_postfix Label --path_anno_7points ./data/VS/annotation_7points/ --anno_7points_postfix 7points
"""
from __future__ import annotations

import logging
import os
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from utilities.core.arguments import ArgumentParser, Inert, warn_inert_flags
from utilities.core.errors import OutputError
from utilities.core.logs import LOGGER_NAME, setup_logger, show_progress
from utilities.data.dataset_file import add_dataset_flag, parse_with_dataset
from utilities.data.grid import (
    IMAGE_EXTENSIONS,
    Grid,
    data_files,
    find_subject_file,
    listed,
    missing_paths,
    subject_path,
)
from utilities.data.io import (
    check_label_values,
    check_overwrite,
    exact_format,
    read_image,
    staged_folders,
    write_like,
)
from utilities.data.splits import PHASES, subjects_of
from utilities.method.geodesic import LESIONS
from utilities.workflow.cli import nonnegative_float, positive_int

__all__ = ["MAX_INSTANCES_LIMIT", "STAGE0_LESIONS", "simulate_points", "subject_rng", "earlier_annotations",
           "remove_replaced", "simulate_dataset", "main"]

logger = logging.getLogger(LOGGER_NAME)

MAX_INSTANCES_LIMIT = 127  # values 2k must fit in uint8
#: The most lesions per subject that stage 0 (generate_geodesic_labels.py) reads: values 1,2 and 3,4.
STAGE0_LESIONS = len(LESIONS)
_EPS = 1e-6

Allowed = Callable[[tuple[slice, ...]], np.ndarray]


def _window(center: np.ndarray, half: np.ndarray, lo: np.ndarray, hi: np.ndarray,
            allowed: Allowed) -> np.ndarray:
    """Indices (K, 3) of the allowed voxels in the box ``center +- half`` clipped to [lo, hi]."""
    start = np.maximum(center - half, lo)
    stop = np.minimum(center + half, hi) + 1
    if np.any(stop <= start):
        return np.zeros((0, 3), dtype=np.int64)
    region = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
    return np.argwhere(allowed(region)) + start


def _pick(base: np.ndarray, lo: np.ndarray, hi: np.ndarray, allowed: Allowed, spacing: np.ndarray,
          jitter_mm: float, rng: np.random.Generator) -> np.ndarray | None:
    """The allowed voxel of the box [lo, hi] nearest ``base`` (in mm; ``base`` itself if allowed),
    then, with ``jitter_mm > 0``, a uniformly drawn allowed voxel within ``jitter_mm`` of it.
    ``None`` if the box holds no allowed voxel."""
    radius = 0
    full = int(np.max(hi - lo)) + 1
    while True:
        idx = _window(base, np.full(3, radius), lo, hi, allowed)
        covered = radius >= full
        if len(idx):
            dist = np.sqrt((((idx - base) * spacing) ** 2).sum(axis=1))
            best = int(np.argmin(dist))
            if dist[best] <= radius * spacing.min() + _EPS or covered:
                point = idx[best]
                break
        elif covered:
            return None
        radius = max(1, 2 * radius)
    if jitter_mm > 0:
        half = np.floor(jitter_mm / spacing + _EPS).astype(np.int64)
        idx = _window(point, half, lo, hi, allowed)
        dist = np.sqrt((((idx - point) * spacing) ** 2).sum(axis=1))
        idx = idx[dist <= jitter_mm + _EPS]
        point = idx[int(rng.integers(len(idx)))]
    return point


def _foreground_point(component: np.ndarray, offset: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Voxel of ``component`` (a boolean crop starting at ``offset``) farthest from its boundary."""
    distance = ndimage.distance_transform_edt(np.pad(component, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    peak = distance.max()
    ties = np.argwhere(distance >= peak - _EPS * max(peak, 1.0))
    centroid = np.argwhere(component).mean(axis=0)
    d2 = (((ties - centroid) * spacing) ** 2).sum(axis=1)
    return ties[int(np.argmin(d2))] + offset


def simulate_points(mask: np.ndarray, spacing: Sequence[float], max_instances: int = 2, jitter_mm: float = 0.0,
                    rng: np.random.Generator | None = None, *, name: str = "mask",
                    left_out: list[int] | None = None) -> np.ndarray:
    """Simulated 7-point annotation of a 3D label.

    Args:
        mask: 3D label; nonzero = lesion. Any axis order (SimpleITK arrays are (z, y, x)).
        spacing: voxel size in mm, in the same axis order as ``mask``.
        max_instances: annotate at most this many connected components (26-connectivity),
            largest first; the others are left out (an INFO line, or ``left_out``).
        jitter_mm: move each point by up to this distance (mm), keeping it valid.
        rng: random generator for the jitter (``None``: seeded with 0).
        name: what to call the mask in messages (e.g. the subject and file).
        left_out: when given, the sizes (voxels) of the components left out are appended to it
            instead of being logged, for the caller to report.

    Returns:
        uint8 array of ``mask``'s shape: 0 elsewhere; for lesion k (1-based) 2k at its
        foreground point and 2k - 1 at its six background points.
    """
    mask, spacing = _checked(mask, spacing, max_instances, jitter_mm, name)
    rng = np.random.default_rng(0) if rng is None else rng
    foreground = mask != 0
    if not foreground.any():
        raise ValueError(f"{name}: the label is empty, no lesion to annotate")

    components, kept = _largest_components(foreground, max_instances, name, left_out)

    shape = np.array(mask.shape)
    points = np.zeros(mask.shape, dtype=np.uint8)
    boxes = ndimage.find_objects(components)

    def outside(region: tuple[slice, ...]) -> np.ndarray:
        return ~foreground[region] & (points[region] == 0)

    for k, index in enumerate(kept, start=1):
        box = boxes[index]
        offset = np.array([s.start for s in box])
        box_hi = np.array([s.stop - 1 for s in box])
        component = components[box] == index + 1

        def inside(region: tuple[slice, ...], label: int = index + 1) -> np.ndarray:
            return components[region] == label

        centre = _foreground_point(component, offset, spacing)
        fg = _pick(centre, offset, box_hi, inside, spacing, jitter_mm, rng)
        points[tuple(fg)] = 2 * k

        voxels = np.argwhere(component) + offset
        for axis in range(3):
            for side in ("minimum", "maximum"):
                base, lo, hi = _beyond_face(voxels, axis, side, shape, spacing)
                bg = _pick(base, lo, hi, outside, spacing, jitter_mm, rng)
                if bg is None:
                    raise ValueError(f"{name}: no voxel outside the label {'below' if side == 'minimum' else 'above'} "
                                     f"the {side} of lesion {k} along axis {axis} (the border slice is all "
                                     "foreground); cannot place its background point")
                points[tuple(bg)] = 2 * k - 1
    return points


def _largest_components(foreground: np.ndarray, max_instances: int, name: str,
                        left_out: list[int] | None = None) -> tuple[np.ndarray, list[int]]:
    """The 26-connected components and the 0-based indices of the ``max_instances`` largest
    (ties: the first); the sizes of the ones left out go to ``left_out``, or a note is logged."""
    components, count = ndimage.label(foreground, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
    order = sorted(range(count), key=lambda i: (-sizes[i], i))
    kept, ignored = order[:max_instances], order[max_instances:]
    if left_out is not None:
        left_out.extend(int(sizes[i]) for i in ignored)
    elif ignored:
        logger.info("%s: %d connected component(s) of %s voxel(s) ignored; only the %d largest are annotated",
                    name, len(ignored), [int(sizes[i]) for i in ignored], len(kept))
    return components, kept


def _checked(mask: np.ndarray, spacing: Sequence[float], max_instances: int, jitter_mm: float,
             name: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`simulate_points`' arguments checked; the mask and spacing as arrays."""
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"{name}: the label must be 3D, got shape {mask.shape}")
    spacing_mm = np.asarray(spacing, dtype=np.float64)
    if spacing_mm.shape != (3,) or not np.all(np.isfinite(spacing_mm)) or np.any(spacing_mm <= 0):
        raise ValueError(f"spacing needs three positive sizes in mm, got {list(np.atleast_1d(spacing_mm))}")
    if not 1 <= int(max_instances) <= MAX_INSTANCES_LIMIT:
        raise ValueError(f"--max_instances must be in 1..{MAX_INSTANCES_LIMIT}, got {max_instances}")
    if not (np.isfinite(jitter_mm) and jitter_mm >= 0):
        raise ValueError(f"--jitter_mm must be zero or a positive number, got {jitter_mm}")
    return mask, spacing_mm


def _beyond_face(voxels: np.ndarray, axis: int, side: str, shape: np.ndarray,
                 spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The voxel one step beyond a lesion's extreme face along ``axis`` (below its minimum or
    above its maximum), facing the face's centre (in mm), and the box ``(lo, hi)`` a jittered
    background point may take: the slab at and beyond that step."""
    plane = [a for a in range(3) if a != axis]
    extreme = voxels[:, axis].min() if side == "minimum" else voxels[:, axis].max()
    face = voxels[voxels[:, axis] == extreme]
    face_centre = face[:, plane].mean(axis=0)
    d2 = (((face[:, plane] - face_centre) * spacing[plane]) ** 2).sum(axis=1)
    base = face[int(np.argmin(d2))].copy()
    lo, hi = np.zeros(3, dtype=np.int64), shape - 1
    if side == "minimum":
        base[axis] = max(extreme - 1, 0)
        hi[axis] = base[axis]
    else:
        base[axis] = min(extreme + 1, shape[axis] - 1)
        lo[axis] = base[axis]
    return base, lo, hi


def subject_rng(seed: int, subject: str) -> np.random.Generator:
    """Generator that depends only on ``seed`` and the subject name."""
    return np.random.default_rng([int(seed) % 2**63, zlib.crc32(subject.encode("utf-8"))])


def earlier_annotations(folder: str | os.PathLike, subjects: Sequence[str], postfix: str, overwrite: bool,
                        flag: str = "--path_anno_7points") -> list[Path]:
    """The annotations of ``subjects`` already in ``folder``, in every format of
    :data:`utilities.data.grid.IMAGE_EXTENSIONS` (a ``.mhd``/``.nhdr`` header with its data file
    ``<subject>_<postfix>.*`` beside it), checked before anything is computed: without
    ``overwrite`` any of them is refused in one line (:func:`check_overwrite`), so that no writer
    replaces an annotation in another format than the one it writes, nor writes a second format
    of a subject beside the first. A folder of such a name is refused either way. With
    ``overwrite``, :func:`remove_replaced` removes the ones the new files did not replace."""
    found = [p for s in subjects for p in (subject_path(folder, s, postfix, ext) for ext in IMAGE_EXTENSIONS)
             if os.path.lexists(p)]
    folders = [p for p in found if p.is_dir()]
    if folders:
        raise OutputError(f"{flag}: {folders[0]} is a folder, where an annotation file of that name goes; move it "
                          "out of the way")
    check_overwrite(found, flag, overwrite, "annotation")
    earlier = list(found)
    for path in found:
        stem = path.name[: -len(next(ext for ext in IMAGE_EXTENSIONS if path.name.endswith(ext)))]
        try:
            extra = data_files(path)
        except OSError:
            extra = []
        earlier += [d for d in extra if d.parent == path.parent and d.name.startswith(f"{stem}.")
                    and os.path.lexists(d) and d not in earlier]
    return earlier


def remove_replaced(earlier: Sequence[Path], written: Sequence[Path]) -> list[Path]:
    """Remove the files of ``earlier`` (:func:`earlier_annotations`) that ``written``, now in
    place, did not replace: a subject's annotation in another format, or the data file of its
    header. Returns them."""
    names = {Path(p).resolve() for p in written}
    removed = []
    for path in earlier:
        if path.resolve() not in names and os.path.lexists(path):
            try:
                path.unlink()
            except OSError as e:
                raise OutputError(f"wrote the new annotations, but could not remove {path} ({e.strerror}), an "
                                  "existing annotation in another format: remove it by hand (stage 0 refuses a subject "
                                  "with two)") from e
            removed.append(path)
    if removed:
        logger.info("--overwrite: removed %d existing annotation file(s) in another format than the new ones: %s",
                    len(removed), listed([str(p) for p in removed]))
    return removed


def _left_out_warning(left_out: dict[str, list[int]], max_instances: int) -> str:
    """The warning for the subjects whose smaller lesions are not annotated."""
    named = listed([f"{s} ({len(sizes)} left out, of {', '.join(map(str, sizes[:5]))}{' ...' if len(sizes) > 5 else ''}"
                    " voxel(s))" for s, sizes in left_out.items()])
    fix = (f"pass --max_instances {STAGE0_LESIONS} (stage 0 reads at most {STAGE0_LESIONS} lesions per subject), or "
           if max_instances < STAGE0_LESIONS else "")
    return (f"{len(left_out)} subject(s) have more lesions (connected components of the label) than the "
            f"{max_instances} annotated (the largest): {named}; stage 0 marks the lesions left out as certain "
            f"background where they lie outside the annotated lesions' boxes, so training learns them as "
            f"background: {fix}move these subjects out of the split's training phase, or remove the components "
            "from the label if they are no lesions")


def simulate_dataset(dataset_split: str | os.PathLike, path_labels: str | os.PathLike, label_postfix: str,
                     path_anno_7points: str | os.PathLike, anno_7points_postfix: str = "7points",
                     max_instances: int = 2, jitter_mm: float = 0.0, seed: int = 0,
                     phase: str | None = None, overwrite: bool = False) -> list[Path]:
    """Write the simulated annotation of every subject of the split (or of ``phase``); an
    existing annotation is replaced only with ``overwrite`` (else nothing is written)."""
    if phase is not None and phase not in PHASES:
        raise ValueError(f"--phase must be one of {list(PHASES)}, got {phase!r}")
    if max_instances > STAGE0_LESIONS:
        raise ValueError(f"--max_instances {max_instances}: stage 0 (generate_geodesic_labels.py) reads at most "
                         f"{STAGE0_LESIONS} lesions per subject (values 1,2 and 3,4) and refuses an annotation with "
                         f"more; pass --max_instances {STAGE0_LESIONS} or less")
    subjects = subjects_of(dataset_split, phase)
    if not subjects:
        raise ValueError(f"split file {dataset_split} lists no subjects" + (f" of phase {phase}" if phase else ""))
    labels = {s: find_subject_file(path_labels, s, label_postfix, "label") for s in subjects}
    missing = missing_paths(labels.values())
    if missing:
        raise FileNotFoundError(f"{len(missing)} label file(s) listed by {dataset_split} are missing: "
                                f"{listed(missing)}")
    out_dir = Path(path_anno_7points)
    earlier = earlier_annotations(out_dir, subjects, anno_7points_postfix, overwrite)
    written = []
    left_out: dict[str, list[int]] = {}
    with staged_folders(out_dir) as (staging,):   # a subject that fails leaves no annotation of the others
        for subject in tqdm(subjects, desc="7-point annotations", unit="subject", disable=not show_progress()):
            label = read_image(labels[subject], what="label")
            check_label_values(sitk.GetArrayViewFromImage(label), labels[subject], "label")
            sizes: list[int] = []
            points = simulate_points(sitk.GetArrayViewFromImage(label), label.GetSpacing()[::-1], max_instances,
                                     jitter_mm, subject_rng(seed, subject), name=f"{subject} ({labels[subject]})",
                                     left_out=sizes)
            if sizes:
                left_out[subject] = sizes
            path = exact_format(subject_path(out_dir, subject, anno_7points_postfix), Grid.of(label))
            write_like(points, label, staging / path.name)
            written.append(path)
    remove_replaced(earlier, written)   # after the move: a failed run keeps every existing annotation
    logger.info("wrote %d annotation(s) to %s", len(written), out_dir)
    if left_out:
        logger.warning("%s", _left_out_warning(left_out, max_instances))
    return written


def main(argv: list[str] | None = None) -> list[Path]:
    parser = ArgumentParser(description="Simulate 7-point annotations (1 foreground + 6 extreme "
                                        "background points per lesion) from full labels")
    parser.add_argument("--dataset_split", default="./splits/split_VS.csv", help="split CSV (subject,phase)")
    parser.add_argument("--path_labels", default="./data/VS/label_crop/", help="folder of the full labels")
    parser.add_argument("--label_postfix", default="Label", help="label files are <subject>_<postfix>.nii.gz")
    parser.add_argument("--path_anno_7points", default="./data/VS/annotation_7points/",
                        help="output folder of the annotations")
    parser.add_argument("--anno_7points_postfix", default="7points",
                        help="annotation files are <subject>_<postfix>.nii.gz")
    parser.add_argument("--max_instances", type=positive_int, default=STAGE0_LESIONS,
                        help=f"annotate at most this many lesions (largest connected components) per subject, "
                             f"1..{STAGE0_LESIONS} (stage 0 reads at most {STAGE0_LESIONS}); a warning names the "
                             "subjects with more")
    parser.add_argument("--jitter_mm", type=nonnegative_float, default=0.0,
                        help="move each point randomly by up to this many mm, keeping it valid")
    parser.add_argument("--seed", type=int, default=0, help="seed of the jitter (same seed, same files)")
    parser.add_argument("--phase", default=None, choices=list(PHASES),
                        help="annotate only the subjects of this phase (default: all)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the subjects' existing annotation files, in any image format")
    add_dataset_flag(parser)
    args = parse_with_dataset(parser, argv)
    setup_logger(None)
    warn_inert_flags(parser, argv, args, [Inert(("seed",), lambda a: a.jitter_mm == 0,
                                                "with --jitter_mm 0: the points are not jittered")])
    return simulate_dataset(args.dataset_split, args.path_labels, args.label_postfix, args.path_anno_7points,
                            args.anno_7points_postfix, args.max_instances, args.jitter_mm, args.seed, args.phase,
                            args.overwrite)


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
