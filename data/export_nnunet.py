"""Export a split as an nnU-Net v2 raw dataset: the expanded seeds with an ignore label, or full labels.

The expanded seeds of stage 0 (0 background, 1 foreground near the seed, 2 unknown) are exactly
an nnU-Net v2 dataset with an ignore label (nnU-Net's ``documentation/ignore_label.md``): nnU-Net
then trains with a partial loss on the annotated voxels only, the partial-label baseline that
reviewers know. ``--labels full`` exports the full labels instead (binarised: > 0 is the lesion)
for the fully supervised reference.

Writes ``<output_dir>/Dataset<ID>_<Name>/``:

* ``imagesTr/<case>_0000.nii.gz`` and ``labelsTr/<case>.nii.gz`` for the training and the
  validation subjects of the split; ``imagesTs/<case>_0000.nii.gz`` for the inference subjects;
* ``dataset.json`` with ``channel_names``, ``labels`` (``{"background": 0, "lesion": 1,
  "ignore": 2}``, or without ``ignore`` for full labels), ``numTraining`` and ``file_ending``;
* ``splits_final.json``: one fold with our training / validation subjects. nnU-Net reads it from
  its preprocessed folder: copy it to ``$nnUNet_preprocessed/Dataset<ID>_<Name>/`` after
  ``nnUNetv2_plan_and_preprocess`` and train fold 0, so nnU-Net uses the same validation cases.

Case identifiers are the subject names. Images are copied byte for byte; labels are written as
uint8 on the image's grid, which each label must share (size, spacing, direction, origin).

Example::

    python data/export_nnunet.py --dataset_split ./splits/split_VS.csv \\
        --path_images ./data/VS/image_crop/ --image_postfix T2 \\
        --path_geodesic_labels ./data/VS/geodesic/weight0.5_threshold0.2/geodesic_label/ \\
        --geodesic_label_postfix GeodesicLabel --output_dir ./nnUNet_raw --dataset_id 501 --dataset_name VSSeeds
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from utilities.core.arguments import ArgumentParser
from utilities.core.logs import LOGGER_NAME, setup_logger
from utilities.data.dataset_file import add_dataset_flag, parse_with_dataset, require
from utilities.data.grid import Grid, check_same_grid, find_subject_file, listed, missing_paths
from utilities.data.io import atomic_path, ensure_writable_dir, read_image, save_text, staged_folders, write_image
from utilities.data.splits import read_split, subjects_of
from utilities.method.defaults import SEED_POSTFIX

__all__ = ["SEED_LABELS", "FULL_LABELS", "FILE_ENDING", "dataset_folder", "export_nnunet", "add_data_arguments",
           "main"]

logger = logging.getLogger(LOGGER_NAME)

#: nnU-Net ``labels`` of the expanded seeds: 2 (unknown) is the ignore label, the highest value.
SEED_LABELS = {"background": 0, "lesion": 1, "ignore": 2}
FULL_LABELS = {"background": 0, "lesion": 1}
FILE_ENDING = ".nii.gz"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def dataset_folder(output_dir: str | os.PathLike, dataset_id: int, dataset_name: str) -> Path:
    """``<output_dir>/Dataset<ID, 3 digits>_<Name>``, as nnU-Net names raw datasets."""
    return Path(output_dir) / f"Dataset{int(dataset_id):03d}_{dataset_name}"


def _check_grid(label: sitk.Image, label_path: Path, image_path: Path) -> None:
    check_same_grid(Grid.read(image_path), image_path, "image", Grid.of(label), label_path, "label",
                    "nnU-Net needs labels on the image's grid (re-run the geodesic expansion on these images)")


def _label_array(image: sitk.Image, path: Path, labels: str) -> np.ndarray:
    array = sitk.GetArrayFromImage(image)
    if labels == "full":
        return (array > 0).astype(np.uint8)
    values = np.unique(array)
    bad = values[~np.isin(values, list(SEED_LABELS.values()))]
    if bad.size:
        raise ValueError(f"expanded-seed label {path} holds values {bad[:5].tolist()}; expected only 0 (background), "
                         "1 (foreground) and 2 (unknown): pass the geodesic_label folder of stage 0")
    return array.astype(np.uint8)


def _copy(source: Path, target: Path) -> None:
    """A ``.nii.gz`` image byte for byte; any other format through the one reader and writer."""
    if source.name.endswith(FILE_ENDING):
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    else:
        write_image(read_image(source, "image"), target)


def export_nnunet(dataset_split: str | os.PathLike, path_images: str | os.PathLike, image_postfix: str,
                  output_dir: str | os.PathLike, dataset_id: int, dataset_name: str, labels: str = "seeds",
                  path_geodesic_labels: str | os.PathLike | None = None, geodesic_label_postfix: str = SEED_POSTFIX,
                  path_labels: str | os.PathLike | None = None, label_postfix: str = "Label",
                  channel_name: str | None = None, overwrite: bool = False) -> Path:
    """Write the nnU-Net v2 raw dataset of a split; returns its folder.

    Args:
        dataset_split: split CSV; training + validation → ``imagesTr``/``labelsTr``, inference → ``imagesTs``.
        path_images, image_postfix: ``<path_images>/<subject>_<image_postfix>.nii.gz``.
        output_dir: nnU-Net's raw folder (``$nnUNet_raw``).
        dataset_id, dataset_name: the dataset is ``Dataset<ID>_<Name>`` (ID 1..999).
        labels: ``"seeds"`` (expanded seeds, 2 = ignore) or ``"full"`` (full labels > 0).
        path_geodesic_labels, geodesic_label_postfix: the expanded seeds (``labels="seeds"``).
        path_labels, label_postfix: the full labels (``labels="full"``).
        channel_name: nnU-Net's name of the image channel (``"CT"`` selects CT normalisation,
            anything else z-scoring); default ``image_postfix``.
        overwrite: replace an existing export (its ``imagesTr``, ``labelsTr``, ``imagesTs`` and
            json files) instead of refusing.

    Raises:
        ValueError, FileNotFoundError, FileExistsError: one line naming the flag or the file;
            every input is checked before anything is written.
    """
    label_dir, label_post, flag = _label_source(labels, dataset_id, dataset_name, (path_geodesic_labels,
                                                geodesic_label_postfix), (path_labels, label_postfix))
    split = read_split(dataset_split)
    training, testing = _cases(split, dataset_split)
    images = {s: find_subject_file(path_images, s, image_postfix, "image") for s in training + testing}
    label_files = {s: find_subject_file(label_dir, s, label_post, "label") for s in training}
    missing = missing_paths(images.values(), "image") + missing_paths(label_files.values(), "label")
    if missing:
        raise FileNotFoundError(f"{len(missing)} file(s) missing: {listed(missing)}; check "
                                f"--path_images/--image_postfix and {flag}")

    root = dataset_folder(output_dir, dataset_id, dataset_name)
    parts = [root / "imagesTr", root / "labelsTr", root / "imagesTs", root / "dataset.json", root / "splits_final.json"]
    same_id = _taken(root, parts, output_dir, dataset_id, overwrite)
    if not subjects_of(split, "validation"):
        logger.warning("split %s has no validation case: splits_final.json gets \"val\": [] and nnU-Net validates "
                       "on nothing; add validation cases to the split (splits/make_split.py --ratios)", dataset_split)

    cases = _Cases(training, testing, images, label_files, labels)
    cases.check()  # every input before anything is written
    with staged_folders(root) as (staging,):   # the whole export or nothing: a failure midway leaves the earlier one
        cases.write(staging)
        _write_jsons(staging, split, dataset_name, labels, channel_name or image_postfix, len(training))
        if overwrite:   # only once the new export is written; its parts then move into place
            _remove([*same_id, *parts])
    logger.info("nnU-Net dataset %s: %d training case(s) (%s), %d test case(s)", root, len(training), labels,
                len(testing))
    return root


class _Cases:
    """The cases of one export: their files, checked before and written after the folder is cleared."""

    def __init__(self, training: list[str], testing: list[str], images: dict[str, Path],
                 label_files: dict[str, Path], labels: str) -> None:
        self.training, self.testing, self.images, self.label_files, self.labels = \
            training, testing, images, label_files, labels

    def label_of(self, s: str) -> tuple[np.ndarray, sitk.Image]:
        reference = read_image(self.label_files[s], "label" if self.labels == "full" else "expanded-seed label")
        _check_grid(reference, self.label_files[s], self.images[s])
        return _label_array(reference, self.label_files[s], self.labels), reference

    def check(self) -> None:
        """Every image readable, complete and finite, every label on its image's grid (read again
        when written: a dataset need not fit in memory)."""
        for s in self.training + self.testing:
            read_image(self.images[s], "image")
        beyond: dict[str, list[int]] = {}   # full labels binarised: say so
        for s in self.training:
            _, label = self.label_of(s)
            if self.labels == "full":
                values = np.unique(sitk.GetArrayViewFromImage(label))   # the label as read, before binarising
                if not np.isin(values, (0, 1)).all():
                    beyond[s] = [int(v) for v in values]
        if beyond:
            s, values = next(iter(beyond.items()))
            logger.warning("%d of %d full label(s) hold values other than 0 and 1 (e.g. %s: %s); they are exported "
                           "binarised, every value above 0 the lesion%s", len(beyond), len(self.training),
                           self.label_files[s], values[:6] + ["..."] * (len(values) > 6),
                           "; if these are stage 0's expanded seeds (0/1/2), pass --labels seeds"
                           if set(values) <= {0, 1, 2} else "")

    def write(self, root: Path) -> None:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            ensure_writable_dir(root / sub)
        for s in self.training:
            _copy(self.images[s], root / "imagesTr" / f"{s}_0000{FILE_ENDING}")
            array, reference = self.label_of(s)
            label = sitk.GetImageFromArray(array)
            label.CopyInformation(reference)
            write_image(label, root / "labelsTr" / f"{s}{FILE_ENDING}")
        for s in self.testing:
            _copy(self.images[s], root / "imagesTs" / f"{s}_0000{FILE_ENDING}")


def _cases(split: pd.DataFrame, dataset_split: str | os.PathLike) -> tuple[list[str], list[str]]:
    """nnU-Net's training cases (our training + validation) and test cases (our inference)."""
    training = subjects_of(split, "training") + subjects_of(split, "validation")
    testing = subjects_of(split, "inference")
    if not training:
        raise ValueError(f"split file {dataset_split} has no training or validation subject; nnU-Net needs some")
    bad_names = [s for s in training + testing if not s or "/" in s or s != s.strip()]
    if bad_names:
        raise ValueError(f"split file {dataset_split}: subject names {bad_names[:3]} cannot be nnU-Net case names")
    return training, testing


