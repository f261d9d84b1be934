"""PA-Seg stage 2: Self and Cross Monitoring (SCM) co-training of two stage-1 networks.

Each student k learns from its own frozen teacher (self-training on the teacher's argmax) and
from the other model's frozen teacher (cross knowledge distillation at temperature T):

    loss_k = (1 − λ) · DiceCE(student_k, argmax teacher_k) + λ · KD_T(student_k, teacher_other)

Every ``--iterative_epochs`` epochs both teachers are reloaded from the students' best
checkpoints. Outputs: ``<model_dir>/<network1>/models/CP_{best,final}_model1.pth``,
``<model_dir>/<network2>/models/CP_{best,final}_model2.pth``, and in ``<model_dir>/<network1>/``
the resumable ``models/CP_latest_SCM.pth``, ``log_SCM.csv``, ``log_SCM_<time>.txt`` and
``tensorboard_SCM/``.
"""
from __future__ import annotations

import argparse
import copy
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from networks import IN_CHANNELS, NETWORKS, NUM_CLASSES, check_network_shape, get_network
from utilities.core.arguments import ArgumentParser, Inert, warn_inert_flags
from utilities.core.compile import prepare_network
from utilities.core.distributed import wrap_ddp
from utilities.data.dataset_file import parse_with_dataset
from utilities.data.layout import RunLayout
from utilities.data.loading import TrainingData, load_training_data
from utilities.method.defaults import AUXILIARY_NETWORK, KD_TEMPERATURE, PRIMARY_NETWORK, STAGE1_SCRIPT, WEIGHT_KD
from utilities.method.health import watch_for
from utilities.method.losses import DiceCELoss, KDLoss
from utilities.method.optim import Amp, make_optimizer
from utilities.models.checkpoints import TrainingState, load_model_weights
from utilities.training.engine import BestCheckpoint, Callback, FitConfig, LossPart, StepInfo, StepOutput, fit
from utilities.training.runs import lock_holder, start_run
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
    positive_float,
    positive_int,
    resume_record,
    resumed_args,
    run_options,
)
from utilities.workflow.plan import apply_plan

logger = logging.getLogger("paseg")

PRETRAINED_DEFAULT = "./models/VS/gatedcrfloss3d22d_multiview_varianceloss/"
#: The highest --T accepted: far above it the softened distributions are uniform to float32 and the
#: T²-scaled distillation term is rounding noise (negative at 1e6).
MAX_TEMPERATURE = 100.0
#: SCM flags that another flag makes pointless (:func:`utilities.core.arguments.warn_inert_flags`).
SCM_INERT = (Inert(("T",), lambda a: a.weight_kd == 0, "with --weight_kd 0: nothing is distilled"),)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--pretrained_model1_dir", default=PRETRAINED_DEFAULT,
                   help="stage-1 run folder of the primary model (its <network1>/models/CP_best.pth is loaded)")
    p.add_argument("--network1", default=PRIMARY_NETWORK, choices=sorted(NETWORKS), help="primary network")
    p.add_argument("--pretrained_model2_dir", default=PRETRAINED_DEFAULT,
                   help="stage-1 run folder of the auxiliary model (its <network2>/models/CP_best.pth is loaded)")
    p.add_argument("--network2", default=AUXILIARY_NETWORK, choices=sorted(NETWORKS), help="auxiliary network")
    p.add_argument("--model_dir", default="./models/VS/SCM/", help="output folder")
    p.add_argument("--batch_size", type=positive_int, default=1, help="patches per step")
    p.add_argument("--max_epochs", type=positive_int, default=100, help="epochs")
    p.add_argument("--iterative_epochs", type=positive_int, default=20,
                   help="reload both teachers from the best checkpoints every this many epochs")
    add_data_args(p, labels_help="folder of full labels (validation); '' when there are none (points only: then "
                                 "--val_metric seed_dice)",
                  seeds_help="expanded-seed labels (used only for --val_metric seed_dice)")
    p.add_argument("--weight_kd", type=float, default=WEIGHT_KD, help="λ: weight of the cross distillation, in [0, 1]")
    p.add_argument("--T", type=positive_float, default=KD_TEMPERATURE, help="distillation temperature")
    p.add_argument("--plan", default=None,
                   help="plan.json written by plan.py: its SCM flags become the defaults (flags given here override "
                        "them)")
    add_common_args(p)
    add_training_args(p)
    return p


