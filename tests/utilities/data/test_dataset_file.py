"""The dataset file (utilities/data/dataset_file.py): its schema and one-line errors, the precedence
(a typed flag beats the file, the file beats a default, no VS default applies with --dataset),
the writers (splits/make_split.py --write_dataset, plan.py), and every script that takes data
paths accepting --dataset and taking its paths from it. The scripts are found by their flags
(``--help``), so that a new one cannot be missed."""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from helpers import (
    ROOT,
    SHAPE,
    a_model,
    load_script,
    one_line,
    pretrained,
    project_sources,
    run_printed_sequence,
)
from synth import blob_case, seeds_from_label, seven_points, write

from utilities.data.dataset_file import (
    KEYS,
    add_dataset_flag,
    check_distinct,
    parse_with_dataset,
    read_dataset,
    same_file,
    typed_flags,
    write_dataset,
)
from utilities.models.model_package import run_args
from utilities.workflow.cli import run_main
from utilities.workflow.plan import Workspace

SUBJECTS = {"brain1": "training", "brain2": "training", "brain3": "validation", "brain4": "inference"}
#: Folder and postfix of each kind of file: none of them a VS default.
FOLDERS = {"image": ("scans", "T1"), "label": ("masks", "Seg"), "annotation": ("points", "7points"),
           "seeds": ("seeds", "GeodesicLabel")}
#: The dataset file, in meta/ beside the data: every path relative to meta/.
DOCUMENT = {"split": "../lists/split.csv", "images": "../scans", "image_postfix": "T1", "annotations": "../points",
            "labels": "../masks", "label_postfix": "Seg", "seeds": "../seeds", "modality": "MR"}


