"""The paper's optimiser, the learning-rate setter and mixed precision (with optional
gradient-norm clipping): everything between a loss and a weight update."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = ["MOMENTUM", "WEIGHT_DECAY", "OPTIMIZERS", "make_optimizer", "set_lr", "Amp"]

logger = logging.getLogger("paseg")

MOMENTUM = 0.99
WEIGHT_DECAY = 3e-5


#: ``--optimizer`` choices: the paper's SGD, or Adam.
OPTIMIZERS = ("sgd", "adam")


def make_optimizer(model: nn.Module, lr: float, momentum: float = MOMENTUM, kind: str = "sgd") -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (the paper's 0.99) and weight decay 3e-5; or, with ``kind="adam"``,
    Adam (β = 0.9, 0.999; ``momentum`` unused) with the same weight decay."""
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=momentum > 0,
                               weight_decay=WEIGHT_DECAY)
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    raise ValueError(f"--optimizer must be one of {OPTIMIZERS}, got {kind!r}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _parameters(optimizer: torch.optim.Optimizer) -> Iterable[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


class Amp:
    """Automatic mixed precision on CUDA: bf16 autocast where supported, else fp16 with a
    GradScaler. Disabled (with a warning) on CPU, where it does not pay (bf16 is emulated on
    CPUs without AVX-512 and ~40x slower)."""

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

    def scale(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` times the loss scale (itself when no scaler is used)."""
        return self.scaler.scale(value)

    @property
    def loss_scale(self) -> float:
        return float(self.scaler.get_scale()) if self.scaler.is_enabled() else 1.0

    def step(self, optimizers: Sequence[torch.optim.Optimizer], clip_norm: float | None = None) -> None:
        """Step each optimiser whose gradients are already in place, then one scaler update.

        ``clip_norm``: clip each optimiser's gradient norm (unscaled) to this value first.
        """
        for optimizer in optimizers:
            if clip_norm is not None:
                self.scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(_parameters(optimizer), clip_norm)
            self.scaler.step(optimizer)
        self.scaler.update()
