"""How much stronger the mCRF is at full resolution than on stage 1's grid, at the same weight.

Stage 1 computes the mCRF on logits resized to ``--down_size`` with ``--kernel_radius`` and
``--crf_sigma_xy`` in voxels of that grid; ``nnUNetTrainerPASeg`` computes it, by default, on the
full-resolution output, and ``experiments/family.py`` scales the radius and width by the grid's
in-plane factor (with the trainer's ``--crf_downsample 2`` on a halved grid, both run on the same
grid and the ratio is 1). The gated CRF sums its kernel over each voxel's neighbours, so the wider kernel
carries more weight. The cases are read as stage 1 reads them (RAS, z-normalised volume); for
each case of ``--phase`` with a lesion this crops a patch around the lesion, builds logits of
±4 from the lesion mask (and from the mask eroded by ``--erode`` voxels), and prints the ratio
full resolution / grid of the mCRF's value and of the norm of its gradient with respect to the
full-resolution logits, then their medians.

Example (docs/results/family.md, member 56)::

    python experiments/crf_strength.py --dataset_split ./ablation/dev_paseg56/f056/data/split.csv \\
        --path_images ./ablation/dev_paseg56/f056/data/image --image_postfix img \\
        --path_labels ./ablation/dev_paseg56/f056/data/label --label_postfix seg \\
        --patch 64 64 48 --down_size 32 32 48 --kernel_radius 4 --crf_sigma_xy 5 --cases 7 --erode 0 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from utilities.core.arguments import ArgumentParser

ROOT = Path(__file__).resolve().parents[1]

from experiments.family import full_resolution_kernel  # noqa: E402
from utilities.data.dataset_file import add_dataset_flag, parse_with_dataset  # noqa: E402
from utilities.data.loading import ImageSource, make_subjects, patch_start_around, preprocess_transform  # noqa: E402
from utilities.method.defaults import IMAGE_POSTFIX, LABEL_POSTFIX  # noqa: E402
from utilities.method.losses import MultiViewGatedCRFLoss  # noqa: E402

__all__ = ["crf_strength", "lesion_patch"]


def crf_strength(image: torch.Tensor, mask: torch.Tensor, down_size: Sequence[int], kernel_radius: int,
                 sigma_xy: float, sigma_rgb: float = 0.1) -> tuple[float, float]:
    """(value ratio, gradient-norm ratio) of the full-resolution mCRF to stage 1's on ``down_size``.

    ``image``, ``mask``: (X, Y, Z) tensors of one patch. The full-resolution kernel is the one
    ``experiments/family.py`` gives ``nnUNetTrainerPASeg`` (:func:`experiments.family.full_resolution_kernel`);
    the logits are ±4 from ``mask``."""
    full_radius, full_sigma = full_resolution_kernel(image.shape, down_size, kernel_radius, sigma_xy)
    m = mask.float()[None, None]
    logits = torch.cat([torch.zeros_like(m), (2 * m - 1) * 4], 1).requires_grad_(True)
    img = image.float()[None, None]
    out = []
    for loss in (MultiViewGatedCRFLoss(down_size=tuple(down_size), kernel_radius=kernel_radius,
                                       sigma_xy=sigma_xy, sigma_rgb=sigma_rgb),
                 MultiViewGatedCRFLoss(down_size=None, kernel_radius=full_radius, sigma_xy=full_sigma,
                                       sigma_rgb=sigma_rgb)):
        logits.grad = None
        value = loss(logits, img)
        value.backward()
        out.append((float(value.detach()), float((logits.grad[0, 1] - logits.grad[0, 0]).norm())))
    (v_grid, g_grid), (v_full, g_full) = out
    return v_full / v_grid, g_full / g_grid


def lesion_patch(image: np.ndarray, label: np.ndarray, patch: Sequence[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``patch``-sized crop of ``image`` and ``label > 0`` centred on the lesion's centroid
    and moved inside the volume; ``None`` when there is no lesion or the volume is smaller."""
    fg = np.nonzero(label > 0)
    if not fg[0].size or any(s < p for s, p in zip(image.shape, patch)):
        return None
    starts = patch_start_around([int(np.mean(a)) for a in fg], patch, image.shape)
    box = tuple(slice(a, a + p) for a, p in zip(starts, patch))
    return image[box].astype(np.float32), label[box] > 0