def _label_source(labels: str, dataset_id: int, dataset_name: str,
                  seeds: tuple[str | os.PathLike | None, str], full: tuple[str | os.PathLike | None, str]
                  ) -> tuple[Path, str, str]:
    """Checks the flags; returns the label folder, its postfix and the flags that name them."""
    if labels not in ("seeds", "full"):
        raise ValueError(f"--labels must be 'seeds' or 'full', got {labels!r}")
    if isinstance(dataset_id, bool) or not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"--dataset_id must be an integer in 1..999 (nnU-Net's Dataset<ID>), got {dataset_id}")
    if not _NAME.match(dataset_name or ""):
        raise ValueError(f"--dataset_name must be letters, digits, '_' or '-' (no spaces), got {dataset_name!r}")
    if labels == "seeds":
        if seeds[0] is None:
            raise ValueError("--labels seeds needs --path_geodesic_labels (the geodesic_label folder of stage 0)")
        return Path(seeds[0]), seeds[1], "--path_geodesic_labels/--geodesic_label_postfix"
    if full[0] is None:
        raise ValueError("--labels full needs --path_labels (the folder of full labels)")
    return Path(full[0]), full[1], "--path_labels/--label_postfix"


def _taken(root: Path, parts: list[Path], output_dir: str | os.PathLike, dataset_id: int,
           overwrite: bool) -> list[Path]:
    """The other datasets with this id (replaced with ``overwrite``, else refused), once an
    existing export of this one is refused too unless ``overwrite``."""
    if any(p.exists() for p in parts) and not overwrite:
        raise FileExistsError(f"nnU-Net dataset {root} exists; pass --overwrite to replace it "
                              "(or another --dataset_id)")
    same_id = sorted(p for p in Path(output_dir).glob(f"Dataset{int(dataset_id):03d}_*") if p != root) \
        if Path(output_dir).is_dir() else []
    if same_id and not overwrite:
        raise FileExistsError(f"nnU-Net dataset id {int(dataset_id)} is taken by {same_id[0]} (nnU-Net could not tell "
                              f"it from {root.name}); pass --overwrite to replace it, or another --dataset_id")
    return same_id


