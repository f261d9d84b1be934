"""Training helpers shared by stage 1 and stage 2: optimiser, mixed precision, the one
sliding-window call, validation, checkpoints, run folders and logs."""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import random
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from utilities.distributed import DistContext
from utilities.io import ensure_writable_dir, save_csv, save_torch
from utilities.losses import one_hot, soft_dice

__all__ = [
    "MOMENTUM",
    "WEIGHT_DECAY",
    "make_optimizer",
    "set_lr",
    "Amp",
    "sliding_window_predict",
    "volume_scores",
    "evaluate",
    "prepare_run_dir",
    "add_data_args",
    "data_sources",
    "validation_sources",
    "start_run",
    "load_data",
    "make_loaders",
    "mean_over_ranks",
    "mean_scores",
    "wrap_ddp",
    "save_model",
    "load_model_weights",
    "load_resume_state",
    "RESUME_FREE_ARGS",
    "rng_state",
    "set_rng_state",
    "CsvLog",
    "TensorBoard",
    "slice_grid",
    "NonFiniteLossError",
    "check_finite",
    "check_finite_weights",
    "unwrap",
]

logger = logging.getLogger("paseg")

MOMENTUM = 0.99
WEIGHT_DECAY = 3e-5
CHECKPOINT_FORMAT = "paseg-model-v1"
#: Arguments that may change between a run and its ``--resume`` without changing the result.
RESUME_FREE_ARGS = frozenset({"resume", "overwrite", "num_workers", "cache_gb", "device", "sw_batch_size"})


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.SGD:
    """SGD with Nesterov momentum 0.99 and weight decay 3e-5 (the paper's optimiser)."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM, nesterov=True,
                           weight_decay=WEIGHT_DECAY)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class Amp:
    """Automatic mixed precision on CUDA: bf16 autocast where supported, else fp16 with a
    GradScaler. Disabled (with a warning) on CPU, where it does not pay."""

    def __init__(self, enabled: bool, device: torch.device) -> None:
        if enabled and device.type != "cuda":
            logger.warning("--amp is only used on CUDA devices; running in float32 on %s", device)
            enabled = False
        self.enabled = enabled
        self.device_type = device.type
        self.dtype = torch.bfloat16 if enabled and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=enabled and self.dtype == torch.float16)

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        self.scaler.step(optimizer)

    def update(self) -> None:
        self.scaler.update()

    def optimize(self, losses: Sequence[torch.Tensor], optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Backward pass and step of each (loss, optimiser) pair, then one scaler update."""
        for loss, optimizer in zip(losses, optimizers, strict=True):
            self.backward(loss)
            self.step(optimizer)
        self.update()


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


@torch.inference_mode()
def sliding_window_predict(model: nn.Module, image: torch.Tensor, roi_size: Sequence[int],
                           sw_batch_size: int = 1, overlap: float = 0.25,
                           amp: Amp | None = None) -> torch.Tensor:
    """Whole-volume logits by MONAI sliding-window inference with gaussian blending.

    Args:
        image: ``(N, C, X, Y, Z)`` on the model's device. Volumes smaller than ``roi_size`` are
            padded with the volume's minimum (the background after z-normalisation) and cropped
            back by MONAI.
    Returns:
        float32 logits ``(N, num_classes, X, Y, Z)``.
    """
    ctx = amp.autocast() if amp is not None else contextlib.nullcontext()
    with ctx:
        logits = sliding_window_inference(image, tuple(roi_size), sw_batch_size, model, overlap=overlap,
                                          mode="gaussian", padding_mode="constant", cval=float(image.min()))
    return torch.as_tensor(logits).float()


def volume_scores(logits: torch.Tensor, label: torch.Tensor | None,
                  seeds: torch.Tensor | None) -> dict[str, float]:
    """Foreground Dice of ``argmax(logits)`` against the full label (``dice``) and against the
    expanded seeds on their annotated voxels only (``seed_dice``: label 1 = foreground near the
    seed, 0 = background outside the box, 2 = unknown, ignored). Uses the losses' Dice.

    Args:
        logits: ``(1, C, X, Y, Z)``; label, seeds: ``(1, 1, X, Y, Z)`` integer or ``None``.
    """
    num_classes = logits.shape[1]
    pred = one_hot(logits.argmax(1), num_classes)
    scores: dict[str, float] = {}
    if label is not None:
        scores["dice"] = _foreground_dice(pred, one_hot((label[:, 0] > 0).long(), num_classes))
    if seeds is not None:
        known = seeds[:, 0] < 2
        scores["seed_dice"] = _foreground_dice(pred, one_hot((seeds[:, 0] == 1).long(), num_classes), known)
    return scores


