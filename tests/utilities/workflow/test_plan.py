"""plan.py and --plan: the fingerprint of hand-made cases (any image format, measured in the
trainers' RAS frame), the flags its rules give, the commands it prints, and the trainers reading
a plan (command-line flags win, a switch it sets is turned off by its --no_ form)."""
from __future__ import annotations

import json
import math
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torchio as tio
from helpers import load_script

import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
import train_SCM as scm
from utilities.data.dataset_file import read_dataset
from utilities.data.grid import Grid
from utilities.data.loading import canonical_axes, in_trainer_frame, preprocess_transform
from utilities.method.defaults import RECIPE
from utilities.workflow.cli import run_main
from utilities.workflow.plan import (
    Choice,
    Fingerprint,
    PlanRules,
    Workspace,
    apply_plan,
    fingerprint,
    flags_of,
    lesion_boxes,
    make_plan,
    read_plan,
    reasons_of,
    scored_phase,
)

plan_script = load_script("plan.py")
#: The fixture's split holds 2 training and 1 validation case: with the default rule (fewer than 5
#: training + validation cases: every case trains) the validation case would be read too.
KEEP_VALIDATION = PlanRules(min_cases_for_validation=0)
KEEP = ["--min_cases_for_validation", "0"]


def _write(array: np.ndarray, path, spacing=(2.0, 2.0, 4.0), zyx_on_disk: bool = False) -> None:
    """Write a (z, y, x) array with an identity direction; ``zyx_on_disk``: the same voxels at the
    same places in the world, stored with the file's x and z axes swapped (as a sagittal scan
    stored slice by slice is), i.e. a transposed array, swapped spacing and direction columns."""
    if zyx_on_disk:
        array = np.ascontiguousarray(np.transpose(array, (2, 1, 0)))
        spacing = spacing[::-1]
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    if zyx_on_disk:
        image.SetDirection((0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0))
    sitk.WriteImage(image, str(path))


