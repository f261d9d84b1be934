"""The commands plan.py prints run as printed: a points-only dataset (two .nrrd scans stored
(z, y, x), 7-point annotations, no labels, no validation case) goes through stage 0, both stage-1
networks, SCM and folder prediction by running the printed lines unchanged; every case trains
and the best checkpoints are chosen by seed_dice on the training seeds. Also a split with a
validation case trained with --train_on_all_cases.

Each sequence runs its first command (stage 0) as a shell would, the others in this process with
their printed arguments unchanged (``helpers.run_printed_sequence``), which spares a Python,
torch and library start-up per command."""
from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from helpers import load_script, run_printed_sequence, stage1_args
from synth import blob_case, make_vs_dataset, seven_points, write

from utilities.data.grid import Grid

plan_script = load_script("plan.py")
#: Stored (z, y, x): the file's x and z axes swapped, as a sagittal scan is stored.
SAGITTAL = (0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0)


def _points_only(root: Path, labels: bool = False) -> Path:
    """Two annotated scans (training) and one scan to segment (inference, no points), .nrrd,
    32x32x16 voxels in the trainers' frame; ``labels``: a third annotated scan for validation, and
    every scan's label."""
    names = ("brain1", "brain2", "brain3") + (("brain4",) if labels else ())
    for i, name in enumerate(names):
        image, label = blob_case((16, 32, 32), seed=i)
        zyx = (2, 1, 0)
        arrays = {"images": (image, "T2"), "points": (seven_points(label), "7points"), "labels": (label, "Label")}
        for folder, (array, postfix) in arrays.items():
            if (folder == "points" and name == names[-1]) or (folder == "labels" and not labels):
                continue
            write(np.ascontiguousarray(np.transpose(array, zyx)), root / folder / f"{name}_{postfix}.nrrd",
                  spacing=(1.5, 0.5, 0.5), direction=SAGITTAL)
    phases = ["training", "training"] + (["validation"] if labels else []) + ["inference"]
    (root / "split.csv").write_text("".join(f"{n},{phase}\n" for n, phase in zip(names, phases)))
    return root


def _printed(out: str) -> dict[str, list[str]]:
    """The ``  [name] command`` lines of plan.py's output, split as a shell would."""
    lines = [line.strip() for line in out.splitlines() if line.startswith("  [")]
    return {line[1:line.index("]")]: shlex.split(line[line.index("]") + 2:]) for line in lines}


@pytest.mark.slow
def test_the_printed_points_only_sequence_runs_as_printed(tmp_path, capsys, monkeypatch):
    data = _points_only(tmp_path / "data")
    work = tmp_path / "work"
    plan = plan_script.main(["--dataset_split", str(data / "split.csv"), "--path_images", str(data / "images"),
                             "--path_anno_7points", str(data / "points"), "--work_dir", str(work),
                             "--output", str(work / "plan.json"), "--target_steps", "2", "--min_epochs", "1"])
    out = capsys.readouterr().out
    assert "  (no scoring command: no --path_labels given)" in out
    commands = _printed(out)
    assert list(commands) == ["stage0_training", "stage1", "stage1_aux", "scm", "predict"]
    assert plan["stage1"]["--spatial_shape"] == [32, 32, 16] and plan["stage1"]["--train_on_all_cases"] is True
    assert plan["fingerprint"]["image_format"] == ".nrrd" and plan["fingerprint"]["training_cases"] == 2
    # blobs of ~450 voxels, 2.8 % of the 32x32x16 patch: nnU-Net's Dice+CE, which the trainings read from the plan
    assert plan["stage1"]["--seg_dice"] == "foreground" and "--seg_class_balance" not in plan["stage1"]
    run_printed_sequence(commands, monkeypatch, capsys)
    for run in ("stage1_m1/U_Net2D5", "stage1_m2/AttU_Net"):
        log = next((work / "runs" / run).glob("log_*.txt")).read_text()
        assert "2 training subjects, validated on themselves (validation uses: image, expanded-seed label)" in log
        assert " INFO   --seg_dice foreground\n" in log
        assert (f"no validation cases (split {data / 'split.csv'} lists no validation case): every case trains; "
                "CP_best is chosen by seed_dice against the training cases' expanded seeds") in log
        best = torch.load(work / "runs" / run / "models" / "CP_best.pth", map_location="cpu", weights_only=True)
        assert best["metric"] == "seed_dice"
    scm_best = torch.load(work / "runs" / "scm" / "U_Net2D5" / "models" / "CP_best_model1.pth", map_location="cpu",
                          weights_only=True)
    assert scm_best["metric"] == "seed_dice"
    for name in ("brain1", "brain2", "brain3"):   # every scan of the folder, on its own grid and format
        mask = work / "predictions" / f"{name}_T2.nrrd"
        assert Grid.read(mask) == Grid.read(data / "images" / f"{name}_T2.nrrd")
        assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(mask))))) <= {0, 1}


