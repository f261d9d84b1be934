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
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from networks import NETWORKS, get_network
from utilities.cli import add_common_args, check_spatial_shape, positive_float, positive_int
from utilities.io import save_torch
from utilities.losses import DiceCELoss, KDLoss
from utilities.schedules import poly_lr
from utilities.training import (Amp, add_data_args, data_sources, validation_sources, CsvLog, TensorBoard, add_training_args, check_finite, check_finite_weights,
                                evaluate, load_data, load_model_weights, load_resume_state, make_loaders,
                                make_optimizer, mean_over_ranks, mean_scores, rng_state, save_model, set_lr,
                                set_rng_state, slice_grid, start_run, unwrap, wrap_ddp)

NUM_CLASSES = 2
IN_CHANNELS = 1
STAGE1_SCRIPT = "train_gatedcrfloss3d22d_multiview_varianceloss.py"
PRETRAINED_DEFAULT = "./models/VS/gatedcrfloss3d22d_multiview_varianceloss/"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--pretrained_model1_dir", default=PRETRAINED_DEFAULT,
                   help="stage-1 run folder of the primary model (its <network1>/models/CP_best.pth is loaded)")
    p.add_argument("--network1", default="U_Net2D5", choices=sorted(NETWORKS), help="primary network")
    p.add_argument("--pretrained_model2_dir", default=PRETRAINED_DEFAULT,
                   help="stage-1 run folder of the auxiliary model (its <network2>/models/CP_best.pth is loaded)")
    p.add_argument("--network2", default="AttU_Net", choices=sorted(NETWORKS), help="auxiliary network")
    p.add_argument("--model_dir", default="./models/VS/SCM/", help="output folder")
    p.add_argument("--batch_size", type=positive_int, default=1, help="patches per step")
    p.add_argument("--max_epochs", type=positive_int, default=100, help="epochs")
    p.add_argument("--iterative_epochs", type=positive_int, default=20,
                   help="reload both teachers from the best checkpoints every this many epochs")
    add_data_args(p, labels_help="folder of full labels (validation)",
                  seeds_help="expanded-seed labels (used only for --val_metric seed_dice)")
    p.add_argument("--weight_kd", type=float, default=0.5, help="λ: weight of the cross distillation, in [0, 1]")
    p.add_argument("--T", type=positive_float, default=4.0, help="distillation temperature")
    add_common_args(p)
    add_training_args(p)
    return p


def check_args(args: argparse.Namespace) -> None:
    args.spatial_shape = list(check_spatial_shape(args.spatial_shape))
    if not 0.0 <= args.weight_kd <= 1.0:
        raise ValueError(f"--weight_kd must be in [0, 1], got {args.weight_kd}")
    if not 0 <= args.sw_overlap < 1:
        raise ValueError(f"--sw_overlap must be in [0, 1), got {args.sw_overlap}")


def pretrained_path(folder: str | Path, network: str, which: str) -> Path:
    """``<folder>/<network>/models/CP_best.pth``, or an error naming the stage-1 command."""
    path = Path(folder) / network / "models" / "CP_best.pth"
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
            out = (Path(args.model_dir) / getattr(args, f"network{j}")).resolve()
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