def _dataset(file: Path, **changes: str | None) -> Path:
    """A dataset file in ``file``'s folder (meta/ of the data): :data:`DOCUMENT` with ``changes``
    (``None``: key left out)."""
    document = {k: v for k, v in {**DOCUMENT, **changes}.items() if v is not None}
    file.write_text(json.dumps(document))
    return file


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """4 cases of 32x32x16 voxels (2 training, 1 validation, 1 inference) in folders no script
    defaults to, an image of another postfix beside them, and meta/dataset.json naming them."""
    root = tmp_path_factory.mktemp("my")
    for i, subject in enumerate(SUBJECTS):
        image, label = blob_case((16, 32, 32), seed=i)
        anno = seven_points(label)
        arrays = {"image": image, "label": label, "annotation": anno, "seeds": seeds_from_label(label, anno)}
        for kind, (folder, postfix) in FOLDERS.items():
            write(arrays[kind], root / folder / f"{subject}_{postfix}.nii.gz")
    write(blob_case((16, 32, 32), seed=9)[0], root / "scans" / "other_T2.nii.gz")   # another postfix: never read
    (root / "lists").mkdir()
    (root / "lists" / "split.csv").write_text("".join(f"{s},{phase}\n" for s, phase in SUBJECTS.items()))
    (root / "meta").mkdir()
    return {"root": root, "file": _dataset(root / "meta" / "dataset.json"), "meta": root / "meta"}


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """An empty working folder: no VS default exists there."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


# ------------------------------------------------------------------------------ schema
@pytest.mark.parametrize("text, message", [
    ('{"images": "img", "image_postfix": "T1", "imgs": "x"}',
     "unknown key 'imgs' (did you mean 'images'?); the keys are " + ", ".join(KEYS)),
    ('{"images": 3, "image_postfix": "T1"}', "'images' must be a non-empty string (the images' folder), got 3"),
    ('{"labels": null}', "'labels' must be a non-empty string (the full labels' folder), got null"),
    ('{"split": ""}', "'split' must be a non-empty string (the split CSV of subject,phase rows), got \"\""),
    ('{"labels": "l", "label_postfix": "a/b"}',
     "'label_postfix' is a file-name postfix (files <subject>_<postfix>.nii.gz), not a path; got 'a/b'"),
    ('{"images": "img"}', "'images' needs 'image_postfix' (the images are <subject>_<image_postfix>.nii.gz or "
                          "another image format); add it"),
    ('{"images": "a", "image_postfix": "T1", "images": "b"}',
     "key 'images' appears twice in one JSON object (the second would silently replace the first); keep one"),
])
def test_a_wrong_file_is_one_line_naming_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "dataset.json"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        read_dataset(path)
    assert one_line(err) == f"--dataset {path}: {message}"


def test_not_an_object_not_json_and_no_file(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text('["images"]')
    with pytest.raises(ValueError) as err:
        read_dataset(path)
    assert one_line(err) == f"--dataset {path} must hold one JSON object of keys ({', '.join(KEYS)}), got list"
    path.write_text('{"images": "a",}')
    with pytest.raises(ValueError) as err:
        read_dataset(path)
    assert one_line(err).startswith(f"--dataset {path} is not valid JSON (")
    with pytest.raises(FileNotFoundError) as err:
        read_dataset(tmp_path / "none.json")
    assert one_line(err) == (f"--dataset file not found: {tmp_path / 'none.json'} (write one with "
                             "splits/make_split.py --write_dataset or by hand: docs/guide/own_data.md)")


def test_paths_are_relative_to_the_files_folder_and_postfixes_have_defaults(tmp_path):
    path = tmp_path / "meta" / "dataset.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"images": "../scans", "image_postfix": "T1", "labels": "/abs/masks",
                                "split": "split.csv", "modality": "CT"}))
    assert dict(read_dataset(path).values) == {
        "images": str(tmp_path / "meta" / ".." / "scans"), "image_postfix": "T1", "labels": "/abs/masks",
        "split": str(tmp_path / "meta" / "split.csv"), "modality": "CT", "label_postfix": "Label",
        "annotation_postfix": "7points", "seed_postfix": "GeodesicLabel"}


# ------------------------------------------------------------------------------ precedence
def _toy() -> argparse.ArgumentParser:
    """A script's parser with the paper's VS defaults."""
    p = argparse.ArgumentParser(prog="toy")
    p.add_argument("--dataset_split", default="./splits/split_VS.csv")
    p.add_argument("--path_images", default="./data/VS/image_crop/")
    p.add_argument("--image_postfix", default="T2")
    p.add_argument("--path_labels", default="./data/VS/label_crop/")
    p.add_argument("--label_postfix", default="Label")
    p.add_argument("--path_anno_7points", default=None)
    p.add_argument("--input_folder", default=None)
    p.add_argument("--model_dir", default="./models/VS/SCM/")
    add_dataset_flag(p)
    return p


def _values(args: argparse.Namespace) -> tuple:
    return args.dataset_split, args.path_images, args.image_postfix, args.path_labels, args.label_postfix


def test_a_typed_flag_beats_the_file_and_the_file_beats_the_default(tmp_path):
    file = tmp_path / "d.json"
    file.write_text(json.dumps({"split": "s.csv", "images": "img", "image_postfix": "MR", "labels": "lab"}))
    assert _values(parse_with_dataset(_toy(), [])) == ("./splits/split_VS.csv", "./data/VS/image_crop/", "T2",
                                                       "./data/VS/label_crop/", "Label")
    args = parse_with_dataset(_toy(), ["--dataset", str(file), "--model_dir", "m"])
    assert _values(args) == (str(tmp_path / "s.csv"), str(tmp_path / "img"), "MR", str(tmp_path / "lab"), "Label")
    # typed, even at the value of the script's default: the flag wins (typed, not compared)
    args = parse_with_dataset(_toy(), ["--image_postfix", "T2", "--dataset", str(file), "--path_images", "x",
                                       "--model_dir", "m"])
    assert _values(args) == (str(tmp_path / "s.csv"), "x", "T2", str(tmp_path / "lab"), "Label")
    assert args.path_anno_7points is None      # not in the file, no default: stays None


def test_with_a_dataset_no_vs_default_applies(tmp_path):
    """A needed value neither typed nor in the file is one line naming the key and the flag; an
    optional key is None; ``flags`` (defaults of VS outputs) must be typed; ``unless`` drops keys
    when its flag is typed; the parser is left with its defaults when nothing was given."""
    file = tmp_path / "d.json"
    file.write_text(json.dumps({"images": "img", "image_postfix": "MR"}))
    with pytest.raises(ValueError) as err:
        parse_with_dataset(_toy(), ["--dataset", str(file)], flags=("model_dir",))
    assert one_line(err) == (
        f"--dataset {file}: no 'split' (the split CSV of subject,phase rows): add it to the file or pass "
        "--dataset_split; no 'labels' (the full labels' folder): add it to the file or pass --path_labels; "
        "--model_dir has no default with --dataset (its default is for the paper's VS data): pass it")
    args = parse_with_dataset(_toy(), ["--dataset", str(file), "--dataset_split", "s.csv", "--model_dir", "m"],
                              optional=("labels",), flags=("model_dir",))
    assert (args.dataset_split, args.path_labels, args.model_dir) == ("s.csv", None, "m")
    args = parse_with_dataset(_toy(), ["--dataset", str(file), "--input_folder", "in"], optional=("labels",),
                              unless={"input_folder": ("split", "images")})
    assert (args.dataset_split, args.path_images, args.image_postfix) == (None, None, "MR")
    args = parse_with_dataset(_toy(), ["--dataset", str(file), "--dataset_split", "s.csv"], optional=("labels",),
                              skip=("images",))
    assert args.path_images == "./data/VS/image_crop/"     # a skipped key: the script's own flag as it is


def test_typed_flags_and_the_parser_left_as_it_was():
    parser = _toy()
    before = [(a.dest, a.default, a.required) for a in parser._actions]
    assert typed_flags(parser, ["--image_postfix", "T2", "--dataset", "x.json"]) == {"image_postfix", "dataset"}
    assert [(a.dest, a.default, a.required) for a in parser._actions] == before
    assert typed_flags(parser, []) == set()


def test_an_error_reaches_the_user_as_one_line(tmp_path, capsys):
    plan = load_script("plan.py")
    assert run_main(plan.main, ["--dataset", str(tmp_path / "none.json")]) == 2
    assert capsys.readouterr().err == (f"error: --dataset file not found: {tmp_path / 'none.json'} (write one with "
                                       "splits/make_split.py --write_dataset or by hand: docs/guide/own_data.md)\n")


# ------------------------------------------------------------------------------ writing
def test_write_dataset_relative_to_the_file_kept_when_the_same_refused_else(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    values = {"split": "lists/s.csv", "images": str(tmp_path / "scans"), "image_postfix": "T1", "labels": None,
              "label_postfix": "Label", "annotations": "points", "annotation_postfix": "7points"}
    path = Path("meta/dataset.json")
    assert write_dataset(path, values) is True
    assert json.loads(path.read_text()) == {"split": "../lists/s.csv", "images": str(tmp_path / "scans"),
                                            "image_postfix": "T1", "annotations": "../points",
                                            "annotation_postfix": "7points"}
    text = path.read_text()
    assert write_dataset(path, {**values, "split": "./lists/../lists/s.csv"}) is False   # the same dataset: kept
    with pytest.raises(FileExistsError) as err:
        write_dataset(path, {**values, "image_postfix": "T2"})
    assert one_line(err) == (f"--write_dataset {path} exists; pass --overwrite to replace it, or choose another "
                             "--write_dataset")
    assert path.read_text() == text
    assert write_dataset(path, {**values, "image_postfix": "T2"}, overwrite=True) is True
    assert read_dataset(path).get("image_postfix") == "T2"


def test_a_dataset_file_in_a_symlinked_folder_leads_to_the_files_given(tmp_path, monkeypatch):
    """meta -> deep/inner/run (a symlink): "../lists/s.csv" from meta/ would lead to
    deep/inner/lists/s.csv (the operating system follows the link before ".."), so that path is
    written absolute; one that leads to the same file relatively (inside the link) stays
    relative. The file read back names the files given; one written with the names alone
    ("../lists/s.csv") is another dataset: refused without --overwrite, not kept."""
    monkeypatch.chdir(tmp_path)
    here = Path.cwd()
    (here / "deep" / "inner" / "run" / "points").mkdir(parents=True)
    (here / "lists").mkdir()
    (here / "lists" / "s.csv").write_text("a,training\n")
    (here / "scans").mkdir()
    Path("meta").symlink_to(here / "deep" / "inner" / "run", target_is_directory=True)
    values = {"split": "lists/s.csv", "images": "scans", "image_postfix": "T1", "annotations": "meta/points"}
    path = Path("meta/dataset.json")
    assert write_dataset(path, values) is True
    assert json.loads(path.read_text()) == {"split": str(here / "lists" / "s.csv"), "images": str(here / "scans"),
                                            "image_postfix": "T1", "annotations": "points",
                                            "annotation_postfix": "7points"}
    written = read_dataset(path)
    for key, value in values.items():
        if key != "image_postfix":
            assert os.path.samefile(written.get(key), value)
    assert write_dataset(path, values) is False     # the same files: kept
    lexical = {"split": "../lists/s.csv", "images": "../scans", "image_postfix": "T1", "annotations": "points"}
    path.write_text(json.dumps(lexical))
    assert not os.path.exists(read_dataset(path).get("split"))
    with pytest.raises(FileExistsError):
        write_dataset(path, values)
    assert write_dataset(path, values, overwrite=True) is True
    assert os.path.samefile(read_dataset(path).get("split"), "lists/s.csv")


def test_a_dataset_file_with_a_byte_order_mark_is_read(tmp_path):
    """Windows Notepad saves UTF-8 with a byte-order mark, as the point files may have one."""
    path = tmp_path / "dataset.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"images": "scans", "image_postfix": "T1"}).encode())
    assert dict(read_dataset(path).values) == {"images": str(tmp_path / "scans"), "image_postfix": "T1",
                                               "annotation_postfix": "7points", "label_postfix": "Label",
                                               "seed_postfix": "GeodesicLabel"}


def test_one_file_under_two_names_is_refused_as_two_outputs(tmp_path):
    """same_file: a symlinked folder, "..", a hard link, a file not written yet; check_distinct
    names the two flags and the paths, and skips files not given."""
    (tmp_path / "a").mkdir()
    (tmp_path / "l").symlink_to(tmp_path / "a", target_is_directory=True)
    real = tmp_path / "a" / "f.json"
    real.write_text("{}")
    os.link(real, tmp_path / "hard.json")
    assert same_file(real, tmp_path / "l" / "f.json") and same_file(real, tmp_path / "hard.json")
    assert same_file(tmp_path / "a" / "new.csv", tmp_path / "l" / ".." / "a" / "new.csv")
    assert not same_file(tmp_path / "a" / "new.csv", tmp_path / "a" / "f.json")
    check_distinct([("--x (one)", real), ("--y (two)", None), ("--z (three)", tmp_path / "a" / "new.csv")])
    with pytest.raises(ValueError) as err:
        check_distinct([("--x (one)", real), ("--y (two)", None), ("--z (three)", tmp_path / "hard.json")],
                       "choose another --z")
    assert one_line(err) == (f"--x (one) and --z (three) are one file ({real} and {tmp_path / 'hard.json'}): one "
                             "would replace the other; choose another --z")


def test_make_split_writes_the_dataset_file_every_script_reads(data, elsewhere):
    """make_split --write_dataset: the split, the images and the folders given, relative to the
    file; then --dataset of that file gives the same split again (images from the file)."""
    root = data["root"]
    make_split = load_script("splits/make_split.py")
    make_split.main(["--images_dir", str(root / "scans"), "--image_postfix", "T1", "--output", "split.csv",
                     "--ratios", "1", "0", "0", "--path_anno_7points", str(root / "points"), "--modality", "MR",
                     "--write_dataset", "my/dataset.json"])
    assert json.loads(Path("my/dataset.json").read_text()) == {
        "split": "../split.csv", "images": str(root / "scans"), "image_postfix": "T1",
        "annotations": str(root / "points"), "annotation_postfix": "7points", "modality": "MR"}
    split = make_split.main(["--dataset", "my/dataset.json", "--output", "again.csv", "--ratios", "1", "0", "0"])
    assert sorted(split["subject"]) == sorted(SUBJECTS)
    with pytest.raises(ValueError) as err:
        make_split.main(["--dataset", "my/dataset.json", "--output", "x.csv", "--path_labels", "l"])
    assert one_line(err) == "--path_labels is recorded in a dataset file only: add --write_dataset FILE, or drop it"
    assert not Path("x.csv").exists()


# ------------------------------------------------------------------------------ plan.py
def test_plan_reads_the_file_and_prints_commands_that_read_it(data, elsewhere, capsys, monkeypatch):
    """Given the file (points only: no labels, no seeds), plan.py writes dataset.json beside the
    plan with the seeds stage 0 will write, prints commands that read it, and the first two of
    them run as printed; given a file that names all it planned for, the commands read that one."""
    points_only = _dataset(data["meta"] / "points_only.json", labels=None, label_postfix=None, seeds=None)
    work = elsewhere / "work"
    plan = load_script("plan.py").main(["--dataset", str(points_only), "--work_dir", str(work), "--output",
                                        str(work / "plan.json"), "--target_steps", "2", "--min_epochs", "1"])
    commands = {name: shlex.split(line) for name, line in plan["commands"].items()}
    assert list(commands) == ["stage0", "stage1", "stage1_aux", "scm", "predict"]    # every case annotated
    assert commands["stage1"] == ["python", "train_gatedcrfloss3d22d_multiview_varianceloss.py", "--plan",
                                  str(work / "plan.json"), "--dataset", str(work / "dataset.json"), "--val_metric",
                                  "seed_dice", "--model_dir", str(Workspace(work).model("stage1_m1"))]
    assert f"written {work / 'dataset.json'} (the dataset file the commands read)" in capsys.readouterr().out
    written = read_dataset(work / "dataset.json")
    assert os.path.samefile(written.get("images"), data["root"] / "scans") and written.get("labels") is None
    assert written.get("seeds") == str(work / "geodesic" / "weight0.5_threshold0.2" / "geodesic_label")
    # as printed, from the repository's root: stage 0 as a shell runs it, stage 1 in this process
    run_printed_sequence({name: commands[name] for name in ("stage0", "stage1")}, monkeypatch, capsys)
    assert (Workspace(work).model("stage1_m1") / "U_Net2D5" / "models" / "CP_best.pth").is_file()
    again = load_script("plan.py").main(["--dataset", str(data["file"]), "--output", "p.json",
                                         "--min_cases_for_validation", "0"])
    assert f"--dataset {data['file']}" in again["commands"]["stage1"] and "stage0" not in again["commands"]
    assert again["fingerprint"]["training_cases"] == 2 and not Path("dataset.json").exists()


# ------------------------------------------------------------------------------ every script
def run_plan(data, out: Path) -> None:
    plan = load_script("plan.py").main(["--dataset", str(data["file"]), "--output", str(out / "plan.json"),
                                        "--min_cases_for_validation", "0"])
    assert plan["fingerprint"]["training_cases"] == 2 and plan["fingerprint"]["validation_cases"] == 1


def _stage0(script: str) -> Callable:
    def run(data, out: Path) -> None:
        folder = load_script(script).main(["--dataset", str(data["file"]), "--path_geodesic", str(out),
                                           "--num_workers", "1", "--phase", "training"])
        assert sorted(p.name for p in (folder / "geodesic_label").iterdir()) == [
            "brain1_GeodesicLabel.nii.gz", "brain2_GeodesicLabel.nii.gz"]
        table = pd.read_csv(folder / "results_training.csv")
        assert len(table) == 4      # both scored against the file's labels (masks/*_Seg), mean, std
    return run


def _run_args(run: Path, network: str = "U_Net2D5", epoch: str = "best") -> dict:
    return run_args(run, network, epoch)


def run_stage1(data, out: Path) -> None:
    stage1 = load_script("train_gatedcrfloss3d22d_multiview_varianceloss.py")
    run = stage1.main(["--dataset", str(data["file"]), "--model_dir", str(out), *SHAPE, "--down_size", "16", "16",
                       "16", "--max_epochs", "1", "--device", "cpu"])
    assert (run / "models" / "CP_best.pth").is_file()
    recorded = _run_args(out)
    assert (recorded["path_images"], recorded["image_postfix"], recorded["path_labels"],
            recorded["path_geodesic_labels"]) == (str(data["meta"] / "../scans"), "T1",
                                                  str(data["meta"] / "../masks"), str(data["meta"] / "../seeds"))


def run_scm(data, out: Path) -> None:
    scm = load_script("train_SCM.py")
    pre = pretrained(out / "pre")
    argv = ["--dataset", str(data["file"]), "--pretrained_model1_dir", str(pre[0]), "--network1", "U_Net2D5",
            "--pretrained_model2_dir", str(pre[1]), "--network2", "U_Net2D5", *SHAPE, "--max_epochs", "1",
            "--iterative_epochs", "1", "--device", "cpu"]
    with pytest.raises(ValueError) as err:
        scm.main(argv)
    assert one_line(err) == (f"--dataset {data['file']}: --model_dir has no default with --dataset (its default is "
                             "for the paper's VS data): pass it")
    scm.main([*argv, "--model_dir", str(out / "scm")])
    assert _run_args(out / "scm", epoch="best_model1")["dataset_split"] == str(data["meta"] / "../lists/split.csv")


def run_inference(data, out: Path) -> None:
    """Split mode: the file's inference case; folder mode: the images of the file's postfix."""
    a_model(out / "model")
    inference = load_script("inference.py")
    written = inference.main(["--dataset", str(data["file"]), "--model_dir", str(out / "model"), *SHAPE,
                              "--device", "cpu"])
    assert [p.name for p in written] == ["brain4_T1_seg.nii.gz"]
    folder = inference.main(["--dataset", str(data["file"]), "--model_dir", str(out / "model"), "--input_folder",
                             str(data["root"] / "scans"), "--output_folder", str(out / "folder"), *SHAPE, "--device",
                             "cpu"])
    assert sorted(p.name for p in folder) == [f"brain{i}_T1.nii.gz" for i in range(1, 5)]   # not other_T2


def run_scores(data, out: Path) -> None:
    """A folder of predictions (the labels themselves) against the file's labels, no split."""
    out.mkdir(parents=True)
    for subject in SUBJECTS:
        sitk.WriteImage(sitk.ReadImage(str(data["root"] / "masks" / f"{subject}_Seg.nii.gz")),
                        str(out / f"{subject}_T1.nii.gz"))
    load_script("utilities/scores.py").main(["--dataset", str(data["file"]), "--path_predictions", str(out)])
    table = pd.read_csv(out / "results_all.csv", keep_default_na=False)
    cases = table[table["row"] == "case"]
    assert sorted(cases["subject"]) == sorted(SUBJECTS) and set(cases["dice"].astype(float)) == {1.0}


