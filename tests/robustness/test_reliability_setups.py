"""Set-ups that cannot learn (issue 22 item 4 and its class): what the ablation runner refuses,
the scripts refuse too; each is refused (or warned about) before any training step."""
from __future__ import annotations

import logging
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import ROOT, SHAPE, load_script, one_line, pretrained, scm_args, stage1_args

stage1 = load_script("train_gatedcrfloss3d22d_multiview_varianceloss.py")
scm = load_script("train_SCM.py")


def test_full_supervision_refuses_multi_class_labels(data, tmp_path):
    """Labels 0/1/2 (rim and core) given as the seeds: 2 would be read as unknown, not learned."""
    path = data["label_crop"] / "vs_gk_2_Label.nii.gz"
    image = sitk.ReadImage(str(path))
    label = sitk.GetArrayFromImage(image)
    core = label.copy()
    core[np.nonzero(label)[0].min() + 2:, :, :] *= 2  # the lesion's upper part becomes class 2
    out = sitk.GetImageFromArray(core.astype(np.uint8))
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path))
    share = float((core > 1).mean())
    args = stage1_args(data, tmp_path / "run", "--weight_gatedcrf", "0", "--weight_variance", "0")
    args[args.index("--path_geodesic_labels") + 1] = str(data["label_crop"])
    args += ["--geodesic_label_postfix", "Label"]
    with pytest.raises(ValueError) as err:
        stage1.main(args)
    assert one_line(err) == (
        f"label {path} is given as the expanded seeds too (full supervision: --path_geodesic_labels/"
        "--geodesic_label_postfix name the --path_labels files) but holds values [0, 1, 2]: as seeds, 2 means "
        f"unknown, so {share:.2%} of its voxels would silently not be learned; binarise the labels (every value "
        "> 0 -> 1) into another folder and pass that")
    assert not (tmp_path / "run" / "U_Net2D5" / "models" / "CP_latest.pth").exists()


def test_scm_refuses_the_same_stage1_run_twice(data, tmp_path):
    pre = pretrained(tmp_path)
    args = scm.build_parser().parse_args(scm_args(data, [pre[0], pre[0]], tmp_path / "scm"))
    with pytest.raises(ValueError) as err:
        scm.check_args(args)
    assert one_line(err).startswith(f"--pretrained_model1_dir/--network1 and --pretrained_model2_dir/--network2 both "
                                    f"name the stage-1 run {pre[0]}/U_Net2D5: SCM would train two identical students")
    scm.check_args(scm.build_parser().parse_args(scm_args(data, pre, tmp_path / "scm")))  # two runs: fine


def test_scm_warns_when_a_stage1_run_is_still_training(data, tmp_path, caplog):
    pre = pretrained(tmp_path)
    run = pre[1] / "U_Net2D5"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from utilities.training.runs import RunLock; "
                               f"RunLock({str(run)!r}).acquire(); print('locked', flush=True); time.sleep(60)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with caplog.at_level(logging.WARNING, logger="paseg"):
            scm.check_args(scm.build_parser().parse_args(scm_args(data, pre, tmp_path / "scm")))
        assert [r.getMessage() for r in caplog.records] == [
            f"stage-1 run {run} (--pretrained_model2_dir) is still training (process {holder.pid}): SCM starts "
            "from its CP_best.pth as it is now, not from its final best"]
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="paseg"):
        scm.check_args(scm.build_parser().parse_args(scm_args(data, pre, tmp_path / "scm")))
    assert not caplog.records  # a dead process's lock file is no running training


def test_seeds_only_ignores_the_mcrf_down_size(data, tmp_path):
    """--down_size is the mCRF's grid: a run without the mCRF does not need it to fit the patch."""
    base = ["--model_dir", str(tmp_path), *SHAPE, "--down_size", "64", "64", "48"]
    args = stage1.build_parser().parse_args([*base, "--weight_gatedcrf", "0", "--weight_variance", "0"])
    stage1.check_args(args)
    with pytest.raises(ValueError, match=r"--down_size \[64, 64, 48\] must not exceed --spatial_shape \[32, 32, 16\] "
                                         r"in any axis$"):
        stage1.check_args(stage1.build_parser().parse_args(base))
