"""Write a split CSV (``subject,phase`` rows, no header) for a folder of cases.

Two modes:

* a new random split of every ``<subject>_<image_postfix>.nii.gz`` in ``--images_dir`` into
  training / validation / inference by ``--ratios`` (default 0.7 0.1 0.2), reproducible by
  ``--seed``;
* ``--complete <existing csv>``: keep the existing split as it is and append every case found
  on disk but not listed, as ``--phase`` (default inference).

The images are ``<subject>_<image_postfix><ext>`` (any image format); no other image file is
left out without a word (:func:`find_subjects`): one whose postfix differs only in letter case is
an error, one of a subject without such an image a warning naming it.

``--write_dataset FILE`` also writes the dataset file (:mod:`utilities.data.dataset_file`) that every
later script reads with ``--dataset FILE``: the split written, the images, and the folders given
by ``--path_anno_7points``, ``--path_labels`` and ``--modality`` (recorded there only), or named
by ``--dataset``, whose images this script then reads too. The split and the dataset file must
be two files (refused before anything is written, as is either one written over the
``--dataset`` or ``--complete`` file of the other kind).

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
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from utilities.core.arguments import ArgumentParser
from utilities.core.logs import LOGGER_NAME, setup_logger
from utilities.data.dataset_file import (
    add_dataset_flag,
    check_distinct,
    dataset_text,
    parse_with_dataset,
    read_dataset,
    typed_flags,
)
from utilities.data.grid import find_subject_file, listed
from utilities.data.io import check_overwrite, image_extension, save_csv, save_text
from utilities.data.splits import PHASES, read_split

__all__ = ["find_subjects", "split_counts", "random_split", "complete_split", "write_split", "main"]

logger = logging.getLogger(LOGGER_NAME)

RATIO_TOLERANCE = 1e-6


#: How many file names a warning or an error about left-out files names before it gives their count.
SHOWN = 5


def _subject_of(stem: str, subjects: set[str]) -> str | None:
    """The longest of ``subjects`` that ``stem`` (a file name without its extension) starts with,
    followed by ``_`` (``demo_000_T1`` -> ``demo_000``), or ``None``."""
    cuts = [i for i, char in enumerate(stem) if char == "_"]
    return next((stem[:i] for i in reversed(cuts) if stem[:i] in subjects), None)


def find_subjects(images_dir: str | os.PathLike, image_postfix: str) -> list[str]:
    """Sorted subject names of the ``<subject>_<image_postfix><ext>`` files in ``images_dir`` (any
    of :data:`utilities.data.io.IMAGE_EXTENSIONS`). A name every consumer could not read back (a
    leading or trailing space, which split files cannot keep) or a subject with images in two
    formats is a one-line error.

    No image file is left out without a word: an image whose postfix differs from
    ``image_postfix`` only in letter case (``case10_t2.nii.gz`` for ``T2``) or whose extension is
    not in lower case is an error (every reader would miss it; with no image of ``image_postfix``
    at all, the error asks whether that postfix is meant); another image whose subject has no
    ``image_postfix`` image (``case9.nii.gz``, ``case11_T1.nii.gz``) is a warning naming it; the
    other images of listed subjects (other modalities, labels) and the entries without an image
    extension (``notes.txt``, sub-folders) are counted in an INFO line."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        what = "is a file, not a folder" if images_dir.exists() else "not found"
        raise FileNotFoundError(f"--images_dir folder {what}: {images_dir}")
    subjects = set()
    other_case, near, others, not_images = [], [], [], []
    for p in sorted(images_dir.iterdir()):
        ext = image_extension(p)
        if ext is None or not p.is_file():
            if p.is_file() and image_extension(p.with_name(p.name.lower())) is not None:
                other_case.append(p.name)   # scan.NII.GZ: an image to the eye, to no reader
            else:
                not_images.append(p.name)
            continue
        stem = p.name[: -len(ext)]
        if stem.endswith(f"_{image_postfix}") and len(stem) > len(image_postfix) + 1:
            subjects.add(stem[: -len(image_postfix) - 1])
        elif stem.lower().endswith(f"_{image_postfix.lower()}") and len(stem) > len(image_postfix) + 1:
            near.append(p.name)
        else:
            others.append(p.name)
    if other_case:
        raise ValueError(f"--images_dir {images_dir} holds {len(other_case)} file(s) whose extension is not in lower "
                         f"case, which no reader takes: {listed(other_case)}; rename them (e.g. .NII.GZ to .nii.gz)")
    if near:
        spellings = Counter(name[: -len(image_extension(name))][-len(image_postfix):] for name in near)
        if not subjects:
            spelling = spellings.most_common(1)[0][0]
            raise ValueError(f"no *_{image_postfix} images in {images_dir}, but {len(near)} named *_{spelling} "
                             f"({listed(near, SHOWN)}): did you mean --image_postfix {spelling}? (postfixes are "
                             "case-sensitive)")
        raise ValueError(f"--images_dir {images_dir} holds {len(near)} image(s) whose postfix differs from "
                         f"--image_postfix {image_postfix} only in letter case ({', '.join(sorted(spellings))}): "
                         f"{listed(near, SHOWN)}; no reader finds them under {image_postfix}: rename them to "
                         f"<subject>_{image_postfix}<ext>")
    if not subjects:
        raise ValueError(f"no *_{image_postfix}.nii.gz files (nor .nii, .nrrd, .nhdr, .mha, .mhd) in {images_dir} "
                         "(check --images_dir and --image_postfix)")
    for subject in sorted(subjects):
        try:
            find_subject_file(images_dir, subject, image_postfix)  # checks the name, refuses two formats
        except ValueError as e:
            raise ValueError(f"--images_dir {images_dir}: {e}") from None
    stems = {name: name[: -len(image_extension(name))] for name in others}
    of_subject = {name: _subject_of(stem, subjects) for name, stem in stems.items()}
    stray = [name for name in others if of_subject[name] is None]
    if stray:
        logger.warning("--images_dir %s: %d image file(s) left out of the split, named neither <subject>_%s<ext> "
                       "nor <listed subject>_<other postfix><ext>: %s (name a scan of this modality "
                       "<subject>_%s<ext> to list it)", images_dir, len(stray), image_postfix,
                       listed(stray, SHOWN), image_postfix)
    postfixes = Counter(stems[name][len(of_subject[name]) + 1:] for name in others if of_subject[name] is not None)
    if postfixes:
        logger.info("--images_dir %s: %d image(s) of listed subjects under other postfixes not listed (%s)",
                    images_dir, sum(postfixes.values()),
                    ", ".join(f"{postfix} {count}" for postfix, count in sorted(postfixes.items())))
    if not_images:
        logger.info("--images_dir %s: %d entry(ies) without an image extension ignored, e.g. %s", images_dir,
                    len(not_images), not_images[0])
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
    parser.add_argument("--image_postfix", default="Flair",
                        help="image files are <subject>_<postfix><ext> (case-sensitive)")
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
    written = [("--output (the split written)", args.output),
               ("--write_dataset (the dataset file written)", args.write_dataset)]
    check_distinct(written)
    check_distinct([written[0], ("--dataset (the dataset file read)", args.dataset)])
    check_distinct([written[1], ("--complete (the split read)", args.complete)])
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
