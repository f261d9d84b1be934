"""``nnUNetTrainerPASeg``: nnU-Net v2's trainer with PA-Seg's mCRF and VM losses added.

Per training step::

    loss = nnU-Net's Dice+CE over its deep-supervision outputs (the ignore label: unannotated voxels do not count)
           + ramp(t) · (weight_crf · mCRF(p, I) + weight_vm · VM(p, I))

with ``p`` the softmax of the full-resolution output (deep supervision's first), ``I`` one channel
of the input patch as the network sees it (nnU-Net's normalisation and augmentation) and both
regularisers on all voxels of the patch, as in PA-Seg stage 1. The losses are the project's own
(``utilities.method.losses.MultiViewGatedCRFLoss`` at the patch's resolution, or with
``PASEG_NNUNET_CRF_DOWNSAMPLE`` on the patch downsampled in plane as stage 1's ``--down_size``,
and ``VarianceLoss``) and the
ramp is stage 1's (``utilities.method.schedules.sigmoid_rampup``, after an optional warm-up, per epoch or
per step; with ``PASEG_NNUNET_RAMPUP_START=foreground`` it also waits for the first epoch whose
validation pseudo Dice is above 0, read from nnU-Net's own log, so a resumed run keeps it). The
settings come from ``PASEG_NNUNET_*`` (``paseg_nnunet_settings.py``: stage 1's flags and defaults),
the budget from ``nnUNetTrainerBudget``, everything else is ``nnUNetTrainer``'s: plans, sampling,
augmentation, network, optimiser, validation and ``nnUNetv2_predict``.

Multi-GPU (``nnUNetv2_train ... -num_gpus N``): each rank computes the mCRF and VM on its part
of the batch, in float32 with autocast off (the losses turn it off themselves), on the rank's
device; DDP averages the gradients, so no further all-reduce is needed (both are means over
the rank's patches). The validation loss nnU-Net logs stays its Dice+CE.

nnU-Net finds the class by name through ``make install`` (``install_paseg_trainers.py`` writes a
small module into ``nnunetv2/training/nnUNetTrainer/``) or through ``nnUNet_extTrainer`` set to this
folder. The module imports ``utilities`` from PA-Seg, which ``make install`` installs (editable).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from nnUNetTrainerBudget import nnUNetTrainerBudget
from nnunetv2.utilities.helpers import dummy_context
from paseg_nnunet_settings import RegulariserSettings
from torch import Tensor, autocast, nn
from torch import distributed as dist

from utilities.method.losses import CRF_VIEWS, MultiViewGatedCRFLoss, VarianceLoss

__all__ = ["PASegRegularisers", "nnUNetTrainerPASeg"]

#: The per-step values the trainer returns and logs as epoch means.
LOGGED = ("loss", "loss_seg", "loss_crf", "loss_vm")


class PASegRegularisers(nn.Module):
    """PA-Seg stage 1's mCRF and VM on one network output and its input (unweighted)."""

    def __init__(self, settings: RegulariserSettings, spacing: Sequence[float] | None = None) -> None:
        """``spacing``: the voxel spacing of the outputs, in their axis order (nnU-Net's
        configuration's), which tells :meth:`RegulariserSettings.crf_grid` the axis it keeps."""
        super().__init__()
        self.settings = settings
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.crfs: dict[tuple[int, ...] | None, MultiViewGatedCRFLoss] = {}   # one per mCRF grid (None: as is)
        self.vm = VarianceLoss()

    def crf(self, shape: Sequence[int]) -> MultiViewGatedCRFLoss:
        """The mCRF of an output of spatial ``shape``, (X, Y, Z) or a 2D configuration's (X, Y),
        on its grid (:meth:`RegulariserSettings.crf_grid`; a 2D grid as (X', Y', 1))."""
        grid = self.settings.crf_grid(shape, self.spacing)
        key = None if grid == tuple(shape) else (*grid, 1)[:3]
        if key not in self.crfs:
            self.crfs[key] = MultiViewGatedCRFLoss(down_size=key, kernel_radius=self.settings.kernel_radius,
                                                   sigma_xy=self.settings.sigma_xy, sigma_rgb=self.settings.sigma_rgb)
        return self.crfs[key]

    def forward(self, logits: Tensor, data: Tensor, crf: bool = True, vm: bool = True) -> tuple[Tensor, Tensor]:
        """Args:
            logits: (N, C, X, Y, Z) output, or (N, C, X, Y) of a 2D configuration (then the mCRF is
                the 2D gated CRF of the slice: the view of the XY planes). The mCRF runs on the
                grid of ``settings.crf_grid`` (trilinear, as stage 1's ``--down_size``), the VM on
                the output as it is.
            data: (N, channels, *spatial) the network's input; channel ``settings.image_channel`` is read.
            crf, vm: compute the term (a term not computed is 0).

        Returns:
            (mCRF, VM), float32 scalars.
        """
        channel = self.settings.image_channel
        if data.dim() != logits.dim() or data.shape[0] != logits.shape[0] or data.shape[2:] != logits.shape[2:]:
            raise ValueError(f"input {tuple(data.shape)} does not match the output {tuple(logits.shape)}")
        if data.shape[1] <= channel:
            raise ValueError(f"PASEG_NNUNET_CRF_CHANNEL={channel}, but the input has {data.shape[1]} channel(s)")
        image = data[:, channel:channel + 1]
        crf_loss = self.crf(tuple(logits.shape[2:]))
        planar = logits.dim() == 4
        if planar:
            logits, image = logits.unsqueeze(-1), image.unsqueeze(-1)
        zero = logits.new_zeros((), dtype=torch.float32)
        loss_crf = loss_vm = zero
        if crf:
            loss_crf = crf_loss.views(logits, image)[CRF_VIEWS.index("Z")] if planar else crf_loss(logits, image)
        if vm:
            loss_vm = self.vm(logits, image)
        return loss_crf, loss_vm