def train(args: argparse.Namespace) -> Path:
    """Run SCM co-training; returns ``<model_dir>``."""
    names = {1: args.network1, 2: args.network2}
    run_dirs = {k: Path(args.model_dir) / names[k] for k in (1, 2)}
    models_dirs = {k: run_dirs[k] / "models" for k in (1, 2)}
    latest = models_dirs[1] / "CP_latest_SCM.pth"
    pretrained = pretrained_paths(args)
    src = data_sources(args)
    val_required, val_optional = validation_sources(args, src)

    def preflight() -> tuple[Any, dict[int, nn.Module]]:
        return (load_data(args, [src["image"]], val_required, val_optional),
                load_students(names, pretrained))

    ctx, device, logger, latest_path, (caches, students) = start_run(
        args, [run_dirs[1], run_dirs[2]], latest, "log_SCM", preflight=preflight)
    generator = torch.Generator().manual_seed(args.seed + ctx.rank)
    train_loader, val_loader, train_sampler = make_loaders(args, caches, ctx, generator)

    teachers, optimizers = {}, {}
    for k in (1, 2):
        students[k] = students[k].to(device)
        teachers[k] = freeze(copy.deepcopy(students[k]))
        optimizers[k] = make_optimizer(students[k], args.learning_rate)
        logger.info("model%d: %s from %s", k, names[k], pretrained[k])
    amp = Amp(args.amp, device)
    dice_ce, kd = DiceCELoss(), KDLoss(T=args.T)

    start_epoch = 0
    best, best_epoch = {1: -1.0, 2: -1.0}, {1: -1, 2: -1}
    if latest_path is not None:
        state = load_resume_state(latest_path, args, {f"network{k}": names[k] for k in (1, 2)},
                                  map_location=device)
        for k in (1, 2):
            students[k].load_state_dict(state[f"model{k}"])
            teachers[k].load_state_dict(state[f"teacher{k}"])
            optimizers[k].load_state_dict(state[f"optimizer{k}"])
            best[k], best_epoch[k] = state[f"best_metric{k}"], state[f"best_epoch{k}"]
        amp.scaler.load_state_dict(state["scaler"])
        start_epoch = state["epoch"]
        set_rng_state(state["rng"][min(ctx.rank, len(state["rng"]) - 1)], generator)
        logger.info("resumed from %s at epoch %d", latest_path, start_epoch)
    for k in (1, 2):
        students[k] = wrap_ddp(students[k], ctx, device)

    csv_log = CsvLog(run_dirs[1] / "log_SCM.csv", start_epoch) if ctx.is_main else None
    tb = TensorBoard(run_dirs[1] / "tensorboard_SCM" if ctx.is_main else None)
    best_files = {k: models_dirs[k] / f"CP_best_model{k}.pth" for k in (1, 2)}
    for epoch in range(start_epoch, args.max_epochs):
        t0 = time.time()
        lr = poly_lr(epoch, args.max_epochs, args.learning_rate)
        for k in (1, 2):
            set_lr(optimizers[k], lr)
            students[k].train()
        if train_sampler is not None:
            train_sampler.set_epoch(epoch)
        sums = {f"{t}{k}": 0.0 for k in (1, 2) for t in ("loss", "self", "kd")}
        steps = 0
        bar = tqdm(train_loader, desc=f"SCM epoch {epoch + 1}/{args.max_epochs}", leave=False,
                   disable=not ctx.is_main, dynamic_ncols=True)
        for step, batch in enumerate(bar):
            terms = scm_step(students, teachers, optimizers, batch["image"].to(device, non_blocking=True), amp,
                             dice_ce, kd, args.weight_kd, where=(epoch + 1, step + 1, models_dirs[1]))
            for key in sums:
                sums[key] += terms[key]
            steps += 1
            bar.set_postfix(loss1=f"{terms['loss1']:.4f}", loss2=f"{terms['loss2']:.4f}")
        means = mean_over_ranks(sums, steps, ctx)

        val: dict[int, dict[str, float]] = {}
        grid: dict[Any, Any] = {}
        for k in (1, 2):
            def keep_grid(batch: dict[str, Any], logits: torch.Tensor, k: int = k) -> None:
                if k not in grid:  # first validation volume: image, label, prediction of each model
                    grid.setdefault("ref", [batch[key][0, 0] for key in ("image", "label") if key in batch])
                    grid[k] = logits.argmax(1)[0]

            val[k] = mean_scores(evaluate(students[k], val_loader, args.spatial_shape, device, args.sw_batch_size,
                                          args.sw_overlap, amp, ctx, on_volume=keep_grid if ctx.is_main else None))
        improved = {}
        for k in (1, 2):
            metric = val[k][args.val_metric]
            improved[k] = metric > best[k]
            if improved[k]:
                best[k], best_epoch[k] = metric, epoch + 1
        check_finite_weights({f"model{k}": students[k] for k in (1, 2)}, epoch + 1, models_dirs[1])
        if ctx.is_main:
            for k in (1, 2):
                if improved[k]:
                    save_model(best_files[k], students[k], names[k], epoch=epoch + 1, metric=args.val_metric,
                               value=best[k])
        ctx.barrier()
        reloaded = (epoch + 1) % args.iterative_epochs == 0
        if reloaded:  # refresh the teachers from the best students so far
            for k in (1, 2):
                load_model_weights(teachers[k], best_files[k], names[k], map_location=device, flag=f"--network{k}")
            logger.info("epoch %d: teachers reloaded from %s and %s", epoch + 1, best_files[1], best_files[2])
        rng = ctx.gather(rng_state(generator))
        if ctx.is_main:
            state = {"epoch": epoch + 1, "scaler": amp.scaler.state_dict(), "rng": rng, "args": vars(args)}
            for k in (1, 2):
                state |= {f"model{k}": unwrap(students[k]).state_dict(), f"teacher{k}": teachers[k].state_dict(),
                          f"optimizer{k}": optimizers[k].state_dict(), f"best_metric{k}": best[k],
                          f"best_epoch{k}": best_epoch[k], f"network{k}": names[k]}
            row = {"epoch": epoch + 1, "lr": lr, **means, "teachers_reloaded": int(reloaded)}
            for k in (1, 2):
                row |= {f"val_dice{k}": val[k]["dice"], f"val_seed_dice{k}": val[k]["seed_dice"],
                        f"best_{args.val_metric}{k}": best[k], f"best_epoch{k}": best_epoch[k]}
            row["time_s"] = round(time.time() - t0, 2)
            csv_log.append(row)
            save_torch(state, latest)  # last: a run killed before this redoes the epoch on --resume
            tb.scalars({f"train/{k}": v for k, v in means.items()} | {"train/lr": lr}
                       | {f"val/dice_model{k}": val[k]["dice"] for k in (1, 2)}
                       | {f"val/seed_dice_model{k}": val[k]["seed_dice"] for k in (1, 2)}, epoch + 1)
            if 1 in grid and 2 in grid:
                tb.image("val/image_label_pred1_pred2", slice_grid(grid["ref"] + [grid[1], grid[2]]), epoch + 1)
            logger.info("SCM epoch %d/%d lr %.2e loss1 %.4f (self %.4f kd %.4f) loss2 %.4f (self %.4f kd %.4f) "
                        "val %s %.4f / %.4f | best %.4f @%d / %.4f @%d (%.1f s)", epoch + 1, args.max_epochs, lr,
                        means["loss1"], means["self1"], means["kd1"], means["loss2"], means["self2"], means["kd2"],
                        args.val_metric, val[1][args.val_metric], val[2][args.val_metric], best[1], best_epoch[1],
                        best[2], best_epoch[2], time.time() - t0)
        ctx.barrier()
    if ctx.is_main:
        for k in (1, 2):
            save_model(models_dirs[k] / f"CP_final_model{k}.pth", students[k], names[k], epoch=args.max_epochs)
        logger.info("done: best %s model1 %.4f (epoch %d), model2 %.4f (epoch %d)", args.val_metric, best[1],
                    best_epoch[1], best[2], best_epoch[2])
    tb.close()
    ctx.close()
    return Path(args.model_dir)


