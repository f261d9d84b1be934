"""nnU-Net v2's own trainer with the training budget of a comparison.

Everything is ``nnUNetTrainer``'s (its plans, augmentation, deep supervision, Dice + CE loss with
the ignore label, poly learning rate, SGD with Nesterov momentum) except the budget, read from
the environment when the trainer is built:

* ``PASEG_NNUNET_EPOCHS`` epochs (nnU-Net: 1000),
* ``PASEG_NNUNET_ITERATIONS`` training iterations per epoch (nnU-Net: 250),
* ``PASEG_NNUNET_VAL_ITERATIONS`` validation iterations per epoch (nnU-Net: 50),

so that nnU-Net gets the same number of optimisation steps as the PA-Seg run it is compared with.
A checkpoint is written every epoch (nnU-Net: every 50), so a killed short run resumes where it
stopped. ``experiments/nnunet_baseline.py`` sets these variables per run; by hand (after
``make install``, which lets nnU-Net find the class by name: ``install_paseg_trainers.py``)::

    PASEG_NNUNET_EPOCHS=12 PASEG_NNUNET_ITERATIONS=48 nnUNetv2_train 501 3d_fullres 0 -tr nnUNetTrainerBudget

This module imports nothing from PA-Seg: nnU-Net can also load it from this folder through
``nnUNet_extTrainer`` (which nnU-Net searches only after its own sub-packages, some of which need timm).
"""
from __future__ import annotations

import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

__all__ = ["BUDGET_VARIABLES", "nnUNetTrainerBudget"]

#: environment variable -> (trainer attribute, nnU-Net's default, smallest allowed)
BUDGET_VARIABLES = {
    "PASEG_NNUNET_EPOCHS": ("num_epochs", 1000, 1),
    "PASEG_NNUNET_ITERATIONS": ("num_iterations_per_epoch", 250, 1),
    "PASEG_NNUNET_VAL_ITERATIONS": ("num_val_iterations_per_epoch", 50, 1),
}


def _budget_value(name: str, default: int, smallest: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected an integer >= {smallest}") from None
    if value < smallest:
        raise ValueError(f"{name}={value}: expected an integer >= {smallest}")
    return value


class nnUNetTrainerBudget(nnUNetTrainer):  # (nnU-Net names its trainer classes this way)
    """``nnUNetTrainer`` whose epochs and iterations come from ``PASEG_NNUNET_*`` (see the module)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        for name, (attribute, default, smallest) in BUDGET_VARIABLES.items():
            setattr(self, attribute, _budget_value(name, default, smallest))
        self.save_every = 1
