"""Nothing is replaced without being asked, nothing skipped without a word (issues 22 and 30):
every writer of a user's files refuses an existing output without --overwrite (one check, one
message) and replaces it with it; every file of an input folder is processed or named in an error;
contradictory flags are refused in one line."""
from __future__ import annotations

import json
import shutil

import pytest
import SimpleITK as sitk
from helpers import a_model, load_script, one_line, scm_args, stage1_args
from synth import make_vs_dataset

import inference
import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
import train_SCM as scm
from experiments.ablation.commands import inference_commands
from experiments.ablation.execution import call_in_process
from utilities.data.io import read_image
from utilities.workflow.cli import run_main

make_split = load_script("splits/make_split.py")
P2A = load_script("data/points_to_annotation.py")
EXPORT = load_script("data/export_nnunet.py")
SIMULATE = load_script("data/simulate_7points.py")
CONVERT = load_script("convert_checkpoint.py")
DEMO = load_script("data/demo/make_demo_data.py")
FAMILY = load_script("data/family/make_family_data.py")


def test_make_split_needs_overwrite(tmp_path):
    images = tmp_path / "image"
    images.mkdir()
    for name in ("a", "b", "c"):
        (images / f"{name}_Flair.mha").write_bytes(b"")  # any image format names a subject
    out = tmp_path / "split.csv"
    out.write_text("mine,training\n")
    with pytest.raises(FileExistsError) as err:
        make_split.main(["--images_dir", str(images), "--output", str(out), "--ratios", "0.4", "0.3", "0.3"])
    assert one_line(err) == f"--output {out} exists; pass --overwrite to replace it, or choose another --output"
    assert out.read_text() == "mine,training\n"
    make_split.main(["--images_dir", str(images), "--output", str(out), "--ratios", "0.4", "0.3", "0.3",
                     "--overwrite"])
    assert sorted(line.split(",")[0] for line in out.read_text().splitlines()) == ["a", "b", "c"]


def test_points_to_annotation_needs_overwrite(tmp_path):
    p = make_vs_dataset(tmp_path, 1, 0, 0)
    points = tmp_path / "vs_gk_1.csv"
    points.write_text("label,x,y,z\nfg,16,16,8\nbg-1,10,16,8\nbg-2,22,16,8\nbg-3,16,10,8\nbg-4,16,22,8\n"
                      "bg-5,16,16,4\nbg-6,16,16,12\n")
    target = p["annotation_7points"] / "vs_gk_1_7points.nii.gz"
    before = target.read_bytes()
    args = ["--points", str(points), "--path_images", str(p["image_crop"]), "--path_anno_7points",
            str(p["annotation_7points"]), "--csv_space", "voxel"]
    with pytest.raises(FileExistsError) as err:
        P2A.main(args)
    assert one_line(err) == (f"1 annotation(s) exist already, e.g. {target}; pass --overwrite to replace them, "
                             "or choose another --path_anno_7points")
    assert target.read_bytes() == before
    assert P2A.main([*args, "--overwrite"]) == [target] and target.read_bytes() != before


def test_nnunet_export_refuses_a_second_dataset_of_the_same_id(tmp_path):
    p = make_vs_dataset(tmp_path, 1, 1, 0)
    other = tmp_path / "raw" / "Dataset007_Other"
    other.mkdir(parents=True)
    args = ["--dataset_split", str(p["split"]), "--path_images", str(p["image_crop"]), "--path_geodesic_labels",
            str(p["geodesic_label"]), "--output_dir", str(tmp_path / "raw"), "--dataset_id", "7",
            "--dataset_name", "VSTiny"]
    with pytest.raises(FileExistsError) as err:
        EXPORT.main(args)
    assert one_line(err) == (f"nnU-Net dataset id 7 is taken by {other} (nnU-Net could not tell it from "
                             "Dataset007_VSTiny); pass --overwrite to replace it, or another --dataset_id")
    assert sorted(x.name for x in (tmp_path / "raw").iterdir()) == ["Dataset007_Other"]
    EXPORT.main([*args, "--overwrite"])
    assert sorted(x.name for x in (tmp_path / "raw").iterdir()) == ["Dataset007_VSTiny"]


