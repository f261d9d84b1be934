"""Bad flag values name the flag; a CUDA request without a GPU says what to use instead."""
from __future__ import annotations

import pytest
import torch
from helpers import a_model, inference_args, one_line, pretrained, scm_args, stage1_args

import inference
import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
import train_SCM as scm
from utilities.data.layout import RunLayout


# ------------------------------------------------------------------------ arguments
@pytest.mark.parametrize("script, argv, message", [
    ("stage1", ["--spatial_shape", "30", "32", "16"], "--spatial_shape must be divisible by 16 in every axis, "
                                                      "got [30, 32, 16]"),
    ("stage1", ["--down_size", "64", "16", "16"], "--down_size [64, 16, 16] must not exceed --spatial_shape "
                                                  "[32, 32, 16] in any axis"),
    ("inference", ["--spatial_shape", "32", "32", "0"], "--spatial_shape needs three positive sizes, got [32, 32, 0]"),
    ("stage1", ["--max_epochs", "0"], "argument --max_epochs: must be a positive integer, got 0"),
    ("stage1", ["--batch_size", "-1"], "argument --batch_size: must be a positive integer, got -1"),
    ("stage1", ["--seg_balance_power", "0.5"], "--seg_balance_power 0.5 tempers --seg_class_balance, which is off; "
                                               "add --seg_class_balance (or leave --seg_balance_power at 1)"),
    ("stage1", ["--seg_class_balance", "--seg_balance_power", "2"],
     "argument --seg_balance_power: must be a number in (0, 1], got 2"),
    ("stage1", ["--seg_class_balance", "--seg_balance_power", "0"],
     "argument --seg_balance_power: must be a number in (0, 1], got 0"),
    ("stage1", ["--fg_patch_fraction", "1.5"], "argument --fg_patch_fraction: must be a number in [0, 1], got 1.5"),
    ("scm", ["--iterative_epochs", "0"], "argument --iterative_epochs: must be a positive integer, got 0"),
    ("scm", ["--T", "1e6"], "--T 1e+06 is above 100: the distillation term's T² factor then magnifies float32 "
                            "rounding into the loss (it turns negative); use a temperature of at most 100 (the "
                            "paper's: 4)"),
    ("inference", ["--sw_batch_size", "0"], "argument --sw_batch_size: must be a positive integer, got 0"),
])
def test_bad_argument_values_name_the_flag(data, tmp_path, capsys, script, argv, message):
    build = {"stage1": lambda: stage1_args(data, tmp_path / "run", *argv),
             "scm": lambda: scm_args(data, pretrained(tmp_path), tmp_path / "run", *argv),
             "inference": lambda: inference_args(data, tmp_path / "run", *argv)}[script]
    main = {"stage1": stage1.main, "scm": scm.main, "inference": inference.main}[script]
    if message.startswith("argument"):
        with pytest.raises(SystemExit) as err:
            main(build())
        assert err.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {message}; '") and lines[0].endswith(" --help' lists "
                                                                                                  "the flags")
    else:
        with pytest.raises(ValueError) as err:
            main(build())
        assert one_line(err) == message
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------ CUDA without a GPU
@pytest.mark.parametrize("script", ["stage1", "scm", "inference"])
def test_cuda_requested_without_gpu(data, tmp_path, monkeypatch, script):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if script == "stage1":
        main, argv = stage1.main, stage1_args(data, tmp_path / "run", "--device", "cuda")
    elif script == "scm":
        main, argv = scm.main, scm_args(data, pretrained(tmp_path), tmp_path / "run", "--device", "cuda")
    else:
        main, argv = inference.main, inference_args(data, a_model(tmp_path / "run").parents[2], "--device", "cuda")
    with pytest.raises(RuntimeError) as err:
        main(argv)
    assert one_line(err) == ("--device cuda was requested but no CUDA GPU is available; use --device cpu or "
                             "--device auto")
    assert not list(tmp_path.rglob("log*.txt")) and not list(tmp_path.rglob("*_seg.nii.gz"))


