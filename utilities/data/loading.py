"""TorchIO subjects and loaders: the one loader builder used by every script.

A subject is read from ``<dir>/<subject>_<postfix><ext>`` (any of ``utilities.data.io.IMAGE_EXTENSIONS``,
one file per subject) for each of its images (``image``,
and optionally ``label``, ``seeds`` = the expanded-seed labels, ``anno`` = the 7 points).
Preprocessing (deterministic, cached): ``ToCanonical`` (RAS) and whole-volume z-normalisation of
the image. Training adds (random, every time): padding to the patch size, with
``--augmentation nnunet`` nnU-Net's rotation, scaling, noise and gamma
(:func:`utilities.data.augmentation.nnunet_augmentation`),
flips with p = 0.2 on each axis and one uniformly random patch of ``--spatial_shape``. Validation and inference use
whole volumes.

The random draws of a training item depend only on the run's seed, the epoch and the subject's
index (:func:`item_seed`): not on the cache budget, the number of workers or the ranks. They
are made from a torch RNG seeded for the item and forked from the global one, and
preprocessing draws nothing from the global RNG either (TorchIO draws one number per transform
call), so the model's own random numbers do not depend on which volumes were cached.

Volumes are decoded once and kept in memory up to ``cache_gb`` (VS crops are ~3 MB each, a
BraTS case ~35 MB); the cache is filled in the main process before any worker starts, so
workers share it copy-on-write.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
import torchio as tio
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from utilities.core.distributed import DistContext, shard_indices
from utilities.data.augmentation import training_transform
from utilities.data.grid import Grid, check_same_grid, find_subject_file, listed, missing_files
from utilities.data.io import check_label_values, check_voxels, count_nonfinite
from utilities.data.splits import Split, as_split

__all__ = [
    "ImageSource",
    "find_missing",
    "check_files",
    "make_subjects",
    "count_nonfinite",
    "check_subject",
    "check_intensities",
    "check_training_seeds",
    "check_full_labels",
    "preprocess_transform",
    "canonical_axes",
    "in_trainer_frame",
    "SubjectCache",
    "item_seed",
    "PatchDataset",
    "foreground_patch_start",
    "patch_start_around",
    "VolumeDataset",
    "make_training_loader",
    "make_volume_loader",
    "load_phase",
    "DataConfig",
    "TrainingData",
    "load_training_data",
    "SEED_VALUES",
]

logger = logging.getLogger("paseg")

#: Values of an expanded-seed label (key ``seeds``): background, foreground, unknown.
SEED_VALUES = (0, 1, 2)


@dataclass(frozen=True)
class ImageSource:
    """Where one image of every subject lives: ``<folder>/<subject>_<postfix><ext>``."""

    key: str
    folder: str | os.PathLike
    postfix: str
    is_label: bool
    what: str  # human name for messages, e.g. "image" or "expanded-seed label"
    flags: str = ""  # the command-line flags that set folder and postfix, for messages


def find_missing(subjects: Sequence[str], sources: Sequence[ImageSource]) -> list[str]:
    """Every missing file, as ``"<what> <path>"`` strings (subject by subject)."""
    return [m for subject in subjects for src in sources
            for m in missing_files([subject], src.folder, src.postfix, src.what)]


def check_files(dataset_split: Split | str | os.PathLike,
                needs: Sequence[tuple[str | None, Sequence[ImageSource]]], hints: Mapping[str, str] | None = None
                ) -> None:
    """Check that every ``(phase, sources)`` pair has subjects and all their files exist;
    ``hints``: a sentence per source key, added to the error when files of that source are missing.

    Raises:
        FileNotFoundError: one line listing every missing file of every phase at once (the
            first 10, then the count) and the flags to check.
        ValueError: if a phase has no subject.
    """
    split = as_split(dataset_split)
    missing: list[str] = []
    flags: list[str] = []
    missing_keys: list[str] = []
    for phase, sources in needs:
        names = split.subjects(phase)
        if not names:
            raise ValueError(f"split file {dataset_split} lists no subject for phase {phase!r}; "
                             f"add '<subject>,{phase}' rows")
        for src in sources:
            found = [m for m in find_missing(names, [src]) if m not in missing]
            missing += found
            if found and src.key not in missing_keys:
                missing_keys.append(src.key)
            if found and src.flags and src.flags not in flags:
                flags.append(src.flags)
    if missing:
        check = " or ".join(flags) if flags else "the path and postfix flags"
        extra = "".join(f" {hints[key]}" for key in missing_keys if hints and key in hints)
        raise FileNotFoundError(f"{len(missing)} file(s) of the subjects listed in {dataset_split} are missing: "
                                f"{listed(missing)}. Check {check} or the split.{extra}")


def make_subjects(dataset_split: Split | str | os.PathLike, phase: str | None,
                  sources: Sequence[ImageSource], check: bool = True) -> list[tio.Subject]:
    """One ``tio.Subject`` per subject of ``phase`` in the split, with an image per source.

    Raises:
        FileNotFoundError: naming every missing file at once (never skips a subject).
        ValueError: if the phase has no subject.
    """
    split = as_split(dataset_split)
    if check:   # False: the caller has just checked these files
        check_files(split, [(phase, sources)])
    subjects = []
    for name in split.subjects(phase):
        images: dict[str, Any] = {}
        for src in sources:
            cls = tio.LabelMap if src.is_label else tio.ScalarImage
            images[src.key] = cls(find_subject_file(src.folder, name, src.postfix, src.what))
        subjects.append(tio.Subject(subject=name, **images))
    return subjects


def _image(subject: tio.Subject, key: str) -> tio.Image:
    """``subject[key]``, one of its images (TorchIO types a subject's items as ``object``)."""
    return cast(tio.Image, subject[key])


def _file(image: tio.Image) -> Path:
    """The file ``image`` is read from (TorchIO also allows several files or none; the images here
    are always read from one file)."""
    return cast(Path, image.path)


def _load(image: tio.Image, what: str) -> None:
    try:
        image.load()
    except Exception as e:  # nibabel/SimpleITK raise many types for damaged files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        reason = "neither SimpleITK nor nibabel can decode it" if "not understood" in first else first[:120]
        raise ValueError(f"cannot read {what} file {image.path} (unreadable or truncated: {reason}); "
                         "re-create or re-download it") from None


def _mm(spacing: Sequence[float]) -> tuple[float, ...]:
    """Voxel sizes as plain floats rounded to 4 decimals, for messages."""
    return tuple(round(float(s), 4) for s in spacing)


def _check_dimensions(image: tio.Image, what: str) -> None:
    """One 3D volume with one channel (a 2D image or a 4D file with several channels is refused)."""
    if str(image.path).endswith((".nii", ".nii.gz")):
        nifti: Any = nib.load(str(image.path))  # a NIfTI image (nibabel declares the base FileBasedImage)
        shape = tuple(nifti.shape)
    else:  # the header of the other formats, through SimpleITK (x, y, z[, t]; vector pixels count as channels)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(image.path))
        reader.ReadImageInformation()
        shape = tuple(reader.GetSize())
    if shape is not None:
        while len(shape) > 3 and shape[-1] == 1:
            shape = shape[:-1]
        if len(shape) < 3:
            raise ValueError(f"{what} {image.path} is {len(shape)}D (shape {list(shape)}); expected a 3D volume")
        if len(shape) > 4:
            raise ValueError(f"{what} {image.path} is {len(shape)}D (shape {list(shape)}); expected a 3D volume")
    if image.data.shape[0] != 1:
        raise ValueError(f"{what} {image.path} has {image.data.shape[0]} channels (shape {list(image.data.shape[1:])} "
                         f"x {image.data.shape[0]}); expected a 3D volume with one channel: save each channel "
                         "(sequence) as its own file")


def check_subject(subject: tio.Subject, whats: Mapping[str, str] | None = None) -> None:
    """Load every image and check: readable and complete, finite, one 3D volume of one channel,
    on the voxel grid of ``image`` (:func:`utilities.data.grid.check_same_grid`), labels holding
    integers, and expanded seeds (key ``seeds``) holding only :data:`SEED_VALUES`.

    SimpleITK, TorchIO's reader, fills a truncated NIfTI file with zeros and turns NaN/Inf into
    0, so every file is also decoded with nibabel (:func:`utilities.data.io.check_voxels`).

    Raises a one-line ``ValueError`` naming the file.
    """
    whats = dict(whats or {})
    ref = _image(subject, "image")
    for key, image in subject.get_images_dict(intensity_only=False).items():
        what = whats.get(key, key)
        _load(image, what)
        check_voxels(_file(image), what)
        _check_dimensions(image, what)
    ref_grid = Grid.read(_file(ref), whats.get("image", "image"))
    for key, image in subject.get_images_dict(intensity_only=False).items():
        if key == "image":
            continue
        what = whats.get(key, key)
        check_same_grid(ref_grid, _file(ref), "image", Grid.read(_file(image), what), _file(image), what,
                        "resample it onto the image's voxel grid")
        if key == "seeds":
            values = torch.unique(image.data).tolist()
            bad_values = [v for v in values if v not in SEED_VALUES]
            if bad_values:
                raise ValueError(f"{what} {image.path} holds values {bad_values[:5]}; expected only "
                                 f"{list(SEED_VALUES)} (background, foreground, unknown): re-run the geodesic "
                                 "expansion")
        elif isinstance(image, tio.LabelMap):
            check_label_values(image.data.numpy(), _file(image), what)


#: A z-normalised image whose central 99 % of voxels span less than this (in standard
#: deviations) is dominated by a few extreme voxels.
MIN_NORMALISED_SPREAD = 1e-2


def check_intensities(raw: torch.Tensor, normalised: torch.Tensor | None, path: str | os.PathLike,
                      what: str = "image") -> None:
    """Refuse an image that z-normalisation cannot turn into a usable input: constant, with
    values so large that the arithmetic overflows (NaN after normalisation), or with a few
    extreme voxels that squeeze every other voxel to nearly one value (``normalised=None``:
    only the checks of the raw image, before normalising)."""
    step = max(1, raw.numel() // 1_000_000)
    sample = raw.flatten()[::step].double()
    if float(raw.min()) == float(raw.max()):
        raise ValueError(f"{what} {path} is constant ({float(raw.min()):g} everywhere); it holds no image to learn "
                         "from or segment")
    if normalised is None:
        return
    if not bool(torch.isfinite(normalised).all()):
        raise ValueError(f"{what} {path} holds values up to {float(raw.abs().max()):.3g}, too large to normalise "
                         "in float32 (the result is NaN); rescale it (e.g. fix its scale factor) and re-export it")
    norm = normalised.flatten()[::step].double()
    q = torch.quantile(norm, torch.tensor([0.005, 0.995], dtype=torch.float64))
    if float(q[1] - q[0]) < MIN_NORMALISED_SPREAD:
        p995 = float(torch.quantile(sample, 0.995))
        raise ValueError(f"{what} {path}: a few extreme voxels (up to {float(raw.max()):.3g}, while 99.5 % of the "
                         f"voxels are at most {p995:.3g}) dominate the z-normalisation and leave every other voxel "
                         "at nearly one value; clip or fix those voxels and re-export it")


def preprocess_transform() -> tio.Transform:
    """Deterministic preprocessing: RAS orientation and whole-volume z-normalisation. The RAS
    volume is the trainers' frame: every size measured for them (the plan's patch and mCRF
    window) is measured in it (:func:`canonical_axes`)."""
    return tio.Compose([tio.ToCanonical(), tio.ZNormalization(include=["image"])])


def canonical_axes(affine: np.ndarray) -> tuple[int, int, int]:
    """For each axis of the trainers' frame (R, A, S after :func:`preprocess_transform`'s
    ``ToCanonical``), the voxel axis of the file it comes from (0, 1, 2: SimpleITK's x, y, z
    index order). ``affine``: the file's voxel-to-RAS affine (:meth:`utilities.data.grid.Grid.affine`).

    ``ToCanonical`` reorders the voxels by ``nibabel.orientations.io_orientation`` of the
    affine; this reads the same orientation, so a scan stored (z, y, x), e.g. a sagittal
    acquisition, measures as the same scan stored RAS.
    """
    source = [0, 0, 0]
    for axis, (target, _flip) in enumerate(nib.orientations.io_orientation(np.asarray(affine, dtype=float))):
        source[int(target)] = axis
    return cast("tuple[int, int, int]", tuple(source))


def in_trainer_frame(values: Sequence[Any], affine: np.ndarray) -> tuple[Any, Any, Any]:
    """Per-axis ``values`` of a file (x, y, z index order: a size, a spacing, a box's extent)
    in the trainers' frame (:func:`canonical_axes`); flips do not change them."""
    return cast("tuple[Any, Any, Any]", tuple(values[a] for a in canonical_axes(affine)))


def _nbytes(subject: tio.Subject) -> int:
    return sum(img.data.element_size() * img.data.numel()
               for img in subject.get_images(intensity_only=False))


class SubjectCache:
    """Preprocessed subjects, kept in memory up to a byte budget; the rest is re-read on use.

    Args:
        subjects: subjects as built by :func:`make_subjects` (not yet loaded).
        cache_gb: memory budget in GiB for the decoded, preprocessed volumes.
        whats: human names of the images for error messages.
    """

    def __init__(self, subjects: Sequence[tio.Subject], cache_gb: float = 8.0,
                 whats: Mapping[str, str] | None = None) -> None:
        self.subjects = list(subjects)
        self.whats = dict(whats or {})
        self.budget = int(cache_gb * 2**30)
        self.preprocess = preprocess_transform()
        self._cache: dict[int, tio.Subject] = {}
        self.cached_bytes = 0

    def __len__(self) -> int:
        return len(self.subjects)

    def fill(self) -> None:
        """Decode, check and preprocess every subject once (cached while within budget)."""
        for index in range(len(self.subjects)):
            self.get(index)

    def get(self, index: int) -> tio.Subject:
        """The preprocessed subject ``index`` (a cached object: do not modify in place)."""
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        subject = self.subjects[index]
        if subject.load is not None:
            subject = _fresh_copy(subject)
        check_subject(subject, self.whats)
        image, what = _image(subject, "image"), self.whats.get("image", "image")
        raw = image.data
        check_intensities(raw, None, _file(image), what)
        with torch.random.fork_rng(devices=[]):  # TorchIO draws a number per transform: not from ours
            subject = self.preprocess(subject)
        image = _image(subject, "image")
        check_intensities(raw, image.data, _file(image), what)
        size = _nbytes(subject)
        if self.cached_bytes + size <= self.budget:
            self._cache[index] = subject
            self.cached_bytes += size
        return subject


def _fresh_copy(subject: tio.Subject) -> tio.Subject:
    """A copy of an unloaded subject, so reading does not keep the raw volume around."""
    images = {key: type(img)(img.path) for key, img in subject.get_images_dict(intensity_only=False).items()}
    return tio.Subject(subject=subject["subject"], **images)


def _as_sample(subject: tio.Subject) -> dict[str, Any]:
    sample: dict[str, Any] = {"subject": subject["subject"]}
    for key, image in subject.get_images_dict(intensity_only=False).items():
        data = image.data
        sample[key] = data.float() if key == "image" else data.to(torch.int64)
    return sample


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of the random draws (flips, patch position) of subject ``index`` in ``epoch``."""
    return int(np.random.SeedSequence([int(seed) % 2**63, int(epoch), int(index)]).generate_state(1, np.uint64)[0])


def patch_start_around(voxel: Sequence[int], patch_size: Sequence[int], size: Sequence[int]) -> tuple[int, int, int]:
    """The corner of a ``patch_size`` patch centred on ``voxel``, then moved inside a volume of
    ``size`` (a voxel near the border sits off-centre but inside)."""
    return cast("tuple[int, int, int]", tuple(int(min(max(v - p // 2, 0), s - p))
                                              for v, p, s in zip(voxel, patch_size, size)))


def foreground_patch_start(label: torch.Tensor, patch_size: Sequence[int]) -> tuple[int, int, int] | None:
    """The corner of a patch around a random foreground voxel (value 1) of ``label``
    ``(1, X, Y, Z)``, nnU-Net style: centred on the voxel, then moved inside the volume (so a
    voxel near the border sits off-centre but inside); ``None`` when there is no foreground.
    Draws from torch's global generator."""
    voxels = torch.nonzero(label[0] == 1)
    if len(voxels) == 0:
        return None
    voxel = voxels[int(torch.randint(len(voxels), (1,)).item())].tolist()
    return patch_start_around(voxel, patch_size, label.shape[1:])


class PatchDataset(Dataset):
    """Training items: one random patch of ``spatial_shape`` from each subject per epoch.

    Each item is a dict with ``subject`` (name) and one tensor per image: ``image`` float32
    ``(1, X, Y, Z)``, labels int64 ``(1, X, Y, Z)``. Its flips and patch position are drawn
    from :func:`item_seed` ``(seed, epoch, index)``; call :meth:`set_epoch` before each epoch
    (the training engine does).

    ``augmentation``: :func:`training_transform`'s, drawn from the same seed. The position is
    uniform over the volume (the paper), or with probability
    ``foreground_fraction`` around a random foreground voxel of ``foreground_key``
    (:func:`foreground_patch_start`; nnU-Net oversamples a third of its patches this way): with
    small lesions in large volumes a uniform patch rarely holds one. A subject without a
    foreground voxel gets a uniform patch.
    """

    def __init__(self, cache: SubjectCache, spatial_shape: Sequence[int], seed: int = 0,
                 foreground_fraction: float = 0.0, foreground_key: str = "seeds",
                 augmentation: str = "flips") -> None:
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
        self.cache = cache
        self.spatial_shape = tuple(spatial_shape)
        self.transform = training_transform(self.spatial_shape, augmentation)
        self.sampler = tio.UniformSampler(cast("tuple[int, int, int]", self.spatial_shape))
        self.seed = int(seed)
        self.epoch = 0
        self.foreground_fraction = float(foreground_fraction)
        self.foreground_key = foreground_key

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the next items (workers started afterwards copy it)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int) -> dict[str, Any]:
        subject = self.cache.get(index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, self.epoch, index))
            subject = self.transform(subject)
            start = None
            if self.foreground_fraction > 0 and float(torch.rand(1)) < self.foreground_fraction \
                    and self.foreground_key in subject:
                start = foreground_patch_start(_image(subject, self.foreground_key).data, self.spatial_shape)
            if start is None:
                patch = next(iter(self.sampler(subject, 1)))
            else:
                patch = self.sampler.extract_patch(subject, start)
        return _as_sample(patch)


