"""nnUNetTrainerPASeg (experiments/nnunet_trainers/): its loss terms against the project's own losses,
its ramp-up against stage 1's, nnU-Net's lookup by name, the ablation kind, and nnU-Net's own
training and prediction with it, end to end on tiny data (a few iterations)."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from helpers import ROOT, demo_dataset, load_script

from utilities.data.splits import read_split, subjects_of
from utilities.method.losses import MultiViewGatedCRFLoss, VarianceLoss
from utilities.method.schedules import sigmoid_rampup

pytest.importorskip("nnunetv2.training.nnUNetTrainer.nnUNetTrainer",
                    reason="nnU-Net v2 and its training packages are installed by `make install` "
                           "(requirements-nnunet.txt)")

TRAINERS_DIR = ROOT / "experiments" / "nnunet_trainers"
sys.path.insert(0, str(TRAINERS_DIR))   # the trainers' modules by their names, as nnU-Net imports them
settings_module = importlib.import_module("paseg_nnunet_settings")
trainer_module = importlib.import_module("nnUNetTrainerPASeg")
installer = load_script("experiments/nnunet_trainers/install_paseg_trainers.py")
stage1 = load_script("train_gatedcrfloss3d22d_multiview_varianceloss.py")
ablate = load_script("experiments/ablate.py")

RegulariserSettings = settings_module.RegulariserSettings
PASegRegularisers = trainer_module.PASegRegularisers
nnUNetTrainerPASeg = trainer_module.nnUNetTrainerPASeg

#: The ablation variant: 2 epochs x 2 iterations, non-default regulariser settings (small window).
FLAGS = {"--trainer": "PASeg", "--epochs": 2, "--iterations_per_epoch": 2, "--val_iterations": 1,
         "--disable_tta": True, "--rampup_epochs": 1, "--weight_variance": 0.5, "--kernel_radius": 2,
         "--crf_sigma_xy": 3.0}
#: The settings of ENV (the runner's FLAGS, with a ramp-up of 2 epochs).
SETTINGS = {"weight_crf": 1.0, "weight_vm": 0.5, "rampup_epochs": 2, "warmup_epochs": 0, "rampup_unit": "epoch",
            "rampup_start": "warmup", "crf_downsample": 1, "kernel_radius": 2, "sigma_xy": 3.0,
            "sigma_rgb": 0.1, "image_channel": 0}
ENV = {"PASEG_NNUNET_WEIGHT_VM": "0.5", "PASEG_NNUNET_RAMPUP_EPOCHS": "2", "PASEG_NNUNET_KERNEL_RADIUS": "2",
       "PASEG_NNUNET_CRF_SIGMA_XY": "3.0"}


# --- the loss terms and the ramp-up (no nnU-Net data) ---------------------------------------------------------

def test_regularisers_are_the_project_losses_on_the_chosen_channel():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 7, 5, requires_grad=True)
    data = torch.randn(2, 2, 8, 7, 5)
    settings = RegulariserSettings(kernel_radius=2, sigma_xy=3.0, sigma_rgb=0.5, image_channel=1)
    crf, vm = PASegRegularisers(settings)(logits, data)
    image = data[:, 1:2]
    expected_crf = MultiViewGatedCRFLoss(down_size=None, kernel_radius=2, sigma_xy=3.0, sigma_rgb=0.5)(logits, image)
    expected_vm = VarianceLoss()(logits, image)
    assert crf.item() == pytest.approx(expected_crf.item(), rel=1e-6) and crf.item() > 0
    assert vm.item() == pytest.approx(expected_vm.item(), rel=1e-6) and vm.item() > 0
    grad = torch.autograd.grad(crf + vm, logits)[0]
    np.testing.assert_allclose(grad, torch.autograd.grad(expected_crf + expected_vm, logits)[0], rtol=1e-5, atol=1e-8)
    assert PASegRegularisers(settings)(logits, data, crf=False, vm=False) == (0.0, 0.0)


def test_a_2d_output_gets_the_gated_crf_of_its_slice():
    """A 2D configuration's (N, C, X, Y) output: the mCRF is the 2D gated CRF of the slice, which is
    the XY view of a volume made of copies of that slice (per voxel, the same sum)."""
    torch.manual_seed(1)
    logits, data = torch.randn(2, 2, 9, 8), torch.randn(2, 1, 9, 8)
    settings = RegulariserSettings(kernel_radius=2, sigma_xy=3.0)
    crf, vm = PASegRegularisers(settings)(logits, data)
    stack = MultiViewGatedCRFLoss(down_size=None, kernel_radius=2, sigma_xy=3.0)
    views = stack.views(logits.unsqueeze(-1).repeat(1, 1, 1, 1, 4), data.unsqueeze(-1).repeat(1, 1, 1, 1, 4))
    assert crf.item() == pytest.approx(views[0].item(), rel=1e-5)
    assert vm.item() == pytest.approx(VarianceLoss()(logits.unsqueeze(-1), data.unsqueeze(-1)).item(), rel=1e-6)


def test_crf_grid_halves_every_axis_but_the_coarsest():
    halve = RegulariserSettings(crf_downsample=2)
    assert halve.crf_grid((40, 80, 64), (1.0, 1.0, 1.0)) == (40, 40, 32)     # a tie: the first axis kept
    assert halve.crf_grid((40, 80, 64)) == (40, 40, 32)
    assert halve.crf_grid((64, 24, 45), (0.4, 1.5, 0.4)) == (32, 24, 22)     # the slice axis, wherever it is
    assert halve.crf_grid((81, 64)) == (40, 32)                              # a 2D slice: both axes
    assert RegulariserSettings(crf_downsample=3).crf_grid((8, 2, 2), (2.0, 1.0, 1.0)) == (8, 1, 1)
    assert RegulariserSettings().crf_grid((40, 80, 64), (3.0, 1.0, 1.0)) == (40, 80, 64)


def test_downsampled_regularisers_are_stage_1s_mcrf_on_its_grid():
    """``crf_downsample`` 2: the mCRF of stage 1 with ``--down_size`` the in-plane halving of the
    output (trilinear, the image too), same value and gradient; the VM stays on the output."""
    torch.manual_seed(2)
    logits = torch.randn(2, 2, 6, 12, 10, requires_grad=True)
    data = torch.randn(2, 1, 6, 12, 10)
    settings = RegulariserSettings(crf_downsample=2, kernel_radius=2, sigma_xy=3.0)
    regularisers = PASegRegularisers(settings, spacing=(3.0, 1.0, 1.0))
    crf, vm = regularisers(logits, data)
    expected_crf = MultiViewGatedCRFLoss(down_size=(6, 6, 5), kernel_radius=2, sigma_xy=3.0)(logits, data)
    full_crf = MultiViewGatedCRFLoss(down_size=None, kernel_radius=2, sigma_xy=3.0)(logits, data)
    assert crf.item() == pytest.approx(expected_crf.item(), rel=1e-6)
    assert crf.item() != pytest.approx(full_crf.item(), rel=1e-2)
    assert vm.item() == pytest.approx(VarianceLoss()(logits, data).item(), rel=1e-6)
    np.testing.assert_allclose(torch.autograd.grad(crf, logits)[0], torch.autograd.grad(expected_crf, logits)[0],
                               rtol=1e-5, atol=1e-8)
    assert list(regularisers.crfs) == [(6, 6, 5)]
    planar = PASegRegularisers(settings)(logits[..., 0], data[..., 0])[0]     # a 2D output: both axes halved
    stack = MultiViewGatedCRFLoss(down_size=(3, 6, 1), kernel_radius=2, sigma_xy=3.0)
    assert planar.item() == pytest.approx(stack.views(logits[..., :1], data[..., :1])[0].item(), rel=1e-5)


def test_regularisers_refuse_a_channel_the_input_lacks():
    with pytest.raises(ValueError, match=r"PASEG_NNUNET_CRF_CHANNEL=1, but the input has 1 channel"):
        PASegRegularisers(RegulariserSettings(image_channel=1))(torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4))


def test_paseg_terms_weigh_the_terms_by_the_ramp():
    torch.manual_seed(2)
    logits, data = torch.randn(1, 2, 6, 6, 4), torch.randn(1, 1, 6, 6, 4)
    settings = RegulariserSettings(weight_crf=2.0, weight_vm=0.3, kernel_radius=2)
    holder = type("Holder", (), {"paseg": settings, "regularisers": PASegRegularisers(settings)})()
    total, crf, vm = nnUNetTrainerPASeg.paseg_terms(holder, logits, data, 0.25)
    assert total.item() == pytest.approx(0.25 * (2.0 * crf.item() + 0.3 * vm.item()), rel=1e-6)
    assert crf.item() > 0 and vm.item() > 0


@pytest.mark.parametrize("unit", ["epoch", "step"])
@pytest.mark.parametrize("warmup", [0, 2])
def test_ramp_is_stage_1s(unit, warmup):
    """(b): at the start, the middle and the end of the ramp-up (and every step between), the factor
    is stage 1's ``ramp_weight`` and ``utilities.method.schedules.sigmoid_rampup``."""
    settings = RegulariserSettings(rampup_epochs=6, warmup_epochs=warmup, rampup_unit=unit)
    steps = 4
    for epoch in range(warmup + 8):
        for step in range(steps):
            info = stage1.StepInfo(epoch, step, epoch * steps + step, steps)
            ramp = settings.ramp(epoch, step, steps)
            assert ramp == stage1.ramp_weight(info, 6, warmup, unit)
    assert settings.ramp(warmup, 0, steps) == sigmoid_rampup(0, 6) == pytest.approx(np.exp(-5))
    assert settings.ramp(warmup + 3, 0, steps) == sigmoid_rampup(3, 6) == pytest.approx(np.exp(-1.25))
    assert settings.ramp(warmup + 6, 0, steps) == sigmoid_rampup(6, 6) == 1.0
    mid_step = settings.ramp(warmup + 3, 2, steps)
    assert mid_step == (sigmoid_rampup(3.5, 6) if unit == "step" else sigmoid_rampup(3, 6))
    if warmup:
        assert settings.ramp(warmup - 1, steps - 1, steps) == 0.0