def _foreground_dice(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean Dice of the foreground classes of one volume; 1 where prediction and target are
    both empty (a correct empty prediction)."""
    dice = soft_dice(pred, target, mask, eps=0.0)[0, 1:]
    if mask is not None:
        pred, target = pred * mask.unsqueeze(1), target * mask.unsqueeze(1)
    both_empty = (pred.sum((2, 3, 4)) + target.sum((2, 3, 4)))[0, 1:] == 0
    return float(torch.where(both_empty, torch.ones_like(dice), dice).mean())


def evaluate(model: nn.Module, loader: Any, roi_size: Sequence[int], device: torch.device,
             sw_batch_size: int = 1, overlap: float = 0.25, amp: Amp | None = None,
             ctx: DistContext | None = None,
             on_volume: Callable[[dict[str, Any], torch.Tensor], None] | None = None) -> dict[str, dict[str, float]]:
    """Scores of every validation volume: ``{subject: {"dice": .., "seed_dice": ..}}``.

    With a distributed ``ctx`` each rank scores its shard of the loader and the results are
    gathered, so every rank returns all subjects. ``on_volume(batch, logits)`` is called for
    each volume (e.g. to log an image grid). The forward passes bypass a DDP wrapper: ranks
    hold different numbers of volumes, so no collective may run inside this loop.
    """
    model.eval()
    net = unwrap(model)
    results: dict[str, dict[str, float]] = {}
    for batch in loader:
        image = batch["image"].to(device)
        logits = sliding_window_predict(net, image, roi_size, sw_batch_size, overlap, amp)
        label = batch.get("label")
        seeds = batch.get("seeds")
        scores = volume_scores(logits, None if label is None else label.to(device),
                               None if seeds is None else seeds.to(device))
        results[batch["subject"][0]] = scores
        if on_volume is not None:
            on_volume(batch, logits)
    model.train()
    if ctx is not None and ctx.distributed:
        merged: dict[str, dict[str, float]] = {}
        for part in ctx.gather(results):
            merged.update(part)
        results = merged
    return results


def _existing_checkpoints(run_dir: Path) -> list[str]:
    models = run_dir / "models"
    return sorted(p.name for p in models.glob("*.pth")) if models.is_dir() else []


def check_run_dir(run_dirs: Sequence[Path], resume: bool, overwrite: bool, latest: Path,
                  flag_hint: str = "--model_dir") -> Path | None:
    """Refuse to clobber an existing run; changes nothing on disk.

    Returns the latest checkpoint to resume from (``None`` to start fresh).

    Raises:
        FileExistsError: a run folder holds checkpoints and neither ``--resume`` nor ``--overwrite``.
        FileNotFoundError: ``--resume`` without a latest checkpoint.
    """
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other; pass one of them")
    if resume:
        if not latest.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint {latest} to resume from; start without --resume")
        return latest
    for run_dir in dict.fromkeys(run_dirs):
        existing = _existing_checkpoints(run_dir)
        if existing and not overwrite:
            raise FileExistsError(f"{run_dir} already holds a run ({', '.join(existing)}); pass --resume to "
                                  f"continue it, --overwrite to replace it, or choose another {flag_hint}")
    return None


def prepare_run_dir(run_dirs: Sequence[Path], resume: bool, overwrite: bool, latest: Path,
                    flag_hint: str = "--model_dir") -> Path | None:
    """:func:`check_run_dir`, then create ``<run_dir>/models`` for each run folder (after
    deleting an existing run when ``overwrite``)."""
    latest_path = check_run_dir(run_dirs, resume, overwrite, latest, flag_hint)
    for run_dir in dict.fromkeys(run_dirs):
        if overwrite and _existing_checkpoints(run_dir):
            shutil.rmtree(run_dir)
        ensure_writable_dir(run_dir / "models")
    return latest_path


def start_run(args: argparse.Namespace, run_dirs: Sequence[Path], latest: Path, log_name: str = "log",
              preflight: Callable[[], Any] | None = None
              ) -> tuple[DistContext, torch.device, logging.Logger, Path | None, Any]:
    """Device, process group, input checks, run folders, logger (every argument logged), seeding.

    The order makes every bad input fail before anything is written or deleted: the device,
    then whether the run folder may be used (:func:`check_run_dir`), then ``preflight()`` (load
    and check the data and checkpoints; console logging only), and only then the run folders
    are created (an ``--overwrite``-n run is deleted) and the log file opened.

    Returns ``(ctx, device, logger, checkpoint to resume from or None, preflight's result)``;
    the log file goes to the first run folder.
    """
    from utilities.cli import log_args, resolve_device, seed_everything, setup_logger
    from utilities.distributed import init_distributed

    ctx, device = init_distributed(resolve_device(args.device))
    if ctx.is_main:
        check_run_dir(run_dirs, args.resume, args.overwrite, latest)
    setup_logger(None, log_name, ctx.rank)
    prepared = preflight() if preflight is not None else None
    latest_path = None
    if ctx.is_main:
        latest_path = prepare_run_dir(run_dirs, args.resume, args.overwrite, latest)
    latest_path = ctx.broadcast(latest_path)
    log = setup_logger(run_dirs[0] if ctx.is_main else None, log_name, ctx.rank)
    log_args(log, args)
    log.info("device %s, %d process(es)", device, ctx.world_size)
    seed_everything(args.seed + ctx.rank)
    return ctx, device, log, latest_path, prepared


def load_data(args: argparse.Namespace, train_sources: Sequence[Any], val_required: Sequence[Any],
              val_optional: Sequence[Any]) -> tuple[Any, Any]:
    """Training and validation subject caches, every file checked first (all missing files of
    both phases listed in one error), then loaded and checked."""
    from utilities.data import check_files, load_phase

    check_files(args.dataset_split, [("training", train_sources), ("validation", val_required)])
    train_cache = load_phase(args.dataset_split, "training", train_sources, cache_gb=args.cache_gb)
    val_cache = load_phase(args.dataset_split, "validation", val_required, val_optional, cache_gb=args.cache_gb)
    return train_cache, val_cache


def make_loaders(args: argparse.Namespace, caches: tuple[Any, Any], ctx: DistContext,
                 generator: torch.Generator) -> tuple[Any, Any, Any]:
    """Training patch loader (sharded under torchrun), validation volume loader (sharded) and
    the training sampler (``None`` when not distributed; call ``set_epoch`` on it), from the
    caches of :func:`load_data`."""
    from torch.utils.data.distributed import DistributedSampler

    from utilities.data import make_training_loader, make_volume_loader
    from utilities.distributed import shard_indices

    train_cache, val_cache = caches
    logger.info("%d training and %d validation subjects (validation uses: %s)", len(train_cache),
                len(val_cache), ", ".join(val_cache.whats.values()))
    sampler = (DistributedSampler(range(len(train_cache)), ctx.world_size, ctx.rank, shuffle=True, seed=args.seed)
               if ctx.distributed else None)
    train_loader = make_training_loader(train_cache, args.spatial_shape, args.batch_size, args.num_workers,
                                        generator=generator, sampler=sampler)
    val_loader = make_volume_loader(val_cache, sampler=shard_indices(len(val_cache), ctx))
    return train_loader, val_loader, sampler


def mean_over_ranks(sums: Mapping[str, float], steps: int, ctx: DistContext) -> dict[str, float]:
    """Per-step means of the loss sums, averaged over processes."""
    parts = ctx.gather({k: v / max(steps, 1) for k, v in sums.items()})
    return {k: sum(p[k] for p in parts) / len(parts) for k in sums}


def mean_scores(scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean ``dice`` and ``seed_dice`` over volumes (NaN when not computed)."""
    out = {}
    for metric in ("dice", "seed_dice"):
        values = [s[metric] for s in scores.values() if metric in s]
        out[metric] = float(sum(values) / len(values)) if values else float("nan")
    return out


def wrap_ddp(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """DistributedDataParallel when distributed, else the model itself."""
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def save_model(path: Path, model: nn.Module, network: str, **meta: Any) -> None:
    """Save the weights with what is needed to check them on load (atomic)."""
    model = unwrap(model)
    payload = {"format": CHECKPOINT_FORMAT, "network": network,
               "in_channels": getattr(model, "in_channels", None),
               "num_classes": getattr(model, "num_classes", None),
               "state_dict": model.state_dict(), **meta}
    save_torch(payload, path)


def _torch_load(path: Path, map_location: Any) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle, zip and unpickler errors all mean "not our checkpoint"
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}); "
                         "point to a .pth written by this project's training scripts") from None


