"""The settings of ``nnUNetTrainerPASeg``: PA-Seg's regularisers and their ramp-up, from the environment.

nnU-Net builds a trainer from its plans, configuration, fold, dataset and device only, so the
settings come from ``PASEG_NNUNET_*`` variables, as ``nnUNetTrainerBudget`` reads its budget.
Each variable is the stage-1 flag of the same meaning (``train_gatedcrfloss3d22d_multiview_varianceloss.py``)
with stage 1's default; epochs are nnU-Net's epochs (``num_iterations_per_epoch`` steps each).
``experiments/nnunet_baseline.py`` offers the same flags and sets the variables from them.

This module imports neither nnU-Net nor torch (the driver builds its flags from
:data:`REGULARISER_VARIABLES`); nnU-Net imports it by name from this folder.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from utilities.method.schedules import rampup_warning, sigmoid_rampup

__all__ = ["Variable", "REGULARISER_VARIABLES", "RegulariserSettings", "first_foreground_epoch"]


@dataclass(frozen=True)
class Variable:
    """One setting: its environment variable, the stage-1 flag it mirrors, the settings field,
    stage 1's default, its type and the smallest value (``open_low``: the value must exceed it)."""

    env: str
    flag: str
    field: str
    default: float | int | str
    kind: type
    low: float | None = None
    open_low: bool = False
    choices: tuple[str, ...] = ()
    help: str = ""

    def parse(self, text: str, name: str | None = None) -> float | int | str:
        """The value of ``text``; a ``ValueError`` naming ``name`` (default: the variable) for a
        value it does not take."""
        where = f"{self.env}={text!r}" if name is None else f"{name} {text}"
        if self.choices:
            if text not in self.choices:
                raise ValueError(f"{where}: expected one of {', '.join(self.choices)}")
            return text
        try:
            value = self.kind(text)
        except ValueError:
            raise ValueError(f"{where}: expected {'an integer' if self.kind is int else 'a number'}") from None
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            raise ValueError(f"{where}: expected a value {'>' if self.open_low else '>='} {self.low:g}")
        return value


#: The settings, in the order the log and ``budget.json`` show them.
REGULARISER_VARIABLES: tuple[Variable, ...] = (
    Variable("PASEG_NNUNET_WEIGHT_CRF", "--weight_gatedcrf", "weight_crf", 1.0, float, 0.0,
             help="weight of the mCRF loss"),
    Variable("PASEG_NNUNET_WEIGHT_VM", "--weight_variance", "weight_vm", 0.1, float, 0.0,
             help="weight of the VM loss"),
    Variable("PASEG_NNUNET_RAMPUP_EPOCHS", "--rampup_epochs", "rampup_epochs", 30, int, 0,
             help="sigmoid ramp-up length of the mCRF and VM weights, in nnU-Net epochs (0: no ramp-up)"),
    Variable("PASEG_NNUNET_WARMUP_EPOCHS", "--warmup_epochs", "warmup_epochs", 0, int, 0,
             help="nnU-Net epochs of Dice+CE alone (mCRF and VM weights 0) before the ramp-up starts"),
    Variable("PASEG_NNUNET_RAMPUP_UNIT", "--rampup_unit", "rampup_unit", "epoch", str, choices=("epoch", "step"),
             help="advance the ramp-up once per epoch (the paper) or at every step (in fractional epochs)"),
    Variable("PASEG_NNUNET_RAMPUP_START", "--rampup_start", "rampup_start", "warmup", str,
             choices=("warmup", "foreground"),
             help="start the ramp-up after the warm-up (stage 1), or after the warm-up and the first epoch whose "
                  "validation pseudo Dice (nnU-Net's, on the annotated voxels) is above 0: nnU-Net's Dice+CE "
                  "starts empty, and the mCRF and VM do not pay for an empty prediction"),
    Variable("PASEG_NNUNET_CRF_DOWNSAMPLE", "--crf_downsample", "crf_downsample", 1, int, 1,
             help="compute the mCRF on the output and input downsampled by this factor in plane (trilinear, as "
                  "stage 1's --down_size), every axis but the one of coarsest spacing; 1: the patch's "
                  "resolution. 2 gives the grid of stage 1's in-plane halving (128x128x48 -> 64x64x48), "
                  "where its --kernel_radius and --crf_sigma_xy mean what they mean in stage 1"),
    Variable("PASEG_NNUNET_KERNEL_RADIUS", "--kernel_radius", "kernel_radius", 5, int, 1,
             help="mCRF window radius, in voxels of the mCRF grid (the patch, downsampled by --crf_downsample; "
                  "stage 1: the first value of its flag)"),
    Variable("PASEG_NNUNET_CRF_SIGMA_XY", "--crf_sigma_xy", "sigma_xy", 6.0, float, 0.0, open_low=True,
             help="mCRF spatial kernel width, in voxels of the mCRF grid"),
    Variable("PASEG_NNUNET_CRF_SIGMA_RGB", "--crf_sigma_rgb", "sigma_rgb", 0.1, float, 0.0, open_low=True,
             help="mCRF intensity kernel width, in units of nnU-Net's normalised image"),
    Variable("PASEG_NNUNET_CRF_CHANNEL", "--crf_channel", "image_channel", 0, int, 0,
             help="input channel the mCRF and VM read the intensities from (PA-Seg: its single channel)"),
)


