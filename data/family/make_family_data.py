"""A family of synthetic brain-lesion datasets, drawn from a family seed, to choose methods on.

One *family seed* fixes a whole dataset configuration (:class:`Member`, :func:`draw_member`):

* anatomy: the MNI ICBM152 2009a grey/white-matter maps shipped inside the ``nilearn`` wheel
  (a real MRI template; ``make install`` installs the wheel without its dependencies, only its
  data files are read), randomly scaled, rotated and shifted per case, or the synthetic brain
  of ``make_demo_data.py --preset brats_small``'s kind (deformed ellipsoid, cortical ribbon,
  ventricles, sulci);
* contrast: FLAIR-, T2- or T1-like tissue levels, skull-stripped (background exactly 0);
* lesions: 1-2 per case (stage 0 reads two lesions per case, points 1/2 and 3/4), from ~50
  voxels to ~8 % of the volume, hyper- or hypo-intense at a low to high contrast, homogeneous
  to heterogeneous (texture, a core of another level), with a sharp or blurred boundary;
* acquisition: isotropic to 5x anisotropic voxels, noise (Rician) and a bias field;
* size: 8-48 training cases, 4 validation and 8 inference cases, volumes larger than the
  patch a plan would choose (the voxel size keeps a volume at <= ~200k voxels for CPU runs).

The family seeds are split once, before any result was looked at (docs/results/family.md):
:data:`DEVELOPMENT_SEEDS` to choose methods and settings on,
:data:`HELD_BACK_SEEDS` for the report, run once at the end.

Layout (BraTS-like): ``<out>/image/<s>_img.nii.gz`` (float32, 0..1), ``<out>/label/<s>_seg.nii.gz``
(uint8, 1 = lesion), ``<out>/annotation_7points/<s>_7points.nii.gz`` (simulated points),
``<out>/split.csv`` (``subject,phase``, no header) and ``<out>/member.json`` (the drawn
configuration). A member depends only on its family seed; the same seed gives the same bytes.

``--raw_intensities`` writes the images as a scanner would: int16, the same image times a
per-case gain (0..1 becomes 0..1500-3000) plus a per-case offset (0-100, the background's
value), listed in ``<out>/intensities.csv``; labels and points are the same as without it.

Example::

    python data/family/make_family_data.py --family_seed 3 --output_dir ./family/f03
    python data/family/make_family_data.py --describe 0 1 2 3   # print the drawn configurations only
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import importlib.util
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from data.demo.synthesis import deformed_ellipsoid, largest_component, lesion_shape, smooth_noise, soft
from data.simulate_7points import simulate_points, subject_rng
from utilities.core.arguments import ArgumentParser
from utilities.data.grid import subject_path
from utilities.data.io import check_overwrite, ensure_writable_dir, save_csv, save_text, write_image
from utilities.data.splits import PHASES
from utilities.workflow.cli import LOGGER_NAME, nonnegative_int, setup_logger

__all__ = ["DEVELOPMENT_SEEDS", "HELD_BACK_SEEDS", "Member", "draw_member", "make_member_case", "template_maps",
           "generate_member", "raw_intensities", "IMAGE_POSTFIX", "LABEL_POSTFIX", "ANNOTATION_POSTFIX", "FOLDERS",
           "main"]

logger = logging.getLogger(LOGGER_NAME)

#: Family seeds to choose methods and settings on (declared before any run).
DEVELOPMENT_SEEDS = tuple(range(0, 8))
#: Family seeds held back for the report: run once, at the end, reported whatever they show.
HELD_BACK_SEEDS = tuple(range(100, 110))

IMAGE_POSTFIX, LABEL_POSTFIX, ANNOTATION_POSTFIX = "img", "seg", "7points"
FOLDERS = ("image", "label", "annotation_7points")

#: Tissue levels (white matter, grey matter, CSF) of each contrast, before bias and noise.
_LEVELS = {"flair": (330.0, 420.0, 110.0), "t2": (300.0, 380.0, 850.0), "t1": (620.0, 450.0, 180.0)}
#: Lesion sign per contrast: FLAIR and T2 lesions are bright, T1 lesions dark.
_SIGN = {"flair": 1.0, "t2": 1.0, "t1": -1.0}
_FOV_MM = np.array([150.0, 180.0, 150.0])   # brain field of view (x, y, z), mm
_MAX_VOXELS = 200_000
_TEMPLATE_FILES = {"gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
                   "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}
_FAMILY_TAG = 20260  # mixes the family seed into its own random stream
_RAW_TAG = 20261     # the stream of the raw intensities' gain and offset (apart from the cases')
#: Raw intensities: the 0..1 image times a gain in this range plus an offset in ``_RAW_OFFSET``.
_RAW_GAIN, _RAW_OFFSET = (1500.0, 3000.0), (0, 100)


@dataclass(frozen=True)
class Member:
    """One dataset configuration of the family (sizes in voxels (x, y, z), lengths in mm)."""

    family_seed: int
    anatomy: str                      # "template" (MNI ICBM152) or "synthetic"
    contrast: str                     # "flair", "t2" or "t1"
    spacing: tuple[float, float, float]
    size: tuple[int, int, int]
    counts: tuple[int, int, int]      # training, validation, inference cases
    lesion_voxels: float              # median lesion size of the member, voxels
    max_lesions: int                  # 1 or 2 per case
    lesion_contrast: float            # |lesion level / white matter - 1| at the boundary
    heterogeneity: float              # 0 homogeneous .. 1 textured, with a core of another level
    boundary_mm: float                # width of the lesion's blurred boundary
    noise: float                      # Rician sigma / white-matter level
    bias: float                       # bias-field strength

    @property
    def prefix(self) -> str:
        return f"fam{self.family_seed:03d}"


def _round16(n: float, lo: int = 16) -> int:
    return max(lo, int(math.ceil(n / 16.0)) * 16)


def draw_member(family_seed: int) -> Member:
    """The dataset configuration of ``family_seed`` (deterministic)."""
    rng = np.random.default_rng([_FAMILY_TAG, int(family_seed)])
    anatomy = "template" if rng.random() < 0.5 else "synthetic"
    contrast = str(rng.choice(list(_LEVELS)))
    anisotropy = float(np.exp(rng.uniform(0.0, np.log(5.0))))
    # in-plane voxel size: at least what keeps the volume at <= _MAX_VOXELS voxels
    floor = (float(np.prod(_FOV_MM)) / (_MAX_VOXELS * anisotropy)) ** (1 / 3)
    inplane = max(float(rng.uniform(1.5, 3.5)), floor)
    spacing = (round(inplane, 2), round(inplane, 2), round(min(inplane * anisotropy, 12.0), 2))
    size = tuple(_round16(f / s) for f, s in zip(_FOV_MM, spacing))
    n_train = int(round(np.exp(rng.uniform(np.log(8), np.log(48)))))
    volume = float(np.prod(size))
    lesion_voxels = float(np.exp(rng.uniform(np.log(50.0), np.log(0.08 * volume))))
    return Member(
        family_seed=int(family_seed), anatomy=anatomy, contrast=contrast, spacing=spacing,
        size=(int(size[0]), int(size[1]), int(size[2])), counts=(n_train, 4, 8),
        lesion_voxels=round(lesion_voxels, 1), max_lesions=int(rng.integers(1, 3)),
        lesion_contrast=round(float(rng.uniform(0.15, 0.9)), 3), heterogeneity=round(float(rng.uniform(0, 1)), 3),
        boundary_mm=round(float(rng.uniform(0.0, 3.0)), 2), noise=round(float(rng.uniform(0.02, 0.12)), 3),
        bias=round(float(rng.uniform(0.0, 0.4)), 3))


# --------------------------------------------------------------------------------------------
# Anatomy: tissue fractions (wm, gm, csf) and the brain mask on the case's grid, (z, y, x)
# --------------------------------------------------------------------------------------------
def _template_dir() -> Path:
    spec = importlib.util.find_spec("nilearn")   # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the MNI ICBM152 template comes with the nilearn wheel, which is not installed; "
                                "run `make install` (or `pip install --no-deps nilearn==0.14.1`)")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


@lru_cache(maxsize=1)
def template_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(wm, gm, csf) fractions of the MNI ICBM152 2009a template on its 1 mm grid, arrays in
    (x, y, z) order as stored; CSF = the filled brain hull minus grey and white matter."""
    folder = _template_dir()
    maps = {}
    for key, name in _TEMPLATE_FILES.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"template file not found: {path}; reinstall nilearn 0.14.1 (`make install`)")
        maps[key] = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0).astype(np.float32) / 255.0
    tissue = ndimage.gaussian_filter(maps["gm"] + maps["wm"], 2.0)
    hull = ndimage.binary_fill_holes(ndimage.binary_closing(tissue > 0.3, iterations=3))
    csf = np.clip(hull - maps["gm"] - maps["wm"], 0.0, 1.0).astype(np.float32)
    return maps["wm"], maps["gm"], csf