def run_points_to_annotation(data, out: Path) -> None:
    """Voxel points of brain1 onto the file's image, into the file's annotation folder."""
    file = _dataset(data["meta"] / "p2a.json", annotations=os.path.relpath(out / "anno", data["meta"]))
    source = sitk.GetArrayFromImage(sitk.ReadImage(str(data["root"] / "points" / "brain1_7points.nii.gz")))
    rows = [("fg" if source[tuple(zyx)] == 2 else f"bg-{k}", zyx[::-1]) for k, zyx in enumerate(np.argwhere(source))]
    out.mkdir(parents=True)
    (out / "brain1.csv").write_text("label,x,y,z\n" + "".join(f"{lab},{x},{y},{z}\n" for lab, (x, y, z) in rows))
    written = load_script("data/points_to_annotation.py").main(["--dataset", str(file), "--points",
                                                                  str(out / "brain1.csv"), "--csv_space", "voxel"])
    assert written == [Path(read_dataset(file).get("annotations")) / "brain1_7points.nii.gz"]
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(written[0]))), source)


def run_export_nnunet(data, out: Path) -> None:
    root = load_script("data/export_nnunet.py").main(["--dataset", str(data["file"]), "--output_dir", str(out)])
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == [f"brain{i}.nii.gz" for i in (1, 2, 3)]
    assert json.loads((root / "dataset.json").read_text())["channel_names"] == {"0": "MR"}   # the file's modality