def _box_points(anno: np.ndarray, lo, hi, bg: int, fg: int) -> None:
    """Six background points just outside the box lo..hi (inclusive, (z, y, x)) and one inside."""
    centre = [(a + b) // 2 for a, b in zip(lo, hi)]
    for axis in range(3):
        for value in (lo[axis] - 1, hi[axis] + 1):
            point = list(centre)
            point[axis] = value
            anno[tuple(point)] = bg
    anno[tuple(centre)] = fg


def _make_dataset(root, ext: str = ".nii.gz", zyx_on_disk: bool = False):
    """Two training cases of 80x64x16 voxels (x, y, z); lesions spanning (x, y, z) 20x10x4,
    30x20x6 (case 1) and 12x12x2 (case 2, second lesion); one validation case (no files)."""
    shape = (16, 64, 80)  # z, y, x
    boxes = {"c1": [((2, 10, 10), (5, 19, 29))], "c2": [((4, 20, 30), (9, 39, 59)), ((10, 45, 5), (11, 56, 16))]}
    for name in ("images", "anno", "seeds"):
        (root / name).mkdir(parents=True)
    for subject, lesions in boxes.items():
        image = np.zeros(shape, np.float32)
        image[1:15, 4:60, 4:76] = 1.0 + np.arange(14)[:, None, None] / 10
        anno = np.zeros(shape, np.uint8)
        seeds = np.zeros(shape, np.uint8)
        for k, (lo, hi) in enumerate(lesions):
            _box_points(anno, lo, hi, 2 * k + 1, 2 * k + 2)
            seeds[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = 2
            seeds[tuple((a + b) // 2 for a, b in zip(lo, hi))] = 1
        _write(image, root / "images" / f"{subject}_T2{ext}", zyx_on_disk=zyx_on_disk)
        _write(anno, root / "anno" / f"{subject}_7points{ext}", zyx_on_disk=zyx_on_disk)
        _write(seeds, root / "seeds" / f"{subject}_GeodesicLabel{ext}", zyx_on_disk=zyx_on_disk)
    (root / "split.csv").write_text("c1,training\nc2,training\nv1,validation\n")
    return root


@pytest.fixture
def dataset(tmp_path):
    return _make_dataset(tmp_path)


def _fingerprint(root, rules=KEEP_VALIDATION, seeds=True):
    return fingerprint(root / "split.csv", root / "images", "T2", root / "anno", "7points",
                       root / "seeds" if seeds else None, "GeodesicLabel", rules=rules)


def test_lesion_boxes_are_the_voxels_between_the_extreme_points():
    anno = np.zeros((10, 20, 30), np.uint8)
    _box_points(anno, (2, 3, 4), (5, 9, 20), 1, 2)
    _box_points(anno, (6, 12, 22), (7, 14, 24), 3, 4)
    assert [b.tolist() for b in lesion_boxes(anno)] == [[4, 7, 17], [2, 3, 3]]


def test_fingerprint_of_hand_made_cases(dataset):
    fp = _fingerprint(dataset)
    assert fp.training_cases == 2 and fp.lesions == 3 and fp.lesions_per_case == 1.5
    assert fp.validation_cases == 1 and fp.image_format == ".nii.gz"
    assert fp.spacing_mm == (2.0, 2.0, 4.0) and fp.volume_size == (80, 64, 16)
    boxes = np.array([[20, 10, 4], [30, 20, 6], [12, 12, 2]], float)   # (x, y, z)
    assert fp.box_p50 == tuple(np.percentile(boxes, 50, axis=0))
    assert fp.box_p90 == pytest.approx(tuple(np.percentile(boxes, 90, axis=0)))
    voxels = math.pi / 6 * boxes.prod(axis=1)
    assert fp.lesion_voxels_p25 == pytest.approx(np.percentile(voxels, 25), abs=0.05)
    # intensities over the non-zero voxels: 1.0 .. 2.3 in 14 equal slabs
    assert fp.intensity["mean"] == pytest.approx(1.65, abs=1e-5)
    assert fp.seed_fg_share == pytest.approx(3 / (2 * 16 * 64 * 80), abs=1e-6)
    annotated = 2 * 16 * 64 * 80 - (20 * 10 * 4 + 30 * 20 * 6 + 12 * 12 * 2) + 3
    assert fp.seed_fg_of_annotated == pytest.approx(3 / annotated, abs=1e-6)
    # one core voxel per box: c1 1 of 4x10x20 = 800, c2 2 of 6x20x30 + 2x12x12 = 3888; the median of two
    assert fp.seed_core_of_boxes == pytest.approx((1 / 800 + 2 / 3888) / 2, abs=1e-6)
    assert _fingerprint(dataset, seeds=False).seed_core_of_boxes is None


def test_plan_rules(dataset):
    fp = _fingerprint(dataset, seeds=False)
    plan = make_plan(fp, PlanRules(target_steps=100, min_epochs=10))
    s1 = plan["stage1"]
    assert s1["--spatial_shape"] == [80, 64, 16]          # the whole volume fits the default budget
    # 25th-percentile lesion: pi/6 * (150.8 + 0.5 * (418.9 - 150.8)) = 285 voxels, 71 on a halved grid < 100
    assert s1["--down_size"] == [80, 64, 16]
    # in-plane span of the 25th-percentile box: min(16, 11) = 11 voxels: the paper's window fits
    assert s1["--kernel_radius"] == [5, 5, -1] and s1["--crf_sigma_xy"] == 6.0
    assert s1["--max_epochs"] == 50 and s1["--rampup_epochs"] == 12 and s1["--warmup_epochs"] == 5
    assert s1["--on_collapse"] == "recover" and "--on_collapse" in plan["why"]
    assert plan["why"]["--spatial_shape"] == ("the whole volume [80, 64, 16], as [80, 64, 16] (81920 voxels), fits "
                                              "--max_patch_voxels 786432") and plan["warnings"] == []
    assert "--train_on_all_cases" not in s1   # one validation case is kept (rule off in this test)
    # the median case's lesions: 1.5 x pi/6 * 800 = 628.3 voxels, 0.767 % of the 81920-voxel patch >= 0.1 %
    assert s1["--seg_dice"] == "foreground" and "--seg_class_balance" not in s1 and s1["--rampup_unit"] == "step"
    assert plan["why"]["--seg_dice"] == ("the median case's lesions cover 0.767% of a patch (>= 0.10%): nnU-Net's "
                                         "Dice+CE, which starts empty and then grows")
    tiny = make_plan(fp, PlanRules(target_steps=100, min_epochs=10, min_fg_dice_lesion_share=0.01))
    assert tiny["stage1"]["--seg_class_balance"] is True and "--seg_dice" not in tiny["stage1"]
    assert tiny["why"]["--seg_class_balance"] == ("the median case's lesions cover 0.767% of a patch (< 1.00%), "
                                                  "where nnU-Net's Dice+CE did not start: the paper's Dice, the CE "
                                                  "class-balanced")
    assert (s1["--momentum"], s1["--grad_clip"]) == (0.9, 12.0)
    assert plan["scm"]["--max_epochs"] == 25 and plan["scm"]["--iterative_epochs"] == 5
    # a budget under the volume: the axis with the most room over twice the lesion box gives way
    small = make_plan(fp, PlanRules(max_patch_voxels=64 * 48 * 16))
    assert small["stage1"]["--spatial_shape"] == [64, 48, 16] and small["warnings"] == []
    assert small["why"]["--spatial_shape"].startswith("49152 voxels within --max_patch_voxels 49152 (the volume "
                                                      "[80, 64, 16] would be 81920)")
    # a looser mCRF rule (50 voxels) halves the grid in plane; the lesion then spans 5.5 grid voxels
    halved = make_plan(fp, PlanRules(min_crf_voxels=50))["stage1"]
    assert halved["--down_size"] == [40, 32, 16]
    assert halved["--kernel_radius"] == [2, 2, -1] and halved["--crf_sigma_xy"] == 3.0


def test_the_plan_is_made_of_choice_records():
    """A section and its ``why`` come from one list of records: flags in order, a reason only
    where the rule gives one; the recipe's flags are RECIPE's in stage 1 and SCM."""
    choices = [Choice("--a", 1, "because"), Choice("--b", [2, 3]), Choice("--c", True, "always")]
    assert flags_of(choices) == {"--a": 1, "--b": [2, 3], "--c": True}
    assert reasons_of(choices) == {"--a": "because", "--c": "always"}
    fp = Fingerprint(training_cases=3, spacing_mm=(0.5, 0.5, 1.5), volume_size=(32, 32, 16), intensity={},
                     lesions=3, lesions_per_case=1.0, box_p25=(12.0, 12.0, 6.0), box_p50=(12.0, 12.0, 6.0),
                     box_p90=(12.0, 12.0, 6.0), lesion_voxels_p25=452.4, lesion_voxels_p50=452.4,
                     lesion_mm_p50=(6.0, 6.0, 9.0), seed_fg_share=None, seed_fg_of_annotated=None)
    plan = make_plan(fp)
    assert list(plan["why"]) == [flag for flag in plan["stage1"] if flag in plan["why"]]
    for section in ("stage1", "scm"):
        assert {f: plan[section][f] for f in RECIPE.flags()} == RECIPE.flags()


def test_plan_script_writes_the_plan_and_refuses_to_replace_it(dataset, capsys):
    out = dataset / "plan.json"
    args = ["--dataset_split", str(dataset / "split.csv"), "--path_images", str(dataset / "images"),
            "--path_anno_7points", str(dataset / "anno"), "--output", str(out), "--target_steps", "100", *KEEP,
            "--path_geodesic_labels", str(dataset / "seeds")]
    plan = plan_script.main(args)
    assert json.loads(out.read_text())["stage1"] == plan["stage1"] == read_plan(out)["stage1"]
    printed = capsys.readouterr().out
    assert "--spatial_shape 80 64 16" in printed and f"--plan {out}" in plan["commands"]["stage1"]
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        plan_script.main(args)
    plan_script.main([*args, "--overwrite", "--target_steps", "400"])
    assert read_plan(out)["stage1"]["--max_epochs"] == 200
    assert read_plan(out)["stage1"]["--seg_dice"] == "foreground"
    plan_script.main([*args, "--overwrite", "--min_fg_dice_lesion_share", "0.5"])   # the lesions cover < 50 %
    assert read_plan(out)["stage1"]["--seg_class_balance"] is True and "--seg_dice" not in read_plan(out)["stage1"]
    assert read_plan(out)["rules"]["min_fg_dice_lesion_share"] == 0.5
    capsys.readouterr()
    plan_script.main([*args, "--overwrite", "--label_postfix", "Seg"])   # no --path_labels: nothing reads it
    assert "--label_postfix Seg has no effect without --path_labels: no full label is read" in capsys.readouterr().out


def test_trainers_read_the_plan_and_the_command_line_wins(dataset):
    path = dataset / "plan.json"
    plan = make_plan(_fingerprint(dataset, seeds=False))
    path.write_text(json.dumps(plan))
    args = apply_plan(stage1.build_parser(), ["--plan", str(path)], "stage1")
    assert args.spatial_shape == [80, 64, 16] and args.down_size == [80, 64, 16]
    assert args.seg_dice == "foreground" and not args.seg_class_balance
    assert (args.momentum, args.grad_clip, args.rampup_unit, args.plan) == (0.9, 12.0, "step", str(path))
    args = apply_plan(stage1.build_parser(), ["--plan", str(path), "--momentum", "0.99", "--spatial_shape", "32",
                                              "32", "16"], "stage1")
    assert args.momentum == 0.99 and args.spatial_shape == [32, 32, 16] and args.down_size == [80, 64, 16]
    s = apply_plan(scm.build_parser(), ["--plan", str(path)], "scm")
    assert s.max_epochs == plan["scm"]["--max_epochs"] and s.spatial_shape == [80, 64, 16]
    assert apply_plan(stage1.build_parser(), [], "stage1").momentum == 0.99   # no plan: the paper's defaults


@pytest.mark.parametrize("change, message", [
    (lambda p: p["stage1"].update({"--no_such_flag": 1}), "--no_such_flag in its 'stage1' section is not a flag"),
    (lambda p: p["stage1"].update({"--spatial_shape": [64, 64]}), "--spatial_shape takes 3 values"),
    (lambda p: p["stage1"].update({"--rampup_unit": "hour"}), "--rampup_unit must be one of"),
    (lambda p: p["stage1"].update({"--seg_class_balance": "yes"}), "is a switch"),
    (lambda p: p["stage1"].update({"--max_epochs": -3}), "--max_epochs -3"),
    (lambda p: p["stage1"].update({"--grad_clip": None}), "--grad_clip is null; give it a value, or remove the key"),
    (lambda p: p.update({"version": 99}), "is not a plan of version 1"),
    (lambda p: p.pop("scm"), "has no 'scm' section"),
])
def test_a_bad_plan_is_one_line_naming_it(dataset, change, message):
    plan = make_plan(_fingerprint(dataset, seeds=False))
    change(plan)
    path = dataset / "bad.json"
    path.write_text(json.dumps(plan))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        apply_plan(stage1.build_parser(), ["--plan", str(path)], "stage1")
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="--plan file not found"):
        apply_plan(stage1.build_parser(), ["--plan", str(dataset / "none.json")], "stage1")


def test_an_error_naming_a_flag_the_plan_set_says_so(dataset, data, tmp_path, capsys):
    """A hand-edited plan whose patch does not fit the network: the error names --spatial_shape,
    which the user did not type, and says that the plan set it; typed, the note is gone."""
    from helpers import SHAPE, stage1_args

    from utilities.workflow.cli import run_main

    plan = make_plan(_fingerprint(dataset, seeds=False))
    plan["stage1"]["--spatial_shape"] = [16, 16, 16]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    argv = stage1_args(data, tmp_path / "run", "--plan", str(path))
    at = argv.index(SHAPE[0])
    del argv[at:at + len(SHAPE)]
    assert run_main(stage1.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --spatial_shape [16, 16, 16] does not fit U_Net2D5: ")
    assert err.endswith(f" (--spatial_shape: from --plan {path}, not typed; a flag given on the command line "
                        "overrides it)\n")
    assert run_main(stage1.main, [*argv, "--spatial_shape", "16", "16", "16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --spatial_shape [16, 16, 16] does not fit U_Net2D5: ") and "--plan" not in err


# ------------------------------------------------------------------ one frame, every format


def test_canonical_axes_are_the_trainers_reorientation(tmp_path):
    """The trainers' preprocessing turns a volume stored (z, y, x) into the shape the plan
    measures for it: the file's size in the order of :func:`canonical_axes`."""
    array = np.arange(16 * 64 * 80, dtype=np.float32).reshape(16, 64, 80)
    _write(array, tmp_path / "ras.nii.gz")
    _write(array, tmp_path / "zyx.nrrd", zyx_on_disk=True)
    shapes = []
    for name in ("ras.nii.gz", "zyx.nrrd"):
        grid = Grid.read(tmp_path / name)
        subject = preprocess_transform()(tio.Subject(image=tio.ScalarImage(tmp_path / name)))
        assert tuple(subject["image"].shape[1:]) == in_trainer_frame(grid.size, grid.affine())
        shapes.append(tuple(subject["image"].shape[1:]))
    assert shapes == [(80, 64, 16), (80, 64, 16)]
    assert canonical_axes(Grid.read(tmp_path / "zyx.nrrd").affine()) == (2, 1, 0)


@pytest.mark.parametrize("ext, zyx_on_disk", [(".nrrd", False), (".mha", False), (".nii", False),
                                              (".nii.gz", True), (".nrrd", True)])
def test_every_format_and_axis_order_plans_as_the_ras_nifti(tmp_path, ext, zyx_on_disk):
    """The same scans in another format, or stored (z, y, x) like a sagittal acquisition, give the
    same fingerprint (sizes, spacing, lesion boxes in the trainers' frame) and the same patch and
    mCRF window as the RAS .nii.gz files."""
    reference = _fingerprint(_make_dataset(tmp_path / "ras"))
    other = _fingerprint(_make_dataset(tmp_path / "other", ext, zyx_on_disk))
    assert other.image_format == ext
    assert {**vars(other), "image_format": ".nii.gz"} == vars(reference)
    assert other.volume_size == (80, 64, 16) and other.box_p50 == (20.0, 12.0, 4.0)
    rules = PlanRules(min_crf_voxels=50)   # the mCRF grid halves in plane, the window shrinks to fit the lesions
    mine, theirs = make_plan(other, rules)["stage1"], make_plan(reference, rules)["stage1"]
    assert [mine[k] for k in ("--spatial_shape", "--down_size", "--kernel_radius", "--crf_sigma_xy")] == \
        [theirs[k] for k in ("--spatial_shape", "--down_size", "--kernel_radius", "--crf_sigma_xy")] == \
        [[80, 64, 16], [40, 32, 16], [2, 2, -1], 3.0]


def test_missing_files_and_an_annotation_on_another_grid_are_one_line(dataset):
    (dataset / "anno" / "c2_7points.nii.gz").unlink()
    nifti = dataset / "images" / "c1_T2.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(nifti)), str(dataset / "images" / "c1_T2.nrrd"))   # found as .nrrd
    nifti.unlink()
    with pytest.raises(FileNotFoundError) as err:
        _fingerprint(dataset)
    assert str(err.value) == (f"1 file(s) of the cases the plan reads are missing: 7-point annotation "
                              f"{dataset / 'anno' / 'c2_7points.nii.gz'}; check --path_anno_7points/"
                              "--anno_7points_postfix or the split")
    anno = sitk.ReadImage(str(dataset / "anno" / "c1_7points.nii.gz"))
    anno.SetSpacing((2.0, 2.0, 5.0))
    sitk.WriteImage(anno, str(dataset / "anno" / "c2_7points.nii.gz"))
    sitk.WriteImage(anno, str(dataset / "anno" / "c1_7points.nii.gz"))
    with pytest.raises(ValueError) as err:
        _fingerprint(dataset)
    assert str(err.value) == (f"7-point annotation {dataset / 'anno' / 'c1_7points.nii.gz'} has spacing [2.0, 2.0, "
                              f"5.0] but image {dataset / 'images' / 'c1_T2.nrrd'} has [2.0, 2.0, 4.0]; write the "
                              "points on the image's grid (data/points_to_annotation.py)")


# ------------------------------------------------------------------ switches, budget, every case


def test_a_switch_the_plan_sets_is_turned_off_on_the_command_line(dataset):
    path = dataset / "plan.json"
    (dataset / "split.csv").write_text("c1,training\nc2,training\n")     # no validation case: every case trains
    # lesions under 1 % of a patch here: the class-balanced CE, a switch
    plan = make_plan(_fingerprint(dataset, seeds=False), PlanRules(min_fg_dice_lesion_share=0.01))
    assert plan["stage1"]["--seg_class_balance"] is True and plan["stage1"]["--train_on_all_cases"] is True
    path.write_text(json.dumps(plan))
    on = apply_plan(stage1.build_parser(), ["--plan", str(path)], "stage1")
    assert on.seg_class_balance is True and on.train_on_all_cases is True
    off = apply_plan(stage1.build_parser(), ["--plan", str(path), "--no_seg_class_balance",
                                             "--no_train_on_all_cases"], "stage1")
    assert off.seg_class_balance is False and off.train_on_all_cases is False
    assert apply_plan(scm.build_parser(), ["--plan", str(path), "--no_train_on_all_cases"],
                      "scm").train_on_all_cases is False
    # the paper's flags as they were, with or without a plan; the last of a pair wins
    assert apply_plan(stage1.build_parser(), ["--seg_class_balance"], "stage1").seg_class_balance is True
    assert apply_plan(stage1.build_parser(), [], "stage1").seg_class_balance is False
    assert apply_plan(stage1.build_parser(), ["--no_seg_class_balance", "--seg_class_balance"],
                      "stage1").seg_class_balance is True
    assert "--no_seg_class_balance" in _help(stage1)


def _help(module) -> str:
    parser = module.build_parser()
    with pytest.raises(SystemExit):
        apply_plan(parser, ["--help"], "stage1")
    return parser.format_help()


def test_a_patch_over_the_budget_says_so(dataset, capsys):
    """Twice the largest lesion box needs 80x48x16 (61440 voxels): under a 40000-voxel budget the
    plan gives the patch's true voxel count and the limit, never 'within'."""
    plan = make_plan(_fingerprint(dataset), PlanRules(max_patch_voxels=40000))
    assert plan["stage1"]["--spatial_shape"] == [64, 48, 16]
    expected = ("the patch [64, 48, 16] has 49152 voxels, more than --max_patch_voxels 40000: twice the "
                "90th-percentile lesion box [28.0, 18.4, 5.6] needs it; raise --max_patch_voxels if the device holds "
                "it, or pass the trainers a smaller --spatial_shape (patches then cut the largest lesions)")
    assert plan["warnings"] == [expected] and plan["why"]["--spatial_shape"] == expected
    plan_script.main(["--dataset_split", str(dataset / "split.csv"), "--path_images", str(dataset / "images"),
                      "--path_anno_7points", str(dataset / "anno"), "--path_geodesic_labels", str(dataset / "seeds"),
                      "--output", str(dataset / "plan.json"), "--max_patch_voxels", "40000", *KEEP])
    captured = capsys.readouterr()
    assert captured.err == f"warning: {expected}\n" and "within" not in captured.out


def test_with_few_cases_every_case_trains(dataset):
    """2 training + 1 validation case (< 5): the validation case is read and trains too; 5 or more
    keep it for checkpoint selection; a split without validation cases always trains on all."""
    with pytest.raises(FileNotFoundError, match="v1_T2.nii.gz"):
        _fingerprint(dataset, rules=PlanRules())
    for name, folder in (("T2", "images"), ("7points", "anno"), ("GeodesicLabel", "seeds")):
        sitk.WriteImage(sitk.ReadImage(str(dataset / folder / f"c1_{name}.nii.gz")),
                        str(dataset / folder / f"v1_{name}.nii.gz"))
    fp = _fingerprint(dataset, rules=PlanRules())
    assert (fp.training_cases, fp.validation_cases, fp.lesions) == (3, 0, 4)
    plan = make_plan(fp, PlanRules(target_steps=30, min_epochs=1))
    assert plan["stage1"]["--max_epochs"] == 10 and plan["stage1"]["--train_on_all_cases"] is True
    assert plan["scm"]["--train_on_all_cases"] is True
    assert plan["why"]["--train_on_all_cases"].startswith("3 case(s) and no validation case held out")
    assert _fingerprint(dataset, rules=PlanRules(min_cases_for_validation=3)).validation_cases == 1
    (dataset / "split.csv").write_text("c1,training\nc2,training\n")
    assert _fingerprint(dataset, rules=KEEP_VALIDATION).validation_cases == 0


def _commands(dataset, capsys, *extra):
    plan_script.main(["--dataset_split", str(dataset / "split.csv"), "--path_images", str(dataset / "images"),
                      "--path_anno_7points", str(dataset / "anno"), "--output", str(dataset / "plan.json"),
                      "--overwrite", "--work_dir", str(dataset / "work"), *KEEP, *extra])
    lines = [line.strip() for line in capsys.readouterr().out.splitlines() if line.startswith("  [")]
    return {line[1:line.index("]")]: shlex.split(line[line.index("]") + 2:]) for line in lines}


def _flag(command, flag):
    return command[command.index(flag) + 1]


def test_the_printed_commands_carry_every_path_given(dataset, capsys):
    """Points only: stage 0 into the work folder, the seeds it writes, no labels (seed_dice), no
    scoring; with labels and seeds: no stage 0, the labels, Dice, and the scoring command. Every
    command reads the data by --dataset from dataset.json beside the plan, which holds exactly the
    paths given and the seeds; nothing names a path the user did not give (the VS defaults)."""
    file = dataset / "dataset.json"
    points = _commands(dataset, capsys)
    assert list(points) == ["stage0_training", "stage0_validation", "stage1", "stage1_aux", "scm", "predict"]
    assert points["stage0_training"][:6] == ["python", "data/generate_geodesic_labels.py", "--style", "vs",
                                              "--intensity", "box_percentile"]
    assert _flag(points["stage0_training"], "--path_geodesic") == str(dataset / "work" / "geodesic")
    assert _flag(points["stage0_validation"], "--phase") == "validation"
    assert all(_flag(command, "--dataset") == str(file) for command in points.values())
    assert json.loads(file.read_text()) == {     # absolute as given
        "split": str(dataset / "split.csv"), "images": str(dataset / "images"), "image_postfix": "T2",
        "annotations": str(dataset / "anno"), "annotation_postfix": "7points",
        "seeds": str(dataset / "work" / "geodesic" / "weight0.5_threshold0.2" / "geodesic_label"),
        "seed_postfix": "GeodesicLabel"}
    for name in ("stage1", "stage1_aux", "scm"):
        assert _flag(points[name], "--val_metric") == "seed_dice" and "--path_labels" not in points[name]
    assert _flag(points["predict"], "--input_folder") == str(dataset / "images")
    assert (_flag(points["predict"], "--output_format"), _flag(points["predict"], "--epoch_inf")) == ("nii.gz",
                                                                                                      "best_model1")
    labelled = _commands(dataset, capsys, "--path_labels", str(dataset / "labels"), "--label_postfix", "Seg",
                         "--path_geodesic_labels", str(dataset / "seeds"))
    assert list(labelled) == ["stage1", "stage1_aux", "scm", "predict", "score"]
    assert _flag(labelled["scm"], "--val_metric") == "dice"
    # the held-out cases only: this split has no inference phase, so its validation case
    assert labelled["score"] == ["python", "utilities/scores.py", "--dataset", str(file), "--prediction_dir",
                                 str(dataset / "work" / "predictions"), "--prediction_postfix", "_T2", "--phase",
                                 "validation"]
    written = json.loads(file.read_text())
    assert {k: written[k] for k in ("labels", "label_postfix", "seeds", "seed_postfix")} == {
        "labels": str(dataset / "labels"), "label_postfix": "Seg", "seeds": str(dataset / "seeds"),
        "seed_postfix": "GeodesicLabel"}
    for command in [*points.values(), *labelled.values(), list(written.values())]:
        assert not any("VS" in word.split("/") for word in command)


def test_no_labels_with_dice_selection_is_one_line(dataset):
    """The printed commands pass --path_labels '' without labels: that needs --val_metric seed_dice."""
    from utilities.data.loading import DataConfig

    config = DataConfig(dataset / "split.csv", dataset / "images", "T2", "", "Label", dataset / "seeds",
                        "GeodesicLabel")
    assert "label" not in config.sources()
    with pytest.raises(ValueError) as err:
        config.validation_sources()
    assert str(err.value) == ("--val_metric dice selects checkpoints by Dice against full labels, but --path_labels "
                              "is '' (no labels); pass --val_metric seed_dice or the labels' folder")
    required, optional = config.validation_sources("seed_dice")
    assert [s.key for s in required] == ["image", "seeds"] and optional == []


@pytest.mark.parametrize("phases, expected", [
    (("training", "validation", "inference"), "inference"), (("training", "validation"), "validation"),
    (("training", "inference"), "inference"), (("training",), "training")])
def test_the_scored_phase_is_the_held_out_one(tmp_path, phases, expected):
    split = tmp_path / "split.csv"
    split.write_text("".join(f"s{k},{phase}\n" for k, phase in enumerate(phases)))
    assert scored_phase(split) == expected


def test_paths_given_relative_to_another_folder_are_printed_absolute(dataset, capsys, monkeypatch):
    """plan.py run in the data's folder with relative paths: the printed commands, which run from
    the repository root, name every file and folder by its absolute path."""
    monkeypatch.chdir(dataset)
    plan_script.main(["--dataset_split", "split.csv", "--path_images", "images", "--path_anno_7points", "anno",
                      "--path_labels", "labels", "--label_postfix", "Seg", "--output", "w/plan.json",
                      "--work_dir", "w", *KEEP])
    lines = [line.strip() for line in capsys.readouterr().out.splitlines() if line.startswith("  [")]
    commands = {line[1:line.index("]")]: shlex.split(line[line.index("]") + 2:]) for line in lines}
    assert _flag(commands["predict"], "--input_folder") == str(dataset / "images")
    assert _flag(commands["predict"], "--output_folder") == str(dataset / "w" / "predictions")
    assert _flag(commands["stage1"], "--plan") == str(dataset / "w" / "plan.json")
    assert _flag(commands["stage1"], "--model_dir") == str(dataset / "w" / "runs" / "stage1_m1")
    assert _flag(commands["score"], "--prediction_dir") == str(dataset / "w" / "predictions")
    for command in commands.values():
        assert _flag(command, "--dataset") == str(dataset / "w" / "dataset.json")


def test_plan_refuses_to_write_two_of_its_files_as_one(dataset, capsys):
    """The plan named dataset.json (the dataset file written beside it), the plan over the split or
    over the --dataset the commands read: one error line, before anything is written, even with
    --overwrite where the file exists."""
    base = ["--dataset_split", str(dataset / "split.csv"), "--path_images", str(dataset / "images"),
            "--path_anno_7points", str(dataset / "anno"), "--path_geodesic_labels", str(dataset / "seeds"), *KEEP]
    out = dataset / "w" / "dataset.json"
    assert run_main(plan_script.main, [*base, "--output", str(out), "--work_dir", str(dataset / "w")]) == 2
    assert capsys.readouterr().err == (
        "error: the dataset file the printed commands read (dataset.json, written beside --output) and --output "
        f"(the plan written) are one file ({out}): one would replace the other; choose another --output, e.g. "
        f"{dataset / 'w' / 'plan.json'}\n")
    assert not (dataset / "w").exists()
    split = (dataset / "split.csv").read_text()
    assert run_main(plan_script.main, [*base, "--output", str(dataset / "split.csv"), "--overwrite"]) == 2
    assert capsys.readouterr().err == (
        f"error: --dataset_split (the split read) and --output (the plan written) are one file "
        f"({dataset / 'split.csv'}): one would replace the other; choose another --output\n")
    assert (dataset / "split.csv").read_text() == split and not (dataset / "dataset.json").exists()
    plan_script.main([*base, "--output", str(dataset / "p" / "plan.json"), "--work_dir", str(dataset / "p")])
    file = dataset / "p" / "dataset.json"
    text = file.read_text()
    assert run_main(plan_script.main, ["--dataset", str(file), "--output", str(file), "--overwrite", "--work_dir",
                                       str(dataset / "p"), *KEEP]) == 2
    assert capsys.readouterr().err == (
        f"error: --dataset (the dataset file the printed commands read) and --output (the plan written) are one "
        f"file ({file}): one would replace the other; choose another --output\n")
    assert file.read_text() == text


def test_a_dataset_file_in_a_symlinked_work_dir_leads_to_the_data(dataset, monkeypatch, capsys):
    """--work_dir lnk -> deep/run with paths given relative to the data's folder: "../split.csv"
    from lnk/ would lead to deep/split.csv, so the dataset file the printed commands read names
    the very files given."""
    monkeypatch.chdir(dataset)
    here = Path.cwd()
    (here / "deep" / "run").mkdir(parents=True)
    Path("lnk").symlink_to(here / "deep" / "run", target_is_directory=True)
    plan_script.main(["--dataset_split", "split.csv", "--path_images", "images", "--path_anno_7points", "anno",
                      "--path_geodesic_labels", "seeds", "--work_dir", "lnk", "--output", "lnk/plan.json", *KEEP])
    assert f"written {Path('lnk') / 'dataset.json'} (the dataset file the commands read)" in capsys.readouterr().out
    written = read_dataset(here / "lnk" / "dataset.json")
    for key, name in {"split": "split.csv", "images": "images", "annotations": "anno", "seeds": "seeds"}.items():
        assert os.path.samefile(written.get(key), here / name), key
    assert json.loads((here / "lnk" / "dataset.json").read_text())["split"] == str(here / "split.csv")


def test_the_help_names_the_folders_the_printed_commands_write(capsys):
    """--work_dir's help lists every folder of Workspace, which the printed commands write."""
    with pytest.raises(SystemExit):
        plan_script.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    work = Workspace(Path("W"))
    folders = [work.geodesic(), *(work.model(name) for name in ("stage1_m1", "stage1_m2", "scm")), work.predictions()]
    for folder in folders:
        assert f"{folder.relative_to('W')}/" in text
    assert "models/" not in text
