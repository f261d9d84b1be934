"""The one sliding-window call: whole-volume logits for validation, inference and benchmarks;
and what inference makes of them: the mask, the foreground probability, ensembles."""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from utilities.method.defaults import SW_OVERLAP
from utilities.method.optim import Amp

__all__ = ["sliding_window_predict", "class_probabilities", "segment"]


@torch.inference_mode()
def sliding_window_predict(model: nn.Module, image: torch.Tensor, roi_size: Sequence[int],
                           sw_batch_size: int = 1, overlap: float = SW_OVERLAP,
                           amp: Amp | None = None) -> torch.Tensor:
    """Whole-volume logits by MONAI sliding-window inference with gaussian blending.

    Args:
        image: ``(N, C, X, Y, Z)`` on the model's device. Volumes smaller than ``roi_size`` are
            padded with the volume's minimum (the background after z-normalisation) and cropped
            back by MONAI.
    Returns:
        float32 logits ``(N, num_classes, X, Y, Z)``.
    """
    # imported on first use: MONAI takes longer to import than torch, and a script that stops at a
    # user's mistake (or prints --help) should not pay for it
    from monai.inferers import sliding_window_inference

    ctx = amp.autocast() if amp is not None else contextlib.nullcontext()
    with ctx:
        logits = sliding_window_inference(image, tuple(roi_size), sw_batch_size, model, overlap=overlap,
                                          mode="gaussian", padding_mode="constant", cval=float(image.min()))
    return torch.as_tensor(logits).float()


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the classes, in float64 (so averaging models loses nothing to rounding).

    Args:
        logits: ``(N, num_classes, X, Y, Z)``.
    """
    return torch.softmax(logits.double(), dim=1)


def segment(models: Sequence[tuple[nn.Module, Sequence[int]]], image: torch.Tensor, sw_batch_size: int = 1,
            overlap: float = SW_OVERLAP, amp: Amp | None = None, probability: bool = False
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """The mask and (optionally) the foreground probability of one volume.

    One model: the mask is the argmax of its logits (what ``inference.py`` always wrote).
    Several (an ensemble): the class probabilities of the models are averaged (each model with
    its own window, ``(model, roi_size)`` pairs) and the mask is their argmax. The probability
    returned is that of class 1 (foreground), float32, in ``[0, 1]``.

    Args:
        image: ``(1, C, X, Y, Z)`` on the models' device.
    Returns:
        ``(mask (X, Y, Z) uint8, probability (X, Y, Z) float32 or None)``, numpy, on the CPU.
    """
    if not models:
        raise ValueError("segment needs at least one model")
    if len(models) == 1:
        model, roi = models[0]
        logits = sliding_window_predict(model, image, roi, sw_batch_size, overlap, amp)
        mask = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
        prob = class_probabilities(logits)[0, 1].float().cpu().numpy() if probability else None
        return mask, prob
    total: torch.Tensor | None = None
    for model, roi in models:
        probs = class_probabilities(sliding_window_predict(model, image, roi, sw_batch_size, overlap, amp))
        total = probs if total is None else total + probs
    assert total is not None  # two or more models
    mean = total / len(models)
    mask = mean.argmax(1)[0].to(torch.uint8).cpu().numpy()
    return mask, (mean[0, 1].float().cpu().numpy() if probability else None)