def run_export_model(data, out: Path) -> None:
    """The model card's fingerprint reads the file's split (one training case), not the run's."""
    run_stage1(data, out / "run")
    one = data["root"] / "lists" / "one.csv"
    one.write_text("brain1,training\n")
    file = _dataset(data["meta"] / "one.json", split="../lists/one.csv")
    manifest = load_script("export_model.py").main(["--model_dir", str(out / "run"), "--output",
                                                    str(out / "model.zip"), "--dataset", str(file)])
    assert manifest["card"]["training_data"]["cases_read"] == 1


def run_make_split(data, out: Path) -> None:
    split = load_script("splits/make_split.py").main(["--dataset", str(data["file"]), "--output",
                                                      str(out / "split.csv")])
    assert sorted(split["subject"]) == sorted(SUBJECTS)     # *_T1 of the file's images, not other_T2


def run_simulate_7points(data, out: Path) -> None:
    file = _dataset(data["meta"] / "simulate.json", annotations=str(out))
    load_script("data/simulate_7points.py").main(["--dataset", str(file), "--phase", "training"])
    assert sorted(p.name for p in out.iterdir()) == ["brain1_7points.nii.gz", "brain2_7points.nii.gz"]


def run_nnunet_baseline(data, out: Path) -> None:
    """The flags its export reads (running it needs nnU-Net: tests/experiments/test_nnunet_baseline.py)."""
    module = load_script("experiments/nnunet_baseline.py")
    args = module.parse_data_arguments(module.build_parser(), ["--dataset", str(data["file"])])
    assert (args.dataset_split, args.path_images, args.image_postfix, args.path_geodesic_labels) == (
        str(data["meta"] / "../lists/split.csv"), str(data["meta"] / "../scans"), "T1",
        str(data["meta"] / "../seeds"))


