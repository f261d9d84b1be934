"""The one sliding-window call: whole-volume logits for validation, inference and benchmarks."""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from monai.inferers import sliding_window_inference
from torch import nn

from utilities.optim import Amp

__all__ = ["sliding_window_predict"]


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
