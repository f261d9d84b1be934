"""Sliding-window inference of a trained PA-Seg network on the subjects of one phase.

Loads ``<model_dir>/<network>/models/CP_<epoch_inf>.pth`` and writes, for each subject,
``<model_dir>/<network>/output_pred/<subject>_<postfix>/<subject>_<postfix>_seg.nii.gz``
(uint8, argmax) in exactly the input image's geometry (shape, affine and orientation of the file
on disk).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import torch
from tqdm import tqdm

from networks import NETWORKS, get_network
from utilities.checkpoints import load_model_weights
from utilities.cli import (
    add_common_args,
    add_compile_args,
    check_network_shape,
    check_spatial_shape,
    positive_int,
    resolve_device,
    setup_logger,
    show_progress,
)
from utilities.compile import prepare_network
from utilities.data import ImageSource, load_phase, make_volume_loader
from utilities.io import prediction_path, save_nifti
from utilities.optim import Amp
from utilities.prediction import sliding_window_predict
from utilities.splits import PHASES

__all__ = ["checkpoint_path", "from_canonical", "run_inference", "main"]

NUM_CLASSES = 2
IN_CHANNELS = 1


def checkpoint_path(model_dir: str | Path, network: str, epoch_inf: str) -> Path:
    """``<model_dir>/<network>/models/CP_<epoch_inf>.pth``; a missing one is an error listing
    the checkpoints that exist."""
    models = Path(model_dir) / network / "models"
    path = models / f"CP_{epoch_inf}.pth"
    if not path.is_file():
        found = sorted(p.stem.removeprefix("CP_") for p in models.glob("CP_*.pth")) if models.is_dir() else []
        hint = (f"checkpoints there: --epoch_inf {{{','.join(found)}}}" if found
                else f"no checkpoint in {models}; train first or check --model_dir/--network")
        if not found and (Path(model_dir) / "models" / path.name).is_file():  # the run folder itself was given
            hint = (f"{model_dir} is the run folder of a network: pass its parent, --model_dir "
                    f"{Path(model_dir).parent}")
        raise FileNotFoundError(f"checkpoint {path} not found; {hint}")
    return path


def from_canonical(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Map an array in the closest-canonical (RAS) voxel order back to the voxel order of an
    image whose affine is ``affine`` (the inverse of TorchIO's ``ToCanonical``)."""
    original = nib.orientations.io_orientation(affine)
    canonical = nib.orientations.axcodes2ornt(("R", "A", "S"))
    transform = nib.orientations.ornt_transform(canonical, original)
    return nib.orientations.apply_orientation(array, transform)


def write_prediction(seg: np.ndarray, reference: Path, out: Path) -> None:
    """Write ``seg`` (canonical order) as uint8 in the geometry of the NIfTI file ``reference``."""
    ref = nib.load(str(reference))
    data = np.ascontiguousarray(from_canonical(seg, ref.affine)).astype(np.uint8)
    if data.shape != ref.shape[:3]:
        raise RuntimeError(f"prediction shape {data.shape} does not match image {reference} {ref.shape[:3]}")
    header = ref.header.copy()
    header.set_data_dtype(np.uint8)
    image = nib.Nifti1Image(data, ref.affine, header)
    image.header.set_slope_inter(1, 0)
    save_nifti(image, out)


def run_inference(model_dir: str | Path, network: str, dataset_split: str | Path, path_images: str | Path,
                  image_postfix: str, phase: str, spatial_shape: Sequence[int], epoch_inf: str,
                  device: torch.device, sw_batch_size: int = 1, sw_overlap: float = 0.25,
                  amp: bool = False, num_workers: int = 0, compile: bool = False,
                  compile_backend: str = "inductor") -> list[Path]:
    """Segment every subject of ``phase``; returns the written files in split order.

    ``compile``: ``torch.compile`` the network (:mod:`utilities.compile`); pays only for many
    windows, since the first ones wait for the compilation."""
    logger = setup_logger(None)
    ckpt = checkpoint_path(model_dir, network, epoch_inf)
    model = get_network(network, IN_CHANNELS, NUM_CLASSES).to(device)
    meta = load_model_weights(model, ckpt, network, map_location=device)
    model.eval()
    prepare_network(model, device, compile, compile_backend)
    logger.info("loaded %s (epoch %s)", ckpt, meta.get("epoch", "?"))
    cache = load_phase(dataset_split, phase, [ImageSource("image", path_images, image_postfix, False, "image",
                                                          "--path_images/--image_postfix")],
                       cache_gb=0, fill=False)
    loader = make_volume_loader(cache, num_workers=num_workers)
    amp_ctx = Amp(amp, device)
    written = []
    t0 = time.time()
    bar = show_progress()
    for number, batch in enumerate(tqdm(loader, desc="inference", dynamic_ncols=True, disable=not bar), 1):
        logits = sliding_window_predict(model, batch["image"].to(device), spatial_shape, sw_batch_size,
                                        sw_overlap, amp_ctx)
        seg = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
        out = prediction_path(model_dir, network, batch["subject"][0], image_postfix)
        write_prediction(seg, Path(batch["path"][0]), out)
        written.append(out)
        if not bar:  # a log file gets a line per case instead of a progress bar's frames
            logger.info("%d/%d %s: %s", number, len(loader), batch["subject"][0], out)
    logger.info("%d segmentation(s) written under %s (%.1f s)", len(written),
                Path(model_dir) / network / "output_pred", time.time() - t0)
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_dir", default="./models/debug/", help="run folder given to the training script")
    p.add_argument("--network", default="U_Net2D5", choices=sorted(NETWORKS), help="network architecture")
    p.add_argument("--dataset_split", default="./splits/split_VS.csv", help="CSV of 'subject,phase' rows")
    p.add_argument("--path_images", default="./data/VS/image_crop/", help="folder of <subject>_<image_postfix>.nii.gz")
    p.add_argument("--image_postfix", default="T2", help="image file postfix")
    p.add_argument("--phase", default="inference", choices=list(PHASES), help="which subjects to segment")
    p.add_argument("--spatial_shape", type=int, nargs=3, default=[128, 128, 48],
                   help="sliding-window size (X Y Z), divisible by 16")
    p.add_argument("--epoch_inf", default="best",
                   help="checkpoint name: CP_<epoch_inf>.pth (best, final, best_model1, best_model2, ...)")
    p.add_argument("--sw_batch_size", type=positive_int, default=1, help="sliding windows per forward pass")
    p.add_argument("--sw_overlap", type=float, default=0.25, help="sliding-window overlap in [0, 1)")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    add_compile_args(p)
    add_common_args(p)
    return p


def main(argv: list[str] | None = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    spatial_shape = check_spatial_shape(args.spatial_shape)
    check_network_shape(args.network, spatial_shape)
    if not 0 <= args.sw_overlap < 1:
        raise ValueError(f"--sw_overlap must be in [0, 1), got {args.sw_overlap}")
    device = resolve_device(args.device)
    return run_inference(args.model_dir, args.network, args.dataset_split, args.path_images, args.image_postfix,
                         args.phase, spatial_shape, args.epoch_inf, device, args.sw_batch_size, args.sw_overlap,
                         args.amp, args.num_workers, args.compile, args.compile_backend)


if __name__ == "__main__":
    from utilities.cli import run_main

    sys.exit(run_main(main))
