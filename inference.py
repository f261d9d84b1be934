"""Sliding-window inference of a trained PA-Seg network: on the subjects of one phase of a split
file (the paper's mode), or on every image of a folder.

Split mode loads ``<model_dir>/<network>/models/CP_<epoch_inf>.pth`` and writes, for each subject,
``<model_dir>/<network>/output_pred/<subject>_<postfix>/<subject>_<postfix>_seg.nii.gz``
(uint8, argmax) in exactly the input image's geometry (shape, affine and orientation of the file
on disk). Folder mode (``--input_folder IN --output_folder OUT``) segments every image of IN
(``.nii.gz``, ``.nii``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``; ``--image_postfix`` filters)
into ``OUT/<input name>.nii.gz``: any other file of IN is named in an error (hidden files, whose
names start with a dot, are ignored); a mask that exists in OUT is replaced only with
``--overwrite``. The network and patch size come from the model when not given:
the run's recorded arguments, or a model package (``--model model.zip``, see ``export_model.py``).
``--save_probabilities`` adds the foreground probability (float32) next to each mask as
``<mask name without _seg>_prob.nii.gz``; ``--ensemble`` averages the probabilities of several
models (an SCM run's model 1 and model 2, or the models listed after it).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
import torchio as tio
from tqdm import tqdm

from networks import NETWORKS, check_network_shape, get_network
from utilities.core.arguments import ArgumentParser, Inert, warn_inert_flags
from utilities.core.compile import prepare_network
from utilities.core.logs import setup_logger, show_progress
from utilities.core.runtime import resolve_device
from utilities.data.dataset_file import add_dataset_flag, parse_with_dataset, require
from utilities.data.grid import Grid, check_readable, data_files, listed
from utilities.data.io import (
    IMAGE_EXTENSIONS,
    check_overwrite,
    check_storable,
    check_writable_dir,
    image_extension,
    ras_affine,
    read_image,
    save_nifti,
    write_image,
)
from utilities.data.layout import RunLayout
from utilities.data.loading import ImageSource, SubjectCache, load_phase, make_volume_loader
from utilities.data.splits import PHASES
from utilities.method.defaults import IMAGE_POSTFIX, PRIMARY_NETWORK, SW_OVERLAP
from utilities.method.optim import Amp
from utilities.models.model_package import (
    DEFAULT_EPOCH_INF,
    DEFAULT_SPATIAL_SHAPE,
    ModelSpec,
    checkpoint_path,
    load_weights,
    read_manifest,
    resolve_models,
    scm_specs,
    spacing_warning,
    spec_from_run,
)
from utilities.models.prediction import segment
from utilities.workflow.cli import (
    COMPILE_INERT,
    add_common_args,
    add_compile_args,
    check_spatial_shape,
    check_sw_overlap,
    epoch_inf_name,
    positive_int,
)

__all__ = ["OUTPUT_FORMATS", "with_format", "checkpoint_path", "from_canonical", "write_prediction",
           "probability_path", "list_images",
           "run_inference", "predict_cases", "resolve_specs", "main"]

DEFAULT_MODEL_DIR = "./models/debug/"
DEFAULT_SPLIT = "./splits/split_VS.csv"
DEFAULT_IMAGES = "./data/VS/image_crop/"
DEFAULT_POSTFIX = IMAGE_POSTFIX

logger = logging.getLogger("paseg")


def from_canonical(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Map an array in the closest-canonical (RAS) voxel order back to the voxel order of an
    image whose affine is ``affine`` (the inverse of TorchIO's ``ToCanonical``)."""
    original = nib.orientations.io_orientation(affine)
    canonical = nib.orientations.axcodes2ornt(("R", "A", "S"))
    transform = nib.orientations.ornt_transform(canonical, original)
    return nib.orientations.apply_orientation(array, transform)


def _is_nifti(path: Path) -> bool:
    return path.name.endswith((".nii", ".nii.gz"))


#: ``--output_format`` choices (the extension written).
OUTPUT_FORMATS = ("nii.gz", "nii", "nrrd", "mha")


def with_format(path: Path, output_format: str) -> Path:
    """``<name>.nii.gz`` -> ``<name>.<output_format>``."""
    return path.with_name(path.name.removesuffix(".nii.gz") + "." + output_format)


