"""Every file is written through utilities/data/io.py: a failed write keeps the previous file and leaves
no temporary file."""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from helpers import ROOT, one_line, project_sources

from utilities.data import io

#: Read when pytest collects this module, before the session's stand-in (tests/conftest.py).
_REAL_FSYNC = io._fsync

# ------------------------------------------------------------------------ atomic writes
def _partial_then_fail(target_index: int):
    def writer(*args, **kwargs):
        Path(str(args[target_index])).write_bytes(b"half a fi")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return writer


@pytest.mark.parametrize("name, save, patch", [
    ("CP.pth", lambda p: io.save_torch({"w": torch.ones(3)}, p), ("torch", "save", 1)),
    ("img.nii.gz", lambda p: io.write_image(sitk.GetImageFromArray(np.ones((2, 3, 4), np.float32)), p),
     ("sitk", "WriteImage", 1)),
    ("seg.nii.gz", lambda p: io.save_nifti(nib.Nifti1Image(np.ones((2, 3, 4), np.uint8), np.eye(4)), p),
     ("nib", "save", 1)),
    ("log.csv", lambda p: io.save_csv(pd.DataFrame({"epoch": [1, 2]}), p), ("DataFrame", "to_csv", 1)),
    ("notes.txt", lambda p: io.save_text("hello\n", p), ("Path", "write_text", 0)),
])
def test_atomic_write_keeps_previous_file(tmp_path, monkeypatch, name, save, patch):
    path = tmp_path / "out" / name
    save(path)
    before = path.read_bytes()
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would make it, not mkstemp's 0600
    module, attr, index = patch
    owner = {"torch": torch, "sitk": sitk, "nib": nib, "DataFrame": pd.DataFrame, "Path": Path}[module]
    if module == "Path":
        original = Path.write_text

        def write_text(self, *a, **k):
            if self.name.startswith(f".{name}."):
                self.write_bytes(b"half a fi")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return original(self, *a, **k)
        monkeypatch.setattr(Path, "write_text", write_text)
    else:
        monkeypatch.setattr(owner, attr, _partial_then_fail(index))
    with pytest.raises(OSError) as err:
        save(path)
    assert one_line(err).startswith(f"cannot write {path}: No space left on device;")
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [name]  # no temporary file left


def test_an_atomic_write_is_flushed_to_disk_before_the_rename(tmp_path, monkeypatch):
    """The flush that the other tests skip (conftest): the temporary file's data reach the disk
    (``os.fsync`` on it) before it replaces the target."""
    assert io._fsync is not _REAL_FSYNC   # this process's other writes skip the flush (tests/conftest.py)
    monkeypatch.setattr(io, "_fsync", _REAL_FSYNC)
    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
                        or fsync(fd))
    monkeypatch.setattr(os, "replace", lambda src, dst: events.append(("replace", str(src))) or replace(src, dst))
    path = tmp_path / "a.txt"
    with io.atomic_path(path) as tmp:
        tmp.write_text("x")
    assert [kind for kind, _ in events] == ["fsync", "replace"]
    assert events[0][1] == events[1][1] == str(tmp) and path.read_text() == "x"


