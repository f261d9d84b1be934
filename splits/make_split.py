"""Write a split CSV (``subject,phase`` rows, no header) for a folder of cases.

Two modes:

* a new random split of every ``<subject>_<image_postfix>.nii.gz`` in ``--images_dir`` into
  training / validation / inference by ``--ratios`` (default 0.7 0.1 0.2), reproducible by
  ``--seed``;
* ``--complete <existing csv>``: keep the existing split as it is and append every case found
  on disk but not listed, as ``--phase`` (default inference).

``--write_dataset FILE`` also writes the dataset file (:mod:`utilities.data.dataset_file`) that every
later script reads with ``--dataset FILE``: the split written, the images, and the folders given
by ``--path_anno_7points``, ``--path_labels`` and ``--modality`` (recorded there only), or named
by ``--dataset``, whose images this script then reads too.

Train on every case (nnU-Net's fold ``all``; for a handful of scans, where one held-out case
would cost much of the data): ``--ratios 1 0 0`` lists every case for training. The trainers
accept a split without validation cases: they validate on the training cases and choose
``CP_best`` by ``seed_dice`` against their expanded seeds (their fit to the seeds, not an
estimate of generalisation), and ``CP_final`` holds the last epoch; the log says so. The same
is ``--train_on_all_cases`` on a split that has validation cases.

Examples::

    python splits/make_split.py --images_dir ./data/BraTS/image --image_postfix Flair \\
        --ratios 0.7 0.1 0.2 --seed 0 --output ./splits/split_BraTS_random.csv
    python splits/make_split.py --complete ./splits/split_BraTS.csv --images_dir ./data/BraTS/image \\
        --image_postfix Flair --phase inference --output ./splits/split_BraTS_all.csv
    python splits/make_split.py --images_dir ./data/MY/image --image_postfix T2 --ratios 1 0 0 \\
        --output ./splits/split_MY_all.csv
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from utilities.core.arguments import ArgumentParser
from utilities.core.logs import LOGGER_NAME, setup_logger
from utilities.data.dataset_file import add_dataset_flag, dataset_text, parse_with_dataset, read_dataset, typed_flags
from utilities.data.grid import find_subject_file, listed
from utilities.data.io import check_overwrite, image_extension, save_csv, save_text
from utilities.data.splits import PHASES, read_split

__all__ = ["find_subjects", "split_counts", "random_split", "complete_split", "write_split", "main"]

logger = logging.getLogger(LOGGER_NAME)

RATIO_TOLERANCE = 1e-6


def find_subjects(images_dir: str | os.PathLike, image_postfix: str) -> list[str]:
    """Sorted subject names of the ``<subject>_<image_postfix><ext>`` files in ``images_dir`` (any
    of :data:`utilities.data.io.IMAGE_EXTENSIONS`). A name every consumer could not read back (a
    leading or trailing space, which split files cannot keep) or a subject with images in two
    formats is a one-line error."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"--images_dir folder not found: {images_dir}")
    subjects = set()
    other_case = []
    for p in sorted(images_dir.iterdir()):
        ext = image_extension(p)
        if ext is None and image_extension(p.with_name(p.name.lower())) is not None and p.is_file():
            other_case.append(p.name)   # scan.NII.GZ: an image to the eye, to no reader
        suffix = f"_{image_postfix}{ext}"
        if ext and p.is_file() and p.name.endswith(suffix) and len(p.name) > len(suffix):
            subjects.add(p.name[: -len(suffix)])
    if other_case:
        raise ValueError(f"--images_dir {images_dir} holds {len(other_case)} file(s) whose extension is not in lower "
                         f"case, which no reader takes: {listed(other_case)}; rename them (e.g. .NII.GZ to .nii.gz)")
    if not subjects:
        raise ValueError(f"no *_{image_postfix}.nii.gz files (nor .nii, .nrrd, .nhdr, .mha, .mhd) in {images_dir} "
                         "(check --images_dir and --image_postfix)")
    for subject in sorted(subjects):
        try:
            find_subject_file(images_dir, subject, image_postfix)  # checks the name, refuses two formats
        except ValueError as e:
            raise ValueError(f"--images_dir {images_dir}: {e}") from None
    return sorted(subjects)