def write_prediction(array: np.ndarray, reference: Path, out: Path, dtype: type = np.uint8) -> None:
    """Write ``array`` (canonical order, as predicted) as ``dtype`` in the geometry of the image
    file ``reference``, in the format of ``out``'s extension: a NIfTI written for a NIfTI
    reference keeps the reference's header (affine, orientation) as is; otherwise the world
    geometry (origin, spacing, direction) read by SimpleITK is written by SimpleITK."""
    reference = Path(reference)
    if _is_nifti(reference) and _is_nifti(Path(out)):
        ref = nib.load(str(reference))
        data = np.ascontiguousarray(from_canonical(array, ref.affine)).astype(dtype)
        if data.shape != ref.shape[:3]:
            raise RuntimeError(f"prediction shape {data.shape} does not match image {reference} {ref.shape[:3]}")
        header = ref.header.copy()
        header.set_data_dtype(dtype)
        image = nib.Nifti1Image(data, ref.affine, header)
        image.header.set_slope_inter(1, 0)
        save_nifti(image, out)
        return
    grid = Grid.read(reference)
    affine = ras_affine(grid.spacing, grid.direction, grid.origin)  # the affine TorchIO reoriented the image with
    data = np.ascontiguousarray(from_canonical(array, affine)).astype(dtype)  # (x, y, z) index order
    if data.shape != grid.size:
        raise RuntimeError(f"prediction shape {data.shape} does not match image {reference} {grid.size}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(grid.direction)
    write_image(image, out)


def probability_path(mask: Path) -> Path:
    """The probability file beside a mask: ``<name>_seg.<ext>`` or ``<name>.<ext>`` ->
    ``<name>_prob.<ext>`` (``<ext>`` one of :data:`OUTPUT_FORMATS`)."""
    ext = next((e for e in OUTPUT_FORMATS if mask.name.endswith("." + e)), "nii.gz")
    stem = mask.name.removesuffix("." + ext).removesuffix("_seg")
    return mask.with_name(f"{stem}_prob.{ext}")


def _folder_files(folder: Path) -> tuple[list[Path], list[Path], int, int, int]:
    """The files of ``folder`` (not recursive), sorted: ``(images, files in no image format,
    hidden files, sub-folders, sidecars)``; the data file a detached header (``.nhdr``, ``.mhd``)
    names belongs to its image, and so does a JSON sidecar of its name (``x.json`` beside
    ``x.nii.gz``, as dcm2niix writes them)."""
    files, hidden, folders = [], 0, 0
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            hidden += 1
        elif path.is_file():
            files.append(path)
        else:
            folders += 1
    images = [p for p in files if image_extension(p) is not None]
    data = set()
    for image in images:
        with contextlib.suppress(OSError):  # an unreadable header is named when its image is read
            data.update(d.resolve() for d in data_files(image))
    stems = {p.name[: -len(image_extension(p) or "")] for p in images}
    others = [p for p in files if image_extension(p) is None and p.resolve() not in data]
    sidecars = [p for p in others if p.suffix.lower() == ".json" and p.name[: -len(".json")] in stems]
    return images, [p for p in others if p not in sidecars], hidden, folders, len(sidecars)


def list_images(folder: str | Path, postfix: str | None = None) -> list[tuple[str, Path]]:
    """``(name without extension, path)`` of every image file in ``folder`` (not recursive),
    sorted by name; with ``postfix``, only names ending in ``_<postfix>`` (the others are counted
    in a log line). Hidden files (``.name``) are ignored and sub-folders not searched (both
    counted in a log line); every image listed is checked readable (:func:`check_readable`).

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: a file in no image format (nothing is skipped without a word), two files of
            one name in different formats, or no image at all.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--input_folder {folder} is not a folder; pass the folder of images to segment")
    found, not_images, hidden, folders, sidecars = _folder_files(folder)
    if not_images:
        raise ValueError(f"--input_folder {folder} holds {len(not_images)} file(s) in no image format: "
                         f"{listed([p.name for p in not_images])}; move them out of the folder or convert them to one "
                         f"of {' '.join(IMAGE_EXTENSIONS)} (hidden files, named .*, are ignored)")
    images: dict[str, Path] = {}
    other_postfix: list[str] = []
    for path in found:
        stem = path.name[: -len(image_extension(path) or "")]
        if postfix and not stem.endswith(f"_{postfix}"):
            other_postfix.append(path.name)
            continue
        if stem in images:
            raise ValueError(f"--input_folder {folder} holds {stem} twice ({images[stem].name} and {path.name}); "
                             "keep one format of each image")
        images[stem] = check_readable(path)
    if hidden:
        logger.info("--input_folder: %d hidden file(s) (named .*) ignored", hidden)
    if sidecars:
        logger.info("--input_folder: %d JSON sidecar(s) of the images (<name>.json) ignored", sidecars)
    if folders:
        logger.info("--input_folder: %d sub-folder(s) not searched (only the folder's own files are read)", folders)
    if other_postfix:
        near = [n for n in other_postfix if n[: -len(image_extension(Path(n)) or "")].lower().endswith(
            f"_{postfix}".lower())]
        if near:   # the same postfix in another letter case: most likely the same modality
            logger.warning("--input_folder: %d image(s) whose postfix differs from _%s only in letter case left out "
                           "(postfixes are case-sensitive), e.g. %s: rename them or pass that --image_postfix",
                           len(near), postfix, near[0])
        logger.info("--input_folder: %d image(s) without the postfix _%s left out, e.g. %s", len(other_postfix),
                    postfix, other_postfix[0])
    if not images:
        which = f" named *_{postfix}" if postfix else ""
        raise ValueError(f"--input_folder {folder} holds no image{which} ({', '.join(IMAGE_EXTENSIONS)}); "
                         "check the folder or --image_postfix")
    return list(images.items())


def _folder_cache(images: Sequence[tuple[str, Path]]) -> SubjectCache:
    subjects = [tio.Subject(subject=name, image=tio.ScalarImage(path)) for name, path in images]
    return SubjectCache(subjects, cache_gb=0, whats={"image": "image"})


def _load_models(specs: Sequence[ModelSpec], device: torch.device, compile: bool,
                 compile_backend: str) -> list[tuple[torch.nn.Module, tuple[int, ...]]]:
    models = []
    for spec in specs:
        model = get_network(spec.network, spec.in_channels, spec.num_classes).to(device)
        meta = load_weights(model, spec, map_location=device)
        model.eval()
        prepare_network(model, device, compile, compile_backend)
        logger.info("loaded %s: %s (epoch %s), window %s", spec.name, spec.source, meta.get("epoch", "?"),
                    list(spec.spatial_shape))
        models.append((model, tuple(spec.spatial_shape)))
    return models


def _note_padding(specs: Sequence[ModelSpec], sizes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Log which cases are smaller than a model's sliding window in some axis (MONAI pads them to
    the window with the image's minimum, so part of every window is padding); returns them."""
    small = [name for name, size in sizes.items()
             if any(n < w for spec in specs for n, w in zip(size, spec.spatial_shape or size))]
    if small:
        window = " or ".join(dict.fromkeys("×".join(map(str, s.spatial_shape or ())) for s in specs))
        logger.info("%d of %d case(s) smaller than the sliding window %s in some axis (%s: %s): padded to the window "
                    "with the image's minimum", len(small), len(sizes), window, small[0],
                    "×".join(map(str, sizes[small[0]])))
    return small


def predict_cases(specs: Sequence[ModelSpec], cache: SubjectCache, targets: Sequence[Path], device: torch.device,
                  sw_batch_size: int = 1, sw_overlap: float = SW_OVERLAP, amp: bool = False, num_workers: int = 0,
                  compile: bool = False, compile_backend: str = "inductor",
                  save_probabilities: bool = False, stale: Sequence[Path] = ()) -> list[Path]:
    """Segment every case of ``cache`` with ``specs`` (one model, or an ensemble) and write case
    k's mask to ``targets[k]`` (and its probability beside it); returns the masks written.
    ``stale``: an earlier prediction's files to remove (:func:`_check_targets`), removed only
    once every image has been read whole and every model loaded, before the first mask is written."""
    if len(targets) != len(cache):
        raise RuntimeError(f"{len(targets)} output paths for {len(cache)} cases")
    sizes = {}
    for subject, target in zip(cache.subjects, targets, strict=True):  # before any case is computed:
        # every file read whole (not truncated, voxels finite), and every mask storable exactly on its grid
        grid = Grid.of(read_image(subject["image"].path, "image"))
        check_storable(grid, target)
        sizes[subject["subject"]] = tuple(grid.size)
    _note_padding(specs, sizes)
    models = _load_models(specs, device, compile, compile_backend)
    _remove_stale(stale)
    if len(models) > 1:
        logger.info("ensemble of %d models: the mean of their class probabilities", len(models))
    loader = make_volume_loader(cache, num_workers=num_workers)
    amp_ctx = Amp(amp, device)
    written = []
    t0 = time.time()
    bar = show_progress()
    for number, batch in enumerate(tqdm(loader, desc="inference", dynamic_ncols=True, disable=not bar), 1):
        mask, prob = segment(models, batch["image"].to(device), sw_batch_size, sw_overlap, amp_ctx,
                             probability=save_probabilities)
        out = targets[number - 1]
        write_prediction(mask, Path(batch["path"][0]), out)
        if prob is not None:
            write_prediction(prob, Path(batch["path"][0]), probability_path(out), np.float32)
        written.append(out)
        if not bar:  # a log file gets a line per case instead of a progress bar's frames
            logger.info("%d/%d %s: %s", number, len(loader), batch["subject"][0], out)
    where = os.path.commonpath([str(p.parent) for p in written]) if written else "-"
    logger.info("%d segmentation(s) written under %s (%.1f s)", len(written), where, time.time() - t0)
    return written


def run_inference(model_dir: str | Path, network: str, dataset_split: str | Path, path_images: str | Path,
                  image_postfix: str, phase: str, spatial_shape: Sequence[int], epoch_inf: str,
                  device: torch.device, sw_batch_size: int = 1, sw_overlap: float = SW_OVERLAP,
                  amp: bool = False, num_workers: int = 0, compile: bool = False,
                  compile_backend: str = "inductor", save_probabilities: bool = False) -> list[Path]:
    """Segment every subject of ``phase`` with ``CP_<epoch_inf>.pth`` of ``<model_dir>/<network>``
    (the paper's mode); returns the written files in split order.

    ``compile``: ``torch.compile`` the network (:mod:`utilities.core.compile`); pays only for many
    windows, since the first ones wait for the compilation."""
    setup_logger(None)
    spec = spec_from_run(model_dir, network, epoch_inf, spatial_shape)
    cache = _split_cache(dataset_split, phase, path_images, image_postfix)
    layout = RunLayout(model_dir, spec.network)
    targets = [layout.prediction(s["subject"], image_postfix) for s in cache.subjects]
    return predict_cases([spec], cache, targets, device, sw_batch_size, sw_overlap, amp, num_workers, compile,
                         compile_backend, save_probabilities)


def _split_cache(dataset_split: str | Path, phase: str, path_images: str | Path, image_postfix: str) -> SubjectCache:
    return load_phase(dataset_split, phase, [ImageSource("image", path_images, image_postfix, False, "image",
                                                         "--path_images/--image_postfix")], cache_gb=0, fill=False)


def resolve_specs(model: str | None, model_dir: str | None, network: str | None, epoch_inf: str,
                  spatial_shape: Sequence[int] | None, ensemble: Sequence[str] | None,
                  workdir: str | Path, model_dir_given: bool = True) -> list[ModelSpec]:
    """The model(s) to predict with, from ``--model``, ``--model_dir``/``--network``/``--epoch_inf``
    or ``--ensemble``; each with its window (``--spatial_shape``, else the model's own, else the
    default with a log line), checked to fit its network.

    ``--ensemble A B``: the models of ``--model`` (or of ``--model_dir`` when given), then A, B."""
    if ensemble:
        first = model if model is not None else (model_dir if model_dir_given else None)
        specs = resolve_models(first, workdir, network, epoch_inf, spatial_shape, all_of_scm=True) if first else []
        specs += [s for entry in ensemble for s in resolve_models(entry, workdir, network, epoch_inf, spatial_shape)]
    elif model is not None:
        specs = resolve_models(model, workdir, network, epoch_inf, spatial_shape, all_of_scm=ensemble is not None)
    elif ensemble is not None:  # --ensemble alone: both models of the SCM run in --model_dir
        specs = scm_specs(model_dir, epoch_inf, network, spatial_shape)
        if specs is None:
            raise ValueError(f"--ensemble without models needs an SCM run in --model_dir {model_dir} (none found); "
                             "or list the models: --ensemble A B (packages, checkpoints or run folders)")
    else:
        specs = [spec_from_run(model_dir, network, epoch_inf, spatial_shape)]
    if ensemble is not None and len(specs) < 2:
        raise ValueError(f"--ensemble needs at least two models, got {len(specs)} ({specs[0].source}); list them: "
                         "--ensemble A B")
    if ensemble is None and len(specs) > 1:
        logger.info("%s holds %d models; predicting with %s (pass --ensemble to average them all)", model,
                    len(specs), specs[0].name)
        specs = specs[:1]
    resolved = []
    for spec in specs:
        shape = spec.spatial_shape
        if shape is None:
            shape = DEFAULT_SPATIAL_SHAPE
            logger.info("%s does not record its patch size; using the default --spatial_shape %s", spec.source,
                        " ".join(map(str, shape)))
        origin = spec.shape_origin(spatial_shape is not None)
        shape = check_spatial_shape(shape, origin)
        check_network_shape(spec.network, shape, origin)
        resolved.append(dataclasses.replace(spec, spatial_shape=shape))
    return resolved


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_dir", default=None,
                   help=f"run folder given to the training script (default {DEFAULT_MODEL_DIR})")
    p.add_argument("--network", default=None, choices=sorted(NETWORKS),
                   help=f"network architecture (default: the one run in --model_dir, else {PRIMARY_NETWORK})")
    p.add_argument("--dataset_split", default=None, help=f"CSV of 'subject,phase' rows (default {DEFAULT_SPLIT})")
    p.add_argument("--path_images", default=None,
                   help=f"folder of <subject>_<image_postfix>.nii.gz (default {DEFAULT_IMAGES})")
    p.add_argument("--image_postfix", default=None,
                   help=f"image file postfix (split mode default {DEFAULT_POSTFIX}; folder mode: only images named "
                        "*_<postfix>, default all)")
    p.add_argument("--phase", default=None, choices=list(PHASES),
                   help="which subjects of the split to segment (split mode; default inference)")
    p.add_argument("--spatial_shape", type=int, nargs=3, default=None,
                   help="sliding-window size (X Y Z), divisible by 16 (default: the model's patch size, else "
                        f"{' '.join(map(str, DEFAULT_SPATIAL_SHAPE))})")
    p.add_argument("--epoch_inf", type=epoch_inf_name, default=DEFAULT_EPOCH_INF,
                   help="checkpoint name: CP_<epoch_inf>.pth (best, final, best_model1, best_model2, ...)")
    p.add_argument("--input_folder", default=None,
                   help="segment every image in this folder (" + " ".join(IMAGE_EXTENSIONS) + ") instead of a split")
    p.add_argument("--output_folder", default=None,
                   help="write <input name>.nii.gz here (folder mode; in split mode instead of the run's output_pred)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace masks (and probabilities) that exist in --output_folder (the run's output_pred is "
                        "the run's own: always replaced, with a log line)")
    p.add_argument("--model", default=None,
                   help="a model package (.zip, export_model.py) or a checkpoint (.pth) instead of --model_dir")
    p.add_argument("--output_format", default="nii.gz", choices=OUTPUT_FORMATS,
                   help="file format of the masks (and probabilities) written to --output_folder; the run's "
                        "output_pred/ (split mode without --output_folder) stays .nii.gz, which scores.py reads")
    p.add_argument("--save_probabilities", action="store_true",
                   help="also write the foreground probability (float32) as <name>_prob.nii.gz next to each mask")
    p.add_argument("--ensemble", nargs="*", default=None, metavar="MODEL",
                   help="average the class probabilities of several models: alone, both models of the SCM run "
                        "(--model_dir or --model); followed by packages, checkpoints or run folders, those (after "
                        "the models of --model or --model_dir when given)")
    p.add_argument("--sw_batch_size", type=positive_int, default=1, help="sliding windows per forward pass")
    p.add_argument("--sw_overlap", type=float, default=SW_OVERLAP, help="sliding-window overlap in [0, 1)")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    add_compile_args(p)
    add_common_args(p)
    add_dataset_flag(p)
    return p


