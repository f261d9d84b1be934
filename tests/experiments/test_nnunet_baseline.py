"""The nnU-Net v2 baseline: experiments/nnunet_baseline.py and the ablation kind ``nnunet``, end to
end on tiny data with a one-iteration budget (nnU-Net's own planning, preprocessing, training and
prediction), and the driver's refusals."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from helpers import ScriptsInProcess, demo_dataset, load_script

from utilities.data.splits import read_split, subjects_of

pytest.importorskip("nnunetv2.training.nnUNetTrainer.nnUNetTrainer",
                    reason="nnU-Net v2 and its training packages are installed by `make install` "
                           "(requirements-nnunet.txt)")

ablate = load_script("experiments/ablate.py")
baseline = load_script("experiments/nnunet_baseline.py")

BUDGET = {"--epochs": 1, "--iterations_per_epoch": 1, "--val_iterations": 1, "--disable_tta": True}
VARIANTS = {"seeds_only": {"kind": "stage1", "label": "Seeds only",
                           "flags": {"--weight_gatedcrf": 0, "--weight_variance": 0}},
            "nnunet_seeds": {"kind": "nnunet", "label": "nnU-Net, ignore label", "flags": BUDGET},
            "nnunet_full": {"kind": "nnunet", "label": "nnU-Net, full labels", "flags": {**BUDGET, "--labels": "full"}}}


@pytest.fixture(scope="module")
def done(quick_demo, tmp_path_factory):
    """The --quick demo data (4/2/2 cases of 32x32x16) and one finished ablation: seeds-only stage 1
    (1 epoch) and nnU-Net on the expanded seeds and on the full labels (1 iteration), seed 0."""
    root = quick_demo
    cfg = {"title": "tiny", "dataset": demo_dataset(root),
           "base": {"stage1": {"--max_epochs": 1, "--rampup_epochs": 1, "--spatial_shape": [32, 32, 16],
                               "--down_size": [16, 16, 16]}},
           "variants": VARIANTS, "seeds": [0], "baseline": "seeds_only"}
    work = tmp_path_factory.mktemp("nnunet")
    cfg_path = work / "tiny.json"
    cfg_path.write_text(json.dumps(cfg))
    out = work / "out"
    with pytest.MonkeyPatch.context() as mp:   # stage 0 a subprocess; the trainings in this process
        scripts = ScriptsInProcess(subprocesses=1).install(mp)
        table = ablate.main(["--config", str(cfg_path), "--output_dir", str(out), "--device", "cpu"])
    assert sorted(Path(c[1]).name for c in scripts.in_process) == [
        "nnunet_baseline.py", "nnunet_baseline.py", "train_gatedcrfloss3d22d_multiview_varianceloss.py"]
    return root, cfg_path, out, table


def _run(out: Path, variant: str) -> Path:
    return out / "runs" / variant / "seed0" / "nnUNet"


@pytest.mark.slow
def test_nnunet_rows_stand_in_the_table_with_their_budget(done):
    root, _, out, table = done
    written = pd.read_csv(out / "table.csv").set_index("variant")
    assert written.index.tolist() == ["seeds_only", "nnunet_seeds", "nnunet_full"]
    assert written.loc["nnunet_seeds", "kind"] == "nnunet"
    for variant in ("nnunet_seeds", "nnunet_full"):
        run = _run(out, variant)
        scores = pd.read_csv(run / "output_pred" / "results_inference.csv")
        scores = scores[~scores["subject"].isin(["mean", "std"])]
        assert len(scores) == 2
        assert written.loc[variant, "dice_mean"] == pytest.approx(scores["dice"].mean())
        budget = json.loads((run / "budget.json").read_text())
        plans = json.loads((run / "nnUNet_preprocessed" / "Dataset501_PASeg" / "nnUNetPlans.json").read_text())
        batch = plans["configurations"]["3d_fullres"]["batch_size"]
        assert (budget["epochs"], budget["iterations_per_epoch"], budget["steps"]) == (1, 1, 1)
        assert budget["batch_size"] == batch and budget["trainer"] == "nnUNetTrainerBudget"
        assert written.loc[variant, "budget"] == f"1 (1 × 1), batch {batch}"
        # voxels seen at nnU-Net's own batch and patch, and its training's seconds
        patch = plans["configurations"]["3d_fullres"]["patch_size"]
        assert written.loc[variant, "voxels"] == batch * int(np.prod(patch))
        assert written.loc[variant, "train_s"] == budget["training_seconds"] > 0
        assert (run / budget["model_folder"] / "fold_0" / "checkpoint_final.pth").is_file()
    # stage 1: one step per training case (batch 1), 4 training cases, 1 epoch
    assert written.loc["seeds_only", "budget"] == "4 (1 × 4), batch 1"
    assert "| Steps |" in (out / "table.md").read_text()


@pytest.mark.slow
def test_exports_are_the_seeds_with_an_ignore_label_and_the_full_labels(done):
    root, _, out, _ = done
    split = read_split(root / "split.csv")
    for variant, labels in (("nnunet_seeds", {"background": 0, "lesion": 1, "ignore": 2}),
                            ("nnunet_full", {"background": 0, "lesion": 1})):
        raw = _run(out, variant) / "nnUNet_raw" / "Dataset501_PASeg"
        assert json.loads((raw / "dataset.json").read_text())["labels"] == labels
        folds = json.loads((_run(out, variant) / "nnUNet_preprocessed" / "Dataset501_PASeg"
                            / "splits_final.json").read_text())
        assert sorted(folds[0]["train"]) == sorted(subjects_of(split, "training"))
        assert sorted(folds[0]["val"]) == sorted(subjects_of(split, "validation"))
        case = folds[0]["train"][0]
        exported = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / f"{case}.nii.gz")))
        if variant == "nnunet_full":
            full = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "data" / "label_crop" / f"{case}_Label.nii.gz")))
            np.testing.assert_array_equal(exported, (full > 0).astype(np.uint8))
        else:
            assert set(np.unique(exported)) == {0, 1, 2}


@pytest.mark.slow
def test_predictions_lie_on_the_image_grid(done):
    root, _, out, _ = done
    cases = subjects_of(read_split(root / "split.csv"), "inference")
    for variant in ("nnunet_seeds", "nnunet_full"):
        folder = _run(out, variant) / "output_pred"
        assert sorted(p.name for p in folder.glob("*.nii.gz")) == sorted(f"{c}.nii.gz" for c in cases)
        for case in cases:
            pred = sitk.ReadImage(str(folder / f"{case}.nii.gz"))
            image = sitk.ReadImage(str(root / "data" / "image_crop" / f"{case}_T2.nii.gz"))
            assert pred.GetSize() == image.GetSize()
            np.testing.assert_allclose(pred.GetSpacing(), image.GetSpacing(), atol=1e-6)
            np.testing.assert_allclose(pred.GetOrigin(), image.GetOrigin(), atol=1e-5)
            np.testing.assert_allclose(pred.GetDirection(), image.GetDirection(), atol=1e-6)
            assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1}


@pytest.mark.slow
def test_second_ablation_skips_every_run(done, capsys):
    _, cfg_path, out, _ = done
    before = (_run(out, "nnunet_seeds") / "budget.json").stat().st_mtime_ns
    ablate.main(["--config", str(cfg_path), "--output_dir", str(out), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert printed.count("seed=0: done, skipped") == 3 and "[stage 0] done, skipped" in printed
    assert (_run(out, "nnunet_seeds") / "budget.json").stat().st_mtime_ns == before


@pytest.fixture()
def own_environment(monkeypatch):
    """The driver sets nnU-Net's variables in its process: restore them after an in-process call."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer", "nnUNet_def_n_proc",
                 "nnUNet_compile", "nnUNet_n_proc_DA", "PASEG_NNUNET_EPOCHS", "PASEG_NNUNET_ITERATIONS",
                 "PASEG_NNUNET_VAL_ITERATIONS"):
        monkeypatch.setenv(name, "unset-by-test")
        monkeypatch.delenv(name)