@pytest.mark.parametrize("warmup", [0, 5])
def test_ramp_can_wait_for_the_first_epoch_with_foreground(warmup):
    """``rampup_start="foreground"``: no ramp-up while every validation pseudo Dice so far is 0 or
    NaN; then stage 1's ramp-up from the epoch after the first above 0 (or the warm-up's end, if later)."""
    first = settings_module.first_foreground_epoch
    assert first([]) is None and first([float("nan"), 0.0]) is None and first([float("nan"), 0.0, 0.02, 0.0]) == 2
    settings = RegulariserSettings(rampup_epochs=4, warmup_epochs=warmup, rampup_start="foreground")
    assert settings.ramp_start([0.0, float("nan"), 0.0]) is None
    assert all(settings.ramp(epoch, step, 3, None) == 0.0 for epoch in range(20) for step in range(3))
    start = settings.ramp_start([0.0, 0.0, 0.0, 0.31, 0.0])
    assert start == 4
    begin = max(warmup, 4)
    assert settings.ramp(begin - 1, 0, 3, start) == 0.0
    assert [settings.ramp(begin + k, 0, 3, start) for k in range(5)] == [sigmoid_rampup(k, 4) for k in range(5)]
    stage1_like = RegulariserSettings(rampup_epochs=4, warmup_epochs=warmup)
    assert stage1_like.ramp_start([0.0, 0.0]) == 0
    assert [stage1_like.ramp(e, 0, 3, 0) for e in range(12)] == [stage1_like.ramp(e, 0, 3) for e in range(12)]
    waiting = RegulariserSettings.from_environment({"PASEG_NNUNET_RAMPUP_START": "foreground"})
    assert waiting.rampup_start == "foreground"
    with pytest.raises(ValueError, match="PASEG_NNUNET_RAMPUP_START='first': expected one of warmup, foreground"):
        RegulariserSettings.from_environment({"PASEG_NNUNET_RAMPUP_START": "first"})