def check_args(args: argparse.Namespace) -> None:
    args.spatial_shape = list(check_spatial_shape(args.spatial_shape))
    check_flag_conflicts(args)
    if not 0.0 <= args.weight_kd <= 1.0:
        raise ValueError(f"--weight_kd must be in [0, 1], got {args.weight_kd}")
    if args.T > MAX_TEMPERATURE:
        raise ValueError(f"--T {args.T:g} is above {MAX_TEMPERATURE:g}: the distillation term's T² factor then "
                         "magnifies float32 rounding into the loss (it turns negative); use a temperature of at most "
                         f"{MAX_TEMPERATURE:g} (the paper's: {KD_TEMPERATURE:g})")
    check_sw_overlap(args.sw_overlap)
    for network in dict.fromkeys((args.network1, args.network2)):
        check_network_shape(network, args.spatial_shape)
    runs = [Path(getattr(args, f"pretrained_model{k}_dir")) / getattr(args, f"network{k}") for k in (1, 2)]
    if runs[0].resolve() == runs[1].resolve():
        raise ValueError(f"--pretrained_model1_dir/--network1 and --pretrained_model2_dir/--network2 both name the "
                         f"stage-1 run {runs[0]}: SCM would train two identical students (self-training only); pass "
                         "two stage-1 runs (another --seed, or another network)")
    for k, run in enumerate(runs, 1):
        holder = lock_holder(run)
        if holder is not None:
            who = f"process {holder}" if holder > 0 else "another process"
            logger.warning("stage-1 run %s (--pretrained_model%d_dir) is still training (%s): SCM starts from its "
                           "CP_best.pth as it is now, not from its final best", run, k, who)


def pretrained_path(folder: str | Path, network: str, which: str) -> Path:
    """``<folder>/<network>/models/CP_best.pth``, or an error naming the stage-1 command."""
    layout = RunLayout(folder, network)
    path = layout.checkpoint("best")
    hint = None if path.is_file() else layout.parent_hint(f"--pretrained_{which}_dir")
    if hint is not None:
        raise FileNotFoundError(f"{which}: stage-1 checkpoint {path} not found; {hint}")
    if not path.is_file():
        raise FileNotFoundError(
            f"{which}: stage-1 checkpoint {path} not found; train it first with "
            f"`python {STAGE1_SCRIPT} --network {network} --model_dir {folder} ...` or fix "
            f"--pretrained_{which}_dir/--network{which[-1]}")
    return path


def pretrained_paths(args: argparse.Namespace) -> dict[int, Path]:
    """Both stage-1 checkpoints (every missing one named in one error), checked not to lie in a
    folder this run writes to (``--overwrite`` would delete them)."""
    paths, errors = {}, []
    for k in (1, 2):
        try:
            paths[k] = pretrained_path(getattr(args, f"pretrained_model{k}_dir"), getattr(args, f"network{k}"),
                                       f"model{k}")
        except FileNotFoundError as e:
            errors.append(str(e))
    if errors:
        raise FileNotFoundError(" | ".join(errors))
    for k in (1, 2):
        for j in (1, 2):
            out = RunLayout(args.model_dir, getattr(args, f"network{j}")).folder.resolve()
            if paths[k].resolve().is_relative_to(out):
                raise ValueError(f"--model_dir {args.model_dir} would put the SCM run in {out}, which holds the "
                                 f"stage-1 checkpoint {paths[k]} of --pretrained_model{k}_dir; choose another "
                                 "--model_dir")
    return paths


def load_students(names: dict[int, str], paths: dict[int, Path]) -> dict[int, nn.Module]:
    """The two stage-1 networks on the CPU, each checked to fit its checkpoint."""
    students = {}
    for k in (1, 2):
        students[k] = get_network(names[k], IN_CHANNELS, NUM_CLASSES)
        load_model_weights(students[k], paths[k], names[k], map_location="cpu", flag=f"--network{k}")
    return students


def check_two_students(students: dict[int, nn.Module], paths: dict[int, Path]) -> None:
    """Refuse one network twice: two stage-1 runs of the same network with identical weights (the
    same flags and ``--seed``) would make SCM two identical students, self-training only."""
    one, two = (students[k].state_dict() for k in (1, 2))
    if one.keys() == two.keys() and all(one[key].shape == two[key].shape and torch.equal(one[key], two[key])
                                        for key in one):
        raise ValueError(f"the stage-1 checkpoints {paths[1]} and {paths[2]} hold identical weights (two runs with the "
                         "same flags and --seed?): SCM would train two identical students (self-training only); "
                         "train the second stage-1 run with another --seed, or use another network")


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode, no gradients: a teacher."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.inference_mode()
def _teacher_logits(teacher: nn.Module, image: torch.Tensor, amp: Amp) -> torch.Tensor:
    with amp.autocast():
        return teacher(image).float()