def run_crf_strength(data, out: Path) -> None:
    rows = load_script("experiments/crf_strength.py").main([
        "--dataset", str(data["file"]), "--patch", "32", "32", "16", "--down_size", "16", "16", "16",
        "--kernel_radius", "2", "--crf_sigma_xy", "3", "--cases", "1"])
    assert [r[:2] for r in rows] == [(next(iter(SUBJECTS)), 0)]


#: Every script that takes data paths, run with --dataset on the data of :func:`data`.
RUNS: dict[str, Callable] = {
    "plan.py": run_plan,
    "data/VS/generate_geodesic_labels.py": _stage0("data/VS/generate_geodesic_labels.py"),
    "data/BraTS/generate_geodesic_labels.py": _stage0("data/BraTS/generate_geodesic_labels.py"),
    "data/generate_geodesic_labels.py": _stage0("data/generate_geodesic_labels.py"),
    "train_gatedcrfloss3d22d_multiview_varianceloss.py": run_stage1,
    "train_SCM.py": run_scm,
    "inference.py": run_inference,
    "utilities/scores.py": run_scores,
    "data/points_to_annotation.py": run_points_to_annotation,
    "data/export_nnunet.py": run_export_nnunet,
    "export_model.py": run_export_model,
    "splits/make_split.py": run_make_split,
    "data/simulate_7points.py": run_simulate_7points,
    "experiments/nnunet_baseline.py": run_nnunet_baseline,
    "experiments/crf_strength.py": run_crf_strength,
}
#: Scripts with a data-path flag that take no dataset file, and why.
EXEMPT = {"data/VS/image_crop.py": "crops the VS download's image/ and label/ folders: it makes the data a dataset "
                                   "file names, under --data_dir"}
