"""The measurements of the collapse analysis, each returning a table: the mCRF energy against the
lesion size (:func:`crf_vs_size`), the loss terms' gradients on realistic cases
(:func:`gradient_balance`, :func:`crf_settings`), the ramp-up in steps (:func:`rampup_table`) and
logit saturation (:func:`saturation`). Computed with :mod:`utilities.method.losses` and
:mod:`utilities.method.schedules` on synthetic data; nothing here writes a file."""
from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage

from data.simulate_7points import simulate_points, subject_rng
from utilities.method.geodesic import expand_seeds
from utilities.method.losses import MultiViewGatedCRFLoss, PartialDiceCELoss, VarianceLoss
from utilities.method.schedules import sigmoid_rampup

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "data" / "demo"))
import make_demo_data  # a script of data/demo/, which is no package

__all__ = ["TABLES", "Case", "crf_vs_size", "realistic_cases", "gradient_balance", "crf_settings", "rampup_table",
           "saturation"]


SIGMA_XY, SIGMA_RGB, RADIUS = 6.0, 0.1, 5       # the paper's mCRF, in down-sampled voxels / z-units
WEIGHT_VM = 0.1                                 # the paper's VM weight
HARD = 20.0                                     # logit margin of a "hard" mask (p = 1 - 2e-9)
SOFT = 3.0                                      # logit margin of a correct soft prediction (p = 0.95)
RAMP_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
MARGINS = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def margin_logits(margin: torch.Tensor) -> torch.Tensor:
    """(X, Y, Z) logit margin m = z_fg − z_bg -> (1, 2, X, Y, Z) logits (−m/2, m/2)."""
    return torch.stack([-0.5 * margin, 0.5 * margin])[None]


def mask_margin(mask: np.ndarray, magnitude: float) -> torch.Tensor:
    """+magnitude inside ``mask``, −magnitude outside, float32 (X, Y, Z)."""
    return torch.from_numpy(np.where(mask, magnitude, -magnitude).astype(np.float32))


def value_and_grad(fn, margin: torch.Tensor) -> tuple[float, torch.Tensor]:
    """``fn(logits)`` and its gradient w.r.t. the margin (X, Y, Z)."""
    m = margin.clone().requires_grad_(True)
    value = fn(margin_logits(m))
    (grad,) = torch.autograd.grad(value, m)
    return float(value.detach()), grad


def to_xyz(array_zyx: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(array_zyx, (2, 1, 0)))


def z_normalise(image: np.ndarray) -> np.ndarray:
    """Whole-volume z-normalisation, as the loaders do (TorchIO ``ZNormalization``, unbiased std)."""
    image = image.astype(np.float64)
    return ((image - image.mean()) / image.std(ddof=1)).astype(np.float32)


def noise_sigma(image: np.ndarray, inside: np.ndarray) -> float:
    """Noise level from neighbour differences along the first axis (1.4826·MAD/√2), pairs inside ``inside``."""
    diff = np.diff(image.astype(np.float64), axis=0)[inside[1:] & inside[:-1]]
    return float(1.4826 * np.median(np.abs(diff - np.median(diff))) / math.sqrt(2.0))