def test_settings_defaults_are_stage_1s():
    args = stage1.build_parser().parse_args([])
    stage1_values = {"weight_crf": args.weight_gatedcrf, "weight_vm": args.weight_variance,
                     "rampup_epochs": args.rampup_epochs, "warmup_epochs": args.warmup_epochs,
                     "rampup_unit": args.rampup_unit, "kernel_radius": args.kernel_radius[0],
                     "sigma_xy": args.crf_sigma_xy, "sigma_rgb": args.crf_sigma_rgb}
    defaults = RegulariserSettings.from_environment({}).as_dict()
    assert {k: defaults[k] for k in stage1_values} == stage1_values
    assert defaults["image_channel"] == 0
    assert {v.field: v.default for v in settings_module.REGULARISER_VARIABLES} == RegulariserSettings().as_dict()


def test_settings_from_the_environment_and_back():
    settings = RegulariserSettings.from_environment({**ENV, "PASEG_NNUNET_RAMPUP_UNIT": " step "})
    assert settings.as_dict() == {**SETTINGS, "rampup_unit": "step"}
    assert RegulariserSettings.from_environment(settings.environment()) == settings
    for env, text, message in (("PASEG_NNUNET_WEIGHT_CRF", "-1", ">= 0"), ("PASEG_NNUNET_KERNEL_RADIUS", "0", ">= 1"),
                               ("PASEG_NNUNET_CRF_DOWNSAMPLE", "0", ">= 1"),
                               ("PASEG_NNUNET_KERNEL_RADIUS", "2.5", "an integer"),
                               ("PASEG_NNUNET_CRF_SIGMA_RGB", "0", "> 0"), ("PASEG_NNUNET_WEIGHT_VM", "x", "a number"),
                               ("PASEG_NNUNET_RAMPUP_UNIT", "steps", "one of epoch, step")):
        with pytest.raises(ValueError, match=f"{env}='{text}': expected .*{message}"):
            RegulariserSettings.from_environment({env: text})