def load_model_weights(model: nn.Module, path: Path, network: str,
                       map_location: Any = "cpu", flag: str = "--network") -> dict[str, Any]:
    """Load weights saved by :func:`save_model` (or a bare state dict) into ``model``.

    Returns the checkpoint's metadata. Raises a one-line error for a missing file, a file that
    is not a checkpoint, or a checkpoint of another network (``flag``: the option that names
    the network, for the message).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    payload = _torch_load(path, map_location)
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        if payload["network"] != network:
            raise ValueError(f"checkpoint {path} holds a {payload['network']} network, not {network}; "
                             f"pass {flag} {payload['network']} or another checkpoint")
        state = payload["state_dict"]
        meta = {k: v for k, v in payload.items() if k != "state_dict"}
    elif isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        state, meta = payload, {}
    else:
        raise ValueError(f"{path} is not a model checkpoint (no weights found); "
                         "point to a CP_*.pth written by this project's training scripts")
    result = unwrap(model).load_state_dict(state, strict=False)
    shape_errors = [k for k, v in state.items() if k in unwrap(model).state_dict()
                    and unwrap(model).state_dict()[k].shape != v.shape]
    if result.missing_keys or result.unexpected_keys or shape_errors:
        raise ValueError(f"checkpoint {path} does not fit network {network} "
                         f"({len(result.missing_keys)} missing, {len(result.unexpected_keys)} unexpected "
                         f"parameter(s)); was it trained with another {flag}?")
    return meta


def load_resume_state(path: Path, args: argparse.Namespace, networks: Mapping[str, str],
                      map_location: Any = "cpu") -> dict[str, Any]:
    """Load a ``CP_latest*.pth`` written by a training script, for ``--resume``.

    ``networks`` maps the checkpoint's network keys to the names this run expects (e.g.
    ``{"network": "U_Net2D5"}``). Arguments that differ from the checkpoint's (other than
    :data:`RESUME_FREE_ARGS`) are logged as a warning: the run then no longer matches an
    uninterrupted one.

    Raises:
        ValueError: one line naming the file, if it is not a resumable checkpoint of this run.
    """
    state = _torch_load(Path(path), map_location)
    needed = {"epoch", "rng", "args", "scaler", *networks}
    if not isinstance(state, dict) or not needed <= set(state):
        raise ValueError(f"--resume: {path} is not a resumable checkpoint of this script (no "
                         f"{sorted(needed - set(state)) if isinstance(state, dict) else 'state'}); "
                         "start afresh with --overwrite")
    for key, name in networks.items():
        if state[key] != name:
            raise ValueError(f"--resume: {path} holds a run of {key} {state[key]}, not {name}; "
                             f"pass --{key} {state[key]} or choose another --model_dir")
    saved = state["args"]
    changed = [f"--{k} {saved.get(k)!r} -> {v!r}" for k, v in sorted(vars(args).items())
               if k not in RESUME_FREE_ARGS and k in saved and saved[k] != v]
    if changed:
        logger.warning("--resume with changed argument(s): %s; the result will differ from an "
                       "uninterrupted run", ", ".join(changed))
    return state


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random state a run depends on (for exact resume)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: Mapping[str, Any], generator: torch.Generator | None = None) -> None:
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy(), *np_state[2:]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


class CsvLog:
    """``log.csv``, one row per epoch, rewritten atomically after each epoch.

    ``start_epoch`` is the number of epochs done (a resumed run): their rows are kept, those
    of later epochs (written after the checkpoint that is resumed) are dropped.
    """

    def __init__(self, path: Path, start_epoch: int = 0) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if start_epoch > 0 and path.is_file():
            try:
                old = pd.read_csv(path)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
                raise ValueError(f"--resume: cannot read {path} ({str(e).splitlines()[0]}); move it away to "
                                 "start a new log") from None
            self.rows = old[old["epoch"] <= start_epoch].to_dict("records")

    def append(self, row: Mapping[str, Any]) -> None:
        self.rows.append(dict(row))
        save_csv(pd.DataFrame(self.rows), self.path)


class TensorBoard:
    """SummaryWriter on the main process only; a no-op elsewhere."""

    def __init__(self, log_dir: Path | None) -> None:
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_dir))

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    self.writer.add_scalar(key, value, step)

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, grid, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def slice_grid(volumes: Sequence[torch.Tensor]) -> torch.Tensor:
    """The middle axial (Z) slice of each ``(X, Y, Z)`` volume, each scaled to [0, 1], side by
    side: a ``(1, Y, k·X)`` image for TensorBoard."""
    tiles = []
    for vol in volumes:
        tile = vol[..., vol.shape[-1] // 2].float().cpu().T.flip(0)  # rows = Y (anterior up)
        lo, hi = tile.min(), tile.max()
        tiles.append((tile - lo) / (hi - lo) if hi > lo else torch.zeros_like(tile))
    return torch.cat(tiles, dim=1).unsqueeze(0)


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or Inf; the last good checkpoints are kept."""