# --------------------------------------------------------------------------------------------
# 1. mCRF energy against lesion size on the down-sampled grid
# --------------------------------------------------------------------------------------------
def crf_vs_size(radii: Sequence[float], contrasts: Sequence[float], noises: Sequence[float],
                seed: int = 0) -> pd.DataFrame:
    """mCRF energy of ball masks on a synthetic z-normalised image on the down-sampled grid.

    Image: 0 + Gaussian noise (σ = noise·σ_rgb) with a ball of radius R voxels at contrast
    ``contrast·σ_rgb``; grid a cube of side 2⌈R⌉ + 2r + 6. Energies are the CRF's pair sum
    ``loss · X·Y·Z`` (un-normalised, so independent of the grid size) of hard masks (margin
    ±20): the ball (true), its 6-connected dilation and erosion, and the empty mask. The
    "inward push" is the mean over the lesion voxels of ∂E/∂m at the soft correct prediction
    (m = ±3): positive means the CRF lowers the lesion's foreground logits (shrinks it).
    """
    crf = MultiViewGatedCRFLoss(down_size=None, kernel_radius=RADIUS, sigma_xy=SIGMA_XY, sigma_rgb=SIGMA_RGB)
    rows = []
    rng = np.random.default_rng(seed)
    for R in radii:
        side = 2 * int(math.ceil(R)) + 2 * RADIUS + 6
        centre = (side - 1) / 2.0
        grid = np.indices((side,) * 3).astype(np.float64) - centre
        true = np.sqrt((grid ** 2).sum(0)) <= R
        masks = {"dilated": ndimage.binary_dilation(true), "true": true,
                 "eroded": ndimage.binary_erosion(true), "empty": np.zeros_like(true)}
        white = rng.standard_normal(true.shape)
        for contrast in contrasts:
            for noise in noises:
                image = torch.from_numpy((SIGMA_RGB * (contrast * true + noise * white)).astype(np.float32))[None, None]
                n_vox = true.size

                def energy(logits: torch.Tensor, image: torch.Tensor = image, n_vox: int = n_vox) -> torch.Tensor:
                    return crf(logits, image) * n_vox

                row = {"radius": R, "lesion_voxels": int(true.sum()), "contrast": contrast, "noise": noise}
                for name, mask in masks.items():
                    row[f"E_{name}"] = value_and_grad(energy, mask_margin(mask, HARD))[0]
                # energy change per voxel removed by the erosion (< 0: shrinking lowers the energy)
                row["dE_per_eroded_voxel"] = (row["E_eroded"] - row["E_true"]) / int(true.sum() - masks["eroded"].sum())
                for name in ("true", "eroded", "empty"):   # ‖∂E/∂m‖ of the soft (margin 3) masks
                    row[f"gradnorm_{name}"] = float(value_and_grad(energy, mask_margin(masks[name], SOFT))[1].norm())
                _, grad = value_and_grad(energy, mask_margin(true, SOFT))
                row["inward_push"] = float(grad[torch.from_numpy(true)].mean())
                row["outward_push_ring"] = float(-grad[torch.from_numpy(masks["dilated"] & ~true)].mean())
                rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# 2. Realistic cases
# --------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One synthetic case in the loss modules' (X, Y, Z) order."""

    dataset: str
    name: str
    image: torch.Tensor     # (1, 1, X, Y, Z) z-normalised
    label: np.ndarray       # (X, Y, Z) bool
    seeds: torch.Tensor     # (1, 1, X, Y, Z) int64: 0, 1, 2 (unknown)
    down_size: tuple[int, int, int]


def realistic_cases(per_dataset: int = 4, seed: int = 0) -> list[Case]:
    """The first ``per_dataset`` cases of the VS-like demo data (64×64×32 at 0.5×0.5×1.5 mm,
    mCRF at 32×32×32 as in ``make demo``) and of ``brats_small`` (64×64×48 at 2.5×2.5×3 mm, mCRF
    at 32×32×48: the paper's 2× in-plane down-sampling), generated exactly as
    ``make_demo_data.py`` does for data seed ``seed``; stage-0 seeds with λ = 0.5, threshold 0.2."""
    cases = []
    for preset, down in (("vs", (32, 32, 32)), ("brats_small", (32, 32, 48))):
        kind = make_demo_data.PRESETS[preset]
        spacing_zyx = np.asarray(kind.spacing, dtype=np.float64)[::-1]
        for subject in make_demo_data.subject_names(per_dataset, prefix=kind.prefix):
            image, label = kind.make(subject_rng(seed, subject), kind.size, kind.spacing)
            points = simulate_points(label, spacing_zyx, max_instances=kind.max_instances,
                                     rng=subject_rng(seed, subject), name=subject)
            seeds, _ = expand_seeds(image, points, spacing_zyx, 0.5, 0.2, zero_at_min=kind.zero_at_min)
            cases.append(Case(preset, subject, torch.from_numpy(to_xyz(z_normalise(image)))[None, None],
                              to_xyz(label > 0), torch.from_numpy(to_xyz(seeds).astype(np.int64))[None, None], down))
    return cases


def case_contrast(case: Case) -> dict[str, float]:
    """Lesion contrast and noise on the mCRF's grid (trilinear down-sampling of the z-normalised
    image, as the loss does), in units of σ_rgb, and the lesion size there."""
    image = F.interpolate(case.image, size=case.down_size, mode="trilinear", align_corners=True)[0, 0].numpy()
    label = F.interpolate(torch.from_numpy(case.label.astype(np.float32))[None, None], size=case.down_size,
                          mode="trilinear", align_corners=True)[0, 0].numpy() > 0.5
    away = ndimage.distance_transform_edt(~label)
    shell = (away > 1) & (away <= 3)
    brain = image > image.min() + 1e-6
    return {"lesion_voxels_full": int(case.label.sum()), "lesion_voxels_down": int(label.sum()),
            "contrast_down": float((image[label].mean() - image[shell].mean()) / SIGMA_RGB),
            "noise_down": noise_sigma(image, brain) / SIGMA_RGB}