def test_ramp_that_does_not_end_within_the_run_warns():
    assert RegulariserSettings(rampup_epochs=30).warning(1000) is None
    warning = RegulariserSettings(rampup_epochs=30).warning(12)
    assert warning.startswith("--rampup_epochs 30 (after --warmup_epochs 0) does not end within --max_epochs 12")
    assert warning.endswith("(here: PASEG_NNUNET_RAMPUP_EPOCHS and PASEG_NNUNET_EPOCHS)")
    assert RegulariserSettings(rampup_epochs=30, weight_crf=0.0, weight_vm=0.0).warning(12) is None


# --- nnU-Net's lookup by name ---------------------------------------------------------------------------------

def test_nnunet_finds_the_trainers_by_name():
    """(c): nnU-Net's own lookup (what nnUNetv2_train, nnUNetv2_predict and each DDP rank call)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    for name in ("nnUNetTrainerPASeg", "nnUNetTrainerBudget"):
        cls = recursive_find_trainer_class_by_name(name)
        assert cls.__name__ == name and issubclass(cls, nnUNetTrainer), "run `make install`"
        assert Path(inspect.getfile(cls)).as_posix().endswith(f"experiments/nnunet_trainers/{name}.py")
    assert "nnUNetTrainerBudget" in [c.__name__ for c in recursive_find_trainer_class_by_name(
        "nnUNetTrainerPASeg").__mro__]


def test_nnunet_finds_the_trainer_through_nnunet_exttrainer():
    """The call nnU-Net makes for each folder of ``nnUNet_extTrainer``."""
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    cls = recursive_find_python_class(str(TRAINERS_DIR), "nnUNetTrainerPASeg", None, base_folder=str(TRAINERS_DIR),
                                      cleanup_imports_from_base_folder=True)
    assert cls is not None and cls.__name__ == "nnUNetTrainerPASeg"


def test_installer_writes_a_module_that_defines_both_trainers(tmp_path, monkeypatch):
    path = installer.main(["--target", str(tmp_path)])
    assert path == tmp_path / "paseg_trainers.py"
    assert path.read_text() == installer.shim_text(TRAINERS_DIR)
    assert repr(str(TRAINERS_DIR.resolve())) in path.read_text()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "paseg_trainers", raising=False)
    shim = importlib.import_module("paseg_trainers")
    assert shim.nnUNetTrainerPASeg.__name__ == "nnUNetTrainerPASeg"
    assert shim.nnUNetTrainerBudget.__name__ == "nnUNetTrainerBudget"
    with pytest.raises(FileNotFoundError, match="--target .*missing: not a folder"):
        installer.install(tmp_path / "missing")


def test_installed_module_of_a_moved_repository_warns_and_defines_nothing(tmp_path, monkeypatch):
    (tmp_path / "paseg_trainers_moved.py").write_text(installer.shim_text(tmp_path / "gone"))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("nnUNetTrainerPASeg", "nnUNetTrainerBudget"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p) != TRAINERS_DIR])
    monkeypatch.delenv("PASEG_NNUNET_TRAINERS", raising=False)
    with pytest.warns(UserWarning, match="cannot be imported from .*gone .*run `make install`"):
        shim = importlib.import_module("paseg_trainers_moved")
    assert not hasattr(shim, "nnUNetTrainerPASeg")
    # PASEG_NNUNET_TRAINERS names the checkout whose trainers to use (a pinned worktree's)
    monkeypatch.setenv("PASEG_NNUNET_TRAINERS", str(TRAINERS_DIR))
    monkeypatch.delitem(sys.modules, "paseg_trainers_moved")
    shim = importlib.import_module("paseg_trainers_moved")
    assert shim.nnUNetTrainerPASeg.__module__ == "nnUNetTrainerPASeg"
    assert Path(sys.modules["nnUNetTrainerPASeg"].__file__).parent == TRAINERS_DIR


# --- end to end on tiny data ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ablation(quick_demo, tmp_path_factory):
    """The --quick demo data and an ablation with the expanded seeds and nnU-Net with the PA-Seg
    trainer (2 epochs x 2 iterations), seed 0: the runner's kind, nnU-Net's planning and preprocessing."""
    root = quick_demo
    cfg = {"title": "tiny", "dataset": demo_dataset(root),
           "variants": {"seeds": {"kind": "seeds", "label": "Expanded seeds"},
                        "nnunet_paseg": {"kind": "nnunet", "label": "nnU-Net + mCRF/VM", "flags": FLAGS}},
           "seeds": [0], "baseline": "seeds"}
    work = tmp_path_factory.mktemp("nnunet_paseg")
    (work / "tiny.json").write_text(json.dumps(cfg))
    out = work / "out"
    ablate.main(["--config", str(work / "tiny.json"), "--output_dir", str(out), "--device", "cpu"])
    return root, out, out / "runs" / "nnunet_paseg" / "seed0" / "nnUNet"


@pytest.fixture()
def nnunet_env(ablation, tmp_path, monkeypatch):
    """nnU-Net's variables on the ablation's preprocessed data, new results, the trainer's settings."""
    _, _, run = ablation
    for name, value in {"nnUNet_raw": run / "nnUNet_raw", "nnUNet_preprocessed": run / "nnUNet_preprocessed",
                        "nnUNet_results": tmp_path / "results", "nnUNet_n_proc_DA": 0, "nnUNet_compile": "false",
                        "PASEG_NNUNET_EPOCHS": 1, "PASEG_NNUNET_ITERATIONS": 2, "PASEG_NNUNET_VAL_ITERATIONS": 1,
                        **ENV}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(importlib.import_module("nnunetv2.training.nnUNetTrainer.nnUNetTrainer"),
                        "default_num_processes", 1)   # the validation's export pool
    return tmp_path / "results"