def _template_anatomy(rng: np.random.Generator, shape: tuple[int, ...], sp: np.ndarray) -> np.ndarray:
    """(3, Z, Y, X) fractions (wm, gm, csf) of the template under a random similarity transform."""
    wm, gm, csf = template_maps()
    centre_t = (np.array(wm.shape) - 1) / 2.0 + np.array([0.0, 17.0, 10.0])  # brain centre, template voxels (x y z)
    angles = np.deg2rad(rng.uniform(-8, 8, size=3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rot = (np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
           @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]))
    scale = rng.uniform(0.88, 1.08, size=3)
    shift = rng.uniform(-4, 4, size=3)
    sp_xyz = sp[::-1]
    shape_xyz = np.array(shape[::-1])
    # template position (1 mm voxels) of output voxel v: centre_t + rot @ (scale * ((v - c_out) * sp)) + shift
    matrix = rot @ np.diag(scale * sp_xyz)
    offset = centre_t + shift - matrix @ ((shape_xyz - 1) / 2.0)
    out = [ndimage.affine_transform(m, matrix, offset, output_shape=tuple(shape_xyz), order=1, mode="constant")
           for m in (wm, gm, csf)]
    return np.stack([o.transpose(2, 1, 0) for o in out]).astype(np.float32)


def _synthetic_anatomy(rng: np.random.Generator, shape: tuple[int, ...], sp: np.ndarray) -> np.ndarray:
    """(3, Z, Y, X) fractions (wm, gm, csf) of a synthetic brain: a deformed ellipsoid with a
    cortical ribbon, sulcal CSF and two lateral ventricles."""
    pos = (np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
           - (np.array(shape) - 1) / 2.0) * sp
    semi_brain = np.array([64.0, 85.0, 68.0]) * rng.uniform(0.88, 1.05, size=3)   # (z, y, x) mm
    brain = deformed_ellipsoid(rng, pos, semi_brain, 0.06) <= 1.0
    depth = ndimage.distance_transform_edt(brain, sampling=sp)
    ribbon = rng.uniform(2.5, 4.5) + 1.5 * smooth_noise(rng, shape, 4.0, sp)
    gm = soft(depth - ribbon, 0.8) * brain
    sulci = soft(depth - (0.8 + 1.2 * np.clip(smooth_noise(rng, shape, 2.0, sp), 0, None)), 0.4) * brain
    vent = np.zeros(shape)
    gap = rng.uniform(4.0, 8.0)
    vent_semi = np.array([rng.uniform(8.0, 14.0), rng.uniform(18.0, 26.0), rng.uniform(5.0, 8.0)])
    for side in (-1, 1):
        at = np.array([rng.uniform(-4, 4), rng.uniform(-6, 6), side * (gap + vent_semi[2])])
        r = deformed_ellipsoid(rng, pos - at, vent_semi, 0.2)
        vent = np.maximum(vent, soft((r - 1.0) * vent_semi.min(), 0.5))
    csf = np.maximum(vent, sulci)
    gm = gm * (1 - csf)
    wm = np.clip(brain - gm - csf, 0, 1)
    return np.stack([wm, gm, csf]).astype(np.float32)