# --- issue 30 §4: nothing skipped, nothing replaced, no contradictory flags ---

def _folder_argv(model_dir, images, out, *extra):
    return ["--model_dir", str(model_dir), "--input_folder", str(images), "--output_folder", str(out),
            "--spatial_shape", "32", "32", "16", "--device", "cpu", *extra]


def test_inference_output_folder_needs_overwrite(tmp_path, capsys):
    """The probe of issue 30: --output_folder replaced a same-named file silently. Now nothing
    is computed or written until --overwrite is given; the run's own output_pred is replaced
    with a log line."""
    p = make_vs_dataset(tmp_path, 0, 0, 2)
    model_dir = a_model(tmp_path / "m").parents[2]
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "vs_gk_2_T2_prob.nii.gz"
    mine.write_bytes(b"my own file")
    argv = _folder_argv(model_dir, p["image_crop"], out)
    # the name of vs_gk_2's probability map: an earlier prediction's, which a new mask must not sit beside
    assert run_main(inference.main, argv) == 2
    assert capsys.readouterr().err == (f"error: 1 segmentation file(s) exist already, e.g. {mine}; pass --overwrite "
                                       "to replace them, or choose another --output_folder\n")
    assert mine.read_bytes() == b"my own file"
    assert inference.main([*argv, "--overwrite"]) == [out / "vs_gk_1_T2.nii.gz", out / "vs_gk_2_T2.nii.gz"]
    # no mask or probability map of ours: never removed, and said so
    assert mine.read_bytes() == b"my own file"
    kept = "kept 1 file(s) named as this prediction's masks or probability maps (in some format)"
    assert kept in capsys.readouterr().out
    masks = {f: f.read_bytes() for f in out.glob("*_T2.nii.gz")}
    for extra, count, first in (([], 3, "vs_gk_1_T2.nii.gz"), (["--save_probabilities"], 3, "vs_gk_1_T2.nii.gz")):
        assert run_main(inference.main, [*argv, *extra]) == 2
        assert capsys.readouterr().err == (f"error: {count} segmentation file(s) exist already, e.g. {out / first}; "
                                           "pass --overwrite to replace them, or choose another --output_folder\n")
    assert mine.read_bytes() == b"my own file" and {f: f.read_bytes() for f in out.glob("*_T2.nii.gz")} == masks
    inference.main([*argv, "--save_probabilities", "--overwrite"])
    assert mine.read_bytes() != b"my own file" and read_image(mine).GetPixelID() == sitk.sitkFloat32
    split_argv = ["--model_dir", str(model_dir), "--dataset_split", str(p["split"]), "--path_images",
                  str(p["image_crop"]), "--spatial_shape", "32", "32", "16", "--device", "cpu"]
    assert run_main(inference.main, [*split_argv, "--output_folder", str(out)]) == 2  # split mode, same folder
    assert "4 segmentation file(s) exist already" in capsys.readouterr().err   # the masks and their probabilities
    first = inference.main(split_argv)  # the run's own output_pred: replaced, and said so
    assert inference.main(split_argv) == first
    assert f"replacing 2 existing file(s) of the run's output_pred, e.g. {first[0]}" in capsys.readouterr().out