@pytest.mark.slow
def test_runner_kind_trains_and_predicts_with_the_pa_seg_trainer(ablation):
    root, out, run = ablation
    table = pd.read_csv(out / "table.csv").set_index("variant")
    assert table.loc["nnunet_paseg", "kind"] == "nnunet"
    scores = pd.read_csv(run / "output_pred" / "results_inference.csv")
    scores = scores[~scores["subject"].isin(["mean", "std"])]
    assert len(scores) == len(subjects_of(read_split(root / "split.csv"), "inference"))
    assert table.loc["nnunet_paseg", "dice_mean"] == pytest.approx(scores["dice"].mean())
    budget = json.loads((run / "budget.json").read_text())
    assert budget["trainer"] == "nnUNetTrainerPASeg" and budget["regularisers"] == {**SETTINGS, "rampup_epochs": 1}
    assert (budget["epochs"], budget["iterations_per_epoch"], budget["steps"]) == (2, 2, 4)
    assert budget["model_folder"] == "nnUNet_results/Dataset501_PASeg/nnUNetTrainerPASeg__nnUNetPlans__3d_fullres"
    log = "".join(p.read_text() for p in (run / budget["model_folder"] / "fold_0").glob("training_log_*.txt"))
    assert ("PA-Seg regularisers (mCRF on the grid below, VM on the full-resolution output): weight_crf 1.0, "
            "weight_vm 0.5") in log
    assert "PA-Seg mCRF grid: " in log and "for the patch" in log and "(the patch's resolution)" in log
    assert log.count("PA-Seg terms (epoch means): loss_seg") == 2
    assert "does not end within" not in log                       # 1 ramp-up epoch of 2: full weight in the 2nd


