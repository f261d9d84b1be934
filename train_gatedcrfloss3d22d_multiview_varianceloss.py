"""PA-Seg stage 1: train a network from expanded seeds with partial Dice+CE, the multi-view 2D
gated CRF loss and the Variance Minimisation loss.

loss = partial DiceCE(logits, expanded seeds)
       + ramp(epoch) · (weight_gatedcrf · mCRF(logits, image) + weight_variance · VM(logits, image))

Defaults reproduce the paper's VS setting. Outputs under ``<model_dir>/<network>/``:
``models/CP_best.pth``, ``models/CP_final.pth``, ``models/CP_latest.pth`` (resumable),
``log.csv``, ``log_<time>.txt``, ``tensorboard/``.

Runs alone or under ``torchrun --nproc_per_node N`` (DistributedDataParallel).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from networks import NETWORKS, get_network
from utilities.cli import add_common_args, check_spatial_shape, nonnegative_float, nonnegative_int, positive_int
from utilities.io import save_torch
from utilities.losses import MultiViewGatedCRFLoss, PartialDiceCELoss, VarianceLoss
from utilities.schedules import poly_lr, sigmoid_rampup
from utilities.training import (Amp, add_data_args, data_sources, validation_sources, CsvLog, TensorBoard, add_training_args, check_finite, check_finite_weights,
                                evaluate, load_data, load_resume_state, make_loaders, make_optimizer,
                                mean_over_ranks, mean_scores, rng_state, save_model, set_lr, set_rng_state,
                                slice_grid, start_run, unwrap, wrap_ddp)

NUM_CLASSES = 2
IN_CHANNELS = 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_dir", default="./models/debug/", help="run folder; outputs go to <model_dir>/<network>/")
    p.add_argument("--network", default="U_Net2D5", choices=sorted(NETWORKS), help="network architecture")
    p.add_argument("--batch_size", type=positive_int, default=1, help="patches per step")
    p.add_argument("--max_epochs", type=positive_int, default=300, help="epochs (one pass over the training subjects each)")
    p.add_argument("--rampup_epochs", type=nonnegative_int, default=30,
                   help="sigmoid ramp-up length of the CRF and VM weights (0: no ramp-up)")
    add_data_args(p, labels_help="folder of full labels (validation Dice and TensorBoard only)",
                  seeds_help="folder of expanded-seed labels (0 background, 1 foreground, 2 unknown)")
    p.add_argument("--weight_gatedcrf", type=nonnegative_float, default=1.0, help="weight of the mCRF loss")
    p.add_argument("--down_size", type=int, nargs=3, default=[64, 64, 48],
                   help="size (X Y Z) the prediction and image are resized to for the mCRF loss")
    p.add_argument("--kernel_radius", type=int, nargs=3, default=[5, 5, -1],
                   help="mCRF window radius; the first value is used (the others are kept for compatibility)")
    p.add_argument("--weight_variance", type=nonnegative_float, default=0.1, help="weight of the VM loss")
    add_common_args(p)
    add_training_args(p)
    return p


def check_args(args: argparse.Namespace) -> None:
    """Validate values argparse cannot (raises ValueError naming the flag)."""
    args.spatial_shape = list(check_spatial_shape(args.spatial_shape))
    if any(d <= 0 for d in args.down_size):
        raise ValueError(f"--down_size needs three positive sizes, got {args.down_size}")
    if any(d > s for d, s in zip(args.down_size, args.spatial_shape)):
        raise ValueError(f"--down_size {args.down_size} must not exceed --spatial_shape {args.spatial_shape} in any axis")
    if args.kernel_radius[0] <= 0:
        raise ValueError(f"--kernel_radius must start with a positive radius, got {args.kernel_radius}")
    if not 0 <= args.sw_overlap < 1:
        raise ValueError(f"--sw_overlap must be in [0, 1), got {args.sw_overlap}")


def train(args: argparse.Namespace) -> Path:
    """Run stage 1; returns the run folder ``<model_dir>/<network>``."""
    run_dir = Path(args.model_dir) / args.network
    models_dir = run_dir / "models"
    src = data_sources(args)
    val_required, val_optional = validation_sources(args, src)
    ctx, device, logger, latest_path, caches = start_run(
        args, [run_dir], models_dir / "CP_latest.pth",
        preflight=lambda: load_data(args, [src["image"], src["seeds"]], val_required, val_optional))
    generator = torch.Generator().manual_seed(args.seed + ctx.rank)
    train_loader, val_loader, train_sampler = make_loaders(args, caches, ctx, generator)

    model = get_network(args.network, IN_CHANNELS, NUM_CLASSES).to(device)
    optimizer = make_optimizer(model, args.learning_rate)
    amp = Amp(args.amp, device)
    seg_loss = PartialDiceCELoss(num_classes=NUM_CLASSES)
    crf_loss = MultiViewGatedCRFLoss(down_size=tuple(args.down_size), kernel_radius=args.kernel_radius[0])
    var_loss = VarianceLoss()

    start_epoch, best, best_epoch = 0, -1.0, -1
    # the other validation metric, when its reference exists, also keeps its best checkpoint
    other = "seed_dice" if args.val_metric == "dice" else "dice"
    best_other, best_other_epoch = -1.0, -1
    if latest_path is not None:
        state = load_resume_state(latest_path, args, {"network": args.network}, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        amp.scaler.load_state_dict(state["scaler"])
        start_epoch, best, best_epoch = state["epoch"], state["best_metric"], state["best_epoch"]
        best_other, best_other_epoch = state.get("best_other", (-1.0, -1))
        set_rng_state(state["rng"][min(ctx.rank, len(state["rng"]) - 1)], generator)
        logger.info("resumed from %s at epoch %d (best %s %.4f at epoch %d)", latest_path, start_epoch,
                    args.val_metric, best, best_epoch)
    model = wrap_ddp(model, ctx, device)

    csv_log = CsvLog(run_dir / "log.csv", start_epoch) if ctx.is_main else None
    tb = TensorBoard(run_dir / "tensorboard" if ctx.is_main else None)
    for epoch in range(start_epoch, args.max_epochs):
        t0 = time.time()
        lr = poly_lr(epoch, args.max_epochs, args.learning_rate)
        set_lr(optimizer, lr)
        ramp = sigmoid_rampup(epoch, args.rampup_epochs)
        if train_sampler is not None:
            train_sampler.set_epoch(epoch)
        sums = {"loss": 0.0, "loss_seg": 0.0, "loss_crf": 0.0, "loss_vm": 0.0}
        steps = 0
        model.train()
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{args.max_epochs}", leave=False,
                   disable=not ctx.is_main, dynamic_ncols=True)
        for step, batch in enumerate(bar):
            terms = training_step(model, batch, device, amp, optimizer, seg_loss, crf_loss, var_loss, ramp, args,
                                  where=(epoch + 1, step + 1, models_dir))
            for key in sums:
                sums[key] += terms[key]
            steps += 1
            bar.set_postfix(loss=f"{terms['loss']:.4f}")
        means = mean_over_ranks(sums, steps, ctx)

        grid: list[torch.Tensor] = []

        def keep_grid(batch: dict[str, Any], logits: torch.Tensor) -> None:
            if not grid:
                vols = [batch[k][0, 0] for k in ("image", "label", "seeds") if k in batch]
                grid.append(slice_grid(vols + [logits.argmax(1)[0]]))

        val = mean_scores(evaluate(model, val_loader, args.spatial_shape, device, args.sw_batch_size,
                                   args.sw_overlap, amp, ctx, on_volume=keep_grid if ctx.is_main else None))
        metric = val[args.val_metric]
        improved = metric > best
        if improved:
            best, best_epoch = metric, epoch + 1
        improved_other = val[other] > best_other  # False when not computed (NaN)
        if improved_other:
            best_other, best_other_epoch = val[other], epoch + 1
        check_finite_weights({"model": model}, epoch + 1, models_dir)
        rng = ctx.gather(rng_state(generator))
        if ctx.is_main:
            # CP_latest last: a run killed in between resumes from the previous epoch and redoes this one
            if improved:
                save_model(models_dir / "CP_best.pth", model, args.network, epoch=epoch + 1,
                           metric=args.val_metric, value=metric)
            if improved_other:
                save_model(models_dir / f"CP_best_{other}.pth", model, args.network, epoch=epoch + 1,
                           metric=other, value=best_other)
            csv_log.append({"epoch": epoch + 1, "lr": lr, "ramp": ramp, **means, "val_dice": val["dice"],
                            "val_seed_dice": val["seed_dice"], f"best_{args.val_metric}": best,
                            "best_epoch": best_epoch, "time_s": round(time.time() - t0, 2)})
            save_torch({"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                        "scaler": amp.scaler.state_dict(), "epoch": epoch + 1, "best_metric": best,
                        "best_epoch": best_epoch, "best_other": (best_other, best_other_epoch), "rng": rng,
                        "args": vars(args), "network": args.network},
                       models_dir / "CP_latest.pth")
            tb.scalars({f"train/{k}": v for k, v in means.items()} | {"train/lr": lr, "train/ramp": ramp,
                        "val/dice": val["dice"], "val/seed_dice": val["seed_dice"]}, epoch + 1)
            if grid:
                tb.image("val/image_label_seeds_prediction", grid[0], epoch + 1)
            logger.info("epoch %d/%d lr %.2e loss %.4f (seg %.4f crf %.4f vm %.4f) val dice %.4f seed_dice %.4f "
                        "| best %s %.4f @%d (%.1f s)", epoch + 1, args.max_epochs, lr, means["loss"],
                        means["loss_seg"], means["loss_crf"], means["loss_vm"], val["dice"], val["seed_dice"],
                        args.val_metric, best, best_epoch, time.time() - t0)
        ctx.barrier()
    if ctx.is_main:
        save_model(models_dir / "CP_final.pth", model, args.network, epoch=args.max_epochs)
        logger.info("done: best %s %.4f at epoch %d; checkpoints in %s", args.val_metric, best, best_epoch, models_dir)
    tb.close()
    ctx.close()
    return run_dir


def training_step(model: torch.nn.Module, batch: dict[str, Any], device: torch.device, amp: Amp,
                  optimizer: torch.optim.Optimizer, seg_loss: PartialDiceCELoss,
                  crf_loss: MultiViewGatedCRFLoss, var_loss: VarianceLoss, ramp: float,
                  args: argparse.Namespace, where: tuple[int, int, Path]) -> dict[str, float]:
    """One SGD step on a batch of patches; returns the loss terms as floats.

    A non-finite loss term raises before the weights are touched (``where`` = epoch, step and
    checkpoint folder, for the message)."""
    image = batch["image"].to(device, non_blocking=True)
    seeds = batch["seeds"].to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with amp.autocast():
        logits = model(image)
    loss_seg = seg_loss(logits, seeds)
    zero = logits.new_zeros((), dtype=torch.float32)
    w_crf, w_vm = ramp * args.weight_gatedcrf, ramp * args.weight_variance
    loss_crf = crf_loss(logits, image) if w_crf > 0 else zero
    loss_vm = var_loss(logits, image) if w_vm > 0 else zero
    loss = loss_seg + w_crf * loss_crf + w_vm * loss_vm
    terms = {"loss": loss.item(), "loss_seg": loss_seg.item(), "loss_crf": loss_crf.item(), "loss_vm": loss_vm.item()}
    check_finite(terms, *where)
    amp.optimize([loss], [optimizer])
    return terms


def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    check_args(args)
    return train(args)


if __name__ == "__main__":
    main()