def scm_losses(student_logits: torch.Tensor, own_teacher: torch.Tensor, other_teacher: torch.Tensor,
               dice_ce: DiceCELoss, kd: KDLoss, weight_kd: float) -> dict[str, torch.Tensor]:
    """The SCM loss of one student: self-training on ``argmax(own_teacher)`` and distillation
    from ``other_teacher`` (all ``(N, C, X, Y, Z)`` logits)."""
    pseudo = own_teacher.argmax(1, keepdim=True)
    self_term = dice_ce(student_logits, pseudo)
    kd_term = kd(student_logits, other_teacher)
    return {"self": self_term, "kd": kd_term, "loss": (1.0 - weight_kd) * self_term + weight_kd * kd_term}


class TeacherReload(Callback):
    """Every ``--iterative_epochs`` epochs, reload both teachers from the students' best checkpoints."""

    def __init__(self, every: int, best_files: dict[int, Path], names: dict[int, str], device: torch.device) -> None:
        self.every, self.best_files, self.names, self.device = every, best_files, names, device

    def on_validated(self, epoch: int, row: dict[str, Any], state: TrainingState) -> dict[str, Any]:
        reloaded = (epoch + 1) % self.every == 0
        if reloaded:
            for k in (1, 2):
                load_model_weights(state.extras[f"teacher{k}"], self.best_files[k], self.names[k],
                                   map_location=self.device, flag=f"--network{k}")
            logger.info("epoch %d: teachers reloaded from %s and %s", epoch + 1, self.best_files[1],
                        self.best_files[2])
        return {"teachers_reloaded": int(reloaded)}


class SCMStep:
    """One step of both students: the frozen teachers' logits, then each student's SCM loss."""

    def __init__(self, students: dict[int, nn.Module], teachers: dict[int, nn.Module], amp: Amp,
                 device: torch.device, weight_kd: float, T: float) -> None:
        self.students, self.teachers, self.amp, self.device = students, teachers, amp, device
        self.dice_ce, self.kd, self.weight_kd = DiceCELoss(), KDLoss(T=T), weight_kd

    def __call__(self, batch: Mapping[str, Any], info: StepInfo) -> StepOutput:
        image = batch["image"].to(self.device, non_blocking=True)
        # Teachers run under inference_mode; clone() outside it gives ordinary tensors for the losses.
        teacher_logits = {k: _teacher_logits(self.teachers[k], image, self.amp).clone() for k in (1, 2)}
        log: dict[str, Any] = {}
        parts: dict[str, list[LossPart]] = {}
        for k, other in ((1, 2), (2, 1)):
            with self.amp.autocast():
                logits = self.students[k](image)
            terms = scm_losses(logits, teacher_logits[k], teacher_logits[other], self.dice_ce, self.kd,
                               self.weight_kd)
            log |= {f"{name}{k}": value.detach() for name, value in terms.items()}
            with torch.no_grad():
                log[f"fg_train{k}"] = (logits.argmax(1) > 0).float().mean()
                log[f"teacher_fg{k}"] = (teacher_logits[k].argmax(1) > 0).float().mean()
            parts[f"optimizer{k}"] = [LossPart(f"self{k}", (1.0 - self.weight_kd) * terms["self"], logits),
                                      LossPart(f"kd{k}", self.weight_kd * terms["kd"], logits)]
        return StepOutput(log, parts)