def _driver_args(root: Path, out: Path, variant: str, **changes: str) -> list[str]:
    flags = {"--dataset_split": str(root / "split.csv"), "--path_images": str(root / "data" / "image_crop"),
             "--path_labels": str(root / "data" / "label_crop"),
             "--path_geodesic_labels": str(out / "geodesic" / "weight0.5_threshold0.2" / "geodesic_label"),
             "--model_dir": str(out / "runs" / variant / "seed0"), "--epochs": "1", "--iterations_per_epoch": "1",
             "--val_iterations": "1", "--seed": "0", "--device": "cpu", **changes}
    args = [a for k, v in flags.items() for a in (k, v)] + ["--disable_tta"]
    return args + (["--labels", "full"] if variant == "nnunet_full" else [])


@pytest.mark.slow
def test_driver_refuses_a_held_folder_and_changed_arguments(done, own_environment):
    root, _, out, _ = done
    with pytest.raises(FileExistsError, match="pass --resume to continue it or --overwrite"):
        baseline.main(_driver_args(root, out, "nnunet_seeds"))
    with pytest.raises(ValueError, match=r"--epochs 1 -> 3"):
        baseline.main(_driver_args(root, out, "nnunet_seeds", **{"--epochs": "3"}) + ["--resume"])
    with pytest.raises(FileNotFoundError, match="holds no nnU-Net run"):
        baseline.main(_driver_args(root, out / "elsewhere", "nnunet_seeds") + ["--resume"])
    with pytest.raises(ValueError, match="--iterations_per_epoch must be at least 1"):
        baseline.main(_driver_args(root, out, "nnunet_seeds", **{"--iterations_per_epoch": "0"}))