def check_finite(values: Mapping[str, torch.Tensor | float], epoch: int, step: int, where: Path) -> None:
    """Stop with a clear message (also logged) at the first non-finite loss term."""
    for name, value in values.items():
        if not math.isfinite(float(value)):
            message = (f"loss term {name} became {float(value)} at epoch {epoch}, step {step}; training stopped, "
                       f"the last good checkpoints in {where} are intact (lower --learning_rate or check the data)")
            logger.error(message)
            raise NonFiniteLossError(message)


def check_finite_weights(models: Mapping[str, nn.Module], epoch: int, where: Path) -> None:
    """Stop before a checkpoint is written if a weight or buffer of a model is NaN/Inf (the
    previous checkpoints stay the last good ones)."""
    for name, model in models.items():
        for key, tensor in unwrap(model).state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                message = (f"{name} weight {key} became non-finite in epoch {epoch}; training stopped, the last "
                           f"good checkpoints in {where} are intact (lower --learning_rate or check the data)")
                logger.error(message)
                raise NonFiniteLossError(message)


def add_data_args(parser: argparse.ArgumentParser, labels_help: str, seeds_help: str) -> None:
    """The paper's data and optimiser flags shared by both training scripts (VS defaults)."""
    from utilities.cli import positive_float

    parser.add_argument("--dataset_split", default="./splits/split_VS.csv", help="CSV of 'subject,phase' rows")
    parser.add_argument("--path_images", default="./data/VS/image_crop/",
                        help="folder of <subject>_<image_postfix>.nii.gz")
    parser.add_argument("--image_postfix", default="T2", help="image file postfix")
    parser.add_argument("--path_labels", default="./data/VS/label_crop/", help=labels_help)
    parser.add_argument("--label_postfix", default="Label", help="label file postfix")
    parser.add_argument("--path_geodesic_labels", default="./data/VS/geodesic/weight0.5_threshold0.2/geodesic_label/",
                        help=seeds_help)
    parser.add_argument("--geodesic_label_postfix", default="GeodesicLabel", help="expanded-seed label postfix")
    parser.add_argument("--learning_rate", type=positive_float, default=1e-2, help="initial learning rate (poly decay)")
    parser.add_argument("--spatial_shape", type=int, nargs=3, default=[128, 128, 48],
                        help="training patch and sliding-window size (X Y Z), divisible by 16")