def _remove(paths: list[Path]) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _write_jsons(root: Path, split: pd.DataFrame, dataset_name: str, labels: str, channel: str,
                 n_training: int) -> None:
    """``dataset.json`` and ``splits_final.json`` (fold 0: our training and validation cases)."""
    dataset = {
        "name": dataset_name,
        "description": ("PA-Seg expanded seeds (0 background, 1 lesion, 2 unknown = ignore)" if labels == "seeds"
                        else "PA-Seg full labels (fully supervised reference)"),
        "channel_names": {"0": channel},
        "labels": dict(SEED_LABELS if labels == "seeds" else FULL_LABELS),
        "numTraining": n_training,
        "file_ending": FILE_ENDING,
    }
    save_text(json.dumps(dataset, indent=4) + "\n", root / "dataset.json")
    folds = [{"train": subjects_of(split, "training"), "val": subjects_of(split, "validation")}]
    save_text(json.dumps(folds, indent=4) + "\n", root / "splits_final.json")


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The flags naming what is exported (shared with ``experiments/nnunet_baseline.py``)."""
    p.add_argument("--dataset_split", default="./splits/split_VS.csv", help="split CSV (subject,phase)")
    p.add_argument("--path_images", default="./data/VS/image_crop/", help="folder of the images")
    p.add_argument("--image_postfix", default="T2", help="images are <subject>_<postfix>.<ext> (.nii.gz, .nrrd, ...)")
    p.add_argument("--labels", default="seeds", choices=["seeds", "full"],
                   help="seeds: expanded seeds with ignore label 2; full: full labels (fully supervised reference)")
    p.add_argument("--path_geodesic_labels", default="./data/VS/geodesic/weight0.5_threshold0.2/geodesic_label/",
                   help="folder of the expanded seeds (--labels seeds)")
    p.add_argument("--geodesic_label_postfix", default=SEED_POSTFIX, help="expanded-seed file postfix")
    p.add_argument("--path_labels", default="./data/VS/label_crop/", help="folder of the full labels (--labels full)")
    p.add_argument("--label_postfix", default="Label", help="full label file postfix")
    add_dataset_flag(p)


def parse_data_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` (with ``--dataset``: the file's folders; the labels ``--labels`` exports must
    be named, by a flag or the file)."""
    args = parse_with_dataset(parser, argv, optional=("labels", "seeds"))
    require(args, "seeds" if args.labels == "seeds" else "labels")
    return args


def main(argv: Sequence[str] | None = None) -> Path:
    p = ArgumentParser(description=__doc__.splitlines()[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_arguments(p)
    p.add_argument("--output_dir", default="./nnUNet_raw", help="nnU-Net raw folder ($nnUNet_raw)")
    p.add_argument("--dataset_id", type=int, default=501, help="nnU-Net dataset ID, 1..999")
    p.add_argument("--dataset_name", default="PASegSeeds", help="nnU-Net dataset name (Dataset<ID>_<name>)")
    p.add_argument("--channel_name", default=None,
                   help="nnU-Net channel name (default: the --dataset file's modality, else --image_postfix)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    args = parse_data_arguments(p, argv)
    setup_logger(None)
    return export_nnunet(args.dataset_split, args.path_images, args.image_postfix, args.output_dir, args.dataset_id,
                         args.dataset_name, args.labels, args.path_geodesic_labels, args.geodesic_label_postfix,
                         args.path_labels, args.label_postfix, args.channel_name, args.overwrite)


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
