"""Losses of PA-Seg: Dice+CE (full and partial), Variance Minimisation, multi-view gated CRF, KD.

Every loss is an ``nn.Module`` with explicit constructor flags, takes tensors laid out as
(N, C, X, Y, Z) with Z the slice axis, raises ``ValueError`` on a shape mismatch and computes in
float32 even under autocast (inputs are cast with ``.float()``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from utilities.method.defaults import CRF_SIGMA_XY, DOWN_SIZE, KERNEL_RADIUS

__all__ = [
    "DICE_EPS",
    "SEG_DICE",
    "soft_dice",
    "one_hot",
    "DiceCELoss",
    "PartialDiceCELoss",
    "VarianceLoss",
    "MultiViewGatedCRFLoss",
    "gated_crf_views",
    "KDLoss",
    "CRF_VIEWS",
    "CRF_IMPLEMENTATIONS",
]

DICE_EPS = 1e-5
"""Dice smoothing: ``2·Σpg / (Σp + Σg + eps)``; this form and value reproduce the published
code's numbers bit for bit on the golden inputs (``tests/data/GOLDEN.md``)."""
#: ``PartialDiceCELoss(dice=...)``: the paper's per-item mean over the classes, or nnU-Net's batch Dice of the
#: foreground classes.
SEG_DICE = ("classes", "foreground")

CRF_VIEWS = ("Z", "Y", "X")
"""Order of the per-view CRF values: slices along Z (XY planes), along Y (XZ), along X (YZ)."""


def _no_autocast(device: torch.device):
    """A context that turns autocast off on ``device`` so that losses compute in float32."""
    return torch.autocast(device_type=device.type, enabled=False)


def _check_logits(logits: Tensor, name: str = "logits") -> None:
    if logits.dim() != 5:
        raise ValueError(f"{name} must be (N, C, X, Y, Z), got shape {tuple(logits.shape)}")
    if logits.shape[1] < 2:
        raise ValueError(f"{name} need at least 2 channels (softmax over classes), got shape {tuple(logits.shape)}")