def test_a_refused_prediction_removes_and_creates_nothing(tmp_path, capsys):
    """An earlier prediction's probability maps are removed only once the new prediction can be
    made: a checkpoint that does not load, or an image that is not whole, leaves them (and an
    output folder that did not exist is not created)."""
    p = make_vs_dataset(tmp_path, 0, 0, 2)
    model = a_model(tmp_path / "m")
    out = tmp_path / "out"
    argv = _folder_argv(model.parents[2], p["image_crop"], out)
    inference.main([*argv, "--save_probabilities"])
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    assert sorted(before) == ["vs_gk_1_T2.nii.gz", "vs_gk_1_T2_prob.nii.gz", "vs_gk_2_T2.nii.gz",
                              "vs_gk_2_T2_prob.nii.gz"]
    model.write_bytes(b"not a checkpoint")
    assert run_main(inference.main, [*argv, "--overwrite"]) == 2
    assert f"error: {model} is not " in capsys.readouterr().err
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    fresh = tmp_path / "new" / "out"
    assert run_main(inference.main, _folder_argv(model.parents[2], p["image_crop"], fresh)) == 2
    capsys.readouterr()
    assert not (tmp_path / "new").exists()
    a_model(tmp_path / "m")
    image = p["image_crop"] / "vs_gk_2_T2.nii.gz"
    image.write_bytes(image.read_bytes()[:200])
    assert run_main(inference.main, [*argv, "--overwrite"]) == 2
    assert str(image) in capsys.readouterr().err
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before


def test_every_file_of_the_input_folder_is_processed_or_named(tmp_path, capsys):
    """A file in no image format (an upper-case extension too) is named in an error, before
    anything is written; hidden files are ignored and counted; a header's data file belongs to
    its image, and so does a JSON sidecar of its name."""
    p = make_vs_dataset(tmp_path, 0, 0, 2)
    images = p["image_crop"]
    (images / "notes.txt").write_text("my notes")
    (images / "scan.NII.GZ").write_bytes((images / "vs_gk_1_T2.nii.gz").read_bytes())
    (images / ".DS_Store").write_bytes(b"\0")
    model_dir = a_model(tmp_path / "m").parents[2]
    assert run_main(inference.main, _folder_argv(model_dir, images, tmp_path / "out")) == 2
    assert capsys.readouterr().err == (
        f"error: --input_folder {images} holds 2 file(s) in no image format: notes.txt; scan.NII.GZ; move them out of "
        "the folder or convert them to one of .nii.gz .nii .nrrd .nhdr .mha .mhd (hidden files, named .*, are "
        "ignored)\n")
    assert not (tmp_path / "out").exists()
    (images / "notes.txt").unlink()
    (images / "scan.NII.GZ").rename(images / "scan.nii.gz")
    sitk.WriteImage(sitk.ReadImage(str(images / "vs_gk_2_T2.nii.gz")), str(images / "head.nhdr"), False)
    (images / "vs_gk_1_T2.json").write_text("{}")   # dcm2niix's sidecar of vs_gk_1_T2.nii.gz: the image's
    (images / "other.json").write_text("{}")        # a JSON file of no image: named
    assert run_main(inference.main, _folder_argv(model_dir, images, tmp_path / "out")) == 2
    assert "holds 1 file(s) in no image format: other.json;" in capsys.readouterr().err
    (images / "other.json").unlink()
    written = inference.main(_folder_argv(model_dir, images, tmp_path / "out"))
    assert [w.name for w in written] == ["head.nii.gz", "scan.nii.gz", "vs_gk_1_T2.nii.gz", "vs_gk_2_T2.nii.gz"]
    printed = capsys.readouterr().out
    assert "--input_folder: 1 hidden file(s) (named .*) ignored" in printed
    assert "--input_folder: 1 JSON sidecar(s) of the images (<name>.json) ignored" in printed
    # with --image_postfix: another modality is left out quietly, the same postfix in another case with a warning
    (images / "vs_gk_1_T1.nii.gz").write_bytes((images / "vs_gk_1_T2.nii.gz").read_bytes())
    (images / "vs_gk_3_t2.nii.gz").write_bytes((images / "vs_gk_1_T2.nii.gz").read_bytes())
    written = inference.main([*_folder_argv(model_dir, images, tmp_path / "out2"), "--image_postfix", "T2"])
    assert [w.name for w in written] == ["vs_gk_1_T2.nii.gz", "vs_gk_2_T2.nii.gz"]
    printed = capsys.readouterr().out
    assert ("WARNING --input_folder: 1 image(s) whose postfix differs from _T2 only in letter case left out "
            "(postfixes are case-sensitive), e.g. vs_gk_3_t2.nii.gz") in printed
    assert "--input_folder: 4 image(s) without the postfix _T2 left out" in printed


