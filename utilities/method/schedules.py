"""Training schedules of PA-Seg: the sigmoid ramp-up of the regulariser weights and the poly learning rate."""
from __future__ import annotations

import math

__all__ = ["sigmoid_rampup", "rampup_warning", "poly_lr"]


def sigmoid_rampup(epoch: float, length: float) -> float:
    """Ramp-up factor ``exp(−5 (1 − t)²)`` with ``t = clip(epoch, 0, length) / length`` (Laine & Aila 2017).

    Rises from exp(−5) ≈ 0.0067 at epoch 0 to 1 at ``epoch >= length``; 1 when ``length`` is 0.
    """
    if length < 0:
        raise ValueError(f"ramp-up length must be >= 0, got {length}")
    if length == 0:
        return 1.0
    t = min(max(float(epoch), 0.0), float(length)) / float(length)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def rampup_warning(rampup_epochs: int, max_epochs: int, warmup_epochs: int = 0) -> str | None:
    """The warning for a ramp-up that does not end within the run (the CRF/VM weights would
    stay below their value for every epoch), or ``None``."""
    if rampup_epochs <= 0 or warmup_epochs + rampup_epochs < max_epochs:
        return None
    head = (f"--rampup_epochs {rampup_epochs} (after --warmup_epochs {warmup_epochs}) does not end within "
            f"--max_epochs {max_epochs}: ")
    needed = f"raise --max_epochs to at least {warmup_epochs + rampup_epochs + 1}"
    if max_epochs <= warmup_epochs:   # every epoch is a warm-up epoch
        return f"{head}the CRF and VM weights stay 0, every epoch is in the warm-up; {needed}"
    last = sigmoid_rampup(max_epochs - 1 - warmup_epochs, rampup_epochs)
    return (f"{head}the CRF and VM weights reach only {last:.3f} of their value by the last epoch; lower "
            f"--rampup_epochs to at most {max_epochs - warmup_epochs - 1}, or {needed}")


def poly_lr(epoch: float, max_epochs: float, lr0: float, exponent: float = 0.9) -> float:
    """Poly learning rate ``lr0 · (1 − epoch / max_epochs) ** exponent`` (0 at ``epoch == max_epochs``)."""
    if max_epochs <= 0:
        raise ValueError(f"max_epochs must be positive, got {max_epochs}")
    if not 0 <= epoch <= max_epochs:
        raise ValueError(f"epoch must lie in [0, max_epochs={max_epochs}], got {epoch}")
    if lr0 < 0:
        raise ValueError(f"lr0 must be >= 0, got {lr0}")
    return float(lr0 * (1.0 - float(epoch) / float(max_epochs)) ** exponent)
