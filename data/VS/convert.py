"""Convert the T2 scans of TCIA Vestibular-Schwannoma-SEG from DICOM to NIfTI.

Input is the NBIA Data Retriever "Descriptive Directory Name" layout::

    <input>/VS-SEG-<n>/<study>/<series>/*.dcm      (a LICENSE file beside the patients is skipped)

For each patient the MR series whose SeriesDescription (0008|103e) contains ``t2_`` (any case)
is read as one series with SimpleITK/GDCM (slices ordered by position, so the spacing, origin
and direction come from the DICOM geometry) and written as ``<output>/vs_gk_<n>_T2.nii.gz``.
A series that is not MR (Modality 0008|0060), or a patient with no or several T2 series, is an
error naming the folder; with ``--skip_invalid`` it is a warning and the patient is listed at
the end instead.

Example::

    python data/VS/convert.py --input ./data/manifest-T2/Vestibular-Schwannoma-SEG --output ./data/VS/image
"""
from __future__ import annotations

import contextlib
import locale
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages first

from utilities.core.arguments import ArgumentParser
from utilities.core.logs import LOGGER_NAME, setup_logger, show_progress
from utilities.data.io import check_overwrite, ensure_writable_dir, write_image

__all__ = ["PATIENT_PATTERN", "ConversionResult", "InvalidPatientError", "find_patients", "find_t2_series",
           "convert_vs", "main"]

logger = logging.getLogger(LOGGER_NAME)

PATIENT_PATTERN = re.compile(r"^VS-SEG-(\d+)$")
T2_MARKER = "t2_"
MODALITY_TAG = "0008|0060"
DESCRIPTION_TAG = "0008|103e"
IGNORED_FILES = ("LICENSE",)


@dataclass
class ConversionResult:
    """What :func:`convert_vs` did: written NIfTI files and the patients it skipped (with why)."""

    written: list[Path] = field(default_factory=list)
    invalid: list[tuple[Path, str]] = field(default_factory=list)


class InvalidPatientError(ValueError):
    """A patient folder that cannot be converted (the message names the folder)."""


def find_patients(input_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Patient folders ``VS-SEG-<n>`` of ``input_dir`` as ``(n, folder)``, sorted by ``n``.

    ``LICENSE`` is skipped; any other file is logged and ignored; a folder whose name is not
    ``VS-SEG-<n>``, or two folders with the same ``n``, is an error.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"--input folder not found: {input_dir} "
                                "(expected .../manifest-T2/Vestibular-Schwannoma-SEG)")
    patients: dict[int, Path] = {}
    for entry in sorted(input_dir.iterdir()):
        if not entry.is_dir():
            if entry.name not in IGNORED_FILES:
                logger.warning("ignoring file %s (not a patient folder)", entry)
            continue
        match = PATIENT_PATTERN.match(entry.name)
        if match is None:
            raise ValueError(f"unexpected folder {entry} in --input: patient folders must be named "
                             "VS-SEG-<number> (NBIA 'Descriptive Directory Name' layout)")
        number = int(match.group(1))
        if number in patients:
            raise ValueError(f"folders {patients[number]} and {entry} are the same patient number {number}")
        patients[number] = entry
    if not patients:
        raise ValueError(f"no VS-SEG-<number> patient folders in {input_dir}")
    return sorted(patients.items())


def _read_tags(dicom_file: str) -> dict[str, str]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(dicom_file)
    reader.ReadImageInformation()
    return {tag: reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""
            for tag in (MODALITY_TAG, DESCRIPTION_TAG)}


def find_t2_series(patient_dir: str | os.PathLike) -> list[str]:
    """File names (sorted by GDCM) of the single T2 MR series of one patient folder.

    Raises :class:`InvalidPatientError` (a ``ValueError``) naming the folder for a folder
    without DICOM series, a series that is not MR, and no or several T2 series.
    """
    patient_dir = Path(patient_dir)
    series_dirs = sorted(p for p in patient_dir.glob("*/*") if p.is_dir())
    if not series_dirs:
        raise InvalidPatientError(f"{patient_dir} has no <study>/<series> folders")
    t2: list[tuple[Path, tuple[str, ...]]] = []
    for folder in series_dirs:
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        if not series_ids:
            raise InvalidPatientError(f"series folder {folder} holds no readable DICOM series")
        for series_id in series_ids:
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id)
            tags = _read_tags(files[0])
            if tags[MODALITY_TAG] != "MR":
                raise InvalidPatientError(f"series folder {folder} is not an MR series "
                                          f"(Modality {tags[MODALITY_TAG] or 'missing'!r})")
            if T2_MARKER in tags[DESCRIPTION_TAG].lower():
                t2.append((folder, files))
    if not t2:
        raise InvalidPatientError(f"{patient_dir} has no T2 series (no SeriesDescription containing "
                                  f"{T2_MARKER!r})")
    if len(t2) > 1:
        raise InvalidPatientError(f"{patient_dir} has {len(t2)} T2 series: "
                                  f"{', '.join(str(folder) for folder, _ in t2)}")
    return list(t2[0][1])