@pytest.mark.slow
def test_driver_resume_of_a_finished_run_changes_nothing(done, own_environment):
    root, _, out, _ = done
    folder = _run(out, "nnunet_full") / "output_pred"
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert baseline.main(_driver_args(root, out, "nnunet_full") + ["--resume"]) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    # only the run folder typed again: the other flags continue as the run recorded them
    assert baseline.main(["--model_dir", str(out / "runs" / "nnunet_full" / "seed0"), "--device", "cpu",
                          "--resume"]) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps


def test_train_mode_resumes_an_nnunet_folder(tmp_path):
    assert ablate.train_mode(tmp_path) is None
    (tmp_path / "nnUNet").mkdir()
    assert ablate.train_mode(tmp_path) is None          # an empty folder is a fresh run
    (tmp_path / "nnUNet" / "nnunet_run.json").write_text("{}")
    assert ablate.train_mode(tmp_path) == "--resume"


def test_trainer_budget_from_the_environment(monkeypatch):
    trainers = load_script("experiments/nnunet_trainers/nnUNetTrainerBudget.py")
    monkeypatch.delenv("PASEG_NNUNET_EPOCHS", raising=False)
    assert trainers._budget_value("PASEG_NNUNET_EPOCHS", 1000, 1) == 1000
    monkeypatch.setenv("PASEG_NNUNET_EPOCHS", " 12 ")
    assert trainers._budget_value("PASEG_NNUNET_EPOCHS", 1000, 1) == 12
    for bad in ("x", "0", "-3", "1.5"):
        monkeypatch.setenv("PASEG_NNUNET_EPOCHS", bad)
        with pytest.raises(ValueError, match="PASEG_NNUNET_EPOCHS"):
            trainers._budget_value("PASEG_NNUNET_EPOCHS", 1000, 1)


def test_missing_nnunet_is_one_line(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "nnunetv2.training.nnUNetTrainer.nnUNetTrainer", None)
    with pytest.raises(ValueError, match=r"make install"):
        baseline._check_installed()