class VolumeDataset(Dataset):
    """Whole preprocessed volumes (validation/inference), plus the original file's path."""

    def __init__(self, cache: SubjectCache) -> None:
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int) -> dict[str, Any]:
        subject = self.cache.get(index)
        sample = _as_sample(subject)
        sample["path"] = str(_image(subject, "image").path)
        return sample


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)


def make_training_loader(cache: SubjectCache, spatial_shape: Sequence[int], batch_size: int,
                         num_workers: int = 0, generator: torch.Generator | None = None,
                         sampler: Sampler | None = None, seed: int = 0,
                         foreground_fraction: float = 0.0, augmentation: str = "flips") -> DataLoader:
    """Shuffled loader of random patches, one pass over the subjects per epoch.

    ``drop_last`` is off: every subject is seen each epoch. Pass ``sampler`` for distributed
    training (then shuffling is the sampler's job). The order comes from ``generator`` (its
    state is saved in the checkpoints); the patches from ``seed``, the epoch (the dataset's
    ``set_epoch``) and the subject (:class:`PatchDataset`). Workers are started afresh each
    epoch, so they see the epoch set before it. ``foreground_fraction``, ``augmentation``:
    :class:`PatchDataset`.
    """
    dataset = PatchDataset(cache, spatial_shape, seed, foreground_fraction, augmentation=augmentation)
    return DataLoader(dataset, batch_size=batch_size,
                      shuffle=sampler is None, sampler=sampler, num_workers=num_workers,
                      worker_init_fn=_worker_init, generator=generator,
                      persistent_workers=False, drop_last=False)


