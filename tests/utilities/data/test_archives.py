"""Untrusted archives: a model package is a file users download and share, so every member and
manifest field of it is checked before anything is read or written (utilities/data/archives.py,
``open_package``); nothing is written outside a fresh private folder, which is removed; every
refusal is one line naming the package the user gave and the member or key at fault."""
from __future__ import annotations

import contextlib
import json
import os
import stat
import struct
import tempfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import a_model, one_line
from synth import make_vs_dataset

import inference
from utilities.data import archives
from utilities.models import model_package as mp
from utilities.workflow.cli import run_main

EXPECTED = "pass a model package written by export_model.py"
WEIGHTS = "weights/model1.pth"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A package of a random U_Net2D5 (no training), its checkpoint and two images to predict."""
    root = tmp_path_factory.mktemp("archives")
    checkpoint = a_model(root / "run")
    spec = mp.spec_from_checkpoint(checkpoint, spatial_shape=(32, 32, 16))
    mp.export_package([spec], root / "model.zip")
    data = make_vs_dataset(root / "data", n_train=0, n_val=0, n_inf=2)
    return root / "model.zip", checkpoint, data["image_crop"]


def _members(package: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(package) as z:
        return {n: z.read(n) for n in z.namelist()}


def _write(target: Path, members, manifest=None) -> Path:
    """A zip of ``members`` (``(name or ZipInfo, bytes)`` pairs), the manifest first when given;
    stored, not compressed (a member's own ZipInfo may say otherwise): deflating the 10 MB of
    weights took most of each test's time."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as z:
        if manifest is not None:
            z.writestr(mp.MANIFEST, manifest if isinstance(manifest, (str, bytes)) else json.dumps(manifest))
        for name, blob in members:
            z.writestr(name, blob)
    return target


def _crafted(package: Path, target: Path, change=None, extra=(), drop=()) -> Path:
    """``package`` rewritten: ``change(manifest)`` edits its manifest, ``extra`` members are added
    and the members named in ``drop`` left out."""
    members = _members(package)
    manifest = json.loads(members.pop(mp.MANIFEST))
    if change is not None:
        manifest = change(manifest) or manifest
    kept = [(n, b) for n, b in members.items() if n not in drop]
    return _write(target, [*kept, *extra], manifest)


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def _refused(path: Path, workdir: Path) -> str:
    """``open_package``'s one-line message for ``path``; the private folder it made is gone."""
    workdir.mkdir(parents=True, exist_ok=True)
    with pytest.raises(ValueError) as err:
        mp.open_package(path, workdir)
    assert os.listdir(workdir) == []
    return one_line(err)


def _model(key, value):
    def change(manifest):
        manifest["models"][0][key] = value
    return change


def _symlink() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("weights/link.pth")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _fifo() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("weights/pipe")
    info.external_attr = (stat.S_IFIFO | 0o644) << 16
    return info


# (name, change of the manifest, extra members, what the message says after "--model <path> ")
UNSAFE = [
    ("member_climbs", None, [("../../../x", b"owned")],
     "is refused: member '../../../x' climbs out of its folder (..)"),
    ("member_climbs_inside", None, [("weights/../../x", b"owned")],
     "is refused: member 'weights/../../x' climbs out of its folder (..)"),
    ("member_absolute", None, [("/tmp/paseg_owned", b"owned")], "is refused: member '/tmp/paseg_owned' is an "
                                                                 "absolute path"),
    ("member_drive", None, [("C:/Users/x", b"owned")], "is refused: member 'C:/Users/x' is an absolute path"),
    ("member_backslash", None, [("..\\..\\x", b"owned")],
     "is refused: member '..\\\\..\\\\x' holds a backslash (not a relative path with forward slashes)"),
    ("member_dot", None, [("./weights/x", b"")], "is refused: member './weights/x' is not a normalised path (an "
                                                 "empty or '.' part)"),
    ("member_control", None, [("weights/a\nb", b"")], "is refused: member 'weights/a\\nb' holds a control character"),
    ("symlink", None, [(_symlink(), b"/home/user/.bashrc")], "is refused: member 'weights/link.pth' is a symbolic "
                                                               "link"),
    ("fifo", None, [(_fifo(), b"")], "is refused: member 'weights/pipe' is a special file (device, pipe or socket)"),
    ("duplicate", None, [(WEIGHTS, b"second")], f"is refused: member '{WEIGHTS}' appears twice (also counting names "
                                                "that differ only in letter case)"),
    ("duplicate_case", None, [("Weights/Model1.pth", b"second")], "is refused: member 'Weights/Model1.pth' appears "
                                                                  "twice (also counting names that differ only in "
                                                                  "letter case)"),
    ("too_many", None, [(f"extra/{k}", b"") for k in range(62)], "is refused: it holds 65 members (at most 64 are "
                                                                 "read)"),
    ("file_climbs", _model("file", "../../../x"), [],
     "is refused: paseg_model.json key models[0].file '../../../x' climbs out of its folder (..)"),
    ("file_absolute", _model("file", "/etc/passwd"), [],
     "is refused: paseg_model.json key models[0].file '/etc/passwd' is an absolute path"),
    ("file_drive", _model("file", "c:weights/model1.pth"), [],
     "is refused: paseg_model.json key models[0].file 'c:weights/model1.pth' is an absolute path"),
    ("file_backslash", _model("file", "weights\\model1.pth"), [], "is refused: paseg_model.json key "
     "models[0].file 'weights\\\\model1.pth' holds a backslash (not a relative path with forward slashes)"),
    ("file_not_normalised", _model("file", "weights//model1.pth"), [], "is refused: paseg_model.json key "
     "models[0].file 'weights//model1.pth' is not a normalised path (an empty or '.' part)"),
]


@pytest.mark.parametrize("name, change, extra, message", UNSAFE, ids=[c[0] for c in UNSAFE])
def test_unsafe_member_or_file_is_refused_and_nothing_written(made, tmp_path, name, change, extra, message):
    package, _, _ = made
    with pytest.warns(UserWarning, match="Duplicate name") if name == "duplicate" else contextlib.nullcontext():
        crafted = _crafted(package, tmp_path / "pkgs" / "bad.zip", change, extra)
    before = _files(tmp_path)
    expected = f"--model {crafted} {message}" + ("" if message.startswith("is damaged") else f"; {EXPECTED}")
    assert _refused(crafted, tmp_path / "a" / "b" / "work") == expected
    assert _files(tmp_path) == before | {"a", "a/b", "a/b/work"}  # nothing written, not even inside
    assert not Path("/tmp/paseg_owned").exists()


def test_the_name_rules_by_hand():
    assert archives.name_problem("weights/model1.pth") is None
    assert archives.name_problem("a..b/c.pth") is None  # '..' only as a whole part
    assert archives.name_problem("") == "is not a file name"
    assert archives.name_problem({"a": 1}) == "is not a file name"
    assert archives.name_problem("a/") == "is not a normalised path (an empty or '.' part)"
    assert archives.name_problem("x" * 256) == "is longer than 255 characters"


def _zeros_member(name: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.file_size = size
    return info


def _bomb(package: Path, target: Path, size: int) -> Path:
    """``package`` with its weights replaced by ``size`` zero bytes, deflated (a few KiB on disk)."""
    members = _members(package)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(mp.MANIFEST, members[mp.MANIFEST])
        with z.open(_zeros_member(WEIGHTS, size), "w") as out:
            chunk = bytes(2**20)
            for _ in range(size // len(chunk)):
                out.write(chunk)
    return target


def test_zip_bomb_refused_before_a_byte_is_read(made, tmp_path, monkeypatch):
    """A 64 MiB member of zeros that deflates to 64 KiB: refused from the central directory
    alone (a read would fail the test), by its ratio; over the size limit, by its size."""
    package, _, _ = made
    bomb = _bomb(package, tmp_path / "bomb.zip", 64 * 2**20)
    assert bomb.stat().st_size < 2**20

    def no_read(*args, **kwargs):
        raise AssertionError("a member was read")
    monkeypatch.setattr(zipfile.ZipExtFile, "read", no_read)
    with zipfile.ZipFile(bomb) as z:
        packed = z.getinfo(WEIGHTS).compress_size
    assert _refused(bomb, tmp_path / "work") == (
        f"--model {bomb} is refused: member '{WEIGHTS}' declares {64 * 2**20} bytes from {packed} compressed "
        f"({64 * 2**20 // packed} times; at most 100 are read); {EXPECTED}")
    monkeypatch.setattr(archives, "MAX_MEMBER_BYTES", 32 * 2**20)
    assert _refused(bomb, tmp_path / "work") == (
        f"--model {bomb} is refused: member '{WEIGHTS}' declares {64 * 2**20} bytes (at most {32 * 2**20} are read); "
        f"{EXPECTED}")


def test_members_together_and_the_manifest_are_bounded(made, tmp_path, monkeypatch):
    package, _, _ = made
    with zipfile.ZipFile(package) as z:
        total = sum(i.file_size for i in z.infolist())
        manifest_size = z.getinfo(mp.MANIFEST).file_size
    monkeypatch.setattr(archives, "MAX_TOTAL_BYTES", total - 1)
    assert _refused(package, tmp_path / "work") == (
        f"--model {package} is refused: its members declare {total} bytes together (at most {total - 1} are read); "
        f"{EXPECTED}")
    monkeypatch.setattr(archives, "MAX_TOTAL_BYTES", total)
    monkeypatch.setattr(mp, "MAX_MANIFEST_BYTES", 100)
    assert _refused(package, tmp_path / "work") == (
        f"--model {package} is refused: member '{mp.MANIFEST}' declares {manifest_size} bytes (at most 100 are "
        f"read); {EXPECTED}")


def _patch_central(package: Path, target: Path, name: str, offset: int, value: int, fmt: str = "<I") -> Path:
    """``package`` with one field of ``name``'s central directory entry overwritten."""
    blob = bytearray(package.read_bytes())
    entry = blob.find(b"PK\x01\x02")
    while blob[entry + 46: entry + 46 + len(name)] != name.encode():
        entry = blob.find(b"PK\x01\x02", entry + 4)
    blob[entry + offset: entry + offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    target.write_bytes(bytes(blob))
    return target


def test_a_header_that_understates_a_size_reads_no_further(made, tmp_path):
    """The central directory says 1 MiB, the member holds 9 MiB: the read stops at 1 MiB and the
    CRC names the damage."""
    package, _, _ = made
    liar = _patch_central(package, tmp_path / "liar.zip", WEIGHTS, 24, 2**20)
    assert _refused(liar, tmp_path / "work") == (f"--model {liar} is damaged (member '{WEIGHTS}': Bad CRC-32 for file "
                                                 f"'{WEIGHTS}'); export it again")


def test_encrypted_member_refused(made, tmp_path):
    package, _, _ = made
    locked = _patch_central(package, tmp_path / "locked.zip", WEIGHTS, 8, 0x1, "<H")
    assert _refused(locked, tmp_path / "work") == (f"--model {locked} is refused: member '{WEIGHTS}' is encrypted; "
                                                   f"{EXPECTED}")


def test_repeated_json_key_refused(made, tmp_path):
    package, _, _ = made
    manifest = _members(package)[mp.MANIFEST].decode()
    assert manifest.count('"models":') == 1
    twice = manifest.replace('"models":', '"models": [], "models":')
    crafted = _write(tmp_path / "twice.zip", [(n, b) for n, b in _members(package).items() if n != mp.MANIFEST], twice)
    assert _refused(crafted, tmp_path / "work") == (
        f"--model {crafted}: paseg_model.json: key 'models' appears twice in one JSON object (the second would "
        "silently replace the first); keep one")
    nested = json.loads(manifest)
    nested["models"][0]["network"] = "U_Net2D5"
    text = json.dumps(nested).replace('"network": "U_Net2D5"', '"network": "U_Net2D5", "network": "V_Net"')
    crafted = _write(tmp_path / "inner.zip", [(WEIGHTS, b"")], text)
    assert _refused(crafted, tmp_path / "work") == (
        f"--model {crafted}: paseg_model.json: key 'network' appears twice in one JSON object (the second would "
        "silently replace the first); keep one")
    deep = _write(tmp_path / "deep.zip", [], '{"format": "paseg-model-package", "card": ' + "[" * 200000 + "]" * 200000
                  + "}")
    assert _refused(deep, tmp_path / "work") == (
        f"--model {deep} has a damaged paseg_model.json (RecursionError: nested too deep); export it again")


def _set(key, value):
    def change(manifest):
        manifest[key] = value
    return change


def _drop_model_key(key):
    def change(manifest):
        del manifest["models"][0][key]
    return change


TEXT = "a one-line string of 1 to 200 characters"
# (change, what the message says after "--model <path>: paseg_model.json ")
TYPES = [
    (_model("spatial_shape", "abc"), "key models[0].spatial_shape must be a list of 3 positive integers, got 'abc'"),
    (_model("spatial_shape", [32, "32", 16]), "key models[0].spatial_shape must be a list of 3 positive integers, got "
                                              "[32, '32', 16]"),
    (_model("spatial_shape", [32, 0, 16]), "key models[0].spatial_shape must be a list of 3 positive integers, got "
                                           "[32, 0, 16]"),
    (_model("in_channels", "two"), "key models[0].in_channels must be a positive integer, got 'two'"),
    (_model("num_classes", True), "key models[0].num_classes must be a positive integer, got True"),
    (_model("network", {"name": "U_Net2D5"}), f"key models[0].network must be {TEXT}, got {{'name': 'U_Net2D5'}}"),
    (_model("file", ["weights/model1.pth"]), f"key models[0].file must be {TEXT}, got ['weights/model1.pth']"),
    (_model("name", "model1\nerror: all good"), f"key models[0].name must be {TEXT}, got 'model1\\nerror: all good'"),
    (_model("name", "m" * 300), f"key models[0].name must be {TEXT}, got '{'m' * 56}..."),
    (_model("epoch", 2.5), "key models[0].epoch must be an integer, got 2.5"),
    (_model("value", "high"), "key models[0].value must be a number, got 'high'"),
    (_drop_model_key("file"), f"has no key models[0].file ({TEXT})"),
    (_drop_model_key("spatial_shape"), "has no key models[0].spatial_shape (a list of 3 positive integers)"),
    (_set("models", "model1"), "key models must be a list of 1 to 16 models, got 'model1'"),
    (_set("models", []), "key models must be a list of 1 to 16 models, got []"),
    (_set("models", ["model1"]), "key models[0] must be an object, got 'model1'"),
    (_set("package_version", "1"), "key package_version must be an integer, got '1'"),
    (_set("project_version", {"major": 0}), f"key project_version must be {TEXT}, got {{'major': 0}}"),
    (_set("torch_version", 2), f"key torch_version must be {TEXT}, got 2"),
    (_set("normalisation", ["zscore"]), f"key normalisation must be {TEXT}, got ['zscore']"),
    (_set("card", []), "key card must be an object, got []"),
    (lambda m: {k: v for k, v in m.items() if k != "package_version"}, "has no key package_version (an integer)"),
]


@pytest.mark.parametrize("change, message", TYPES, ids=[t[1][:40] for t in TYPES])
def test_wrong_manifest_types_name_the_package_and_key(made, tmp_path, change, message):
    package, _, _ = made
    crafted = _crafted(package, tmp_path / "typed.zip", change)
    assert _refused(crafted, tmp_path / "work") == f"--model {crafted}: paseg_model.json {message}; export it again"


def test_manifest_of_another_shape_or_a_missing_file(made, tmp_path):
    package, _, _ = made
    listed = _write(tmp_path / "list.zip", [], "[1, 2]")
    assert _refused(listed, tmp_path / "work") == (f"--model {listed}: paseg_model.json is not a PA-Seg package "
                                                   "manifest; pass a package written by export_model.py")
    missing = _crafted(package, tmp_path / "missing.zip", _model("file", "weights/model9.pth"))
    assert _refused(missing, tmp_path / "work") == (
        f"--model {missing}: paseg_model.json key models[0].file names 'weights/model9.pth', which the package does "
        "not hold; export it again")
    folder = _crafted(package, tmp_path / "folder.zip", _model("file", "weights"), [("weights/", b"")])
    assert _refused(folder, tmp_path / "work") == (
        f"--model {folder}: paseg_model.json key models[0].file names 'weights', which the package does not hold; "
        "export it again")


def test_extracted_into_a_private_folder_under_our_names(made, tmp_path):
    """Two packages of the same name in one folder (an ensemble of ``a/model.zip b/model.zip``):
    each gets its own 0700 folder, the weights under names of ours, and read_manifest agrees."""
    package, _, _ = made
    second = _crafted(package, tmp_path / "b" / "model.zip", _model("file", "weights/other.pth"),
                      [("weights/other.pth", b"the other weights")], drop=[WEIGHTS])
    work = tmp_path / "work"
    work.mkdir()
    (first,) = mp.open_package(package, work)
    (other,) = mp.open_package(second, work)
    assert first.weights.parent != other.weights.parent and {first.weights.parent, other.weights.parent} == set(
        work.iterdir())
    for spec, blob in ((first, _members(package)[WEIGHTS]), (other, b"the other weights")):
        assert spec.weights.name == "weights1.pth" and spec.weights.read_bytes() == blob
        assert os.listdir(spec.weights.parent) == ["weights1.pth"]
        assert stat.S_IMODE(spec.weights.parent.stat().st_mode) == 0o700
    assert (first.source, other.source) == (f"{package}:model1", f"{second}:model1")
    assert first.spatial_shape == (32, 32, 16) and first.meta == {"epoch": 1, "checkpoint": "CP_best.pth"}
    assert mp.read_manifest(second)["models"][0]["file"] == "weights/other.pth"


def _predict(argv, monkeypatch, capsys):
    """``inference.py`` as a user runs it: (exit code, stderr, the temporary folders it made,
    checked to be gone; the package's own inside the run's)."""
    made = []
    mkdtemp = tempfile.mkdtemp

    def recorded(*args, **kwargs):
        made.append(Path(mkdtemp(*args, **kwargs)))
        return str(made[-1])
    monkeypatch.setattr(tempfile, "mkdtemp", recorded)
    code = run_main(inference.main, argv)
    assert [p for p in made if p.exists()] == []
    return code, capsys.readouterr().err, [p.relative_to(made[0]).as_posix()[:8] for p in made]


def test_round_trip_and_the_private_folder_is_removed(made, tmp_path, monkeypatch, capsys):
    """A package predicts what its checkpoint predicts; after the run, good or refused, no
    temporary folder is left, and a refusal names the package, not a temporary path."""
    package, checkpoint, images = made
    common = ["--input_folder", str(images), "--image_postfix", "T2", "--device", "cpu"]
    code, err, left = _predict(["--model", str(package), *common, "--output_folder", str(tmp_path / "zip")],
                               monkeypatch, capsys)
    assert (code, err, left) == (0, "", [".", "package-"])
    code, _, _ = _predict(["--model", str(checkpoint), "--spatial_shape", "32", "32", "16", *common,
                           "--output_folder", str(tmp_path / "pth")], monkeypatch, capsys)
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "zip").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "pth").iterdir()) and len(names) == 2
    for name in names:
        np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "zip" / name).dataobj),
                                      np.asarray(nib.load(tmp_path / "pth" / name).dataobj))
    text = _crafted(package, tmp_path / "text.zip", extra=[("weights/text.pth", b"not a checkpoint\n")],
                    change=_model("file", "weights/text.pth"))
    code, err, left = _predict(["--model", str(text), *common, "--output_folder", str(tmp_path / "o1")], monkeypatch,
                               capsys)
    assert (code, left) == (2, [".", "package-"])
    assert err == (f"error: {text}:model1 is not a PyTorch file, or a truncated or damaged one (neither a zip archive "
                   "nor a pickle); pass a state dict (save model.state_dict(), not the model), a CP_*.pth of this "
                   "project or one of the authors' released checkpoints\n")
    climbs = _crafted(package, tmp_path / "climbs.zip", _model("file", "../../../x"))
    code, err, left = _predict(["--model", str(climbs), *common, "--output_folder", str(tmp_path / "out")], monkeypatch,
                               capsys)
    assert (code, left) == (2, [".", "package-"])
    assert err == (f"error: --model {climbs} is refused: paseg_model.json key models[0].file '../../../x' climbs out "
                   f"of its folder (..); {EXPECTED}\n")
    assert not (tmp_path / "out").exists()