def test_nnunet_runs_with_the_default_sigterm():
    """While nnU-Net runs, SIGTERM has its default action at the OS level, which the pool workers
    nnU-Net forks inherit (Pool.terminate must be able to end a worker that deadlocked before
    Python ran in it); the scripts' handler comes back after."""
    import signal

    from utilities.core.runtime import raise_terminated

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        with baseline._default_sigterm():
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) is raise_terminated
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_driver_refuses_regulariser_flags_without_the_pa_seg_trainer(tmp_path, own_environment):
    """Stage 1's regulariser flags set nnUNetTrainerPASeg's settings: refused with --trainer Budget,
    checked with --trainer PASeg, before anything is written."""
    args = ["--model_dir", str(tmp_path / "run"), "--device", "cpu"]
    with pytest.raises(ValueError, match=r"^--weight_gatedcrf 0.5: PA-Seg's regularisers need --trainer PASeg$"):
        baseline.main(args + ["--weight_gatedcrf", "0.5"])
    for flag, value, shown, message in (("--kernel_radius", "0", "0", ">= 1"), ("--crf_sigma_rgb", "0", "0.0", "> 0"),
                                        ("--weight_variance", "-0.1", "-0.1", ">= 0")):
        with pytest.raises(ValueError, match=f"^{flag} {shown}: expected a value {message}$"):
            baseline.main(args + ["--trainer", "PASeg", flag, value])
    assert not (tmp_path / "run").exists()


def test_driver_resumes_a_run_recorded_before_the_trainer_flag(tmp_path):
    """A run whose record has no --trainer (nor the regulariser flags) was a Budget run with none of
    them: it continues as one; a PASeg run does not continue as a Budget run."""
    parser = baseline.build_parser()
    args = parser.parse_args(["--model_dir", str(tmp_path), "--resume"])
    record = {k: v for k, v in vars(args).items() if k not in ("resume", "overwrite", "device")}
    defaults = {k: parser.get_default(k) for k in record}
    folder = baseline.run_folder(tmp_path)
    folder.mkdir()
    older = {k: v for k, v in record.items() if k != "trainer" and v is not None}
    assert "weight_gatedcrf" in record and "weight_gatedcrf" not in older
    (folder / "nnunet_run.json").write_text(json.dumps({"arguments": older, "done": ["exported"]}))
    assert baseline._prepare_folder(args, record, defaults)["done"] == ["exported"]
    (folder / "nnunet_run.json").write_text(json.dumps({"arguments": {**record, "trainer": "PASeg"},
                                                        "done": ["exported"]}))
    with pytest.raises(ValueError, match=r"--trainer 'PASeg' -> 'Budget'"):
        baseline._prepare_folder(args, record, defaults)


def test_a_start_refused_on_its_inputs_is_no_run(tmp_path):
    """A record with no step done (the export refused a mistyped --path_labels) does not hold the
    folder: the corrected command starts, with or without --resume."""
    parser = baseline.build_parser()
    folder = baseline.run_folder(tmp_path)
    for extra in ([], ["--resume"]):
        args = parser.parse_args(["--model_dir", str(tmp_path), *extra])
        record = {k: v for k, v in vars(args).items() if k not in ("resume", "overwrite", "device")}
        folder.mkdir(exist_ok=True)
        (folder / "nnunet_run.json").write_text(json.dumps({"arguments": {**record, "path_labels": "typo"},
                                                            "done": []}))
        assert baseline._prepare_folder(args, record, {k: parser.get_default(k) for k in record}) == {
            "arguments": record, "done": []}
        assert not folder.exists()


def test_a_moved_run_folder_resumes_with_its_inputs_moved_or_not(tmp_path):
    """A run folder moved with the tree around it (an ablation folder moved whole) is the same run:
    its inputs may be named where they now lie or where they were; the record then names the new
    place. Another flag, or an input that is neither, is still refused."""
    parser = baseline.build_parser()
    then, now = tmp_path / "old" / "abl", tmp_path / "new" / "abl2"

    def arguments(root: Path, data: Path | None = None, *extra: str) -> list[str]:
        data = root if data is None else data
        return ["--model_dir", str(root / "f1" / "runs" / "nnunet" / "seed0"), "--dataset_split",
                str(data / "f1" / "data" / "split.csv"), "--path_images", str(data / "f1" / "data" / "image") + "/",
                "--resume", *extra]

    old_args = parser.parse_args(arguments(then))
    old_record = {k: v for k, v in vars(old_args).items() if k not in ("resume", "overwrite", "device")}
    defaults = {k: parser.get_default(k) for k in old_record}
    folder = baseline.run_folder(now / "f1" / "runs" / "nnunet" / "seed0")
    for data in (now, then):   # the inputs moved with the folder, or left where they were
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "nnunet_run.json").write_text(json.dumps({"arguments": old_record, "done": ["exported"]}))
        args = parser.parse_args(arguments(now, data))
        record = {k: v for k, v in vars(args).items() if k not in ("resume", "overwrite", "device")}
        state = baseline._prepare_folder(args, record, defaults)
        assert state == {"arguments": record, "done": ["exported"]}
    (folder / "nnunet_run.json").write_text(json.dumps({"arguments": old_record, "done": ["exported"]}))
    for refused, message in ((arguments(now, None, "--epochs", "3"), r"--epochs 1000 -> 3"),
                             (arguments(now, tmp_path / "third"), r"--dataset_split '.*/old/abl/f1/data/split.csv' "
                                                                  r"-> '.*/third/f1/data/split.csv'")):
        args = parser.parse_args(refused)
        record = {k: v for k, v in vars(args).items() if k not in ("resume", "overwrite", "device")}
        with pytest.raises(ValueError, match=message):
            baseline._prepare_folder(args, record, defaults)
    assert baseline._moved_roots("/a/abl/f1/runs/x/seed0", "/b/abl2/f1/runs/x/seed0") == ("/a/abl", "/b/abl2")
    assert baseline._moved_roots("run1", "./run2/") == ("run1", "run2")
    assert baseline._moved_roots("./models/x/", "models/x") is None