def data_sources(args: argparse.Namespace) -> dict[str, Any]:
    """The image, full label and expanded-seed sources named by the data flags."""
    from utilities.data import ImageSource

    return {
        "image": ImageSource("image", args.path_images, args.image_postfix, False, "image",
                             "--path_images/--image_postfix"),
        "label": ImageSource("label", args.path_labels, args.label_postfix, True, "label",
                             "--path_labels/--label_postfix"),
        "seeds": ImageSource("seeds", args.path_geodesic_labels, args.geodesic_label_postfix, True,
                             "expanded-seed label", "--path_geodesic_labels/--geodesic_label_postfix"),
    }


def validation_sources(args: argparse.Namespace, src: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
    """Validation needs what ``--val_metric`` scores against; the other reference is used if present.
    Returns ``(required, optional)``."""
    needed, extra = ("label", "seeds") if args.val_metric == "dice" else ("seeds", "label")
    return [src["image"], src[needed]], [src[extra]]


def add_training_args(parser: argparse.ArgumentParser) -> None:
    """Flags common to both training scripts, beyond the paper's."""
    from utilities.cli import nonnegative_float, positive_int

    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --model_dir from its latest checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run in --model_dir")
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling)")
    parser.add_argument("--sw_batch_size", type=positive_int, default=1,
                        help="sliding windows per forward pass in validation")
    parser.add_argument("--sw_overlap", type=float, default=0.25, help="sliding-window overlap in validation")
    parser.add_argument("--val_metric", default="dice", choices=["dice", "seed_dice"],
                        help="checkpoint selection: Dice against full labels (paper) or, label-free, "
                             "agreement with the expanded seeds on their annotated voxels")
    parser.add_argument("--cache_gb", type=nonnegative_float, default=8.0,
                        help="memory budget (GiB) for volumes kept decoded between epochs")