def split_counts(n: int, ratios: Sequence[float]) -> tuple[int, int, int]:
    """Numbers of training, validation and inference cases among ``n`` for ``ratios``.

    Ratios are three non-negative numbers summing to 1; counts are floored and the remaining
    cases go to the largest fractional parts (ties: training, validation, inference), so they
    add up to ``n``.
    """
    ratios = [float(r) for r in ratios]
    if len(ratios) != 3 or any(not np.isfinite(r) or r < 0 for r in ratios):
        raise ValueError(f"--ratios needs three non-negative numbers (training validation inference), got {ratios}")
    if abs(sum(ratios) - 1.0) > RATIO_TOLERANCE:
        raise ValueError(f"--ratios must sum to 1, got {ratios} (sum {sum(ratios)})")
    exact = np.array(ratios) * n
    counts = np.floor(exact + 1e-9).astype(int)
    remainder = n - int(counts.sum())
    fraction = np.round(exact - counts, 9)  # so that float noise does not break ties
    order = sorted(range(3), key=lambda i: (-fraction[i], i))
    for i in order[:remainder]:
        counts[i] += 1
    return int(counts[0]), int(counts[1]), int(counts[2])


def random_split(subjects: Sequence[str], ratios: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0) -> pd.DataFrame:
    """Shuffle ``subjects`` (sorted first, so the input order does not matter) with ``seed`` and
    assign phases by ``ratios``; rows grouped by phase, columns ``subject`` and ``phase``."""
    subjects = sorted(subjects)
    if len(set(subjects)) != len(subjects):
        raise ValueError("subjects must be unique")
    counts = split_counts(len(subjects), ratios)
    order = np.random.default_rng(seed).permutation(len(subjects))
    phases = [phase for phase, count in zip(PHASES, counts) for _ in range(count)]
    return pd.DataFrame({"subject": [subjects[i] for i in order], "phase": phases})


def complete_split(existing: pd.DataFrame, subjects: Sequence[str], phase: str = "inference") -> pd.DataFrame:
    """``existing`` unchanged, followed by the ``subjects`` it does not list (sorted) as ``phase``.

    Listed subjects that are not among ``subjects`` are kept and logged as a warning.
    """
    if phase not in PHASES:
        raise ValueError(f"--phase must be one of {list(PHASES)}, got {phase!r}")
    listed = set(existing["subject"])
    on_disk = set(subjects)
    added = sorted(on_disk - listed)
    absent = [s for s in existing["subject"] if s not in on_disk]
    if absent:
        logger.warning("%d subject(s) of the existing split have no image on disk (kept): %s",
                       len(absent), ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else ""))
    logger.info("adding %d subject(s) found on disk as %s", len(added), phase)
    extra = pd.DataFrame({"subject": added, "phase": [phase] * len(added)})
    return pd.concat([existing[["subject", "phase"]], extra], ignore_index=True)


def write_split(split: pd.DataFrame, path: str | os.PathLike, validation_expected: bool = True) -> None:
    """Write ``subject,phase`` rows without a header (the published format), atomically; say what
    the trainers do with a split without training or validation cases (a warning unless
    ``validation_expected`` is false: ``--ratios`` asked for none)."""
    save_csv(split[["subject", "phase"]], path, header=False)
    counts = split["phase"].value_counts()
    logger.info("wrote %s: %s", path, ", ".join(f"{p} {int(counts.get(p, 0))}" for p in PHASES))
    if not counts.get("training", 0):
        logger.warning("%s has no training case (of %d): the training scripts need at least one; use more images "
                       "or other --ratios", path, len(split))
    elif not counts.get("validation", 0):
        log = logger.warning if validation_expected else logger.info
        log("%s has no validation case (of %d): the trainers train on every training case and choose CP_best by "
            "seed_dice on their expanded seeds (CP_final: the last epoch)%s", path, len(split),
            "; for a held-out validation case use more images or other --ratios" if validation_expected else "")