def _erode(mask: np.ndarray, voxels: int) -> np.ndarray:
    """``mask`` eroded ``voxels`` times by the 3×3×3 cube; the patch's border does not erode it."""
    if voxels == 0:   # (scipy's iterations=0 erodes until nothing changes)
        return mask
    return ndimage.binary_erosion(mask, np.ones((3, 3, 3), bool), iterations=voxels, border_value=1)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset_split", required=True, help="CSV of 'subject,phase' rows")
    p.add_argument("--phase", default="training", help="the split's phase whose cases are read")
    p.add_argument("--path_images", required=True, help="image folder (.nii.gz .nii .nrrd .nhdr .mha .mhd)")
    p.add_argument("--image_postfix", default=IMAGE_POSTFIX, help="image file postfix")
    p.add_argument("--path_labels", required=True, help="folder of the full labels (lesion > 0)")
    p.add_argument("--label_postfix", default=LABEL_POSTFIX, help="label file postfix")
    p.add_argument("--patch", type=int, nargs=3, required=True, help="stage 1's --spatial_shape")
    p.add_argument("--down_size", type=int, nargs=3, required=True, help="stage 1's --down_size")
    p.add_argument("--kernel_radius", type=int, default=5, help="stage 1's --kernel_radius (first value)")
    p.add_argument("--crf_sigma_xy", type=float, default=6.0, help="stage 1's --crf_sigma_xy")
    p.add_argument("--crf_sigma_rgb", type=float, default=0.1, help="stage 1's --crf_sigma_rgb")
    p.add_argument("--cases", type=int, default=8, help="at most this many cases with a lesion")
    p.add_argument("--erode", type=int, nargs="+", default=[0], help="erode the mask by these voxels (one row each)")
    add_dataset_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> list[tuple[str, int, float, float]]:
    args = parse_with_dataset(build_parser(), argv)
    if args.cases < 1:
        raise ValueError(f"--cases {args.cases}: give at least 1")
    if min(args.erode) < 0:
        raise ValueError(f"--erode {' '.join(map(str, args.erode))}: voxels must be >= 0")
    if any(d < 1 or d > p for d, p in zip(args.down_size, args.patch)):
        raise ValueError(f"--down_size {' '.join(map(str, args.down_size))}: each axis must be 1 to --patch's "
                         f"({' '.join(map(str, args.patch))}), as stage 1's grid is")
    sources = [ImageSource("image", args.path_images, args.image_postfix, False, "image",
                           "--path_images/--image_postfix"),
               ImageSource("label", args.path_labels, args.label_postfix, True, "label",
                           "--path_labels/--label_postfix")]
    subjects = make_subjects(args.dataset_split, args.phase, sources)
    prepare = preprocess_transform()
    torch.set_num_threads(1)
    rows: list[tuple[str, int, float, float]] = []
    for subject in subjects:
        if len({r[0] for r in rows}) >= args.cases:
            break
        subject = prepare(subject)
        crop = lesion_patch(subject["image"].data[0].numpy(), subject["label"].data[0].numpy(), args.patch)
        if crop is None:
            print(f"{subject['subject']}: no lesion, or the volume is smaller than --patch; not measured")
            continue
        image, mask = crop
        for voxels in args.erode:
            eroded = _erode(mask, voxels)
            if not eroded.any():
                print(f"{subject['subject']} erode {voxels}: nothing of the lesion is left; not measured")
                continue
            ratios = crf_strength(torch.from_numpy(image), torch.from_numpy(eroded), args.down_size,
                                  args.kernel_radius, args.crf_sigma_xy, args.crf_sigma_rgb)
            rows.append((subject["subject"], voxels, *ratios))
            print(f"{subject['subject']} erode {voxels}: value x{ratios[0]:.2f}, gradient x{ratios[1]:.2f}")
    if not rows:
        raise ValueError(f"no {args.phase} case of {args.dataset_split} was measured: each needs a lesion, a volume "
                         f"at least --patch {' '.join(map(str, args.patch))} and a lesion left after --erode")
    print(f"median over {len(rows)}: value x{statistics.median(r[2] for r in rows):.2f} "
          f"({min(r[2] for r in rows):.2f}-{max(r[2] for r in rows):.2f}), gradient "
          f"x{statistics.median(r[3] for r in rows):.2f} ({min(r[3] for r in rows):.2f}-{max(r[3] for r in rows):.2f})")
    return rows


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