class nnUNetTrainerPASeg(nnUNetTrainerBudget):  # (nnU-Net names its trainer classes this way)
    """``nnUNetTrainerBudget`` whose training loss adds PA-Seg's mCRF and VM (see the module)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.label_manager.has_regions:
            raise ValueError("nnUNetTrainerPASeg: region-based training (sigmoid outputs) is not supported; the "
                             "mCRF and VM need softmax classes")
        self.paseg = RegulariserSettings.from_environment()
        self.regularisers = PASegRegularisers(self.paseg, self.configuration_manager.spacing)
        self.paseg_step = 0   # the step within the epoch (the ramp-up per step)
        self.paseg_start: int | None = 0   # the epoch before which the ramp-up may not begin (None: not yet known)

    def initialize(self) -> None:
        super().initialize()
        shown = ", ".join(f"{k} {v}" for k, v in self.paseg.as_dict().items())
        self.print_to_log_file(f"PA-Seg regularisers (mCRF on the grid below, VM on the full-resolution output): "
                               f"{shown}")
        patch, grid = self.paseg_grid()
        self.print_to_log_file(f"PA-Seg mCRF grid: {'x'.join(map(str, grid))} for the patch {'x'.join(map(str, patch))}"
                               + (" (the patch's resolution)" if grid == patch else
                                  f" (in plane /{self.paseg.crf_downsample}; kernel radius and width in its voxels)"))
        warning = self.paseg.warning(self.num_epochs)
        if warning:
            self.print_to_log_file(f"warning: {warning}")

    def paseg_grid(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """nnU-Net's patch and the mCRF's grid of it; a ``ValueError`` for a grid whose views
        include one of a single pixel (its loss is 0)."""
        patch = tuple(int(p) for p in self.configuration_manager.patch_size)
        grid = self.paseg.crf_grid(patch, self.configuration_manager.spacing)
        if self.paseg.weight_crf > 0 and len(grid) == 3 and sum(g == 1 for g in grid) >= 2:
            raise ValueError(f"PASEG_NNUNET_CRF_DOWNSAMPLE={self.paseg.crf_downsample} makes the mCRF grid "
                             f"{'x'.join(map(str, grid))} of the patch {'x'.join(map(str, patch))}: a view of a "
                             "single pixel, whose loss is 0; use a smaller factor")
        return patch, grid

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.paseg_step = 0
        start = self.paseg.ramp_start(self.logger.get_value("mean_fg_dice", step=None)[:self.current_epoch])
        if self.paseg.rampup_start == "foreground" and start is not None and start != self.paseg_start:
            self.print_to_log_file(f"PA-Seg ramp-up: epoch {start - 1} is the first whose pseudo Dice is above 0; "
                                   f"the ramp-up begins at epoch {max(start, self.paseg.warmup_epochs)}")
        self.paseg_start = start

    def paseg_terms(self, output: Tensor, data: Tensor, ramp: float) -> tuple[Tensor, Tensor, Tensor]:
        """``ramp·(weight_crf·mCRF + weight_vm·VM)`` of the full-resolution ``output`` and the input
        ``data``, and the unweighted mCRF and VM (a term whose weight is 0 now is not computed)."""
        w_crf, w_vm = ramp * self.paseg.weight_crf, ramp * self.paseg.weight_vm
        loss_crf, loss_vm = self.regularisers(output, data, crf=w_crf > 0, vm=w_vm > 0)
        return w_crf * loss_crf + w_vm * loss_vm, loss_crf, loss_vm

    def train_step(self, batch: dict) -> dict:
        """``nnUNetTrainer.train_step`` with the regularisers added to its loss."""
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        if isinstance(target, list):
            target = [t.to(self.device, non_blocking=True) for t in target]
        else:
            target = target.to(self.device, non_blocking=True)
        ramp = self.paseg.ramp(self.current_epoch, self.paseg_step, self.num_iterations_per_epoch, self.paseg_start)
        self.paseg_step += 1
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            output = self.network(data)
            loss_seg = self.loss(output, target)
        full = output[0] if self.enable_deep_supervision else output
        extra, loss_crf, loss_vm = self.paseg_terms(full, data, ramp)
        loss = loss_seg + extra
        self._backward_and_step(loss)
        values = torch.stack([t.detach().float() for t in (loss, loss_seg, loss_crf, loss_vm)]).cpu().numpy()
        return {**{name: values[i] for i, name in enumerate(LOGGED)}, "ramp": float(ramp)}

    def _backward_and_step(self, loss: Tensor) -> None:
        """nnU-Net's update: gradient scaling on CUDA, gradient norm clipped at 12."""
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        """nnU-Net's epoch log (``train_losses``: the whole loss), and the terms' means in the log file."""
        super().on_train_epoch_end(train_outputs)
        means = {k: float(np.mean([o[k] for o in train_outputs])) for k in (*LOGGED[1:], "ramp")}
        if self.is_ddp:
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, means)
            means = {k: float(np.mean([g[k] for g in gathered])) for k in means}
        self.print_to_log_file("PA-Seg terms (epoch means): " + ", ".join(f"{k} {v:.4f}" for k, v in means.items()))