def scm_step(students: dict[int, nn.Module], teachers: dict[int, nn.Module],
             optimizers: dict[int, torch.optim.Optimizer], image: torch.Tensor, amp: Amp, dice_ce: DiceCELoss,
             kd: KDLoss, weight_kd: float, where: tuple[int, int, Path]) -> dict[str, float]:
    """One SGD step of both students; returns ``loss1, self1, kd1, loss2, self2, kd2`` as floats."""
    # Teachers run under inference_mode; clone() outside it gives ordinary tensors for the losses.
    teacher_logits = {k: _teacher_logits(teachers[k], image, amp).clone() for k in (1, 2)}
    terms: dict[str, float] = {}
    losses = {}
    for k, other in ((1, 2), (2, 1)):
        optimizers[k].zero_grad(set_to_none=True)
        with amp.autocast():
            logits = students[k](image)
        parts = scm_losses(logits, teacher_logits[k], teacher_logits[other], dice_ce, kd, weight_kd)
        losses[k] = parts["loss"]
        terms |= {f"{name}{k}": float(value.item()) for name, value in parts.items()}
    check_finite(terms, *where)
    amp.optimize([losses[1], losses[2]], [optimizers[1], optimizers[2]])
    return terms


def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    check_args(args)
    return train(args)


if __name__ == "__main__":
    main()