#: Flags recorded in the ``--write_dataset`` file only (the split itself reads the images alone).
RECORDED = ("path_anno_7points", "anno_7points_postfix", "path_labels", "label_postfix", "modality")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Write a random split of a folder of cases, or complete an "
                                        "existing split with the cases it does not list")
    parser.add_argument("--images_dir", required=True,
                        help="folder of <subject>_<postfix><ext> images (.nii.gz .nii .nrrd .nhdr .mha .mhd)")
    parser.add_argument("--image_postfix", default="Flair", help="image files are <subject>_<postfix>.nii.gz")
    parser.add_argument("--output", required=True, help="split CSV to write (subject,phase, no header)")
    parser.add_argument("--ratios", type=float, nargs=3, default=[0.7, 0.1, 0.2],
                        metavar=("TRAIN", "VAL", "INF"),
                        help="fractions of training, validation, inference cases (1 0 0: every case trains)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random split")
    parser.add_argument("--complete", default=None, metavar="CSV",
                        help="existing split to keep and complete with the unlisted cases (ignores --ratios/--seed)")
    parser.add_argument("--phase", default="inference", choices=list(PHASES),
                        help="phase of the cases added by --complete")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output (and --write_dataset)")
    add_dataset_flag(parser)
    parser.add_argument("--write_dataset", default=None, metavar="FILE",
                        help="also write this dataset file (docs/guide/own_data.md) naming the split, the images and "
                             "the folders below (and those of --dataset), for every later script's --dataset")
    record = parser.add_argument_group("recorded in --write_dataset only")
    record.add_argument("--path_anno_7points", default=None, help="folder of the 7-point annotations")
    record.add_argument("--anno_7points_postfix", default=None, help="annotation postfix (default 7points)")
    record.add_argument("--path_labels", default=None, help="folder of the full labels, if any")
    record.add_argument("--label_postfix", default=None, help="full label postfix (default Label)")
    record.add_argument("--modality", default=None, help="the image modality, e.g. MR or CT (nnU-Net's channel name)")
    return parser


def _dataset_values(args: argparse.Namespace) -> dict[str, str | None]:
    """What ``--write_dataset`` records: the split written, the images, the recorded flags (or
    ``--dataset``'s values) and ``--dataset``'s expanded seeds."""
    given = read_dataset(args.dataset).values if args.dataset else {}
    return {"split": args.output, "images": args.images_dir, "image_postfix": args.image_postfix,
            "annotations": args.path_anno_7points, "annotation_postfix": args.anno_7points_postfix,
            "labels": args.path_labels, "label_postfix": args.label_postfix, "modality": args.modality,
            "seeds": given.get("seeds"), "seed_postfix": given.get("seed_postfix")}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = build_parser()
    args = parse_with_dataset(parser, argv)
    if args.write_dataset is None:
        recorded = sorted(typed_flags(parser, argv) & set(RECORDED))
        if recorded:
            raise ValueError(f"--{recorded[0]} is recorded in a dataset file only: add --write_dataset FILE, or "
                             "drop it")
    setup_logger(None)
    subjects = find_subjects(args.images_dir, args.image_postfix)
    check_overwrite([args.output], "--output", args.overwrite)
    text = None if args.write_dataset is None else dataset_text(args.write_dataset, _dataset_values(args),
                                                                  args.overwrite)
    if args.complete is not None:
        split = complete_split(read_split(args.complete), subjects, args.phase)
    else:
        split = random_split(subjects, args.ratios, args.seed)
    write_split(split, args.output, args.complete is not None or args.ratios[1] > 0)
    if text is not None:
        save_text(text, args.write_dataset)
        logger.info("wrote %s: the dataset file for every later script's --dataset", args.write_dataset)
    return split


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