@pytest.mark.slow
def test_train_on_all_cases_trains_the_validation_case_too(tmp_path):
    """Two cases, one of them listed for validation: --train_on_all_cases trains on both and
    selects on their expanded seeds (without labels); --no_train_on_all_cases keeps the split."""
    train = load_script("train_gatedcrfloss3d22d_multiview_varianceloss.py")
    p = make_vs_dataset(tmp_path / "data", n_train=1, n_val=1, n_inf=0)
    args = stage1_args(p, tmp_path / "m", "--max_epochs", "1", "--path_labels", "", "--val_metric", "seed_dice")
    run = train.main([*args, "--train_on_all_cases"])
    log = next(run.glob("log_*.txt")).read_text()
    assert "2 training subjects, validated on themselves (validation uses: image, expanded-seed label)" in log
    assert (f"no validation cases (--train_on_all_cases: the 1 validation case(s) of {p['split']} train too): every "
            "case trains") in log
    assert torch.load(run / "models" / "CP_best.pth", map_location="cpu", weights_only=True)["metric"] == "seed_dice"
    for old in run.glob("log_*.txt"):
        old.unlink()
    train.main([*args, "--train_on_all_cases", "--no_train_on_all_cases", "--overwrite"])
    log = next(run.glob("log_*.txt")).read_text()
    assert "1 training and 1 validation subjects" in log and "no validation cases" not in log


@pytest.mark.slow
def test_the_printed_sequence_with_labels_runs_as_printed(tmp_path, capsys, monkeypatch):
    """With labels and a validation case kept (--min_cases_for_validation 0): stage 0 per phase
    (the inference case has no points), Dice selection, and the scoring command, all as printed."""
    data = _points_only(tmp_path / "data", labels=True)
    work = tmp_path / "work"
    plan_script.main(["--dataset_split", str(data / "split.csv"), "--path_images", str(data / "images"),
                      "--path_anno_7points", str(data / "points"), "--path_labels", str(data / "labels"),
                      "--work_dir", str(work), "--output", str(work / "plan.json"), "--target_steps", "2",
                      "--min_epochs", "1", "--min_cases_for_validation", "0"])
    commands = _printed(capsys.readouterr().out)
    assert list(commands) == ["stage0_training", "stage0_validation", "stage1", "stage1_aux", "scm", "predict",
                              "score"]
    run_printed_sequence(commands, monkeypatch, capsys)
    best = torch.load(work / "runs" / "stage1_m1" / "U_Net2D5" / "models" / "CP_best.pth", map_location="cpu",
                      weights_only=True)
    assert best["metric"] == "dice"
    # every scan predicted, the held-out one scored (brain4, the inference case): no trained case in the mean
    assert sorted(p.name for p in (work / "predictions").glob("*.nrrd")) == [f"brain{k}_T2.nrrd" for k in range(1, 5)]
    table = pd.read_csv(work / "predictions" / "results_inference.csv", keep_default_na=False)
    assert sorted(table.loc[table["row"] == "case", "subject"]) == ["brain4"]