def _warn_far_from_training(model: str | None, cache: SubjectCache) -> None:
    """With a model package, a warning for the scans whose voxel size is far from its training
    images' (:func:`spacing_warning`; a run folder or checkpoint records no such range)."""
    if model is None or Path(model).suffix.lower() != ".zip":
        return
    training = read_manifest(model)["card"].get("training_data") or {}
    spacings = {str(s["subject"]): Grid.read(s["image"].path).spacing for s in cache.subjects}
    warning = spacing_warning(training, spacings)
    if warning:
        logger.warning("%s", warning)


def _flat_target(folder: Path, name: str) -> Path:
    return folder / f"{name}.nii.gz"


def _earlier_outputs(target: Path) -> list[Path]:
    """Where an earlier prediction of ``target``'s case may have left its mask and probability
    map: the same name in every output format."""
    ext = next(e for e in OUTPUT_FORMATS if target.name.endswith("." + e))
    base = target.with_name(target.name.removesuffix("." + ext) + ".nii.gz")
    return [p for mask in (with_format(base, fmt) for fmt in OUTPUT_FORMATS) for p in (mask, probability_path(mask))]


def _check_targets(targets: Sequence[Path], probabilities: bool, overwrite: bool, user_folder: bool) -> list[Path]:
    """Refuse to replace an earlier prediction of the same cases (its masks and probabilities, in
    any output format) in the user's ``--output_folder`` without ``--overwrite``; in the run's own
    ``output_pred`` say how many are replaced. Returns the files of an earlier prediction that this
    one does not write again (a probability map, another format): :func:`predict_cases` removes
    them (:func:`_remove_stale`) once every image is read and every model loaded, so that no mask
    sits beside another checkpoint's probability map or a second mask of the same case, and a
    refused prediction removes nothing."""
    written = {p for t in targets for p in ((t, probability_path(t)) if probabilities else (t,))}
    earlier = sorted({p for t in targets for p in _earlier_outputs(t) if os.path.lexists(p)})
    if user_folder:
        check_overwrite(earlier, "--output_folder", overwrite, "segmentation file")
    elif earlier:
        logger.info("replacing %d existing file(s) of the run's output_pred, e.g. %s", len(earlier), earlier[0])
    return [p for p in earlier if p not in written]