@contextlib.contextmanager
def _keep_locale() -> Iterator[None]:
    """Restore the process locale after GDCM, which switches it to "C" while reading DICOM
    (after that Python would decode text files as ASCII)."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def convert_vs(input_dir: str | os.PathLike, output_dir: str | os.PathLike,
               skip_invalid: bool = False, overwrite: bool = False) -> ConversionResult:
    """Convert every patient's T2 series to ``<output_dir>/vs_gk_<n>_T2.nii.gz`` (atomic writes;
    every patient is checked before the first is written, and an existing file is replaced only
    with ``overwrite``).

    With ``skip_invalid`` an invalid patient is logged as a warning, skipped and listed at the
    end (and in the result); otherwise its error is raised.
    """
    with _keep_locale():
        return _convert_vs(input_dir, output_dir, skip_invalid, overwrite)


def _t2_series(patients: list[tuple[int, Path]], skip_invalid: bool,
               result: ConversionResult) -> list[tuple[int, Path, list[str]]]:
    """``(number, folder, T2 files)`` of each valid patient; the invalid ones raise or, with
    ``skip_invalid``, are added to ``result.invalid``."""
    valid = []
    for number, folder in patients:
        try:
            valid.append((number, folder, find_t2_series(folder)))
        except InvalidPatientError as e:
            if not skip_invalid:
                raise ValueError(f"{e} (pass --skip_invalid to skip such patients)") from None
            logger.warning("skipping %s: %s", folder.name, e)
            result.invalid.append((folder, str(e)))
    return valid


def _convert_vs(input_dir: str | os.PathLike, output_dir: str | os.PathLike, skip_invalid: bool,
                overwrite: bool) -> ConversionResult:
    result = ConversionResult()
    valid = _t2_series(find_patients(input_dir), skip_invalid, result)
    check_overwrite([Path(output_dir) / f"vs_gk_{number}_T2.nii.gz" for number, _, _ in valid], "--output", overwrite,
                    "image")
    output_dir = ensure_writable_dir(output_dir)
    for number, folder, files in tqdm(valid, desc="DICOM to NIfTI", unit="patient", disable=not show_progress()):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        try:
            image = reader.Execute()
        except RuntimeError as e:
            raise ValueError(f"cannot read the T2 series of {folder}: "
                             f"{str(e).strip().splitlines()[-1]}") from None
        path = output_dir / f"vs_gk_{number}_T2.nii.gz"
        write_image(image, path)
        result.written.append(path)
    logger.info("wrote %d NIfTI file(s) to %s", len(result.written), output_dir)
    if result.invalid:
        logger.warning("skipped %d invalid patient(s):", len(result.invalid))
        for folder, reason in result.invalid:
            logger.warning("  %s: %s", folder, reason)
    return result


def main(argv: list[str] | None = None) -> ConversionResult:
    parser = ArgumentParser(description="Convert the T2 scans of TCIA Vestibular-Schwannoma-SEG "
                                        "(DICOM, 'Descriptive Directory Name' layout) to NIfTI")
    parser.add_argument("--input", "--input_dir", dest="input",
                        default="./data/manifest-T2/Vestibular-Schwannoma-SEG",
                        help="folder holding the VS-SEG-<n> patient folders")
    parser.add_argument("--output", "--output_dir", dest="output", default="./data/VS/image",
                        help="folder for vs_gk_<n>_T2.nii.gz")
    parser.add_argument("--skip_invalid", action="store_true",
                        help="warn about and skip patients without exactly one T2 MR series, list them at the end")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files in --output")
    args = parser.parse_args(argv)
    setup_logger(None)
    return convert_vs(args.input, args.output, skip_invalid=args.skip_invalid, overwrite=args.overwrite)


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
