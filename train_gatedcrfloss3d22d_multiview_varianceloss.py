"""PA-Seg stage 1: train a network from expanded seeds with partial Dice+CE, the multi-view 2D
gated CRF loss and the Variance Minimisation loss.

loss = partial DiceCE(logits, expanded seeds)
       + ramp(t) · (weight_gatedcrf · mCRF(logits, image) + weight_variance · VM(logits, image))

Defaults reproduce the paper's VS setting. Outputs under ``<model_dir>/<network>/``:
``models/CP_best.pth``, ``models/CP_final.pth``, ``models/CP_latest.pth`` (resumable),
``log.csv``, ``log_<time>.txt``, ``tensorboard/``.

Runs alone or under ``torchrun --nproc_per_node N`` (DistributedDataParallel).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from networks import IN_CHANNELS, NETWORKS, NUM_CLASSES, check_network_shape, get_network
from utilities.core.arguments import ArgumentParser, Inert, warn_inert_flags
from utilities.core.compile import prepare_network
from utilities.core.distributed import wrap_ddp
from utilities.core.logs import setup_logger
from utilities.data.augmentation import AUGMENTATIONS
from utilities.data.dataset_file import parse_with_dataset
from utilities.data.layout import RunLayout
from utilities.data.loading import TrainingData, load_training_data
from utilities.method.defaults import (
    CRF_SIGMA_XY,
    DOWN_SIZE,
    KERNEL_RADIUS,
    PRIMARY_NETWORK,
    WEIGHT_GATEDCRF,
    WEIGHT_VARIANCE,
)
from utilities.method.health import empty_start_epochs, watch_for
from utilities.method.losses import SEG_DICE, MultiViewGatedCRFLoss, PartialDiceCELoss, VarianceLoss
from utilities.method.optim import Amp, make_optimizer
from utilities.method.schedules import rampup_warning, sigmoid_rampup
from utilities.models.checkpoints import TrainingState, load_model_weights
from utilities.training.engine import BestCheckpoint, Callback, FitConfig, LossPart, StepInfo, StepOutput, fit
from utilities.training.runs import start_run
from utilities.training.validation import seed_shares
from utilities.workflow.cli import (
    COMPILE_INERT,
    TRAINING_INERT,
    add_common_args,
    add_data_args,
    add_training_args,
    check_flag_conflicts,
    check_spatial_shape,
    check_sw_overlap,
    data_config,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    positive_unit_float,
    resume_record,
    resumed_args,
    run_options,
    unit_float,
)
from utilities.workflow.plan import apply_plan


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_dir", default="./models/debug/", help="run folder; outputs go to <model_dir>/<network>/")
    p.add_argument("--network", default=PRIMARY_NETWORK, choices=sorted(NETWORKS), help="network architecture")
    p.add_argument("--batch_size", type=positive_int, default=1, help="patches per step")
    p.add_argument("--max_epochs", type=positive_int, default=300,
                   help="epochs (one pass over the training subjects each)")
    p.add_argument("--rampup_epochs", type=nonnegative_int, default=30,
                   help="sigmoid ramp-up length of the CRF and VM weights, in epochs (0: no ramp-up)")
    add_data_args(p, labels_help="folder of full labels (validation Dice and TensorBoard only); '' when there are "
                                 "none (points only: then --val_metric seed_dice)",
                  seeds_help="folder of expanded-seed labels (0 background, 1 foreground, 2 unknown)")
    p.add_argument("--weight_gatedcrf", type=nonnegative_float, default=WEIGHT_GATEDCRF, help="weight of the mCRF loss")
    p.add_argument("--down_size", type=int, nargs=3, default=list(DOWN_SIZE),
                   help="size (X Y Z) the prediction and image are resized to for the mCRF loss")
    p.add_argument("--kernel_radius", type=int, nargs=3, default=list(KERNEL_RADIUS),
                   help="mCRF window radius; the first value is used (the others are kept for compatibility)")
    p.add_argument("--weight_variance", type=nonnegative_float, default=WEIGHT_VARIANCE, help="weight of the VM loss")
    remedies = p.add_argument_group("collapse remedies (defaults: the paper's; see docs/guide/collapse.md)")
    remedies.add_argument("--crf_sigma_xy", type=positive_float, default=CRF_SIGMA_XY,
                          help="mCRF spatial kernel width, in voxels of the --down_size grid")
    remedies.add_argument("--crf_sigma_rgb", type=positive_float, default=0.1,
                          help="mCRF intensity kernel width, in units of the z-normalised image")
    remedies.add_argument("--rampup_unit", default="epoch", choices=["epoch", "step"],
                          help="advance the ramp-up once per epoch (paper) or at every step (smooth, "
                               "in fractional epochs)")
    remedies.add_argument("--seg_class_balance", action="store_true",
                          help="partial CE as the mean of each class's mean over its seed voxels (paper: the mean "
                               "over all seed voxels, where the foreground seeds weigh their tiny share)")
    remedies.add_argument("--seg_balance_power", type=positive_unit_float, default=1.0,
                          help="with --seg_class_balance: each seed voxel of class c weighs n_c ** -power, in "
                               "(0, 1]; 1 is the class-balanced mean, smaller values lean towards the plain mean "
                               "(less over-segmentation when the foreground seeds are a tiny share)")
    remedies.add_argument("--seg_dice", default="classes", choices=SEG_DICE,
                          help="the partial Dice: per patch, the mean over background and foreground (paper), "
                               "or nnU-Net's: one Dice over the batch's annotated voxels, foreground only")
    remedies.add_argument("--empty_start_epochs", type=nonnegative_int, default=None,
                          help="epochs in which predicting nothing is the loss's expected start, not a collapse "
                               "(default: half of --max_epochs with --seg_dice foreground, which starts empty and "
                               "then grows, as nnU-Net's trainer does; else 0)")
    remedies.add_argument("--fg_patch_fraction", type=unit_float, default=0.0,
                          help="share of training patches placed around a random foreground seed voxel instead of "
                               "uniformly (paper: 0, uniform; nnU-Net oversamples 0.33): small lesions in large "
                               "volumes are otherwise rarely in a patch")
    remedies.add_argument("--augmentation", default="flips", choices=AUGMENTATIONS,
                          help="training augmentation: the paper's random flips, or before them nnU-Net v2's "
                               "default rotation, scaling, noise and gamma (in TorchIO; "
                               "utilities/data/augmentation.py)")
    remedies.add_argument("--warmup_epochs", type=nonnegative_int, default=0,
                          help="epochs of partial DiceCE alone (CRF and VM weights 0) before the ramp-up starts")
    p.add_argument("--init_checkpoint", default=None,
                   help="start from these weights (a CP_*.pth of this project or a published checkpoint) "
                        "instead of a random initialisation; not a resume")
    p.add_argument("--plan", default=None,
                   help="plan.json written by plan.py: its stage-1 flags become the defaults (flags given "
                        "here override them)")
    add_common_args(p)
    add_training_args(p)
    return p


#: Stage-1 flags that another flag makes pointless (:func:`utilities.workflow.cli.warn_inert_flags`).
STAGE1_INERT = (
    Inert(("down_size", "kernel_radius", "crf_sigma_xy", "crf_sigma_rgb"), lambda a: a.weight_gatedcrf == 0,
          "with --weight_gatedcrf 0: the mCRF is off"),
    Inert(("warmup_epochs", "rampup_unit"), lambda a: a.weight_gatedcrf == 0 and a.weight_variance == 0,
          "with --weight_gatedcrf 0 and --weight_variance 0: nothing is ramped up"),
    Inert(("rampup_unit",), lambda a: a.rampup_epochs == 0 and (a.weight_gatedcrf > 0 or a.weight_variance > 0),
          "with --rampup_epochs 0: the mCRF and VM start at full weight"),
    Inert(("init_checkpoint",), lambda a: a.resume, "with --resume: the run continues from its latest state"),
)


def check_args(args: argparse.Namespace) -> None:
    """Validate values argparse cannot (raises ValueError naming the flag)."""
    args.spatial_shape = list(check_spatial_shape(args.spatial_shape))
    check_flag_conflicts(args)
    if any(d <= 0 for d in args.down_size):
        raise ValueError(f"--down_size needs three positive sizes, got {args.down_size}")
    if args.weight_gatedcrf > 0 and any(d > s for d, s in zip(args.down_size, args.spatial_shape)):
        raise ValueError(f"--down_size {args.down_size} must not exceed --spatial_shape {args.spatial_shape} "
                         "in any axis")
    if args.kernel_radius[0] <= 0:
        raise ValueError(f"--kernel_radius must start with a positive radius, got {args.kernel_radius}")
    first = args.kernel_radius[0]
    if args.weight_gatedcrf > 0 and list(args.kernel_radius[1:]) != [first, KERNEL_RADIUS[2]]:
        setup_logger(None).warning(
            "--kernel_radius %s: only its first value (%d) is used, in every view of the mCRF (the other two are "
            "kept for the published commands, which pass %d %d %d)", " ".join(map(str, args.kernel_radius)),
            first, first, first, KERNEL_RADIUS[2])
    check_sw_overlap(args.sw_overlap)
    if args.weight_gatedcrf > 0 and sum(d == 1 for d in args.down_size) >= 2:
        raise ValueError(f"--down_size {args.down_size} leaves an mCRF view of a single pixel, whose loss is 0; "
                         "use sizes of at least 2 (or --weight_gatedcrf 0 to train without the mCRF)")
    check_network_shape(args.network, args.spatial_shape)
    if args.seg_balance_power != 1.0 and not args.seg_class_balance:
        raise ValueError(f"--seg_balance_power {args.seg_balance_power} tempers --seg_class_balance, which is off; "
                         "add --seg_class_balance (or leave --seg_balance_power at 1)")
    warning = rampup_warning(args.rampup_epochs, args.max_epochs, args.warmup_epochs)
    if warning and (args.weight_gatedcrf > 0 or args.weight_variance > 0):
        setup_logger(None).warning(warning)


def ramp_weight(info: StepInfo, rampup_epochs: float, warmup_epochs: float = 0, unit: str = "epoch",
                origin: float = 0.0) -> float:
    """The CRF/VM ramp at this step: 0 during the warm-up, then the sigmoid ramp-up over
    ``rampup_epochs``, advanced once per epoch (``unit="epoch"``, the paper) or at every step.
    ``origin``: the epoch the ramp-up (re)starts from after a recovery (then without warm-up)."""
    epoch = float(info.epoch)
    if unit == "step" and info.steps_per_epoch:
        epoch = info.global_step / info.steps_per_epoch
    if origin > 0:
        return sigmoid_rampup(epoch - origin, rampup_epochs)
    if epoch < warmup_epochs:
        return 0.0
    return sigmoid_rampup(epoch - warmup_epochs, rampup_epochs)


@dataclass(frozen=True)
class Stage1Losses:
    """The stage-1 loss and ramp-up settings of one run, typed (from the flags by :meth:`from_args`)."""

    class_balanced: bool        # --seg_class_balance
    down_size: tuple[int, ...]  # --down_size
    kernel_radius: int          # --kernel_radius (its first value)
    sigma_xy: float             # --crf_sigma_xy
    sigma_rgb: float            # --crf_sigma_rgb
    weight_crf: float           # --weight_gatedcrf
    weight_vm: float            # --weight_variance
    rampup_epochs: float        # --rampup_epochs
    warmup_epochs: float        # --warmup_epochs
    rampup_unit: str            # --rampup_unit: "epoch" or "step"
    balance_power: float = 1.0  # --seg_balance_power
    seg_dice: str = "classes"   # --seg_dice

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Stage1Losses:
        return cls(args.seg_class_balance, tuple(args.down_size), args.kernel_radius[0], args.crf_sigma_xy,
                   args.crf_sigma_rgb, args.weight_gatedcrf, args.weight_variance, args.rampup_epochs,
                   args.warmup_epochs, args.rampup_unit, args.seg_balance_power, args.seg_dice)


class Stage1Step:
    """One stage-1 step on a batch of patches (the engine differentiates and steps)."""

    def __init__(self, model: torch.nn.Module, amp: Amp, device: torch.device, losses: Stage1Losses) -> None:
        self.model, self.amp, self.device = model, amp, device
        self.seg_loss = PartialDiceCELoss(num_classes=NUM_CLASSES, class_balanced=losses.class_balanced,
                                          balance_power=losses.balance_power, dice=losses.seg_dice)
        self.crf_loss = MultiViewGatedCRFLoss(down_size=losses.down_size, kernel_radius=losses.kernel_radius,
                                              sigma_xy=losses.sigma_xy, sigma_rgb=losses.sigma_rgb)
        self.var_loss = VarianceLoss()
        self.weight_crf, self.weight_vm = losses.weight_crf, losses.weight_vm
        self.rampup_epochs: float = losses.rampup_epochs  # changed by a recovery (Stage1Recovery)
        self.warmup_epochs, self.rampup_unit = losses.warmup_epochs, losses.rampup_unit
        self.ramp_origin = 0.0   # > 0 after a recovery: the epoch the ramp-up restarted from

    def __call__(self, batch: Mapping[str, Any], info: StepInfo) -> StepOutput:
        image = batch["image"].to(self.device, non_blocking=True)
        seeds = batch["seeds"].to(self.device, non_blocking=True)
        with self.amp.autocast():
            logits = self.model(image)
        ramp = ramp_weight(info, self.rampup_epochs, self.warmup_epochs, self.rampup_unit, self.ramp_origin)
        w_crf, w_vm = ramp * self.weight_crf, ramp * self.weight_vm
        zero = logits.new_zeros((), dtype=torch.float32)
        loss_seg = self.seg_loss(logits, seeds)
        loss_crf = self.crf_loss(logits, image) if w_crf > 0 else zero
        loss_vm = self.var_loss(logits, image) if w_vm > 0 else zero
        loss = loss_seg + w_crf * loss_crf + w_vm * loss_vm
        with torch.no_grad():   # training health: the predictions against the seeds (utilities.method.health)
            shares = seed_shares(logits.argmax(1) > 0, seeds[:, 0])
        return StepOutput(
            log={"loss": loss.detach(), "loss_seg": loss_seg.detach(), "loss_crf": loss_crf.detach(),
                 "loss_vm": loss_vm.detach(), "ramp": ramp, **shares},
            parts={"optimizer": [LossPart("seg", loss_seg, logits), LossPart("crf", w_crf * loss_crf, logits),
                                 LossPart("vm", w_vm * loss_vm, logits)]})


class Stage1Recovery(Callback):
    """``--on_collapse recover`` for stage 1 (the weights are already back at the last healthy
    epoch): the mCRF/VM ramp-up restarts from the next epoch over twice its length (at least one
    epoch), so that the regularisers do not hold the restored network empty again; when the
    seed loss dominated the dive, the partial CE also becomes class-balanced (the plain mean is
    pulled to all-background by the background seeds), except with ``--seg_dice foreground``,
    whose plain CE is part of the loss (with the class balance it flooded on the dataset family's
    member 6, docs/results/ingredients.md). After a flood (the full-weight mCRF
    holding a whole tissue class as foreground, docs/results/collapse.md §8) the mCRF and VM weights
    are also divided by ``FLOOD_WEIGHT_DIVISOR`` (3)."""

    FLOOD_WEIGHT_DIVISOR = 3.0

    def __init__(self, step: Stage1Step) -> None:
        self.step = step

    def on_recover(self, epoch: int, dominant: str, state: TrainingState, kind: str = "empty") -> str | None:
        step = self.step
        step.ramp_origin = float(epoch + 1)
        step.rampup_epochs = max(2 * step.rampup_epochs, 1)
        changes = [f"mCRF/VM ramp-up restarted at epoch {epoch + 2} over {step.rampup_epochs} epoch(s)"]
        if kind == "flooded":
            step.weight_crf /= self.FLOOD_WEIGHT_DIVISOR
            step.weight_vm /= self.FLOOD_WEIGHT_DIVISOR
            changes.append(f"mCRF and VM weights divided by {self.FLOOD_WEIGHT_DIVISOR:g} (now {step.weight_crf:.3g} "
                           f"and {step.weight_vm:.3g}) against the flood")
        elif dominant == "seg" and not step.seg_loss.class_balanced and step.seg_loss.dice == "classes":
            step.seg_loss.class_balanced = True
            changes.append("partial CE now class-balanced (as --seg_class_balance)")
        return ", ".join(changes)


def train(args: argparse.Namespace, callbacks: Sequence[Callback] = ()) -> Path:
    """Run stage 1; returns the run folder ``<model_dir>/<network>``."""
    layout = RunLayout(args.model_dir, args.network)
    run_dir = layout.folder
    data = data_config(args)

    def preflight() -> tuple[TrainingData, dict[str, torch.Tensor] | None]:
        init = None
        if args.init_checkpoint and not args.resume:  # checked (and converted) before anything is written
            net = get_network(args.network, IN_CHANNELS, NUM_CLASSES)
            load_model_weights(net, args.init_checkpoint, args.network, flag="--network")
            init = net.state_dict()
        return load_training_data(data, ["image", "seeds"]), init

    ctx, device, _, latest_path, (training_data, init) = start_run(
        run_options(args), vars(args), [run_dir], layout.latest(), preflight=preflight)
    generator = torch.Generator().manual_seed(args.seed + ctx.rank)
    train_loader, val_loader, sampler = training_data.loaders(args.spatial_shape, args.batch_size, args.num_workers,
                                                              args.seed, ctx, generator, args.fg_patch_fraction,
                                                              args.augmentation)
    model = get_network(args.network, IN_CHANNELS, NUM_CLASSES)  # after seeding: the same start for the same seed
    if init is not None:
        model.load_state_dict(init)
    model = model.to(device)
    amp = Amp(args.amp, device)
    optimizer = make_optimizer(model, args.learning_rate, args.momentum, args.optimizer)
    state = TrainingState({"model": model}, {"optimizer": optimizer},
                          amp, {"network": args.network}, resume_record(args))
    if latest_path is not None:
        state.load(latest_path, device, generator, ctx.rank)
    state.models["model"] = wrap_ddp(prepare_network(model, device, args.compile, args.compile_backend), ctx, device)

    metric = training_data.val_metric   # seed_dice when every case trains (no validation cases)
    other = "seed_dice" if metric == "dice" else "dice"
    config = FitConfig(
        max_epochs=args.max_epochs, learning_rate=args.learning_rate, roi_size=tuple(args.spatial_shape),
        models_dir=layout.models, latest=layout.latest(), csv=layout.log_csv(), tensorboard=layout.tensorboard(),
        healthy=layout.healthy, final={"model": layout.checkpoint("final")},
        best=[BestCheckpoint("best", "model", f"val_{metric}", metric, layout.checkpoint("best"),
                             (f"best_{metric}", "best_epoch")),
              # the other validation metric, when its reference exists, also keeps its best checkpoint
              BestCheckpoint("best_other", "model", f"val_{other}", other, layout.checkpoint(f"best_{other}"))],
        collapse=[watch_for("", ("grad_seg", "grad_crf", "grad_vm"),
                            empty_start_epochs(args.seg_dice, args.max_epochs, args.empty_start_epochs))],
        sw_batch_size=args.sw_batch_size, sw_overlap=args.sw_overlap, grad_clip=args.grad_clip,
        collapse_patience=args.collapse_patience, stop_on_collapse=args.stop_on_collapse,
        on_collapse=args.on_collapse, max_recoveries=args.max_recoveries,
        summary=("loss", "loss_seg", "loss_crf", "loss_vm", "fg_train"))
    step = Stage1Step(state.models["model"], amp, device, Stage1Losses.from_args(args))
    try:
        fit(state, step, train_loader, val_loader, config, ctx, device, generator, sampler,
            [Stage1Recovery(step), *callbacks])
    finally:
        ctx.close()
    return run_dir


def main(argv: list[str] | None = None, callbacks: Sequence[Callback] = ()) -> Path:
    parser = build_parser()
    args = parse_with_dataset(parser, argv, optional=("labels",), flags=("model_dir",),
                              parse=lambda parser, given: apply_plan(parser, given, "stage1"))
    args = resumed_args(parser, argv, args, RunLayout(args.model_dir, args.network).latest())
    check_args(args)
    warn_inert_flags(parser, argv, args, (*TRAINING_INERT, *COMPILE_INERT, *STAGE1_INERT))
    return train(args, callbacks)


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main, interrupted="interrupted; resume with --resume"))