def _remove_stale(stale: Sequence[Path]) -> None:
    """Remove the files of ``stale`` that hold a prediction of ours; warn about the others."""
    ours = [p for p in stale if _a_prediction(p)]
    for path in ours:
        path.unlink()
    if ours:
        logger.info("removed %d file(s) of an earlier prediction that this one does not write again, e.g. %s",
                    len(ours), ours[0])
    kept = [p for p in stale if p not in ours]
    if kept:
        logger.warning("kept %d file(s) named as this prediction's masks or probability maps (in some format) that "
                       "hold no mask or probability map of this project, e.g. %s: move them out of the way",
                       len(kept), kept[0])


def _a_prediction(path: Path) -> bool:
    """Whether ``path`` holds what inference writes: a uint8 mask of 0/1, or a float32
    probability map in [0, 1] (another file of that name is never removed)."""
    try:
        image = read_image(path, "file")
    except (OSError, ValueError, RuntimeError):
        return False
    array = sitk.GetArrayViewFromImage(image)
    if image.GetPixelID() == sitk.sitkUInt8:
        return bool(array.max(initial=0) <= 1)
    return image.GetPixelID() == sitk.sitkFloat32 and bool(array.min(initial=0) >= 0 and array.max(initial=0) <= 1)


def _checkpoint_files_only(args: argparse.Namespace) -> bool:
    """Every model is a ``.pth`` file given by path (no run folder, no package)."""
    sources = ([args.model] if args.model else []) + list(args.ensemble or [])
    return args.model_dir is None and bool(sources) and all(str(s).lower().endswith(".pth") for s in sources)


