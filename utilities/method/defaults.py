"""The names and defaults the scripts of the sequence share, each defined once.

The sequence is stage 0 (the geodesic expansion of the 7 points into *expanded seeds*), stage 1
(a network trained on the expanded seeds with the mCRF and VM losses), SCM (two stage-1 networks
teaching each other), inference and scores. Every script's ``argparse`` default, the plan
(:mod:`utilities.workflow.plan`), the command lines (:mod:`utilities.method.sequence`), the demo
and the experiments read these names; ``tests/utilities/method/test_defaults.py`` finds copies.

Vocabulary: the labels stage 0 writes are the *expanded seeds* (1 foreground, 0 background,
2 unknown). At the edge they keep the paper's spelling: the flags ``--path_geodesic_labels`` and
``--geodesic_label_postfix``, the folder ``geodesic_label`` and the file postfix
:data:`SEED_POSTFIX` (``<subject>_GeodesicLabel.nii.gz``).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["STAGE0_SCRIPT", "STAGE1_SCRIPT", "SCM_SCRIPT", "INFERENCE_SCRIPT", "SCORES_SCRIPT", "SCRIPTS",
           "IMAGE_POSTFIX", "LABEL_POSTFIX", "ANNOTATION_POSTFIX", "SEED_POSTFIX", "SEED_FOLDER",
           "GEODESIC_WEIGHT", "GEODESIC_THRESHOLD", "PRIMARY_NETWORK", "AUXILIARY_NETWORK", "SPATIAL_SHAPE",
           "DOWN_SIZE", "KERNEL_RADIUS", "CRF_SIGMA_XY", "LEARNING_RATE", "WEIGHT_GATEDCRF", "WEIGHT_VARIANCE",
           "WEIGHT_KD", "KD_TEMPERATURE", "SW_OVERLAP", "Recipe", "RECIPE"]

# ------------------------------------------------------------------ the scripts, from the repository root
STAGE0_SCRIPT = "data/generate_geodesic_labels.py"
STAGE1_SCRIPT = "train_gatedcrfloss3d22d_multiview_varianceloss.py"
SCM_SCRIPT = "train_SCM.py"
INFERENCE_SCRIPT = "inference.py"
SCORES_SCRIPT = "utilities/scores.py"
#: Each step of the sequence and its script, in the order they run.
SCRIPTS = {"stage0": STAGE0_SCRIPT, "stage1": STAGE1_SCRIPT, "scm": SCM_SCRIPT, "inference": INFERENCE_SCRIPT,
           "scores": SCORES_SCRIPT}

# ------------------------------------------------------------------ file names (<subject>_<postfix>.<ext>)
IMAGE_POSTFIX = "T2"
LABEL_POSTFIX = "Label"
ANNOTATION_POSTFIX = "7points"
#: The postfix of the expanded seeds stage 0 writes (``--geodesic_label_postfix``).
SEED_POSTFIX = "GeodesicLabel"
#: The folder of the expanded seeds in stage 0's output folder.
SEED_FOLDER = "geodesic_label"

# ------------------------------------------------------------------ stage 0: the paper's λ and threshold
GEODESIC_WEIGHT = 0.5
GEODESIC_THRESHOLD = 0.2

# ------------------------------------------------------------------ training and inference
PRIMARY_NETWORK = "U_Net2D5"
#: SCM's second network (the paper's).
AUXILIARY_NETWORK = "AttU_Net"
#: The patch (training) and sliding window (validation, inference), voxels x, y, z: a VS crop.
SPATIAL_SHAPE = (128, 128, 48)
#: The mCRF grid: the patch halved in plane, as in the paper.
DOWN_SIZE = (64, 64, 48)
#: The mCRF window radius per axis in voxels of its grid (-1: the whole axis).
KERNEL_RADIUS = (5, 5, -1)
#: The mCRF's spatial sigma in voxels of its grid.
CRF_SIGMA_XY = 6.0
LEARNING_RATE = 1e-2
WEIGHT_GATEDCRF = 1.0
WEIGHT_VARIANCE = 0.1
#: SCM's λ (weight of the cross distillation) and temperature T.
WEIGHT_KD = 0.5
KD_TEMPERATURE = 4.0
SW_OVERLAP = 0.25


@dataclass(frozen=True)
class Recipe:
    """The recommended optimiser against the early collapse: SGD momentum and gradient-norm
    clipping (docs/guide/collapse.md); the paper's momentum (0.99) overshoots into saturated logits."""

    momentum: float
    grad_clip: float

    def flags(self) -> dict[str, float]:
        """As a plan or config holds it: ``{"--momentum": 0.9, "--grad_clip": 12.0}``."""
        return {"--momentum": self.momentum, "--grad_clip": self.grad_clip}

    def args(self) -> list[str]:
        """As a command line: ``["--momentum", "0.9", "--grad_clip", "12"]``."""
        return [word for flag, value in self.flags().items() for word in (flag, f"{value:g}")]


RECIPE = Recipe(momentum=0.9, grad_clip=12.0)
