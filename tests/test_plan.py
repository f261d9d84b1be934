"""plan.py and --plan: the fingerprint of hand-made cases, the flags its rules give, and the
trainers reading a plan (command-line flags win)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import load_script

import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
import train_SCM as scm
from utilities.plan import PlanRules, apply_plan, fingerprint, lesion_boxes, make_plan, read_plan

plan_script = load_script("plan.py")


def _write(array: np.ndarray, path, spacing=(2.0, 2.0, 4.0)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
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


@pytest.fixture
def dataset(tmp_path):
    """Two training cases of 80x64x16 voxels (x, y, z); lesions spanning (x, y, z) 20x10x4,
    30x20x6 (case 1) and 12x12x2 (case 2, second lesion); one validation case never read."""
    shape = (16, 64, 80)  # z, y, x
    boxes = {"c1": [((2, 10, 10), (5, 19, 29))], "c2": [((4, 20, 30), (9, 39, 59)), ((10, 45, 5), (11, 56, 16))]}
    for name in ("images", "anno", "seeds"):
        (tmp_path / name).mkdir()
    for subject, lesions in boxes.items():
        image = np.zeros(shape, np.float32)
        image[1:15, 4:60, 4:76] = 1.0 + np.arange(14)[:, None, None] / 10
        anno = np.zeros(shape, np.uint8)
        seeds = np.zeros(shape, np.uint8)
        for k, (lo, hi) in enumerate(lesions):
            _box_points(anno, lo, hi, 2 * k + 1, 2 * k + 2)
            seeds[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = 2
            seeds[tuple((a + b) // 2 for a, b in zip(lo, hi))] = 1
        _write(image, tmp_path / "images" / f"{subject}_T2.nii.gz")
        _write(anno, tmp_path / "anno" / f"{subject}_7points.nii.gz")
        _write(seeds, tmp_path / "seeds" / f"{subject}_GeodesicLabel.nii.gz")
    (tmp_path / "split.csv").write_text("c1,training\nc2,training\nv1,validation\n")
    return tmp_path


def test_lesion_boxes_are_the_voxels_between_the_extreme_points():
    anno = np.zeros((10, 20, 30), np.uint8)
    _box_points(anno, (2, 3, 4), (5, 9, 20), 1, 2)
    _box_points(anno, (6, 12, 22), (7, 14, 24), 3, 4)
    assert [b.tolist() for b in lesion_boxes(anno)] == [[4, 7, 17], [2, 3, 3]]


def test_fingerprint_of_hand_made_cases(dataset):
    fp = fingerprint(dataset / "split.csv", dataset / "images", "T2", dataset / "anno", "7points",
                     dataset / "seeds", "GeodesicLabel")
    assert fp.training_cases == 2 and fp.lesions == 3 and fp.lesions_per_case == 1.5
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


def test_plan_rules(dataset):
    fp = fingerprint(dataset / "split.csv", dataset / "images", "T2", dataset / "anno", "7points")
    plan = make_plan(fp, PlanRules(target_steps=100, min_epochs=10))
    s1 = plan["stage1"]
    assert s1["--spatial_shape"] == [80, 64, 16]          # the whole volume fits the default budget
    # 25th-percentile lesion: pi/6 * (150.8 + 0.5 * (418.9 - 150.8)) = 285 voxels, 71 on a halved grid < 100
    assert s1["--down_size"] == [80, 64, 16]
    # in-plane span of the 25th-percentile box: min(16, 11) = 11 voxels: the paper's window fits
    assert s1["--kernel_radius"] == [5, 5, -1] and s1["--crf_sigma_xy"] == 6.0
    assert s1["--max_epochs"] == 50 and s1["--rampup_epochs"] == 12 and s1["--warmup_epochs"] == 5
    assert s1["--on_collapse"] == "recover" and "--on_collapse" in plan["why"]
    assert s1["--seg_class_balance"] is True and s1["--rampup_unit"] == "step"
    assert (s1["--momentum"], s1["--grad_clip"]) == (0.9, 12.0)
    assert plan["scm"]["--max_epochs"] == 25 and plan["scm"]["--iterative_epochs"] == 5
    # a budget under the volume: the axis with the most room over twice the lesion box gives way
    small = make_plan(fp, PlanRules(max_patch_voxels=64 * 48 * 16))["stage1"]
    assert small["--spatial_shape"] == [64, 48, 16]
    # a looser mCRF rule (50 voxels) halves the grid in plane; the lesion then spans 5.5 grid voxels
    halved = make_plan(fp, PlanRules(min_crf_voxels=50))["stage1"]
    assert halved["--down_size"] == [40, 32, 16]
    assert halved["--kernel_radius"] == [2, 2, -1] and halved["--crf_sigma_xy"] == 3.0


def test_plan_script_writes_the_plan_and_refuses_to_replace_it(dataset, capsys):
    out = dataset / "plan.json"
    args = ["--dataset_split", str(dataset / "split.csv"), "--path_images", str(dataset / "images"),
            "--path_anno_7points", str(dataset / "anno"), "--output", str(out), "--target_steps", "100"]
    plan = plan_script.main(args)
    assert json.loads(out.read_text())["stage1"] == plan["stage1"] == read_plan(out)["stage1"]
    printed = capsys.readouterr().out
    assert "--spatial_shape 80 64 16" in printed and f"--plan {out}" in plan["commands"]["stage1"]
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        plan_script.main(args)
    plan_script.main([*args, "--overwrite", "--target_steps", "400"])
    assert read_plan(out)["stage1"]["--max_epochs"] == 200


def test_trainers_read_the_plan_and_the_command_line_wins(dataset):
    path = dataset / "plan.json"
    plan = make_plan(fingerprint(dataset / "split.csv", dataset / "images", "T2", dataset / "anno", "7points"))
    path.write_text(json.dumps(plan))
    args = apply_plan(stage1.build_parser(), ["--plan", str(path)], "stage1")
    assert args.spatial_shape == [80, 64, 16] and args.down_size == [80, 64, 16] and args.seg_class_balance
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
    (lambda p: p.update({"version": 99}), "is not a plan of version 1"),
    (lambda p: p.pop("scm"), "has no 'scm' section"),
])
def test_a_bad_plan_is_one_line_naming_it(dataset, change, message):
    plan = make_plan(fingerprint(dataset / "split.csv", dataset / "images", "T2", dataset / "anno", "7points"))
    change(plan)
    path = dataset / "bad.json"
    path.write_text(json.dumps(plan))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        apply_plan(stage1.build_parser(), ["--plan", str(path)], "stage1")
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="--plan file not found"):
        apply_plan(stage1.build_parser(), ["--plan", str(dataset / "none.json")], "stage1")