def test_optimizer_adam_is_used_saved_and_kept_on_resume(data, tmp_path, capsys):
    """``--optimizer adam``: the checkpoint holds Adam's state; a resume that types SGD is refused,
    one that does not name the optimizer continues with Adam (the run's record)."""
    run = stage1.main(stage1_args(data, tmp_path / "run", "--max_epochs", "1", "--optimizer", "adam",
                                  "--learning_rate", "0.001"))
    latest = torch.load(RunLayout(tmp_path / "run", "U_Net2D5").latest(), map_location="cpu", weights_only=False)
    states = latest["optimizer"]["state"]
    assert states and all({"exp_avg", "exp_avg_sq"} <= set(s) for s in states.values())
    assert latest["optimizer"]["param_groups"][0]["lr"] <= 0.001
    logs = sorted(run.glob("log_*.txt"))
    with pytest.raises(ValueError, match="was trained with --optimizer adam, not sgd .* pass --optimizer adam, or"):
        stage1.main(stage1_args(data, tmp_path / "run", "--max_epochs", "2", "--resume", "--learning_rate", "0.001",
                                "--optimizer", "sgd"))
    assert sorted(run.glob("log_*.txt")) == logs   # refused before the run's folder got a log file
    stage1.main(stage1_args(data, tmp_path / "run", "--max_epochs", "2", "--resume", "--learning_rate", "0.001"))
    latest = torch.load(RunLayout(tmp_path / "run", "U_Net2D5").latest(), map_location="cpu", weights_only=False)
    assert latest["epoch"] == 2 and latest["args"]["optimizer"] == "adam"
    assert all({"exp_avg", "exp_avg_sq"} <= set(s) for s in latest["optimizer"]["state"].values())
    assert run.is_dir()
    with pytest.raises(SystemExit):
        stage1.main(stage1_args(data, tmp_path / "other", "--optimizer", "rmsprop"))
    assert "argument --optimizer: invalid choice: 'rmsprop'" in capsys.readouterr().err


def test_loss_and_augmentation_flags_reach_the_step_and_the_loader(data, tmp_path, monkeypatch):
    """``--seg_dice`` reaches the stage-1 step's partial Dice+CE and ``--augmentation`` the training
    patches' transform, through the script's own training (one epoch); the paper's values are the
    defaults."""
    from utilities.data.loading import TrainingData

    seen = []
    real_loaders, real_step = TrainingData.loaders, stage1.Stage1Step.__init__

    def loaders(self, *args, **kwargs):
        train_loader, *rest = real_loaders(self, *args, **kwargs)
        seen.append([type(t).__name__ for t in train_loader.dataset.transform])
        return (train_loader, *rest)

    def step_init(self, *args, **kwargs):
        real_step(self, *args, **kwargs)
        seen.append(self.seg_loss.dice)

    monkeypatch.setattr(TrainingData, "loaders", loaders)
    monkeypatch.setattr(stage1.Stage1Step, "__init__", step_init)
    for k, (extra, expected) in enumerate((([], [["CropOrPad", "RandomFlip"], "classes"]),
                                           (["--seg_dice", "foreground", "--augmentation", "nnunet"],
                                            [["CropOrPad", "Compose", "RandomFlip"], "foreground"]))):
        seen.clear()
        stage1.main(stage1_args(data, tmp_path / f"run{k}", "--max_epochs", "1", *extra))
        assert seen == expected


def test_stage1_with_a_dataset_file_needs_its_run_folder(data, tmp_path):
    """With --dataset, no default of the paper's data applies: stage 1's run folder (default
    ./models/debug/) must be typed, as SCM's must."""
    import json

    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps({"split": str(data["split"]), "images": str(data["image_crop"]),
                                   "image_postfix": "T2", "seeds": str(data["geodesic_label"])}))
    argv = ["--dataset", str(dataset), "--network", "U_Net2D5", "--spatial_shape", "32", "32", "16", "--down_size",
            "16", "16", "16", "--max_epochs", "1", "--rampup_epochs", "1", "--val_metric", "seed_dice",
            "--device", "cpu"]
    with pytest.raises(ValueError) as err:
        stage1.main(argv)
    assert str(err.value) == (f"--dataset {dataset}: --model_dir has no default with --dataset (its default is for "
                              "the paper's VS data): pass it")
    run = stage1.main([*argv, "--model_dir", str(tmp_path / "run")])
    assert (run / "models" / "CP_final.pth").is_file()


def test_scm_refuses_two_stage1_runs_with_identical_weights(data, tmp_path):
    """Two stage-1 runs of one network with the same flags and --seed are one network twice: SCM
    would train two identical students, so it is refused, as one run given twice is."""
    first, second = (a_model(tmp_path / name) for name in ("a", "b"))   # torch.manual_seed(0) both: identical
    with pytest.raises(ValueError) as err:
        scm.main(scm_args(data, [first.parents[2], second.parents[2]], tmp_path / "run"))
    assert str(err.value) == (f"the stage-1 checkpoints {first} and {second} hold identical weights (two runs with the "
                              "same flags and --seed?): SCM would train two identical students (self-training only); "
                              "train the second stage-1 run with another --seed, or use another network")
    assert not (tmp_path / "run").exists()


def test_scm_says_when_its_teachers_are_never_refreshed(data, tmp_path, capsys):
    scm.main(scm_args(data, pretrained(tmp_path), tmp_path / "run", "--max_epochs", "1", "--iterative_epochs", "1"))
    assert ("--iterative_epochs 1 is not shorter than --max_epochs 1: the teachers are never refreshed from the "
            "students") in capsys.readouterr().out


def test_a_momentum_of_one_or_more_is_refused(capsys):
    with pytest.raises(SystemExit):
        stage1.build_parser().parse_args(["--momentum", "1.0"])
    assert "argument --momentum: must be a number in [0, 1), got 1.0" in capsys.readouterr().err
    assert stage1.build_parser().parse_args(["--momentum", "0"]).momentum == 0.0


