"""utilities/data/grid.py: one voxel grid and one tolerance (a shifted origin, a spacing or a
direction just inside and just outside it, the message naming both files), the file names of
subjects, the one lister of missing files."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import ROOT

from utilities.data.grid import (
    GRID_TOLERANCE,
    MAX_NAME_BYTES,
    Grid,
    check_name_length,
    check_same_grid,
    check_subject_name,
    find_subject_file,
    grid_difference,
    image_extension,
    output_extension,
    subject_path,
)


def _sources() -> list[Path]:
    """The scripts at the root and every module of the project's source folders (not the tests)."""
    folders = ("networks", "utilities", "data", "experiments", "benchmarks", "splits")
    return sorted([*ROOT.glob("*.py"), *(p for folder in folders for p in (ROOT / folder).rglob("*.py"))])


IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
REF = Grid((4, 5, 6), (1.0, 1.0, 2.0), IDENTITY, (10.0, -20.0, 5.0))


def _with(**change) -> Grid:
    return Grid(**{"size": REF.size, "spacing": REF.spacing, "direction": REF.direction, "origin": REF.origin,
                   **change})


@pytest.mark.parametrize("other, expected", [
    (REF, None),
    # the origin tolerance is GRID_TOLERANCE times the largest voxel size: 0.002 mm here
    (_with(origin=(10.0019, -20.0, 5.0)), None),
    (_with(origin=(10.0021, -20.0, 5.0)), ("origin", [10.0021, -20.0, 5.0], [10.0, -20.0, 5.0])),
    (_with(origin=(10.0, -19.0, 5.0)), ("origin", [10.0, -19.0, 5.0], [10.0, -20.0, 5.0])),   # one voxel away
    (_with(spacing=(1.0009, 1.0, 2.0)), None),   # relative tolerance 1e-3
    (_with(spacing=(1.0011, 1.0, 2.0)), ("spacing", [1.0011, 1.0, 2.0], [1.0, 1.0, 2.0])),
    (_with(direction=(-1.0, *IDENTITY[1:])), ("orientation", [-1.0, *IDENTITY[1:]], list(IDENTITY))),
    (_with(size=(4, 5, 7), origin=(0.0, 0.0, 0.0)), ("size", [4, 5, 7], [4, 5, 6])),   # the size is told first
])
def test_grid_difference(other, expected):
    assert GRID_TOLERANCE == 1e-3
    assert grid_difference(REF, other) == expected


def test_check_same_grid_names_both_files():
    with pytest.raises(ValueError, match=re.escape("label l.nii.gz has origin [10.0, -19.0, 5.0] but image i.nii.gz "
                                                   "has [10.0, -20.0, 5.0]; resample the label")):
        check_same_grid(REF, "i.nii.gz", "image", _with(origin=(10.0, -19.0, 5.0)), "l.nii.gz", "label",
                        "resample the label")
    check_same_grid(REF, "i.nii.gz", "image", _with(origin=(10.001, -20.0, 5.0)), "l.nii.gz", "label", "")


def test_a_grid_read_from_a_file_and_its_affine(tmp_path):
    """A file with origin (10, -20, 5) LPS and spacing (1, 1, 2): the affine maps voxel (i, j, k) to
    RAS (-(10 + i), 20 - j, 5 + 2 k)."""
    image = sitk.GetImageFromArray(np.zeros((6, 5, 4), np.uint8))   # (z, y, x): size (4, 5, 6)
    image.SetSpacing(REF.spacing)
    image.SetOrigin(REF.origin)
    path = tmp_path / "s_T2.nii.gz"
    sitk.WriteImage(image, str(path))
    grid = Grid.read(path)
    assert grid_difference(REF, grid) is None and grid.size == (4, 5, 6)
    np.testing.assert_allclose(grid.affine(), [[-1, 0, 0, -10], [0, -1, 0, 20], [0, 0, 2, 5], [0, 0, 0, 1]])
    with pytest.raises(FileNotFoundError, match="label file not found"):
        Grid.read(tmp_path / "missing.nii.gz", "label")


@pytest.mark.parametrize("name, message", [
    ("", "cannot be part of a file name"), ("..", "cannot be part of a file name"),
    ("a/b", "holds '/'"), ("a\\b", "holds '\\\\'"), ("a\tb", "holds '\\t'"),
    (" a", "leading or trailing space"),
])
def test_names_that_cannot_be_file_name_parts(name, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_subject_name(name)


def test_subject_file_names(tmp_path):
    assert check_subject_name("NA") == "NA"
    assert subject_path(tmp_path, "s1", "T2") == tmp_path / "s1_T2.nii.gz"
    assert subject_path(tmp_path, "s1", "T2", ".mha") == tmp_path / "s1_T2.mha"
    assert [image_extension(n) for n in ("a.nii.gz", "a.nii", "a.nhdr", "a.gz", "nii.gz.txt")] == \
        [".nii.gz", ".nii", ".nhdr", None, None]
    assert output_extension() == ".nii.gz" and output_extension("mha") == ".mha"
    with pytest.raises(ValueError, match="--output_format must be one of"):
        output_extension("nhdr")   # a detached header: two files per volume
    long = "s" * (MAX_NAME_BYTES - len("_T2.nii.gz") + 1)
    with pytest.raises(ValueError, match=f"is {MAX_NAME_BYTES + 1} bytes long"):
        check_name_length(tmp_path / f"{long}_T2.nii.gz")
    check_name_length(tmp_path / f"{long[1:]}_T2.nii.gz")


def test_a_subject_in_two_formats_is_refused(tmp_path):
    assert find_subject_file(tmp_path, "s1", "T2") == tmp_path / "s1_T2.nii.gz"   # none: the name reported
    for ext in (".mha", ".nrrd"):
        sitk.WriteImage(sitk.Image(2, 2, 2, sitk.sitkUInt8), str(tmp_path / f"s1_T2{ext}"))
    with pytest.raises(ValueError, match=r"image of subject 's1' exists in 2 formats: .*s1_T2.nrrd and .*s1_T2.mha"):
        find_subject_file(tmp_path, "s1", "T2")


def test_one_missing_files_lister():
    """Missing files are found by utilities.data.grid.missing_paths/missing_files and listed by
    utilities.data.grid.listed: no module builds that list or message itself."""
    from utilities.data.grid import MAX_LISTED, listed, missing_paths

    assert listed([f"f{i}" for i in range(3)]) == "f0; f1; f2"
    many = [f"f{i}" for i in range(MAX_LISTED + 2)]
    assert listed(many) == "; ".join(many[:MAX_LISTED]) + f"; ... ({MAX_LISTED + 2} in all)"
    assert missing_paths([Path(__file__), Path(__file__).with_name("nope.nii.gz")], "image") == \
        [f"image {Path(__file__).with_name('nope.nii.gz')}"]
    by_hand = re.compile(r"if not \w+\.is_file\(\)\]|missing\[:\d+\]")
    keys = ROOT / "networks" / "published.py"   # lists a state dict's missing keys, not files
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in _sources() if p != keys
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if by_hand.search(line)]
    assert offenders == []
