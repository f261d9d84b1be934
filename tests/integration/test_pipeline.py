"""End-to-end smoke run through the scripts' main(): geodesic expansion → stage 1 → inference →
scores, then SCM from two stage-1 runs → inference of both SCM models."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import load_script
from synth import make_vs_dataset

import inference
import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
import train_SCM as scm
from utilities import scores

pytestmark = pytest.mark.slow  # every test trains or reads the trained runs

SHAPE = ["32", "32", "16"]


@pytest.fixture(scope="module")
def stage1_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    p = make_vs_dataset(root, n_train=2, n_val=1, n_inf=1)
    geodesic = load_script("data/VS/generate_geodesic_labels.py")
    out = geodesic.main(["--dataset_split", str(p["split"]), "--path_images", str(p["image_crop"]),
                         "--path_labels", str(p["label_crop"]), "--path_anno_7points", str(p["annotation_7points"]),
                         "--path_geodesic", str(root / "geodesic"), "--num_workers", "1"])
    assert out == root / "geodesic" / "weight0.5_threshold0.2"
    common = ["--dataset_split", str(p["split"]), "--path_images", str(p["image_crop"]),
              "--path_labels", str(p["label_crop"]), "--path_geodesic_labels", str(out / "geodesic_label"),
              "--spatial_shape", *SHAPE, "--down_size", "16", "16", "16", "--max_epochs", "2",
              "--rampup_epochs", "1", "--device", "cpu"]
    runs = {}
    for network in ("U_Net2D5", "AttU_Net"):
        runs[network] = stage1.main(["--model_dir", str(root / "stage1"), "--network", network, *common])
    return root, p, runs, common


def test_stage1_outputs(stage1_runs):
    root, p, runs, _ = stage1_runs
    run = runs["U_Net2D5"]
    for name in ("CP_best.pth", "CP_final.pth", "CP_latest.pth"):
        assert (run / "models" / name).is_file()
    assert list(run.glob("log_*.txt")) and list((run / "tensorboard").glob("events.*"))
    log = pd.read_csv(run / "log.csv")
    assert log["epoch"].tolist() == [1, 2]
    assert log["val_dice"].between(0, 1).all() and log["val_seed_dice"].between(0, 1).all()
    assert (log["loss_crf"] > 0).all() and (log["loss_vm"] > 0).all()
    assert log["lr"].iloc[0] == pytest.approx(1e-2) and log["lr"].iloc[1] < 1e-2
    # the best checkpoint of each validation metric: CP_best by --val_metric dice, and by seed_dice
    for name, column in (("CP_best.pth", "val_dice"), ("CP_best_seed_dice.pth", "val_seed_dice")):
        meta = torch.load(run / "models" / name, weights_only=True)
        assert meta["epoch"] == int(log["epoch"][log[column].idxmax()])
        assert meta["value"] == pytest.approx(log[column].max())
    text = next(run.glob("log_*.txt")).read_text()
    assert "--weight_gatedcrf 1.0" in text and "--kernel_radius [5, 5, -1]" in text


def test_stage1_inference_and_scores(stage1_runs):
    root, p, runs, _ = stage1_runs
    written = inference.main(["--model_dir", str(root / "stage1"), "--network", "U_Net2D5", "--dataset_split",
                              str(p["split"]), "--path_images", str(p["image_crop"]), "--spatial_shape", *SHAPE])
    assert len(written) == 1 and written[0].is_file()
    out = scores.main(["--model_dir", str(root / "stage1"), "--network", "U_Net2D5", "--dataset_split",
                       str(p["split"]), "--path_labels", str(p["label_crop"])])
    table = pd.read_csv(out).set_index("subject")
    assert list(table.index) == ["vs_gk_4", "mean", "std"]
    for metric in ("dice", "jaccard", "precision", "recall"):
        assert 0.0 <= table.loc["vs_gk_4", metric] <= 1.0


def test_existing_run_refused(stage1_runs):
    root, p, runs, common = stage1_runs
    with pytest.raises(FileExistsError, match="--resume .* --overwrite"):
        stage1.main(["--model_dir", str(root / "stage1"), "--network", "U_Net2D5", *common])


def _scm_args(root, common, model_dir, extra=()):
    drop = {"--path_geodesic_labels", "--down_size", "--rampup_epochs"}
    args, skip = [], 0
    for _i, a in enumerate(common):
        if skip:
            skip -= 1
            continue
        if a in drop:
            skip = 3 if a == "--down_size" else 1
            continue
        args.append(a)
    return ["--pretrained_model1_dir", str(root / "stage1"), "--network1", "U_Net2D5",
            "--pretrained_model2_dir", str(root / "stage1"), "--network2", "AttU_Net",
            "--model_dir", str(model_dir), "--iterative_epochs", "1", *args, *extra]


def test_scm_run_teachers_and_inference(stage1_runs):
    root, p, runs, common = stage1_runs
    model_dir = root / "scm"
    scm.main(_scm_args(root, common, model_dir))
    m1, m2 = model_dir / "U_Net2D5" / "models", model_dir / "AttU_Net" / "models"
    for path in (m1 / "CP_best_model1.pth", m1 / "CP_final_model1.pth", m2 / "CP_best_model2.pth",
                 m2 / "CP_final_model2.pth", m1 / "CP_latest_SCM.pth"):
        assert path.is_file(), path
    log = pd.read_csv(model_dir / "U_Net2D5" / "log_SCM.csv")
    assert log["epoch"].tolist() == [1, 2] and log["teachers_reloaded"].tolist() == [1, 1]
    assert log[["val_dice1", "val_dice2"]].stack().between(0, 1).all()
    # after the last iterative epoch the teachers hold exactly the best students' weights
    latest = torch.load(m1 / "CP_latest_SCM.pth", weights_only=False)
    for k, folder in ((1, m1), (2, m2)):
        best = torch.load(folder / f"CP_best_model{k}.pth", weights_only=True)["state_dict"]
        teacher = latest[f"teacher{k}"]
        assert all(torch.equal(teacher[key], best[key]) for key in best)
    for network, epoch in (("U_Net2D5", "best_model1"), ("AttU_Net", "best_model2")):
        written = inference.main(["--model_dir", str(model_dir), "--network", network, "--epoch_inf", epoch,
                                  "--dataset_split", str(p["split"]), "--path_images", str(p["image_crop"]),
                                  "--spatial_shape", *SHAPE])
        assert written[0].is_file()


@pytest.mark.parametrize("weight_kd, zero_term", [(0.0, "kd"), (1.0, "self")])
def test_scm_weight_extremes(stage1_runs, weight_kd, zero_term):
    root, p, runs, common = stage1_runs
    model_dir = root / f"scm_kd{weight_kd}"
    scm.main(_scm_args(root, common, model_dir, ["--max_epochs", "1", "--weight_kd", str(weight_kd)]))
    log = pd.read_csv(model_dir / "U_Net2D5" / "log_SCM.csv")
    kept = "self" if zero_term == "kd" else "kd"
    for k in (1, 2):
        # the loss is exactly the kept term: λ = 0 is pure self-training, λ = 1 pure distillation
        assert log[f"loss{k}"].iloc[0] == pytest.approx(log[f"{kept}{k}"].iloc[0], rel=1e-6)
        # the term weighted 0 is still measured and logged (finite, positive), it only does not count
        assert np.isfinite(log[f"{zero_term}{k}"].iloc[0]) and log[f"{zero_term}{k}"].iloc[0] > 0


def test_scm_missing_pretrained(tmp_path, stage1_runs):
    root, p, runs, common = stage1_runs
    args = _scm_args(root, common, tmp_path / "scm")
    args[1] = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"model1: stage-1 checkpoint .*CP_best.pth not found; train it "
                                                 r"first with `python train_gatedcrfloss3d22d"):
        scm.main(args)