@pytest.mark.slow
def test_train_step_adds_the_project_losses_to_nnunets_loss(nnunet_env):
    """(a): on one of nnU-Net's own training batches (augmented, deep supervision, the ignore
    label in the target), the step's loss is nnU-Net's Dice+CE plus the ramped project losses of
    the full-resolution output; the Dice+CE ignores the unannotated voxels, the mCRF/VM do not."""
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args("501", "3d_fullres", 0, "nnUNetTrainerPASeg", device=torch.device("cpu"))
    assert trainer.paseg.as_dict() == SETTINGS and trainer.label_manager.ignore_label == 2
    trainer.initialize()
    loader, _ = trainer.get_dataloaders()
    batch = next(loader)
    data, target = batch["data"], batch["target"]
    ignored = target[0] == 2
    assert isinstance(target, list) and bool(ignored.any()) and bool((target[0] < 2).any())
    trainer.network.train()
    with torch.no_grad():
        output = trainer.network(data)
        seg = trainer.loss(output, target).item()
        crf = MultiViewGatedCRFLoss(down_size=None, kernel_radius=2, sigma_xy=3.0)(output[0], data[:, :1]).item()
        vm = VarianceLoss()(output[0], data[:, :1]).item()
        moved = [output[0] + 3.0 * ignored * torch.tensor([1.0, -1.0]).view(1, 2, 1, 1, 1), *output[1:]]
        assert trainer.loss(moved, target).item() == pytest.approx(seg, rel=1e-5)
        assert VarianceLoss()(moved[0], data[:, :1]).item() != pytest.approx(vm, rel=1e-3)
    trainer.current_epoch, trainer.paseg_step = 1, 0
    values = trainer.train_step(batch)
    ramp = sigmoid_rampup(1, 2)
    assert values["ramp"] == ramp
    assert float(values["loss_seg"]) == pytest.approx(seg, rel=1e-5)
    assert float(values["loss_crf"]) == pytest.approx(crf, rel=1e-5) and crf > 0
    assert float(values["loss_vm"]) == pytest.approx(vm, rel=1e-5) and vm > 0
    assert float(values["loss"]) == pytest.approx(seg + ramp * (1.0 * crf + 0.5 * vm), rel=1e-5)
    # waiting for foreground: the start is read from nnU-Net's log of the validation pseudo Dice
    trainer.paseg = dataclasses.replace(trainer.paseg, rampup_start="foreground")
    logged = trainer.logger.local_logger.my_fantastic_logging["mean_fg_dice"]
    for pseudo_dice, start, expected in (([0.0], None, 0.0), ([0.4], 1, sigmoid_rampup(0, 2))):
        logged[:] = pseudo_dice
        trainer.current_epoch = 1
        trainer.on_train_epoch_start()
        assert trainer.paseg_start == start
        values = trainer.train_step(batch)
        assert values["ramp"] == expected
        if start is None:
            assert float(values["loss"]) == pytest.approx(float(values["loss_seg"]), rel=1e-6)
    # the mCRF on the grid of stage 1's in-plane halving: the patch's axis of coarsest spacing kept
    trainer.paseg = dataclasses.replace(trainer.paseg, rampup_start="warmup", crf_downsample=2)
    trainer.regularisers = PASegRegularisers(trainer.paseg, trainer.configuration_manager.spacing)
    patch = tuple(trainer.configuration_manager.patch_size)
    grid = trainer.paseg.crf_grid(patch, trainer.configuration_manager.spacing)
    assert sum(g == p // 2 for g, p in zip(grid, patch)) == 2 and sum(g == p for g, p in zip(grid, patch)) >= 1
    with torch.no_grad():
        output = trainer.network(data)[0]
    crf = MultiViewGatedCRFLoss(down_size=grid, kernel_radius=2, sigma_xy=3.0)(output, data[:, :1]).item()
    values = trainer.train_step(batch)
    assert float(values["loss_crf"]) == pytest.approx(crf, rel=1e-5) and crf > 0
    assert trainer.paseg_grid() == (patch, grid)
    trainer.paseg = dataclasses.replace(trainer.paseg, crf_downsample=max(patch))
    with pytest.raises(ValueError, match=f"PASEG_NNUNET_CRF_DOWNSAMPLE={max(patch)} makes the mCRF grid .*single "):
        trainer.paseg_grid()


@pytest.mark.slow
def test_nnunet_trains_and_predicts_with_the_trainer_by_name(ablation, nnunet_env):
    """(d): what ``nnUNetv2_train 501 3d_fullres 0 -tr nnUNetTrainerPASeg -device cpu`` runs (training,
    then nnU-Net's validation), then nnU-Net's predictor from the model folder, which looks the
    trainer up by the name in the checkpoint (``nnUNetv2_predict ... -tr nnUNetTrainerPASeg``)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.run.run_training import run_training

    root, _, run = ablation
    run_training("501", "3d_fullres", "0", "nnUNetTrainerPASeg", device=torch.device("cpu"))
    model = nnunet_env / "Dataset501_PASeg" / "nnUNetTrainerPASeg__nnUNetPlans__3d_fullres"
    checkpoint = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainerPASeg" and checkpoint["current_epoch"] == 1
    assert (model / "fold_0" / "validation" / "summary.json").is_file()
    log = "".join(p.read_text() for p in (model / "fold_0").glob("training_log_*.txt"))
    assert log.count("PA-Seg terms (epoch means): loss_seg") == 1
    assert "warning: --rampup_epochs 2 (after --warmup_epochs 0) does not end within --max_epochs 1" in log
    predictor = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False, device=torch.device("cpu"),
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    cases = subjects_of(read_split(root / "split.csv"), "inference")
    images = run / "nnUNet_raw" / "Dataset501_PASeg" / "imagesTs"
    predictor.predict_from_files_sequential([[str(images / f"{c}_0000.nii.gz")] for c in cases],
                                            [str(nnunet_env / c) for c in cases], save_probabilities=False,
                                            overwrite=True)
    for case in cases:
        pred = sitk.ReadImage(str(nnunet_env / f"{case}.nii.gz"))
        image = sitk.ReadImage(str(root / "data" / "image_crop" / f"{case}_T2.nii.gz"))
        assert pred.GetSize() == image.GetSize()
        assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1}