def make_volume_loader(cache: SubjectCache, num_workers: int = 0,
                       sampler: Sampler | Iterable[int] | None = None) -> DataLoader:
    """Loader of whole volumes, batch size 1, in split order."""
    return DataLoader(VolumeDataset(cache), batch_size=1, shuffle=False, sampler=sampler,
                      num_workers=num_workers, persistent_workers=num_workers > 0)



def load_phase(dataset_split: Split | str | os.PathLike, phase: str, required: Sequence[ImageSource],
               optional: Sequence[ImageSource] = (), cache_gb: float = 8.0, fill: bool = True,
               check: bool = True) -> SubjectCache:
    """The subjects of one phase with a cache, checked and preprocessed up front.

    ``required`` sources must exist for every subject (else one error lists all missing files);
    an ``optional`` source is used only if it exists for every subject of the phase (a log line
    says when it is left out).
    """
    split = as_split(dataset_split)
    names = split.subjects(phase)
    if check:   # False: the caller has checked the required files (e.g. of every phase at once)
        check_files(split, [(phase, required)])
    sources = list(required)
    for src in optional:
        missing = find_missing(names, [src]) if Path(src.folder).is_dir() else None
        if missing is None:   # named by its flag: the paper's default folder, on one's own data
            logger.info("%s phase: %s not used (%s %s does not exist)", phase, src.what,
                        src.flags.split("/")[0] or "folder", src.folder)
        elif missing:
            logger.info("%s phase: %s not used (%d of %d file(s) missing, e.g. %s)", phase, src.what,
                        len(missing), len(names), missing[0].split(" ", 1)[-1])
        else:
            sources.append(src)
    cache = SubjectCache(make_subjects(split, phase, sources, check=False), cache_gb,
                         whats={s.key: s.what for s in sources})
    if fill:
        cache.fill()
    return cache