def train(args: argparse.Namespace, callbacks: Sequence[Callback] = ()) -> Path:
    """Run SCM co-training; returns ``<model_dir>``."""
    names = {1: args.network1, 2: args.network2}
    layouts = {k: RunLayout(args.model_dir, names[k]) for k in (1, 2)}
    run_dirs = {k: layouts[k].folder for k in (1, 2)}
    latest = layouts[1].latest(scm=True)
    pretrained = pretrained_paths(args)
    data = data_config(args)

    def preflight() -> tuple[TrainingData, dict[int, nn.Module]]:
        training_data = load_training_data(data, ["image"])
        students = load_students(names, pretrained)
        check_two_students(students, pretrained)
        return training_data, students

    ctx, device, _, latest_path, (training_data, students) = start_run(
        run_options(args), vars(args), [run_dirs[1], run_dirs[2]], latest, layouts[1].log_name(scm=True),
        preflight=preflight)
    if args.iterative_epochs >= args.max_epochs:
        logger.warning("--iterative_epochs %d is not shorter than --max_epochs %d: the teachers are never refreshed "
                       "from the students (plain self-training and distillation from the stage-1 models); lower "
                       "--iterative_epochs to refresh them", args.iterative_epochs, args.max_epochs)
    generator = torch.Generator().manual_seed(args.seed + ctx.rank)
    train_loader, val_loader, sampler = training_data.loaders(args.spatial_shape, args.batch_size, args.num_workers,
                                                              args.seed, ctx, generator)
    amp = Amp(args.amp, device)
    teachers = {}
    for k in (1, 2):
        students[k] = students[k].to(device)
        teachers[k] = prepare_network(freeze(copy.deepcopy(students[k])), device, args.compile, args.compile_backend)
        logger.info("model%d: %s from %s", k, names[k], pretrained[k])
    state = TrainingState({f"model{k}": students[k] for k in (1, 2)},
                          {f"optimizer{k}": make_optimizer(students[k], args.learning_rate, args.momentum,
                                                           args.optimizer)
                           for k in (1, 2)},
                          amp, {f"network{k}": names[k] for k in (1, 2)}, resume_record(args),
                          extras={f"teacher{k}": teachers[k] for k in (1, 2)})
    if latest_path is not None:
        state.load(latest_path, device, generator, ctx.rank)
    for k in (1, 2):
        students[k] = state.models[f"model{k}"] = wrap_ddp(
            prepare_network(students[k], device, args.compile, args.compile_backend), ctx, device)

    best_files = {k: layouts[k].checkpoint(f"best_model{k}") for k in (1, 2)}
    metric = training_data.val_metric   # seed_dice when every case trains (no validation cases)
    config = FitConfig(
        max_epochs=args.max_epochs, learning_rate=args.learning_rate, roi_size=tuple(args.spatial_shape),
        models_dir=layouts[1].models, latest=latest, csv=layouts[1].log_csv(scm=True),
        tensorboard=layouts[1].tensorboard(scm=True), healthy=layouts[1].healthy,
        final={f"model{k}": layouts[k].checkpoint(f"final_model{k}") for k in (1, 2)},
        best=[BestCheckpoint(f"best{k}", f"model{k}", f"val_{metric}{k}", metric, best_files[k],
                             (f"best_{metric}{k}", f"best_epoch{k}")) for k in (1, 2)],
        validate={"1": "model1", "2": "model2"},
        collapse=[watch_for(str(k), (f"grad_self{k}", f"grad_kd{k}")) for k in (1, 2)],
        sw_batch_size=args.sw_batch_size, sw_overlap=args.sw_overlap, grad_clip=args.grad_clip,
        collapse_patience=args.collapse_patience, stop_on_collapse=args.stop_on_collapse, desc="SCM epoch",
        on_collapse=args.on_collapse, max_recoveries=args.max_recoveries,
        summary=("loss1", "self1", "kd1", "loss2", "self2", "kd2"))
    step = SCMStep(students, teachers, amp, device, args.weight_kd, args.T)
    try:
        fit(state, step, train_loader, val_loader, config, ctx, device, generator, sampler,
            [TeacherReload(args.iterative_epochs, best_files, names, device), *callbacks])
    finally:
        ctx.close()
    return Path(args.model_dir)


def main(argv: list[str] | None = None, callbacks: Sequence[Callback] = ()) -> Path:
    parser = build_parser()
    args = parse_with_dataset(parser, argv, optional=("labels",),
                              flags=("model_dir", "pretrained_model1_dir", "pretrained_model2_dir"),
                              parse=lambda parser, given: apply_plan(parser, given, "scm"))
    args = resumed_args(parser, argv, args, RunLayout(args.model_dir, args.network1).latest(scm=True))
    check_args(args)
    warn_inert_flags(parser, argv, args, (*TRAINING_INERT, *COMPILE_INERT, *SCM_INERT))
    return train(args, callbacks)


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main, interrupted="interrupted; resume with --resume"))