def test_a_point_folder_names_files_in_no_point_format(tmp_path):
    p = make_vs_dataset(tmp_path, 1, 0, 0)
    points = tmp_path / "points"
    points.mkdir()
    (points / "vs_gk_1.csv").write_text(POINTS)
    (points / "vs_gk_1.txt").write_text(POINTS)
    (points / ".hidden.csv").write_text("ignored")
    args = ["--points", str(points), "--path_images", str(p["image_crop"]), "--path_anno_7points",
            str(tmp_path / "ann"), "--csv_space", "voxel"]
    with pytest.raises(ValueError) as err:
        P2A.main(args)
    assert one_line(err) == (f"--points {points} holds 1 file(s) in no point format: vs_gk_1.txt; move them out of "
                             "the folder or convert them to one of .mrk.json, .fcsv, .csv (hidden files, named .*, "
                             "are ignored)")
    assert not (tmp_path / "ann").exists()
    (points / "vs_gk_1.txt").unlink()
    assert P2A.main(args) == [tmp_path / "ann" / "vs_gk_1_7points.nii.gz"]


POINTS = ("label,x,y,z\nfg,16,16,8\nbg-1,10,16,8\nbg-2,22,16,8\nbg-3,16,10,8\nbg-4,16,22,8\nbg-5,16,16,4\n"
          "bg-6,16,16,12\n")


def test_more_writers_need_overwrite(tmp_path):
    """simulate_7points, points_to_annotation --to_markups, convert_checkpoint, make_demo_data
    and make_family_data: an existing output is refused (untouched), and replaced with --overwrite."""
    p = make_vs_dataset(tmp_path, 1, 0, 0)
    annotation = p["annotation_7points"] / "vs_gk_1_7points.nii.gz"
    annotation.write_bytes(b"mine")
    markups = tmp_path / "vs_gk_1.mrk.json"
    markups.write_text("mine")
    checkpoint = a_model(tmp_path / "m")
    converted = tmp_path / "pub.pth"
    converted.write_text("mine")
    split = tmp_path / "demo.csv"
    split.write_text("mine")
    family_dir = tmp_path / "family"
    family_dir.mkdir()
    (family_dir / "member.json").write_text("mine")
    cases = [
        (SIMULATE.main, ["--dataset_split", str(p["split"]), "--path_labels", str(p["label_crop"]),
                         "--path_anno_7points", str(p["annotation_7points"])], annotation,
         f"1 annotation(s) exist already, e.g. {annotation}; pass --overwrite to replace them, or choose another "
         "--path_anno_7points"),
        (P2A.main, ["--points", str(markups), "--subject", "vs_gk_1", "--path_anno_7points",
                    str(p["annotation_7points"]), "--to_markups"], markups,
         f"1 markups file(s) exist already, e.g. {markups}; pass --overwrite to replace them, or choose another "
         "--points"),
        (CONVERT.main, ["--input", str(checkpoint), "--output", str(converted), "--network", "U_Net2D5", "--to",
                        "published"], converted,
         f"--output {converted} exists; pass --overwrite to replace it, or choose another --output"),
        (DEMO.main, ["--quick", "--output_dir", str(tmp_path / "demo"), "--split_file", str(split), "--no_report"],
         split, f"--split_file {split} exists; pass --overwrite to replace it, or choose another --split_file"),
        (FAMILY.main, ["--family_seed", "0", "--output_dir", str(family_dir)], family_dir / "member.json",
         f"1 file(s) exist already, e.g. {family_dir / 'member.json'}; pass --overwrite to replace them, or choose "
         "another --output_dir"),
    ]
    for main, argv, target, message in cases:
        before = target.read_bytes()
        with pytest.raises(FileExistsError) as err:
            main(argv)
        assert one_line(err) == message
        assert target.read_bytes() == before
    for main, argv, target, _ in cases[:3]:  # the quick ones, replaced with --overwrite
        before = target.read_bytes()
        main([*argv, "--overwrite"])
        assert target.read_bytes() != before