@dataclass(frozen=True)
class DataConfig:
    """Where a training run's data lives (the paper's data flags) and how it is loaded.

    ``val_metric``: what checkpoints are selected by (``dice``: full labels, ``seed_dice``:
    the expanded seeds); validation needs that reference and uses the other one if present.
    ``path_labels`` ``""``: there are no full labels (points only; then ``seed_dice``).
    ``train_on_all``: the split's validation cases train too (nnU-Net's fold ``all``); a split
    without validation cases trains this way by itself (:func:`load_training_data`).
    """

    dataset_split: str | os.PathLike
    path_images: str | os.PathLike
    image_postfix: str
    path_labels: str | os.PathLike
    label_postfix: str
    path_seeds: str | os.PathLike
    seeds_postfix: str
    val_metric: str = "dice"
    cache_gb: float = 8.0
    train_on_all: bool = False

    @property
    def has_labels(self) -> bool:
        """Whether full labels were given (``--path_labels ''``: none)."""
        return str(self.path_labels) != ""

    def sources(self) -> dict[str, ImageSource]:
        """The image, full label (when given) and expanded-seed sources."""
        src = {
            "image": ImageSource("image", self.path_images, self.image_postfix, False, "image",
                                 "--path_images/--image_postfix"),
            "label": ImageSource("label", self.path_labels, self.label_postfix, True, "label",
                                 "--path_labels/--label_postfix"),
            "seeds": ImageSource("seeds", self.path_seeds, self.seeds_postfix, True, "expanded-seed label",
                                 "--path_geodesic_labels/--geodesic_label_postfix"),
        }
        if not self.has_labels:
            del src["label"]
        return src

    def validation_sources(self, metric: str | None = None) -> tuple[list[ImageSource], list[ImageSource]]:
        """``(required, optional)`` sources of the validation phase when checkpoints are
        selected by ``metric`` (default ``val_metric``)."""
        src = self.sources()
        metric = metric or self.val_metric
        if metric == "dice" and not self.has_labels:
            raise ValueError("--val_metric dice selects checkpoints by Dice against full labels, but --path_labels is "
                             "'' (no labels); pass --val_metric seed_dice or the labels' folder")
        needed, extra = ("label", "seeds") if metric == "dice" else ("seeds", "label")
        return [src["image"], src[needed]], [src[extra]] if extra in src else []