def _labels_3d(labels: Tensor, logits: Tensor) -> Tensor:
    """Integer labels (N, 1, X, Y, Z) or (N, X, Y, Z) -> (N, X, Y, Z) int64, checked against logits."""
    if labels.dim() == 5:
        if labels.shape[1] != 1:
            raise ValueError(f"labels must be (N, 1, X, Y, Z) or (N, X, Y, Z), got shape {tuple(labels.shape)}")
        labels = labels[:, 0]
    if labels.dim() != 4 or labels.shape[0] != logits.shape[0] or labels.shape[1:] != logits.shape[2:]:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match logits shape {tuple(logits.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    return labels.long()


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """One-hot float32 encoding: labels (N, X, Y, Z) in [0, num_classes) -> (N, C, X, Y, Z)."""
    return F.one_hot(labels.long(), num_classes).movedim(-1, 1).float()


def soft_dice(probs: Tensor, onehot: Tensor, mask: Tensor | None = None, eps: float = DICE_EPS) -> Tensor:
    """Per (item, class) Dice ``2·Σ p·g / (Σ p + Σ g + eps)`` over the voxels of ``mask``.

    Shared by the Dice loss (soft probabilities) and the validation metric (one-hot hard
    predictions). With ``eps`` only in the denominator, a class absent from both the prediction
    and the label scores 0, not 1; callers that want 1 there must handle it.

    Args:
        probs: (N, C, *spatial) probabilities (or a one-hot prediction).
        onehot: (N, C, *spatial) one-hot label.
        mask: optional (N, 1, *spatial) or (N, *spatial) weights (1 = voxel used, 0 = ignored).
        eps: denominator smoothing.

    Returns:
        (N, C) Dice values.
    """
    if probs.shape != onehot.shape or probs.dim() < 3:
        raise ValueError(f"probs shape {tuple(probs.shape)} and onehot shape {tuple(onehot.shape)} must be "
                         "equal and (N, C, *spatial)")
    probs = probs.float()
    onehot = onehot.float()
    if mask is not None:
        if mask.dim() == probs.dim() - 1:
            mask = mask.unsqueeze(1)
        if mask.dim() != probs.dim() or mask.shape[1] != 1 or mask.shape[0] != probs.shape[0] \
                or mask.shape[2:] != probs.shape[2:]:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match probs shape {tuple(probs.shape)}")
        mask = mask.float()
        probs = probs * mask
        onehot = onehot * mask
    dims = tuple(range(2, probs.dim()))
    intersection = (probs * onehot).sum(dims)
    denominator = probs.sum(dims) + onehot.sum(dims)
    return 2.0 * intersection / (denominator + eps)


class DiceCELoss(nn.Module):
    """``dice_weight·(1 − mean Dice) + ce_weight·CE`` on all voxels.

    Dice is the soft Dice of the softmax per (item, class) (:func:`soft_dice`), averaged over
    items and classes; CE is the mean voxel-wise cross-entropy.
    """

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0, eps: float = DICE_EPS) -> None:
        super().__init__()
        if dice_weight < 0 or ce_weight < 0:
            raise ValueError(f"dice_weight and ce_weight must be >= 0, got {dice_weight}, {ce_weight}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)
        self.eps = float(eps)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Args:
            logits: (N, C, X, Y, Z) network output.
            labels: (N, 1, X, Y, Z) or (N, X, Y, Z) integer labels in [0, C).

        Returns:
            scalar loss.
        """
        _check_logits(logits)
        labels = _labels_3d(labels, logits)
        num_classes = logits.shape[1]
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(f"labels must lie in [0, {num_classes}), got range "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        with _no_autocast(logits.device):
            logits = logits.float()
            dice = soft_dice(logits.softmax(1), one_hot(labels, num_classes), eps=self.eps)
            ce = F.cross_entropy(logits, labels)
            return self.dice_weight * (1.0 - dice.mean()) + self.ce_weight * ce


class PartialDiceCELoss(nn.Module):
    """Dice+CE on the annotated voxels only (PA-Seg stage 1 on expanded seeds, stage 2 on pseudo-labels).

    Voxels whose label is ``>= num_classes`` (the expanded-seed label 2 = unknown) are ignored.
    For each batch item with annotated voxels, ``1 − mean_c Dice + CE`` is computed over those
    voxels; the loss is the mean over these items. CE is the mean over the annotated voxels (the
    paper), or with ``class_balanced`` the mean over the classes present of each class's mean CE
    (a remedy when the foreground seeds are a tiny share of the annotated voxels: with small
    lesions in whole scans, 0.02 %, and the plain mean gives them that share of the pull).
    ``balance_power`` β in (0, 1] tempers the balance: each voxel of class c weighs
    ``n_c ** -β`` (normalised), so β = 1 is the class-balanced mean above and β → 0 the plain
    mean; with a tiny foreground share the full balance puts the decision for voxels the network
    cannot yet tell apart at 50 % and over-segments, a smaller β keeps it nearer the prior. If no
    item has an annotated voxel the loss is 0, still attached to ``logits`` (zero gradient), so
    ``backward()`` works.

    ``dice="foreground"`` replaces the per-item mean Dice over all classes (the paper) by nnU-Net's:
    one Dice per foreground class over the whole batch's annotated voxels, averaged over the
    foreground classes; the loss is then ``1 − that Dice + mean over the items of their CE``. With
    two classes and batch 1 this drops the background's Dice, which weighs as much as the
    foreground's in the paper's mean and is near 1 from the start.
    """

    def __init__(self, num_classes: int = 2, eps: float = DICE_EPS, class_balanced: bool = False,
                 balance_power: float = 1.0, dice: str = "classes") -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        if not 0.0 < balance_power <= 1.0:
            raise ValueError(f"balance_power must be in (0, 1], got {balance_power}")
        self.num_classes = int(num_classes)
        self.eps = float(eps)
        self.class_balanced = bool(class_balanced)
        self.balance_power = float(balance_power)
        if dice not in SEG_DICE:
            raise ValueError(f"dice must be one of {SEG_DICE}, got {dice!r}")
        self.dice = dice

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Args:
            logits: (N, num_classes, X, Y, Z) network output.
            labels: (N, 1, X, Y, Z) or (N, X, Y, Z) integer labels; ``>= num_classes`` = ignored.

        Returns:
            scalar loss.
        """
        _check_logits(logits)
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[1]} channels, expected num_classes={self.num_classes}")
        labels = _labels_3d(labels, logits)
        if labels.numel() and int(labels.min()) < 0:
            raise ValueError(f"labels must be >= 0, got minimum {int(labels.min())}")
        with _no_autocast(logits.device):
            logits = logits.float()
            annotated = labels < self.num_classes                      # (N, X, Y, Z)
            counts = annotated.flatten(1).sum(1)                       # (N,)
            has_any = counts > 0
            if not bool(has_any.any()):
                return logits.sum() * 0.0
            target = torch.where(annotated, labels, torch.zeros_like(labels))
            mask = annotated.float()
            onehot = one_hot(target, self.num_classes)
            probs = logits.softmax(1)
            ce_voxel = F.cross_entropy(logits, target, reduction="none") * mask
            if self.class_balanced:  # mean CE of each annotated class, averaged over the classes present
                in_class = onehot * mask.unsqueeze(1)                                  # (N, C, X, Y, Z)
                class_counts = in_class.flatten(2).sum(2)                              # (N, C)
                class_sums = (ce_voxel.unsqueeze(1) * in_class).flatten(2).sum(2)
                present = class_counts > 0
                if self.balance_power == 1.0:
                    class_means = torch.where(present, class_sums / class_counts.clamp_min(1),
                                              torch.zeros_like(class_sums))
                    ce = class_means.sum(1) / present.sum(1).clamp_min(1)
                else:  # voxel weights n_c ** -beta: sum_c w_c S_c / sum_c w_c n_c
                    weights = torch.where(present, class_counts.clamp_min(1) ** -self.balance_power,
                                          torch.zeros_like(class_counts))
                    ce = (weights * class_sums).sum(1) / (weights * class_counts).sum(1).clamp_min(1e-12)
            else:
                ce = ce_voxel.flatten(1).sum(1) / counts.clamp_min(1).float()
            if self.dice == "foreground":   # nnU-Net: one Dice over the batch, foreground classes only
                fg_probs, fg_onehot = (t[:, 1:] * mask.unsqueeze(1) for t in (probs, onehot))
                dims = (0, *range(2, probs.dim()))
                dice_fg = 2.0 * (fg_probs * fg_onehot).sum(dims) / (fg_probs.sum(dims) + fg_onehot.sum(dims) + self.eps)
                return 1.0 - dice_fg.mean() + ce[has_any].mean()
            dice = soft_dice(probs, onehot, mask=mask, eps=self.eps)
            per_item = 1.0 - dice.mean(1) + ce                         # (N,)
            return per_item[has_any].mean()


class VarianceLoss(nn.Module):
    """Variance Minimisation (PA-Seg stage 1, Eq. of the intensity-variance regulariser).

    For each class c with p_c = softmax(logits)_c, the p_c-weighted mean μ_c and variance
    ``Σ p_c (I − μ_c)² / Σ p_c`` of the image intensity; the loss sums the variances over
    classes and averages over the batch. With ``exclude_padding`` the background class (c = 0)
    uses only voxels above the image's minimum, so a constant padded border does not count.
    """

    def __init__(self, exclude_padding: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.exclude_padding = bool(exclude_padding)
        self.eps = float(eps)

    def forward(self, logits: Tensor, image: Tensor) -> Tensor:
        """Args:
            logits: (N, C, X, Y, Z) network output.
            image: (N, 1, X, Y, Z) intensities.

        Returns:
            scalar loss.
        """
        _check_logits(logits)
        if image.dim() != 5 or image.shape[1] != 1 or image.shape[0] != logits.shape[0] \
                or image.shape[2:] != logits.shape[2:]:
            raise ValueError(f"image must be (N, 1, X, Y, Z) matching logits {tuple(logits.shape)}, "
                             f"got {tuple(image.shape)}")
        with _no_autocast(logits.device):
            probs = logits.float().softmax(1)
            image = image.float()
            if self.exclude_padding:
                minimum = image.flatten(1).amin(1).view(-1, 1, 1, 1, 1)
                inside = (image > minimum).float()
                weights = torch.cat([probs[:, :1] * inside, probs[:, 1:]], 1)
            else:
                weights = probs
            dims = (2, 3, 4)
            total = weights.sum(dims) + self.eps                               # (N, C)
            mean = (weights * image).sum(dims) / total
            var = (weights * (image - mean[..., None, None, None]) ** 2).sum(dims) / total
            return var.sum(1).mean()


class KDLoss(nn.Module):
    """Knowledge distillation: ``T² · mean over voxels of KL(softmax(t/T) ‖ softmax(s/T))``.

    The teacher is detached (it is a frozen network; no gradient flows into it).
    """

    def __init__(self, T: float = 4.0) -> None:
        super().__init__()
        if not T > 0:
            raise ValueError(f"temperature T must be positive, got {T}")
        self.T = float(T)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """Args:
            student: (N, C, X, Y, Z) student logits.
            teacher: (N, C, X, Y, Z) teacher logits.

        Returns:
            scalar loss.
        """
        _check_logits(student, "student logits")
        if teacher.shape != student.shape:
            raise ValueError(f"teacher shape {tuple(teacher.shape)} differs from student shape {tuple(student.shape)}")
        with _no_autocast(student.device):
            num_classes = student.shape[1]
            # voxels flattened to rows (V, C), as the published code does (same rounding)
            log_s = F.log_softmax(student.float().movedim(1, -1).reshape(-1, num_classes) / self.T, 1)
            log_t = F.log_softmax(teacher.detach().float().movedim(1, -1).reshape(-1, num_classes) / self.T, 1)
            kl = F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)   # Σ KL / V
            return kl * self.T ** 2


# ---------------------------------------------------------------------------------------------
# Multi-view 2D gated CRF
# ---------------------------------------------------------------------------------------------
# The loss of one view is, with A the symmetric matrix of kernel weights K_ij between a voxel and
# the other voxels of its (2r+1)² in-slice window (zero elsewhere),
#     Σ_ij A_ij (1 − Σ_c p_i^c p_j^c) = Σ_ij A_ij − Σ_c p^c·A p^c,
# and its gradient w.r.t. p^c is −2·A p^c. So one pass over the window offsets that accumulates
# Q = A u gives the value and, saved, the gradient: no per-offset tensor is kept for backward.
# With 2 classes, u = p⁰ − p¹ (one channel) and the loss is ½(Σ A − u·A u).
# K_ij = K_ji, so only half of the offsets are visited (each updates both ends of the pair), and
# offsets along one axis belong to two views at once (computed once, credited to both).


_EXP_FLOOR = -80.0
"""exp() of arguments below about −87 (results that underflow) takes a slow path on CPU, ~10×
slower; clamping there changes a kernel weight by at most exp(−80) ≈ 2e-35."""


def _crf_offsets(radius: int) -> list[tuple[tuple[int, int, int], tuple[int, ...]]]:
    """Half of the in-plane window offsets of the three views, each with the views it belongs to.

    An offset (dx, dy, dz) is kept if its first non-zero component is positive; view 0 is the
    XY plane (dz = 0), view 1 the XZ plane (dy = 0), view 2 the YZ plane (dx = 0).
    """
    out = []
    rng = range(-radius, radius + 1)
    for dx in rng:
        for dy in rng:
            for dz in rng:
                offset = (dx, dy, dz)
                nonzero = [d for d in offset if d != 0]
                if len(nonzero) == 0 or len(nonzero) == 3 or nonzero[0] < 0:
                    continue
                views = tuple(v for v, axis in enumerate((2, 1, 0)) if offset[axis] == 0)
                out.append((offset, views))
    return out


def _pair_slices(offset: Sequence[int], shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Slices (over N, channel, X, Y, Z) of the voxels i and their neighbours j = i + offset."""
    first, second = [slice(None), slice(None)], [slice(None), slice(None)]
    for d, size in zip(offset, shape):
        if abs(d) >= size:
            return None
        if d >= 0:
            first.append(slice(0, size - d))
            second.append(slice(d, size))
        else:
            first.append(slice(-d, size))
            second.append(slice(0, size + d))
    return tuple(first), tuple(second)


CRF_IMPLEMENTATIONS = ("auto", "shifts", "rows")
"""``shifts``: a loop over half of the window offsets with slicing, the least work and memory (best
on CPU); ``rows``: a whole window row (2r+1 offsets) at a time on zero-copy ``Tensor.unfold`` views, ~5×
fewer kernel launches for ~2(2r+1)× the volume in flight (best on GPU, where ``shifts`` is
launch-bound);
``auto``: ``rows`` on CUDA, ``shifts`` elsewhere. Both give the same values and gradients."""


def _accumulate_shifts(u: Tensor, scaled: Tensor, radius: int, sigma_xy: float) -> tuple[list[Tensor], list[Tensor]]:
    """A_v·u and Σ A_v for the 3 views by visiting half of the offsets (K_ij = K_ji)."""
    spatial = u.shape[2:]
    acc = [torch.zeros_like(u) for _ in range(3)]
    ksum = [u.new_zeros((), dtype=torch.float64) for _ in range(3)]
    buffer = torch.empty(scaled.numel(), dtype=u.dtype, device=u.device)
    zero = u.new_zeros(())
    for offset, views in _crf_offsets(radius):
        slices = _pair_slices(offset, spatial)
        if slices is None:
            continue
        first, second = slices
        ia, ib = scaled[first], scaled[second]
        kernel = buffer[: ia.numel()].view(ia.shape)
        torch.sub(ia, ib, out=kernel)
        torch.addcmul(zero, kernel, kernel, value=-1.0, out=kernel)
        kernel.clamp_(min=_EXP_FLOOR).exp_()
        spatial_w = math.exp(-0.5 * sum(d * d for d in offset) / sigma_xy ** 2)
        pair_sum = (2.0 * spatial_w) * kernel.sum().double()
        ua, ub = u[first], u[second]
        for v in views:
            ksum[v] = ksum[v] + pair_sum
            acc[v][first].addcmul_(kernel, ub, value=spatial_w)
            acc[v][second].addcmul_(kernel, ua, value=spatial_w)
    return acc, ksum


def _accumulate_rows(u: Tensor, scaled: Tensor, radius: int, sigma_xy: float) -> tuple[list[Tensor], list[Tensor]]:
    """A_v·u and Σ A_v for the 3 views, one window row (2r+1 offsets) at a time.

    The slice is padded by r with +inf intensities (kernel exp(−∞) = 0: out-of-slice neighbours
    drop out exactly) and zero probabilities; the centre offset gets log-weight −∞.
    """
    k = 2 * radius + 1
    d = torch.arange(k, dtype=u.dtype, device=u.device) - radius
    log_g = -0.5 * (d[:, None] ** 2 + d[None, :] ** 2) / sigma_xy ** 2
    log_g[radius, radius] = -math.inf
    acc, ksum = [], []
    for plane in ((2, 3), (2, 4), (3, 4)):                      # views Z, Y, X
        pad = [0, 0, 0, 0, 0, 0]
        for axis in plane:
            pad[2 * (4 - axis)] = pad[2 * (4 - axis) + 1] = radius
        u_win = F.pad(u, pad).unfold(plane[0], k, 1).unfold(plane[1], k, 1)           # (N, M, X, Y, Z, k, k)
        i_win = F.pad(scaled, pad, value=math.inf).unfold(plane[0], k, 1).unfold(plane[1], k, 1)
        centre = scaled.unsqueeze(-1)
        q = torch.zeros_like(u)
        total = u.new_zeros((), dtype=torch.float64)
        for row in range(k):
            kernel = torch.sub(i_win[..., row, :], centre)                             # (N, 1, X, Y, Z, k)
            torch.addcmul(log_g[row], kernel, kernel, value=-1.0, out=kernel)
            kernel.exp_()
            total = total + kernel.sum().double()
            q.add_((kernel * u_win[..., row, :]).sum(-1))
        acc.append(q)
        ksum.append(total)
    return acc, ksum


class _GatedCRFQuadratic(torch.autograd.Function):
    """Per view v: Σ A_v (kernel sum, no gradient) and u·A_v u; saves only A_v u (grad 2·A_v u)."""

    @staticmethod
    def forward(ctx, u: Tensor, image: Tensor, radius: int, sigma_xy: float, sigma_rgb: float, rows: bool):
        scaled = image / (math.sqrt(2.0) * sigma_rgb)                   # exp(−(ΔI)²/(2σ²)) = exp(−Δ²)
        accumulate = _accumulate_rows if rows else _accumulate_shifts
        acc, ksum = accumulate(u, scaled, radius, sigma_xy)
        quad = torch.stack([(u.double() * a.double()).sum() for a in acc])
        ctx.save_for_backward(*acc)
        ksums = torch.stack(ksum)
        ctx.mark_non_differentiable(ksums)
        return ksums, quad

    @staticmethod
    def backward(ctx, grad_ksum: Tensor, grad_quad: Tensor):
        acc = ctx.saved_tensors
        grad_quad = grad_quad.to(acc[0].dtype)
        grad_u = 2.0 * (grad_quad[0] * acc[0] + grad_quad[1] * acc[1] + grad_quad[2] * acc[2])
        return grad_u, None, None, None, None, None


def gated_crf_views(probs: Tensor, image: Tensor, kernel_radius: int = KERNEL_RADIUS[0], sigma_xy: float = CRF_SIGMA_XY,
                    sigma_rgb: float = 0.1, weight: float = 1.0, implementation: str = "auto") -> Tensor:
    """The three per-view 2D gated CRF values of probabilities at their own resolution.

    View v's value is ``Σ_i Σ_{j∈window(i), j≠i, j in the slice} K_ij (1 − Σ_c p_i^c p_j^c) / (N·X·Y·Z)``
    with ``K_ij = weight·exp(−½(|pos_i − pos_j|²/σ_xy² + (I_i − I_j)²/σ_rgb²))``, positions in
    voxels, the window (2r+1)² in the slice plane; views in the order :data:`CRF_VIEWS`.

    Args:
        probs: (N, C, X, Y, Z) class probabilities (softmax output), differentiable.
        image: (N, 1, X, Y, Z) intensities (no gradient).
        implementation: one of :data:`CRF_IMPLEMENTATIONS` (same result, different speed).

    Returns:
        (3,) float32 tensor.
    """
    if probs.dim() != 5 or probs.shape[1] < 2:
        raise ValueError(f"probs must be (N, C>=2, X, Y, Z), got shape {tuple(probs.shape)}")
    if implementation not in CRF_IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {CRF_IMPLEMENTATIONS}, got {implementation!r}")
    if int(kernel_radius) != kernel_radius or kernel_radius < 1:
        raise ValueError(f"kernel_radius must be a positive integer, got {kernel_radius}")
    if not sigma_xy > 0 or not sigma_rgb > 0:
        raise ValueError(f"sigma_xy and sigma_rgb must be positive, got {sigma_xy}, {sigma_rgb}")
    if image.dim() != 5 or image.shape[1] != 1 or image.shape[0] != probs.shape[0] \
            or image.shape[2:] != probs.shape[2:]:
        raise ValueError(f"image must be (N, 1, X, Y, Z) matching probs {tuple(probs.shape)}, "
                         f"got {tuple(image.shape)}")
    with _no_autocast(probs.device):
        probs = probs.float()
        image = image.detach().float().contiguous()
        if probs.shape[1] == 2:
            u, half = (probs[:, :1] - probs[:, 1:]).contiguous(), 0.5
        else:
            u, half = probs.contiguous(), 1.0
        rows = implementation == "rows" or (implementation == "auto" and probs.device.type == "cuda")
        ksum, quad = _GatedCRFQuadratic.apply(u, image, int(kernel_radius), float(sigma_xy), float(sigma_rgb), rows)
        views = (weight * half / probs[:, 0].numel()) * (ksum - quad)
        return views.float()


class MultiViewGatedCRFLoss(nn.Module):
    """Multi-view 2D gated CRF loss (Obukhov et al. 2019, applied in 2D to the 3 views; PA-Seg stage 1).

    Logits and image are resized to ``down_size`` (trilinear, align_corners=True; skipped when
    already that size or ``down_size`` is None), softmaxed, and the 2D gated CRF of
    :func:`gated_crf_views` is computed on slices along Z, along Y and along X; the loss is the
    mean of the three views. Out-of-slice neighbours are excluded, so the value is lower than the
    published code's (which gives zero-padded neighbours a kernel weight) by a constant that has no
    gradient; the gradients are the same.

    Implemented without unfold: one pass over the window offsets accumulates A·u (A the kernel
    matrix), from which both the value and the gradient follow; backward keeps only A·u, so the
    extra memory is a few copies of the volume (``implementation``: see :data:`CRF_IMPLEMENTATIONS`).
    """

    def __init__(self, down_size: Sequence[int] | None = DOWN_SIZE, kernel_radius: int = KERNEL_RADIUS[0],
                 sigma_xy: float = CRF_SIGMA_XY, sigma_rgb: float = 0.1, weight: float = 1.0,
                 implementation: str = "auto") -> None:
        super().__init__()
        if implementation not in CRF_IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {CRF_IMPLEMENTATIONS}, got {implementation!r}")
        if down_size is not None:
            down_size = tuple(int(s) for s in down_size)
            if len(down_size) != 3 or min(down_size) < 1:
                raise ValueError(f"down_size must be 3 positive integers or None, got {down_size}")
        if int(kernel_radius) != kernel_radius or kernel_radius < 1:
            raise ValueError(f"kernel_radius must be a positive integer, got {kernel_radius}")
        if not sigma_xy > 0 or not sigma_rgb > 0:
            raise ValueError(f"sigma_xy and sigma_rgb must be positive, got {sigma_xy}, {sigma_rgb}")
        if not weight >= 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        self.down_size = down_size
        self.kernel_radius = int(kernel_radius)
        self.sigma_xy = float(sigma_xy)
        self.sigma_rgb = float(sigma_rgb)
        self.weight = float(weight)
        self.implementation = implementation

    def views(self, logits: Tensor, image: Tensor) -> Tensor:
        """Per-view values, (3,) in the order :data:`CRF_VIEWS`; same arguments as :meth:`forward`."""
        _check_logits(logits)
        if image.dim() != 5 or image.shape[1] != 1 or image.shape[0] != logits.shape[0] \
                or image.shape[2:] != logits.shape[2:]:
            raise ValueError(f"image must be (N, 1, X, Y, Z) matching logits {tuple(logits.shape)}, "
                             f"got {tuple(image.shape)}")
        with _no_autocast(logits.device):
            logits = logits.float()
            image = image.detach().float()
            if self.down_size is not None and tuple(logits.shape[2:]) != self.down_size:
                logits = F.interpolate(logits, size=self.down_size, mode="trilinear", align_corners=True)
                image = F.interpolate(image, size=self.down_size, mode="trilinear", align_corners=True)
            return gated_crf_views(logits.softmax(1), image, self.kernel_radius, self.sigma_xy,
                                   self.sigma_rgb, self.weight, self.implementation)

    def forward(self, logits: Tensor, image: Tensor, return_views: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Args:
            logits: (N, C, X, Y, Z) network output.
            image: (N, 1, X, Y, Z) intensities (no gradient flows into it).
            return_views: also return the (3,) per-view values.

        Returns:
            scalar loss (mean of the views), or ``(loss, views)``.
        """
        views = self.views(logits, image)
        loss = views.mean()
        return (loss, views) if return_views else loss