@dataclass(frozen=True)
class RegulariserSettings:
    """PA-Seg stage 1's regulariser settings, as :data:`REGULARISER_VARIABLES` names them.

    The mCRF runs at the resolution of nnU-Net's patch (stage 1 resizes to ``--down_size``;
    nnU-Net's patch already has the plan's spacing, and the plan keeps full resolution for
    small lesions), or, with ``crf_downsample`` > 1, on that patch downsampled in plane
    (:meth:`crf_grid`)."""

    weight_crf: float = 1.0
    weight_vm: float = 0.1
    rampup_epochs: int = 30
    warmup_epochs: int = 0
    rampup_unit: str = "epoch"
    rampup_start: str = "warmup"
    crf_downsample: int = 1
    kernel_radius: int = 5
    sigma_xy: float = 6.0
    sigma_rgb: float = 0.1
    image_channel: int = 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> RegulariserSettings:
        """The settings from ``PASEG_NNUNET_*`` (unset or empty: stage 1's default)."""
        environ = os.environ if environ is None else environ
        values = {}
        for var in REGULARISER_VARIABLES:
            text = environ.get(var.env, "").strip()
            values[var.field] = var.parse(text) if text else var.default
        return cls(**values)

    def environment(self) -> dict[str, str]:
        """The ``PASEG_NNUNET_*`` variables that give these settings (the inverse of :meth:`from_environment`)."""
        return {var.env: str(getattr(self, var.field)) for var in REGULARISER_VARIABLES}

    def as_dict(self) -> dict[str, float | int | str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def crf_grid(self, shape: Sequence[int], spacing: Sequence[float] | None = None) -> tuple[int, ...]:
        """The grid the mCRF runs on for an output of spatial ``shape`` whose voxels have ``spacing``
        (the configuration's, in the same axis order): each axis divided by ``crf_downsample``
        (rounded down, at least 1), except, for a 3D shape, the axis of the coarsest spacing (the first
        of them on a tie; without ``spacing``, the first axis), which nnU-Net's plans put first and
        stage 1 does not downsample either (its slice axis). A 2D shape is one slice: both axes."""
        shape = tuple(int(s) for s in shape)
        keep = None
        if len(shape) == 3:
            keep = 0 if spacing is None else max(range(3), key=lambda a: (float(spacing[a]), -a))
        return tuple(s if a == keep else max(1, s // self.crf_downsample) for a, s in enumerate(shape))

    def ramp(self, epoch: int, step: int = 0, steps_per_epoch: int = 1, start: int | None = 0) -> float:
        """The factor of the mCRF and VM weights at ``step`` (0-based) of ``epoch`` (0-based), as
        stage 1's ``ramp_weight``: 0 during the warm-up, then :func:`utilities.method.schedules.sigmoid_rampup`
        over ``rampup_epochs``, advanced per epoch or, with ``rampup_unit="step"``, per step.

        ``start``: the epoch before which the ramp-up may not begin (``rampup_start="foreground"``:
        the one after :func:`first_foreground_epoch`); ``None``: not yet known, the factor is 0.
        The ramp-up begins at the later of ``start`` and the warm-up's end."""
        if start is None:
            return 0.0
        t = float(epoch)
        if self.rampup_unit == "step" and steps_per_epoch:
            t = (epoch * steps_per_epoch + step) / steps_per_epoch
        begin = max(self.warmup_epochs, start)
        if t < begin:
            return 0.0
        return sigmoid_rampup(t - begin, self.rampup_epochs)

    def ramp_start(self, pseudo_dice: Sequence[float]) -> int | None:
        """The ``start`` of :meth:`ramp` given the validation pseudo Dice of the epochs so far:
        0 with ``rampup_start="warmup"``; with ``"foreground"``, the epoch after the first whose
        pseudo Dice is above 0, ``None`` while there is none."""
        if self.rampup_start == "warmup":
            return 0
        first = first_foreground_epoch(pseudo_dice)
        return None if first is None else first + 1

    def warning(self, num_epochs: int) -> str | None:
        """Stage 1's warning for a ramp-up that does not end within ``num_epochs``, or ``None``."""
        if self.weight_crf == 0 and self.weight_vm == 0:
            return None
        text = rampup_warning(self.rampup_epochs, num_epochs, self.warmup_epochs)
        return None if text is None else f"{text} (here: PASEG_NNUNET_RAMPUP_EPOCHS and PASEG_NNUNET_EPOCHS)"


def first_foreground_epoch(pseudo_dice: Sequence[float]) -> int | None:
    """The first epoch (0-based index) whose validation pseudo Dice is above 0 (a NaN, as nnU-Net
    logs for an epoch without foreground in its validation batches, is not), or ``None``."""
    for epoch, value in enumerate(pseudo_dice):
        if value > 0:   # NaN > 0 is False
            return epoch
    return None