def test_a_batch_larger_than_the_training_cases_says_so(data, tmp_path, capsys):
    stage1.main(stage1_args(data, tmp_path / "run", "--batch_size", "5", "--max_epochs", "1"))
    assert ("--batch_size 5 is more than the 2 training case(s) each process sees per epoch: an epoch is one batch "
            "of 2 patch(es)") in capsys.readouterr().out


# ------------------------------------------------------------------------ --resume takes the run's flags
def test_resumed_args_take_the_record_where_nothing_was_given(tmp_path):
    """Recorded values replace defaults; a typed flag and a flag from a --plan keep theirs; the
    machine's flags (device, workers) are never taken; without a readable state nothing changes."""
    from utilities.core.arguments import clear_origins, origin_note, record_origins
    from utilities.workflow.cli import resumed_args

    latest = tmp_path / "CP_latest.pth"
    torch.save({"args": {"optimizer": "adam", "spatial_shape": [64, 64, 32], "max_epochs": 7, "batch_size": 3,
                         "device": "cuda", "num_workers": 5, "gone_flag": 1}}, latest)
    parser = stage1.build_parser()
    argv = ["--resume", "--spatial_shape", "32", "32", "16", "--device", "cpu"]
    clear_origins()
    try:
        args = parser.parse_args(argv)
        record_origins(["--batch_size"], "--plan p.json")   # as apply_plan does for a flag of the plan
        args.batch_size = 2
        args = resumed_args(parser, argv, args, latest)
        assert (args.optimizer, args.max_epochs) == ("adam", 7)
        assert (args.spatial_shape, args.batch_size, args.device) == ([32, 32, 16], 2, "cpu")
        assert args.num_workers == parser.get_default("num_workers") and not hasattr(args, "gone_flag")
        assert origin_note("--max_epochs 7 is wrong") == (f" (--max_epochs: from --resume {latest}, not typed; a "
                                                          "flag given on the command line overrides it)")
        # nothing to read, or no --resume: the arguments stay as parsed
        fresh = parser.parse_args(argv)
        assert vars(resumed_args(parser, argv, fresh, tmp_path / "none.pth")) == vars(parser.parse_args(argv))
        no_resume = parser.parse_args(argv[1:])
        assert resumed_args(parser, argv[1:], no_resume, latest).optimizer == "sgd"
        (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
        assert resumed_args(parser, argv, parser.parse_args(argv), tmp_path / "bad.pth").optimizer == "sgd"
    finally:
        clear_origins()


@pytest.mark.parametrize(("given", "name"), [("best", "best"), ("CP_final.pth", "final"), ("final.pth", "final"),
                                             ("CP_best_model2", "best_model2")])
def test_epoch_inf_takes_a_checkpoint_file_name_as_its_name(given, name):
    assert inference.build_parser().parse_args(["--epoch_inf", given]).epoch_inf == name


def test_epoch_inf_refuses_a_path(capsys):
    with pytest.raises(SystemExit):
        inference.build_parser().parse_args(["--epoch_inf", "runs/a/U_Net2D5/models/CP_best.pth"])
    assert capsys.readouterr().err.startswith("error: argument --epoch_inf: must be a checkpoint name such as best "
                                              "or final, not the path 'runs/a/U_Net2D5/models/CP_best.pth'; give a "
                                              "checkpoint file with --model (inference.py)")


def test_a_missing_checkpoint_lists_only_models_to_predict_with(tmp_path):
    """The training states (CP_latest*, CP_healthy) hold no model: not offered as --epoch_inf."""
    from utilities.models.model_package import checkpoint_path

    layout = RunLayout(tmp_path, "U_Net2D5")
    layout.models.mkdir(parents=True)
    for kind in ("best", "final", "latest", "latest_SCM", "healthy"):
        layout.checkpoint(kind).write_bytes(b"")
    with pytest.raises(FileNotFoundError) as err:
        checkpoint_path(tmp_path, "U_Net2D5", "nope")
    assert one_line(err) == (f"checkpoint {layout.checkpoint('nope')} not found; checkpoints there: "
                             "--epoch_inf {best,final}")


def test_kernel_radius_values_beyond_the_first_are_named_as_unused(capsys):
    args = stage1.build_parser().parse_args(["--kernel_radius", "5", "3", "3", "--spatial_shape", "32", "32", "16",
                                             "--down_size", "16", "16", "16"])
    stage1.check_args(args)
    assert ("--kernel_radius 5 3 3: only its first value (5) is used, in every view of the mCRF"
            in capsys.readouterr().out)
    for radius in (["5", "5", "-1"], ["3", "3", "-1"]):   # the published form, any radius: no warning
        stage1.check_args(stage1.build_parser().parse_args(["--kernel_radius", *radius, "--spatial_shape", "32",
                                                            "32", "16", "--down_size", "16", "16", "16"]))
    assert "--kernel_radius" not in capsys.readouterr().out