def _plan(path, stage1_flags):
    from utilities.workflow.plan import PLAN_VERSION, SECTIONS

    path.write_text(json.dumps({"version": PLAN_VERSION, **{s: {} for s in SECTIONS}, "stage1": stage1_flags}))
    return path


def test_contradictory_flags_refused_in_one_line(tmp_path):
    """The probe of issue 30: --on_collapse recover with --stop_on_collapse ran, one of them
    ignored. Both trainers refuse it (also when the plan sets recover), before any folder is made;
    inference --phase with --input_folder and points_to_annotation --csv_space with --to_markups
    are refused too."""
    p = make_vs_dataset(tmp_path, 2, 1, 0)
    both = ("--on_collapse", "recover", "--stop_on_collapse")
    message = ("--stop_on_collapse contradicts --on_collapse recover{}: the first ends the run at a collapse, the "
               "second recovers from it; pass one of them (--on_collapse stop is --stop_on_collapse)")
    plan = _plan(tmp_path / "plan.json", {"--on_collapse": "recover"})
    for main, argv, source in (
            (stage1.main, stage1_args(p, tmp_path / "run", *both), ""),
            (stage1.main, stage1_args(p, tmp_path / "run", "--plan", str(plan), "--stop_on_collapse"),
             f" (set by --plan {plan} unless given)"),
            (scm.main, scm_args(p, [tmp_path / "pre1", tmp_path / "pre2"], tmp_path / "run", *both), "")):
        with pytest.raises(ValueError) as err:
            main(argv)
        assert one_line(err) == message.format(source)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError) as err:
        inference.main(_folder_argv(tmp_path / "m", p["image_crop"], tmp_path / "out", "--phase", "training"))
    assert one_line(err) == "--input_folder excludes --phase (split mode); pass one of them"
    with pytest.raises(ValueError) as err:
        P2A.main(["--points", str(tmp_path / "mk"), "--path_anno_7points", str(p["annotation_7points"]),
                  "--to_markups", "--csv_space", "RAS"])
    assert one_line(err) == ("--csv_space RAS reads CSV point files, but --to_markups writes .mrk.json files (LPS); "
                             "drop one of them")


RUN_DEMO = load_script("data/demo/run_demo.py")


def test_demo_refuses_an_earlier_demo_without_overwrite(tmp_path):
    """run_demo.py: the split, a data folder holding files, a result, the runs or an overlay of an
    earlier demo are refused in one line before the first step (nothing written), each under the
    flag that names its folder; with --overwrite the check passes."""
    out, data, split = tmp_path / "out", tmp_path / "data", tmp_path / "split.csv"
    argv = ["--quick", "--output_dir", str(out), "--data_dir", str(data), "--split_file", str(split)]
    (out / "models").mkdir(parents=True)
    (out / "overlay_c1.png").write_bytes(b"mine")
    with pytest.raises(FileExistsError) as err:
        RUN_DEMO.main(argv)
    assert one_line(err) == (f"2 demo output(s) exist already, e.g. {out / 'models'}; pass --overwrite to replace "
                             "them, or choose another --output_dir")
    (data / "label_crop").mkdir(parents=True)
    (data / "image_crop").mkdir()           # empty data folders hold nothing to replace
    with pytest.raises(FileExistsError, match=r"^2 demo output\(s\) exist already"):
        RUN_DEMO.main(argv)
    (data / "label_crop" / "c1_Label.nii.gz").write_bytes(b"mine")
    with pytest.raises(FileExistsError) as err:
        RUN_DEMO.main(argv)
    assert one_line(err) == (f"1 demo data folder(s) exist already, e.g. {data / 'label_crop'}; pass --overwrite "
                             "to replace them, or choose another --data_dir")
    split.write_text("mine")
    with pytest.raises(FileExistsError) as err:
        RUN_DEMO.main(argv)
    assert one_line(err) == (f"--split_file {split} exists; pass --overwrite to replace it, or choose another "
                             "--split_file")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "data", "data/image_crop", "data/label_crop", "data/label_crop/c1_Label.nii.gz", "out", "out/models",
        "out/overlay_c1.png", "split.csv"]
    RUN_DEMO.check_outputs(out, data, split, overwrite=True)