@pytest.mark.slow
def test_a_killed_nnunet_run_in_a_moved_ablation_folder_is_resumed(done, own_environment, tmp_path, capsys):
    """The ablation folder copied elsewhere, its nnU-Net run killed before it predicted: the runner
    resumes it there (nnU-Net predicts with the model in the moved folder) and skips the others."""
    import shutil

    _, cfg_path, out, _ = done
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(out, moved, symlinks=True)
    run = moved / "runs" / "nnunet_seeds" / "seed0"
    state = json.loads((run / "nnUNet" / "nnunet_run.json").read_text())
    state["done"] = [s for s in state["done"] if s != "predicted"]
    (run / "nnUNet" / "nnunet_run.json").write_text(json.dumps(state))
    shutil.rmtree(run / "nnUNet" / "output_pred")
    for marker in ("ablate_done.json", "ablate_trained.json"):
        (run / marker).unlink()
    with pytest.MonkeyPatch.context() as mp:
        ScriptsInProcess(subprocesses=1).install(mp)
        ablate.main(["--config", str(cfg_path), "--output_dir", str(moved), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert printed.count("seed=0: done, skipped") == 2 and "trained (--resume)" in printed
    record = json.loads((run / "nnUNet" / "nnunet_run.json").read_text())
    assert record["done"][-1] == "predicted" and record["arguments"]["model_dir"] == str(run)
    assert len(list((run / "nnUNet" / "output_pred").glob("*.nii.gz"))) == 2
    assert pd.read_csv(moved / "table.csv").set_index("variant").loc["nnunet_seeds", "dice_mean"] == pytest.approx(
        pd.read_csv(out / "table.csv").set_index("variant").loc["nnunet_seeds", "dice_mean"])


@pytest.mark.slow
def test_the_trained_checkpoints_load_weights_only(done):
    """The run's own nnU-Net checkpoints (numpy scalars in its logs, torch.device in its init
    arguments) load through the weights-only reader the driver predicts and resumes with."""
    _, _, out, _ = done
    run = _run(out, "nnunet_seeds")
    budget = json.loads((run / "budget.json").read_text())
    folder = baseline.trained_model_folder(run, budget)
    assert folder == (run / budget["model_folder"]).resolve()
    checkpoint = baseline.load_checkpoint(folder / "fold_0" / "checkpoint_final.pth")
    assert checkpoint["trainer_name"] == "nnUNetTrainerBudget" and checkpoint["current_epoch"] == 1
    assert checkpoint["init_args"]["configuration"] == "3d_fullres"


class _Runs:
    """A pickled object whose loading would create ``path`` (what a hostile checkpoint could do)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def test_checkpoints_are_read_weights_only_and_a_hostile_one_runs_nothing(tmp_path):
    """load_checkpoint: nnU-Net's layout (numpy scalars and dtypes, torch.device) loads with
    weights_only=True; a file holding another pickled object is one line naming it, and the
    object is never built."""
    import torch

    net = torch.nn.Conv3d(1, 2, 3)
    logging = {"mean_fg_dice": [np.float32(0.5)], "ema_fg_dice": [np.float64(0.25)], "epochs": [np.int64(3)],
               "lrs": [0.01]}
    good = {"network_weights": net.state_dict(), "logging": logging, "_best_ema": np.float64(0.25),
            "init_args": {"configuration": "3d_fullres", "device": torch.device("cpu")}, "trainer_name": "T",
            "inference_allowed_mirroring_axes": (0, 1, 2)}
    torch.save(good, tmp_path / "good.pth")
    loaded = baseline.load_checkpoint(tmp_path / "good.pth")
    assert loaded["logging"] == logging and loaded["_best_ema"] == 0.25
    assert torch.equal(loaded["network_weights"]["weight"], net.state_dict()["weight"])
    sentinel = tmp_path / "ran"
    hostile = tmp_path / "hostile.pth"
    torch.save({**good, "trainer_name": _Runs(sentinel)}, hostile)
    with pytest.raises(ValueError) as err:
        baseline.load_checkpoint(hostile)
    assert str(err.value) == (f"{hostile} holds pickled Python objects (io.open) that torch.load refuses "
                              "(weights_only=True: loading it would run code from the file); an nnU-Net checkpoint "
                              "holds tensors, numbers and numpy scalars only: train the run again (--overwrite)")
    assert not sentinel.exists()
    torch.load(hostile, weights_only=False)    # what nnU-Net's own loader would do: the object runs
    assert sentinel.exists()
    torch.save({"state_dict": net.state_dict()}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"other.pth is not an nnU-Net checkpoint \(no network_weights\)"):
        baseline.load_checkpoint(tmp_path / "other.pth")


def test_the_model_folder_must_lie_in_the_run_folder(tmp_path):
    run = tmp_path / "run" / "nnUNet"
    (run / "nnUNet_results" / "m").mkdir(parents=True)
    (tmp_path / "downloaded").mkdir()
    (run / "link").symlink_to(tmp_path / "downloaded")
    assert baseline.trained_model_folder(run, {"model_folder": "nnUNet_results/m"}) == (run / "nnUNet_results"
                                                                                       / "m").resolve()
    budget = run / "budget.json"
    for value in ("../../downloaded", str(tmp_path / "downloaded"), "link"):
        with pytest.raises(ValueError) as err:
            baseline.trained_model_folder(run, {"model_folder": value})
        assert str(err.value) == (f"{budget}: model_folder {value!r} lies outside the run folder {run}; the run "
                                  "predicts only with the model it trained there (restore budget.json, or train "
                                  "again with --overwrite)")
    for budget_json in ({"model_folder": 3}, ["nnUNet_results/m"]):
        with pytest.raises(ValueError, match="model_folder must be a folder name"):
            baseline.trained_model_folder(run, budget_json)


def test_run_folder_json_with_a_repeated_key_is_named(tmp_path):
    """nnU-Net's plans (which users edit), budget.json and the run record are read through
    utilities.core.textdata.loads_json: a key written twice is one line naming the file."""
    plans = tmp_path / "nnUNetPlans.json"
    plans.write_text('{"configurations": {"3d_fullres": {"batch_size": 2, "batch_size": 8}}}', encoding="utf-8")
    with pytest.raises(ValueError) as err:
        baseline._read_json(plans)
    assert str(err.value) == (f"{plans}: key 'batch_size' appears twice in one JSON object (the second would "
                              "silently replace the first); keep one")
    plans.write_text('{"configurations": ', encoding="utf-8")
    with pytest.raises(ValueError, match=r"nnUNetPlans.json is not valid JSON \(.*\); restore it, or start again"):
        baseline._read_json(plans)
    with pytest.raises(FileNotFoundError, match=r"dataset.json not found: the run folder is incomplete"):
        baseline._read_json(tmp_path / "dataset.json")
    (tmp_path / baseline.STATE_NAME).write_text('{"done": [], "done": ["exported"]}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"^run record .*nnunet_run.json: key 'done' appears twice"):
        baseline._read_state(tmp_path)