# --------------------------------------------------------------------------------------------
# One case
# --------------------------------------------------------------------------------------------
def _place_lesion(rng: np.random.Generator, brain: np.ndarray, taken: np.ndarray, sp: np.ndarray,
                  diameter: float) -> np.ndarray | None:
    """A lesion mask of about ``diameter`` mm inside the brain, away from ``taken``; None when no room."""
    shape = brain.shape
    depth = ndimage.distance_transform_edt(brain, sampling=sp)
    bound = diameter / 2.0 * 1.3
    allowed = depth > min(bound * 0.8, 0.6 * float(depth.max()))
    if taken.any():
        allowed &= ndimage.distance_transform_edt(~taken, sampling=sp) > bound + 4.0
    candidates = np.argwhere(allowed)
    if len(candidates) == 0:
        return None
    centre = candidates[rng.integers(len(candidates))]
    half = np.ceil(bound / sp).astype(np.int64) + 1
    local_idx = np.stack(np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij"), axis=-1)
    local = largest_component(lesion_shape(rng, local_idx * sp, diameter))
    idx = np.argwhere(local) - half + centre
    idx = idx[np.all((idx >= 0) & (idx < np.array(shape)), axis=1)]
    lesion = np.zeros(shape, dtype=bool)
    lesion[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    lesion &= brain
    if lesion.sum() < 8:
        return None
    components, count = ndimage.label(lesion, structure=np.ones((3, 3, 3), dtype=bool))
    if count > 1:   # clipped by the brain into pieces: keep the largest
        sizes = np.bincount(components.ravel())[1:]
        lesion = components == int(np.argmax(sizes)) + 1
    return lesion


def make_member_case(member: Member, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One case of ``member``: ``(image, label)`` in SimpleITK order (z, y, x), float32 in 0..1
    (background exactly 0) and uint8 (1 = lesion; separate 26-connected lesions)."""
    shape = tuple(reversed(member.size))
    sp = np.array(member.spacing[::-1], dtype=np.float64)
    anatomy = (_template_anatomy if member.anatomy == "template" else _synthetic_anatomy)(rng, shape, sp)
    wm, gm, csf = anatomy
    brain = (wm + gm + csf) > 0.5
    l_wm, l_gm, l_csf = _LEVELS[member.contrast]
    l_wm *= rng.uniform(0.95, 1.05)
    texture = 1 + 0.05 * smooth_noise(rng, shape, 3.0, sp)
    image = (wm * l_wm + gm * l_gm + csf * l_csf) * texture

    voxel_mm3 = float(np.prod(sp))
    label = np.zeros(shape, dtype=np.uint8)
    taken = np.zeros(shape, dtype=bool)
    n_lesions = 1 if member.max_lesions == 1 or rng.random() < 0.5 else 2
    sign = _SIGN[member.contrast]
    for k in range(n_lesions):
        voxels = member.lesion_voxels * float(np.exp(rng.uniform(-0.5, 0.5))) * (0.6 if k else 1.0)
        diameter = max((6.0 * voxels * voxel_mm3 / math.pi) ** (1 / 3), 2.5 * float(sp.min()))
        lesion = _place_lesion(rng, brain, taken, sp, diameter)
        if lesion is None:
            if k == 0:
                raise ValueError(f"family seed {member.family_seed}: no room for a lesion of {diameter:.1f} mm "
                                 "inside the brain")
            break
        label[lesion] = 1
        taken |= lesion
        contrast = member.lesion_contrast * rng.uniform(0.85, 1.15)
        h = member.heterogeneity
        depth = ndimage.distance_transform_edt(lesion, sampling=sp)
        core = np.clip(depth / max(diameter / 4.0, 1e-6), 0, 1)
        core_shift = h * rng.uniform(-0.6, 0.6) * core            # a core of another level
        inner = l_wm * (1 + sign * contrast + core_shift) * (1 + (0.03 + 0.25 * h) * smooth_noise(rng, shape, 1.5, sp))
        if member.boundary_mm > 0:   # blurred boundary: the level fades over boundary_mm around the label's edge
            outside = ndimage.distance_transform_edt(~lesion, sampling=sp)
            signed = np.where(lesion, -depth, outside)
            weight = soft(signed, member.boundary_mm / 2.5)
        else:
            weight = lesion.astype(np.float64)
        image = image * (1 - weight * brain) + np.where(brain, weight * inner, 0.0)
    if not label.any():
        raise ValueError(f"family seed {member.family_seed}: a case without lesion")

    image = ndimage.gaussian_filter(image * brain, sigma=0.45, mode="nearest")
    pos = (np.stack(np.meshgrid(*[np.linspace(-0.5, 0.5, n) for n in shape], indexing="ij"), axis=-1))
    bias = np.exp(member.bias * (pos @ rng.uniform(-1, 1, size=3) + (pos ** 2) @ rng.uniform(-1, 1, size=3)))
    image = image * bias * rng.uniform(0.9, 1.1)
    sigma = member.noise * l_wm
    image = np.hypot(image + sigma * rng.standard_normal(shape), sigma * rng.standard_normal(shape))
    image = np.clip(np.round(image), 1.0, 1000.0) * brain
    return (image / 1000.0).astype(np.float32), label


def raw_intensities(image: np.ndarray, family_seed: int, index: int) -> tuple[np.ndarray, float, int]:
    """``(raw, gain, offset)``: a case's 0..1 image as a scanner would store it, int16
    ``round(image * gain) + offset`` with the gain and offset drawn for case ``index`` of the
    member from their own stream (the case itself is unchanged)."""
    rng = np.random.default_rng([_RAW_TAG, int(family_seed), int(index)])
    gain = round(float(rng.uniform(*_RAW_GAIN)), 1)
    offset = int(rng.integers(_RAW_OFFSET[0], _RAW_OFFSET[1] + 1))
    return (np.round(image.astype(np.float64) * gain) + offset).astype(np.int16), gain, offset


def member_files(member: Member, output_dir: str | os.PathLike) -> list[Path]:
    """Every file :func:`generate_member` writes for ``member`` into ``output_dir`` (but
    ``intensities.csv``)."""
    out = Path(output_dir)
    subjects = [f"{member.prefix}_{i:03d}" for i in range(sum(member.counts))]
    return [out / "split.csv", out / "member.json", *(
        subject_path(out / folder, subject, postfix) for subject in subjects
        for folder, postfix in zip(FOLDERS, (IMAGE_POSTFIX, LABEL_POSTFIX, ANNOTATION_POSTFIX), strict=True))]


def generate_member(member: Member, output_dir: str | os.PathLike, raw: bool = False) -> pd.DataFrame:
    """Write every case of ``member`` (image, label, 7 points), ``split.csv`` and ``member.json``;
    with ``raw``, int16 images at scanner-like intensities (:func:`raw_intensities`) and
    ``intensities.csv``."""
    out = Path(output_dir)
    folders = [ensure_writable_dir(out / f) for f in FOLDERS]
    counts = member.counts
    subjects = [f"{member.prefix}_{i:03d}" for i in range(sum(counts))]
    phases = [p for p, n in zip(PHASES, counts) for _ in range(n)]
    reference = sitk.Image([int(s) for s in member.size], sitk.sitkUInt8)
    reference.SetSpacing([float(s) for s in member.spacing])
    scales = []
    for index, subject in enumerate(subjects):
        rng = subject_rng(member.family_seed, subject)
        image, label = make_member_case(member, rng)
        points = simulate_points(label, member.spacing[::-1], max_instances=2, jitter_mm=0.0, rng=rng, name=subject)
        if raw:
            image, gain, offset = raw_intensities(image, member.family_seed, index)
            scales.append({"subject": subject, "gain": gain, "offset": offset})
        for array, folder, postfix in zip((image, label, points), folders, (IMAGE_POSTFIX, LABEL_POSTFIX,
                                                                            ANNOTATION_POSTFIX)):
            img = sitk.GetImageFromArray(array)
            img.CopyInformation(reference)
            write_image(img, subject_path(folder, subject, postfix))
    split = pd.DataFrame({"subject": subjects, "phase": phases})
    save_csv(split, out / "split.csv", header=False)
    if raw:
        save_csv(pd.DataFrame(scales), out / "intensities.csv", index=False)
    save_text(json.dumps(asdict(member), indent=2) + "\n", out / "member.json")
    logger.info("family seed %d: wrote %d case(s) of %s voxels at %s mm (%s, %s anatomy) to %s", member.family_seed,
                len(subjects), list(member.size), list(member.spacing), member.contrast, member.anatomy, out)
    return split


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--family_seed", type=nonnegative_int, default=None, help="the member to write")
    p.add_argument("--output_dir", default=None, help="where to write it (default ./family/f<seed>)")
    p.add_argument("--describe", type=nonnegative_int, nargs="+", default=None,
                   help="print the configurations of these family seeds as JSON lines and exit")
    p.add_argument("--raw_intensities", action="store_true",
                   help="write int16 images at scanner-like intensities (a per-case gain and offset, "
                        "in intensities.csv) instead of float32 0..1")
    p.add_argument("--overwrite", action="store_true", help="replace the files of a member in --output_dir")
    return p


def main(argv: Sequence[str] | None = None) -> pd.DataFrame | None:
    args = build_parser().parse_args(argv)
    setup_logger(None)
    if args.describe is not None:
        for seed in args.describe:
            print(json.dumps(asdict(draw_member(seed))))
        return None
    if args.family_seed is None:
        raise ValueError("--family_seed is required (or --describe SEED ...)")
    output_dir = args.output_dir or f"./family/f{args.family_seed:03d}"
    member = draw_member(args.family_seed)
    check_overwrite(member_files(member, output_dir), "--output_dir", args.overwrite, "file")
    return generate_member(member, output_dir, raw=args.raw_intensities)


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