ABLATE = load_script("experiments/ablate.py")
ENSEMBLE = load_script("experiments/ensemble.py")


@pytest.mark.slow
def test_ensemble_runs_again_into_its_own_folder(tiny_runs, tmp_path):
    """experiments/ensemble.py writes the ensemble's masks into its own folder of the ablation
    (<ablation_dir>/ensemble/<variant>/seed<k>): run again, it replaces them (inference's
    --overwrite) and gives the same table. The ablation: the shared tiny SCM run (``tiny_runs``)
    as the runner lays out and scores a finished SCM run (its own inference and scores commands)."""
    import pandas as pd

    p, root = tiny_runs
    cfg = {"title": "tiny", "dataset": {"split_file": str(p["split"]), "images": str(p["image_crop"]),
                                        "image_postfix": "T2", "labels": str(p["label_crop"]),
                                        "label_postfix": "Label", "annotations": str(p["annotation_7points"]),
                                        "annotation_postfix": "7points"},
           "base": {"stage1": {"--max_epochs": 1, "--spatial_shape": [32, 32, 16]}, "scm": {"--max_epochs": 1}},
           "variants": {"s1": {"kind": "stage1"}, "scm": {"kind": "scm", "from": ["s1", "s1"]},
                        "scm_b": {"kind": "scm", "from": ["s1", "s1"], "flags": {"--T": 2.0}}},
           "seeds": [0], "baseline": "s1"}
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(cfg))
    out = tmp_path / "out"
    loaded = ABLATE.load_config(config)
    runs = {r.variant.name: r for r in ABLATE.plan_runs(loaded, out, (0,), ["scm", "scm_b"], "cpu", "python")
            if r.variant.kind == "scm"}
    for r in runs.values():   # the same finished run as both variants': each scored where the runner scores it
        shutil.copytree(root / "scm", r.folder)
        for command in inference_commands(loaded, r, "cpu", "python"):
            call_in_process(command, r.folder / "ablate_log.txt", 1)
    run = runs["scm"]
    argv = ["--config", str(config), "--ablation_dir", str(out), "--variant", "scm", "--seeds", "0"]
    with pytest.raises(FileNotFoundError, match="run the ablation's scm seed 1 first"):   # before any inference
        ENSEMBLE.main([*argv, "1"])
    assert not (out / "ensemble").exists()
    first = ENSEMBLE.main(argv[:-2])   # the config's seeds (0)
    masks = sorted((out / "ensemble" / "scm" / "seed0").glob("*_T2.nii.gz"))
    assert len(masks) == 2                                  # the two inference cases
    stamps = [m.stat().st_mtime_ns for m in masks]
    second = ENSEMBLE.main(argv)
    assert [m.stat().st_mtime_ns for m in masks] != stamps  # written again, not skipped
    pd.testing.assert_frame_equal(first, second)
    tables = out / "ensemble" / "scm"
    assert pd.read_csv(tables / "ensemble.csv")["method"].tolist() == ["model1", "ensemble"]
    assert "nan" not in (tables / "ensemble.md").read_text()   # one seed: the mean alone, no "± nan"
    ENSEMBLE.main([*argv[:4], "--variant", "scm_b"])   # a second variant keeps the first's tables
    assert "(scm_b, tiny)" in (out / "ensemble" / "scm_b" / "ensemble.md").read_text()
    assert "(scm, tiny)" in (tables / "ensemble.md").read_text() and not (out / "ensemble.md").exists()
    # a finished SCM run restored from a record (experiments/records.py) keeps no checkpoint: named
    from experiments.ablation.markers import signature

    (run.folder / ABLATE.DONE_NAME).write_text(json.dumps({"command": signature(run)}))
    for checkpoint in run.folder.glob("*/models/CP_*.pth"):
        checkpoint.unlink()
    with pytest.raises(FileNotFoundError, match=r"is finished but keeps no CP_best_model1.pth .* seed 0 again"):
        ENSEMBLE.main(argv)