#: Inference flags that the other flags make pointless (:func:`utilities.workflow.cli.warn_inert_flags`).
INFERENCE_INERT = (
    *COMPILE_INERT,
    Inert(("epoch_inf",), _checkpoint_files_only, "with checkpoint files (.pth): each file is the model"),
    Inert(("seed",), lambda a: True, "in inference, which draws nothing at random"),
    Inert(("overwrite",), lambda a: a.output_folder is None,
          "without --output_folder: the run's own output_pred/ is always replaced"),
)


def main(argv: list[str] | None = None) -> list[Path]:
    parser = build_parser()
    args = parse_with_dataset(parser, argv, unless={"input_folder": ("split", "images")})
    spatial_shape = check_spatial_shape(args.spatial_shape) if args.spatial_shape is not None else None
    if args.network is not None and spatial_shape is not None:
        check_network_shape(args.network, spatial_shape)
    check_sw_overlap(args.sw_overlap)
    if args.model is not None and args.model_dir is not None:
        raise ValueError("--model and --model_dir exclude each other; pass the package (or checkpoint) or the run "
                         "folder")
    folder_mode = args.input_folder is not None
    if folder_mode:
        if args.output_folder is None:
            raise ValueError("--input_folder needs --output_folder, the folder to write the segmentations to")
        given = [f for f in ("dataset_split", "path_images", "phase") if getattr(args, f) is not None]
        if given:
            raise ValueError(f"--input_folder excludes --{given[0]} (split mode); pass one of them")
        if Path(args.output_folder).resolve() == Path(args.input_folder).resolve():
            raise ValueError(f"--output_folder {args.output_folder} is --input_folder: the segmentations would "
                             "overwrite the images; choose another folder")
    elif args.output_folder is None and (args.model is not None or (args.ensemble and args.model_dir is None)):
        raise ValueError("split mode with --model or --ensemble models needs --output_folder (there is no run "
                         "folder to write into)")
    if args.output_format != "nii.gz" and args.output_folder is None:
        raise ValueError(f"--output_format {args.output_format} needs --output_folder: the run's output_pred/ holds "
                         ".nii.gz masks, the files scores.py reads")
    if not folder_mode:
        require(args, "split", "images", "image_postfix")   # with --dataset no VS default applies
    warn_inert_flags(parser, argv, args, INFERENCE_INERT)
    device = resolve_device(args.device)
    setup_logger(None)
    model_dir = args.model_dir or (None if args.model is not None else DEFAULT_MODEL_DIR)
    with tempfile.TemporaryDirectory(prefix="paseg-model-") as workdir:
        specs = resolve_specs(args.model, model_dir, args.network, args.epoch_inf, spatial_shape, args.ensemble,
                              workdir, args.model_dir is not None)
        if folder_mode:
            images = list_images(args.input_folder, args.image_postfix)
            out = check_writable_dir(args.output_folder)
            cache = _folder_cache(images)
            targets = [with_format(_flat_target(out, name), args.output_format) for name, _ in images]
            names = [p.name for t in targets for p in (t, probability_path(t))]
            clash = sorted({n for n in names if names.count(n) > 1})
            if args.save_probabilities and clash:
                raise ValueError(f"--input_folder: {clash[0]} would be both an image's mask and another's "
                                 "probability; rename one of the images")
        else:
            postfix = args.image_postfix or DEFAULT_POSTFIX
            cache = _split_cache(args.dataset_split or DEFAULT_SPLIT, args.phase or "inference",
                                 args.path_images or DEFAULT_IMAGES, postfix)
            subjects = [s["subject"] for s in cache.subjects]
            if args.output_folder is not None:
                out = check_writable_dir(args.output_folder)
                targets = [with_format(_flat_target(out, f"{s}_{postfix}"), args.output_format) for s in subjects]
            else:
                layout = RunLayout(model_dir, specs[0].network)
                targets = [layout.prediction(s, postfix) for s in subjects]
        stale = _check_targets(targets, args.save_probabilities, args.overwrite, args.output_folder is not None)
        _warn_far_from_training(args.model, cache)
        return predict_cases(specs, cache, targets, device, args.sw_batch_size, args.sw_overlap, args.amp,
                             args.num_workers, args.compile, args.compile_backend, args.save_probabilities, stale)


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