#: A flag in a script's --help that names a data path.
DATA_FLAG = re.compile(r"--(dataset_split|path_images|images_dir|path_labels|path_anno_7points|"
                       r"path_geodesic_labels)\b")


def _help(script: str, capsys) -> str:
    with pytest.raises(SystemExit):
        load_script(script).main(["--help"])
    return capsys.readouterr().out


def test_every_script_with_data_paths_accepts_the_dataset_file(capsys):
    """Found by their flags: every script whose --help names a data path is run below (or exempt,
    with the reason); each of them, and export_model.py (the training data of its model card),
    lists --dataset."""
    scripts = [p.relative_to(ROOT).as_posix() for p in project_sources()
               if re.search(r"^if __name__ == .__main__.:", p.read_text(encoding="utf-8"), re.M)
               and not p.relative_to(ROOT).as_posix().startswith("tests/")]
    helps = {script: _help(script, capsys) for script in scripts}
    with_paths = {script for script, text in helps.items() if DATA_FLAG.search(text)}
    assert with_paths - set(EXEMPT) == set(RUNS) - {"export_model.py"}
    assert [s for s in RUNS if "--dataset FILE" not in helps[s]] == []


@pytest.mark.parametrize("script", sorted(RUNS))
def test_script_takes_its_paths_from_the_dataset_file(data, elsewhere, script):
    """Run from an empty folder, so no default path exists there: every path comes from the file
    (relative to its folder)."""
    RUNS[script](data, elsewhere / "out")