@dataclass
class TrainingData:
    """The checked, preprocessed training and validation subjects of a run.

    ``val_metric``: what the best checkpoints are selected by; ``selection``: empty, or (a run
    that trains on every case and validates on its training cases, :func:`load_training_data`)
    the line saying why and what selects the best checkpoint, logged by :meth:`loaders`."""

    train: SubjectCache
    val: SubjectCache
    val_metric: str = "dice"
    selection: str = ""

    def loaders(self, spatial_shape: Sequence[int], batch_size: int, num_workers: int, seed: int,
                ctx: DistContext, generator: torch.Generator, foreground_fraction: float = 0.0,
                augmentation: str = "flips") -> tuple[DataLoader, DataLoader, DistributedSampler | None]:
        """Training patch loader (sharded under torchrun), validation volume loader (sharded)
        and the training sampler (``None`` when not distributed; call ``set_epoch`` on it)."""
        if self.selection:
            logger.info("%d training subjects, validated on themselves (validation uses: %s)", len(self.train),
                        ", ".join(self.val.whats.values()))
            logger.info("%s", self.selection)
        else:
            logger.info("%d training and %d validation subjects (validation uses: %s)", len(self.train),
                        len(self.val), ", ".join(self.val.whats.values()))
        if batch_size > (per_rank := -(-len(self.train) // ctx.world_size) if ctx.distributed else len(self.train)):
            logger.warning("--batch_size %d is more than the %d training case(s) each process sees per epoch: an epoch "
                           "is one batch of %d patch(es), one per case", batch_size, per_rank, per_rank)
        sampler: DistributedSampler | None = None
        if ctx.distributed:  # the sampler takes only len() of its dataset: the indices stand for the subjects
            sampler = DistributedSampler(cast("Dataset[int]", range(len(self.train))), ctx.world_size, ctx.rank,
                                         shuffle=True, seed=seed)
        train_loader = make_training_loader(self.train, spatial_shape, batch_size, num_workers,
                                            generator=generator, sampler=sampler, seed=seed,
                                            foreground_fraction=foreground_fraction, augmentation=augmentation)
        val_loader = make_volume_loader(self.val, sampler=shard_indices(len(self.val), ctx))
        return train_loader, val_loader, sampler


def _every_case_trains(split: Split) -> Split:
    """``split`` with its validation cases as training cases (inference cases unchanged)."""
    table = split.table.copy()
    table.loc[table["phase"] == "validation", "phase"] = "training"
    return Split(split.path, table)


def _selection_note(config: DataConfig, split: Split) -> str:
    """The log line of a run without validation cases: why, and what selects CP_best."""
    n_val = len(split.subjects("validation"))
    why = (f"--train_on_all_cases: the {n_val} validation case(s) of {split} train too" if n_val
           else f"split {split} lists no validation case")
    dice = (" (--val_metric dice needs validation cases; seed_dice is used)" if config.val_metric == "dice" else "")
    return (f"no validation cases ({why}): every case trains; CP_best is chosen by seed_dice against the training "
            f"cases' expanded seeds{dice}, which measures the fit to the seeds, not generalisation; CP_final holds "
            "the last epoch")


def load_training_data(config: DataConfig, train_keys: Sequence[str]) -> TrainingData:
    """Training subjects with the sources ``train_keys`` (e.g. ``image``, ``seeds``) and the
    validation subjects; every file of both phases checked first (all missing files listed in
    one error), then loaded and checked.

    With ``config.train_on_all``, or a split without validation cases, every training and
    validation case trains and the training cases are validated instead: checkpoints are then
    selected by ``seed_dice`` against their expanded seeds (the log says so)."""
    src = config.sources()
    train_sources = [src[k] for k in train_keys]
    split = Split.read(config.dataset_split)   # read once for the whole run
    all_cases = config.train_on_all or not split.subjects("validation")
    metric = "seed_dice" if all_cases else config.val_metric
    val_required, val_optional = config.validation_sources(metric)
    selection = _selection_note(config, split) if all_cases else ""
    if all_cases:
        split = _every_case_trains(split)
    val_phase = "training" if all_cases else "validation"
    hints = ({"label": "Without full masks, pass --val_metric seed_dice (checkpoints chosen by the expanded seeds)."}
             if metric == "dice" and "label" not in train_keys else {})
    check_files(split, [("training", train_sources), (val_phase, val_required)], hints)
    train = load_phase(split, "training", train_sources, cache_gb=config.cache_gb, check=False)
    if "seeds" in train_keys:
        if "label" in src and _same_files(src["seeds"], src["label"]):
            check_full_labels(train)
        check_training_seeds(train)
    if all_cases and {s.key for s in val_required + val_optional} <= set(train_keys):
        val = train   # the same subjects with the same images: one cache
    else:
        val = load_phase(split, val_phase, val_required, val_optional, cache_gb=config.cache_gb, check=False)
    return TrainingData(train, val, metric, selection)


def _same_files(a: ImageSource, b: ImageSource) -> bool:
    """Whether two sources name the same files (same folder and postfix)."""
    return a.postfix == b.postfix and os.path.realpath(a.folder) == os.path.realpath(b.folder)


def check_full_labels(cache: SubjectCache) -> None:
    """Full supervision (the expanded seeds are the full labels: ``--path_geodesic_labels`` and
    ``--geodesic_label_postfix`` name the ``--path_labels`` files) needs labels of 0 and 1: a
    multi-class label (e.g. a tumour's rim 1 and core 2) would have its 2s read as *unknown*
    and silently left out of the loss. Raises a one-line ``ValueError`` naming the file."""
    for index in range(len(cache)):
        seeds = _image(cache.get(index), "seeds")
        values = sorted(int(v) for v in torch.unique(seeds.data).tolist())
        if any(v > 1 for v in values):
            share = float((seeds.data > 1).float().mean())
            raise ValueError(f"label {seeds.path} is given as the expanded seeds too (full supervision: "
                             "--path_geodesic_labels/--geodesic_label_postfix name the --path_labels files) but "
                             f"holds values {values}: as seeds, 2 means unknown, so {share:.2%} of its voxels "
                             "would silently not be learned; binarise the labels (every value > 0 -> 1) into "
                             "another folder and pass that")


def check_training_seeds(cache: SubjectCache) -> None:
    """Training from expanded seeds needs annotated voxels: a case whose seeds are all unknown
    (2) adds nothing (a WARNING names it); when no training case has a foreground seed (1) the
    network can only learn background, so that is an error."""
    foreground = 0
    for index in range(len(cache)):
        seeds = _image(cache.get(index), "seeds")
        fg = int((seeds.data == 1).sum())
        foreground += fg
        if fg == 0 and not bool((seeds.data == 0).any()):
            logger.warning("expanded-seed label %s has no annotated voxel (every voxel is 2, unknown): this case "
                           "adds nothing to the training; re-run the geodesic expansion for it", seeds.path)
    if foreground == 0:
        raise ValueError(f"none of the {len(cache)} training case(s) has a foreground voxel (1) in its expanded "
                         f"seeds (e.g. {_image(cache.get(0), 'seeds').path}): the network would learn background only; "
                         "check --path_geodesic_labels or re-run the geodesic expansion")