def gradient_balance(cases: Sequence[Case]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per case: seeds, contrast, loss values of true / seeds-only / eroded / empty predictions
    (soft, margin 3), and the gradient w.r.t. the logit margin of each term at the correct soft
    prediction; and per (case, ramp weight) the gradient norms of the weighted terms."""
    seg = PartialDiceCELoss(2)
    vm = VarianceLoss()
    rows, ramp_rows = [], []
    for case in cases:
        crf = MultiViewGatedCRFLoss(down_size=case.down_size, kernel_radius=RADIUS, sigma_xy=SIGMA_XY,
                                    sigma_rgb=SIGMA_RGB)
        # the loop variables are bound as defaults (the terms are evaluated within this iteration)
        terms = {"seg": lambda lg, case=case: seg(lg, case.seeds),
                 "crf": lambda lg, crf=crf, case=case: crf(lg, case.image),
                 "vm": lambda lg, case=case: WEIGHT_VM * vm(lg, case.image)}
        seeds = case.seeds[0, 0].numpy()
        lesion = torch.from_numpy(case.label)
        row = {"dataset": case.dataset, "case": case.name, **case_contrast(case),
               "fg_seeds": int((seeds == 1).sum()), "bg_seeds": int((seeds == 0).sum())}
        preds = {"true": case.label, "seeds_only": seeds == 1, "eroded": ndimage.binary_erosion(case.label),
                 "dilated": ndimage.binary_dilation(case.label), "empty": np.zeros_like(case.label)}
        for pname, mask in preds.items():
            for tname, fn in terms.items():
                row[f"{tname}_{pname}"] = value_and_grad(fn, mask_margin(mask, SOFT))[0]
            # the CRF's pair sum of the hard mask on its grid (loss · X·Y·Z of the down-sampled grid)
            row[f"E_hard_{pname}"] = (value_and_grad(terms["crf"], mask_margin(mask, HARD))[0]
                                      * math.prod(case.down_size))
        grads = {t: value_and_grad(fn, mask_margin(case.label, SOFT))[1] for t, fn in terms.items()}
        for t, g in grads.items():
            row[f"gradnorm_{t}"] = float(g.norm())
            # mean over the lesion of −∂L/∂m: > 0 pulls the lesion towards foreground
            row[f"lesion_pull_{t}"] = float(-g[lesion].sum())
        rows.append(row)
        for w in RAMP_WEIGHTS:
            reg = w * (grads["crf"] + grads["vm"])
            ramp_rows.append({"dataset": case.dataset, "case": case.name, "ramp": w,
                              "seg": float(grads["seg"].norm()), "crf": w * float(grads["crf"].norm()),
                              "vm": w * float(grads["vm"].norm()),
                              "lesion_pull_total": float(-(grads["seg"] + reg)[lesion].sum())})
    return pd.DataFrame(rows), pd.DataFrame(ramp_rows)


def crf_settings(cases: Sequence[Case]) -> pd.DataFrame:
    """The mCRF's pull on the lesion at the correct soft prediction (margin 3) and the hard-mask
    stability E(eroded)/E(true) for other down-sampling sizes, σ_xy and radii: the paper's
    (in-plane halved, σ_xy 6, r 5), full resolution, and smaller kernels. The seed-loss and VM
    pulls do not depend on these settings; ``net_pull_w1`` is seg + CRF + VM at ramp weight 1."""
    seg, vm = PartialDiceCELoss(2), VarianceLoss()
    rows = []
    for case in cases:
        full = tuple(int(s) for s in case.image.shape[2:])
        lesion = torch.from_numpy(case.label)
        soft = mask_margin(case.label, SOFT)
        pull_seg = float(-value_and_grad(lambda lg, case=case: seg(lg, case.seeds), soft)[1][lesion].sum())
        pull_vm = float(-value_and_grad(lambda lg, case=case: WEIGHT_VM * vm(lg, case.image), soft)[1][lesion].sum())
        for grid, sigma, radius in (("half", 6.0, 5), ("full", 6.0, 5), ("half", 3.0, 3), ("full", 3.0, 3),
                                    ("half", 2.0, 2)):
            down = (full[0] // 2, full[1] // 2, full[2]) if grid == "half" else full
            crf = MultiViewGatedCRFLoss(down_size=down, kernel_radius=radius, sigma_xy=sigma, sigma_rgb=SIGMA_RGB)

            def fn(lg: torch.Tensor, crf: MultiViewGatedCRFLoss = crf, case: Case = case) -> torch.Tensor:
                return crf(lg, case.image)

            pull_crf = float(-value_and_grad(fn, soft)[1][lesion].sum())
            e_true = value_and_grad(fn, mask_margin(case.label, HARD))[0]
            e_eroded = value_and_grad(fn, mask_margin(ndimage.binary_erosion(case.label), HARD))[0]
            rows.append({"dataset": case.dataset, "case": case.name, "down_size": "x".join(map(str, down)),
                         "sigma_xy": sigma, "radius": radius, "pull_seg": pull_seg, "pull_crf": pull_crf,
                         "pull_vm": pull_vm, "net_pull_w1": pull_seg + pull_crf + pull_vm,
                         "eroded_over_true": e_eroded / e_true if e_true > 0 else float("nan")})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# 3. Ramp-up in epochs vs steps
# --------------------------------------------------------------------------------------------
#: (setting, training cases = steps per epoch at batch 1, epochs, ramp-up epochs)
RAMP_SETTINGS = (
    ("paper VS (176 cases, 300 epochs, ramp 30)", 176, 300, 30),
    ("make demo (16 cases, 20 epochs, ramp 6)", 16, 20, 6),
    ("BraTS-like benchmark (24 cases, 40 epochs, ramp 4)", 24, 40, 4),
    ("brats_small (16 cases, 40 epochs, ramp 4)", 16, 40, 4),
)


def rampup_table() -> pd.DataFrame:
    """Steps until the (per-epoch) ramp weight first reaches 0.1 / 0.5 / 0.9 / 1, and the weight
    in epochs 1-3. The trainers evaluate ``sigmoid_rampup(epoch, rampup_epochs)`` once per
    epoch (epoch = 0, 1, ...), so the weight is constant within an epoch."""
    rows = []
    for name, steps, epochs, ramp in RAMP_SETTINGS:
        weights = [sigmoid_rampup(e, ramp) for e in range(epochs)]

        def first(level: float, weights: list[float] = weights, steps: int = steps) -> int:
            return next(e for e, w in enumerate(weights) if w >= level - 1e-12) * steps

        rows.append({"setting": name, "steps_per_epoch": steps, "total_steps": steps * epochs,
                     "ramp_steps": steps * ramp, "steps_to_0.1": first(0.1), "steps_to_0.5": first(0.5),
                     "steps_to_0.9": first(0.9), "steps_to_1": first(1.0), "w_epoch1": weights[0],
                     "w_epoch2": weights[1], "w_epoch3": weights[2]})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# 4. Logit saturation
# --------------------------------------------------------------------------------------------
def saturation(case: Case, margins: Sequence[float] = MARGINS) -> pd.DataFrame:
    """Gradient norms w.r.t. the logit margin of the partial Dice, partial CE, mCRF and VM terms,
    for the correct prediction (±m from the label) and for the collapsed one (−m everywhere), and
    the pull of the seed loss on the foreground seeds in the collapsed state."""
    seg = PartialDiceCELoss(2)
    vm = VarianceLoss()
    crf = MultiViewGatedCRFLoss(down_size=case.down_size, kernel_radius=RADIUS, sigma_xy=SIGMA_XY, sigma_rgb=SIGMA_RGB)
    target = case.seeds[:, 0]

    def ce(lg: torch.Tensor) -> torch.Tensor:        # the CE part of PartialDiceCELoss (one item)
        return F.cross_entropy(lg, target, ignore_index=2)

    fg = torch.from_numpy(case.seeds[0, 0].numpy() == 1)
    lesion = torch.from_numpy(case.label)
    rows = []
    for state in ("correct", "collapsed"):
        for m in margins:
            margin = mask_margin(case.label, m) if state == "correct" else torch.full(case.label.shape, -float(m))
            v_seg, g_seg = value_and_grad(lambda lg: seg(lg, case.seeds), margin)
            v_ce, g_ce = value_and_grad(ce, margin)
            v_crf, g_crf = value_and_grad(lambda lg: crf(lg, case.image), margin)
            _, g_vm = value_and_grad(lambda lg: WEIGHT_VM * vm(lg, case.image), margin)
            g_dice = g_seg - g_ce
            rows.append({"state": state, "margin": m, "loss_seg": v_seg, "loss_crf": v_crf,
                         "dice": float(g_dice.norm()), "ce": float(g_ce.norm()), "crf": float(g_crf.norm()),
                         "vm": float(g_vm.norm()), "fg_seed_pull_dice": float(-g_dice[fg].sum()),
                         "fg_seed_pull_ce": float(-g_ce[fg].sum()), "lesion_pull_seg": float(-g_seg[lesion].sum()),
                         "lesion_pull_crf": float(-g_crf[lesion].sum()), "lesion_pull_vm": float(-g_vm[lesion].sum())})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Plots and report
# --------------------------------------------------------------------------------------------


#: The measurements' tables (one CSV each), in the order :func:`experiments.collapse_analysis.run` makes them.
TABLES = ("crf_vs_size", "balance", "ramp_gradients", "crf_settings", "rampup", "saturation")