def test_no_write_bypasses_utilities_io():
    """Every file the project writes goes through utilities/data/io.py (temp file + rename)."""
    pattern = re.compile(r"torch\.save\(|sitk\.WriteImage\(|nib\.save\(|\.to_csv\(|\.write_text\(|\.write_bytes\("
                         r"|open\([^)]*['\"]wb?['\"]|np\.save|savefig\(")
    # fine: writing to the temporary file of utilities.data.io.atomic_path (``tmp``), to an in-memory
    # buffer, or to /proc; and appending to a log (mode "a"), which, like logging.FileHandler,
    # only ever adds whole lines to a stream and replaces nothing
    allowed = re.compile(r"\btmp\b|\bbuffer\b|/proc/")
    offenders = []
    sources = project_sources()
    assert ROOT / "utilities" / "data" / "io.py" in sources and ROOT / "inference.py" in sources
    for path in sources:
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("tests/"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = re.sub(r"``[^`]*``", "", line)  # ``torch.save(...)`` in a docstring is prose
            if pattern.search(code) and not allowed.search(code):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_staged_folders_move_all_files_or_none(tmp_path):
    """Files written into the staging folders reach their folders only when the block succeeds;
    a failure leaves the folders as they were (an earlier file unchanged, no new file, no staging
    folder, no folder it created)."""
    first, second = tmp_path / "a", tmp_path / "b" / "deeper"
    first.mkdir()
    (first / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="subject 3"):
        with io.staged_folders(first, second) as (one, two):
            for k in range(3):
                io.save_text(f"new {k}", one / f"s{k}.txt")
                io.save_text(f"distance {k}", two / f"s{k}.txt")
            io.save_text("replaced", one / "old.txt")
            raise RuntimeError("subject 3 is bad")
    assert [p.name for p in first.iterdir()] == ["old.txt"] and (first / "old.txt").read_text() == "old"
    assert not (tmp_path / "b").exists()  # created for the block, removed with its failure
    with io.staged_folders(first, second) as (one, two):
        assert one.parent == first and two.parent == second and io.is_temporary(one)
        io.save_text("replaced", one / "old.txt")
        io.save_text("new", two / "s0.txt")
    assert sorted(p.name for p in first.iterdir()) == ["old.txt"] and (first / "old.txt").read_text() == "replaced"
    assert [p.read_text() for p in second.iterdir()] == ["new"]


def test_save_together_writes_every_file_or_none(tmp_path):
    """A table, its CSV and its figure: a failure writing the third leaves the first two as they
    were (no new CSV beside an old table), no temporary file, and names the file it could not
    write; when every writer succeeds, all are replaced (permissions kept) and a new one appears."""
    table, page, figure = tmp_path / "table.csv", tmp_path / "table.md", tmp_path / "plot.png"
    table.write_text("old csv")
    page.write_text("old page")
    table.chmod(0o640)

    def disk_full(path):
        path.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    new = pd.DataFrame({"dice": [0.5, 0.75]})
    with pytest.raises(OSError, match=r"cannot write .*plot\.png: No space left on device"):
        io.save_together({table: new, page: "new page", figure: disk_full})
    assert table.read_text() == "old csv" and page.read_text() == "old page" and not figure.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv", "table.md"]
    with pytest.raises(ValueError, match="bad row"):  # not an I/O error: raised as it is, nothing written
        io.save_together({table: new, figure: lambda path: (_ for _ in ()).throw(ValueError("bad row"))})
    assert table.read_text() == "old csv" and sorted(p.name for p in tmp_path.iterdir()) == ["table.csv", "table.md"]
    io.save_together({table: new, page: "new page ü", figure: lambda path: path.write_bytes(b"png")})
    assert pd.read_csv(table)["dice"].tolist() == [0.5, 0.75] and page.read_text(encoding="utf-8") == "new page ü"
    assert figure.read_bytes() == b"png" and table.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png", "table.csv", "table.md"]


def test_exact_format_keeps_nifti_unless_it_cannot_hold_the_grid(tmp_path):
    """A 10 µm grid with its origin at -512.3 mm reads back from NIfTI's float32 1.2e-5 mm off,
    beyond the tolerance (1e-3 of a voxel): such a volume goes to .mha, any other stays .nii.gz."""
    from utilities.data.grid import Grid
    identity = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    far = Grid((4, 4, 4), (0.01, 0.01, 0.01), identity, (-512.3, -480.7, 20.0))
    near = Grid((4, 4, 4), (0.5, 0.5, 1.5), identity, (-512.3, -480.7, 20.0))
    path = tmp_path / "s1_GeodesicLabel.nii.gz"
    assert io.exact_format(path, far) == tmp_path / "s1_GeodesicLabel.mha"
    assert io.exact_format(path, near) == path
    with pytest.raises(ValueError, match=re.escape("origin would read back as [-512.29999, -480.70001, 20.0] "
                                                   "instead of [-512.3, -480.7, 20.0]")):
        io.check_storable(far, path)   # the digits that show the difference


def test_check_writable_dir_creates_nothing(tmp_path):
    """The check of an output folder that may not be created yet: nothing is created, a file in
    the way (the folder itself or a parent) is named."""
    from utilities.core.errors import OutputError

    check_writable_dir = io.check_writable_dir
    target = tmp_path / "a" / "b"
    assert check_writable_dir(target) == target and not (tmp_path / "a").exists()
    (tmp_path / "a").write_text("x")
    with pytest.raises(OutputError, match=r"cannot create output folder .*/a/b: .*/a is not a folder"):
        check_writable_dir(target)
    with pytest.raises(OutputError, match=r"cannot create output folder .*/a: a file of that name exists"):
        check_writable_dir(tmp_path / "a")
    assert check_writable_dir(tmp_path) == tmp_path


def test_a_path_of_the_wrong_kind_is_named_as_such(tmp_path):
    """A folder given where a file is read, and a file where a folder is: said so, not 'not found'."""
    from utilities.data.grid import check_readable
    from utilities.data.splits import read_split

    with pytest.raises(ValueError, match=rf"^split file {tmp_path} is a folder, not a file; pass --dataset_split the "
                                         "split's CSV"):
        read_split(tmp_path)
    with pytest.raises(ValueError, match=rf"^image file {tmp_path} is a folder, not a file$"):
        check_readable(tmp_path, "image")
    with pytest.raises(FileNotFoundError, match=r"^image file not found: "):
        check_readable(tmp_path / "none.nii.gz", "image")
    # every reader of a file the user names says the same (the dataset and plan files, point files)
    from data.point_files import read_points
    from utilities.data.dataset_file import read_dataset
    from utilities.workflow.plan import read_plan

    for read, what in ((read_dataset, "--dataset file"), (read_plan, "--plan file"), (read_points, "point file")):
        with pytest.raises(ValueError, match=rf"^{what} {tmp_path} is a folder, not a file"):
            read(tmp_path)
        with pytest.raises(FileNotFoundError, match=rf"^{what} not found: {tmp_path / 'none'}"):
            read(tmp_path / "none")


@pytest.mark.parametrize("links", [True, False])
def test_save_together_puts_back_what_a_failed_rename_replaced(tmp_path, monkeypatch, links):
    """The third rename of an output fails: the two files renamed before it are put back as they
    were (the new one removed), from hard links or, where the file system has none, copies; no
    temporary file stays."""
    table, page, figure = tmp_path / "table.csv", tmp_path / "table.md", tmp_path / "plot.png"
    page.write_text("old page")
    figure.write_bytes(b"old png")
    page.chmod(0o640)
    if not links:
        monkeypatch.setattr(io.os, "link", lambda *a: (_ for _ in ()).throw(OSError(errno.EPERM, "no links")))
    replace, calls = os.replace, []

    def third_fails(src, dst):
        calls.append(Path(dst).name)
        if len(calls) == 3:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        replace(src, dst)

    monkeypatch.setattr(io.os, "replace", third_fails)
    with pytest.raises(OSError, match=r"cannot write .*plot\.png: Input/output error"):
        io.save_together({table: "new csv", page: "new page", figure: lambda path: path.write_bytes(b"new png")})
    assert calls[:3] == ["table.csv", "table.md", "plot.png"]
    assert not table.exists() and page.read_text() == "old page" and figure.read_bytes() == b"old png"
    assert page.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png", "table.md"]
    monkeypatch.setattr(io.os, "replace", replace)
    io.save_together({table: "new csv", page: "new page", figure: lambda path: path.write_bytes(b"new png")})
    assert (table.read_text(), page.read_text(), figure.read_bytes()) == ("new csv", "new page", b"new png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png", "table.csv", "table.md"]
