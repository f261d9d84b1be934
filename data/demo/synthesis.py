"""Building blocks of the synthetic datasets (the demo's VS-like and BraTS-like cases in
``make_demo_data.py``, the dataset family in ``data/family/make_family_data.py``): smooth random
fields, deformed lesion shapes, tubes, soft edges, Rician noise and the checks of a case's size,
spacing and intensity range. Arrays in SimpleITK order (z, y, x); sizes in mm."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from utilities.workflow.cli import check_spatial_shape

#: Largest relative radial deformation of a lesion.
DEFORM_MAX = 0.3
#: The model's intensities are integers in 0..MAX_INTENSITY.
MAX_INTENSITY = 1000.0
#: The stored image is the model's 0..1000 intensities times ``intensity_max / 1000``.
DEFAULT_INTENSITY_MAX = 1.0


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_mm: float,
                  spacing_zyx: np.ndarray) -> np.ndarray:
    """Gaussian low-pass filtered white noise scaled to unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma_mm / spacing_zyx, mode="reflect")
    return (field - field.mean()) / max(float(field.std()), 1e-12)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly drawn 3 x 3 rotation matrix."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def unit_vector(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def radial_deformation(rng: np.random.Generator, directions: np.ndarray, amplitude: float) -> np.ndarray:
    """``1 + amplitude * h(u)`` with ``h`` a random smooth function of the unit direction
    ``u`` (a sum of 4 low-frequency sinusoids, scaled so that ``max |h| = 1`` over the given
    ``directions``, (..., 3))."""
    freqs = rng.normal(size=(4, 3))
    freqs *= rng.uniform(1.5, 4.0, size=(4, 1)) / np.linalg.norm(freqs, axis=1, keepdims=True)
    phases = rng.uniform(0, 2 * np.pi, size=4)
    weights = rng.uniform(0.5, 1.0, size=4)
    h = np.sin(directions @ freqs.T + phases) @ weights
    return 1.0 + amplitude * h / max(float(np.abs(h).max()), 1e-12)


def lesion_shape(rng: np.random.Generator, offsets_mm: np.ndarray, diameter: float) -> np.ndarray:
    """Boolean lesion mask at ``offsets_mm`` ((..., 3) positions relative to its centre).

    An ellipsoid of semi-axes ``diameter / 2 * (1, a, b)`` (a, b in [0.7, 1]) in a random
    orientation, its radius deformed by ``1 +- 0.15..0.3``, and in half the cases a tapered
    extension from the centre. Everything lies within ``diameter / 2 * (1 + DEFORM_MAX)`` mm
    of the centre.
    """
    radius = diameter / 2.0
    semi = radius * np.concatenate([[1.0], rng.uniform(0.7, 1.0, size=2)])
    local = offsets_mm @ random_rotation(rng)
    norm = np.linalg.norm(local, axis=-1, keepdims=True)
    directions = np.divide(local, norm, out=np.zeros_like(local), where=norm > 0)
    rho = np.linalg.norm(local / semi, axis=-1)
    mask = rho <= radial_deformation(rng, directions, rng.uniform(0.15, DEFORM_MAX))
    if rng.random() < 0.5:
        bound = radius * (1.0 + DEFORM_MAX)
        thickness = semi.min() * rng.uniform(0.3, 0.45)
        length = bound - thickness
        axis = unit_vector(rng)
        t = offsets_mm @ axis
        lateral = np.linalg.norm(offsets_mm - t[..., None] * axis, axis=-1)
        mask |= (t >= 0) & (t <= length) & (lateral <= thickness * (1.0 - 0.5 * np.clip(t / length, 0, 1)))
    return mask


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of ``mask``, holes filled."""
    components, count = ndimage.label(mask)
    if count == 0:
        raise ValueError("the generated lesion is empty (lesion too small for the voxel spacing)")
    sizes = np.bincount(components.ravel())[1:]
    return ndimage.binary_fill_holes(components == int(np.argmax(sizes)) + 1)


def tube_offset(points: np.ndarray, normal: np.ndarray, binormal: np.ndarray, distance: float) -> float:
    """Offset ``h`` along ``normal`` of a line (direction ``normal x binormal``) so that its
    closest approach to ``points`` ((K, 3), mm) is exactly ``distance`` on the ``+normal`` side."""
    a = points @ normal
    b = points @ binormal
    near = np.abs(b) < distance
    if not near.any():
        return float(a.max())
    return float(np.max(a[near] + np.sqrt(distance ** 2 - b[near] ** 2)))


def tube_distance(positions: np.ndarray, through: np.ndarray, direction: np.ndarray, normal: np.ndarray,
          curvature: float) -> np.ndarray:
    """Distance (mm) of ``positions`` (..., 3) to a curve through ``through`` along
    ``direction`` that bends by ``curvature * t**2`` towards ``normal`` (approximate for small
    curvature)."""
    rel = positions - through
    t = rel @ direction
    residual = rel - t[..., None] * direction - (curvature * t ** 2)[..., None] * normal
    return np.linalg.norm(residual, axis=-1)


def soft(distance: np.ndarray, width: float) -> np.ndarray:
    """Smooth step: 1 well inside (distance < 0), 0 well outside, over ``width`` mm."""
    return 1.0 / (1.0 + np.exp(np.clip(distance / width, -50, 50)))


def check_geometry(size_xyz: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, ...], np.ndarray]:
    size = check_spatial_shape(size_xyz, "--size", 16)
    spacing = np.asarray([float(s) for s in spacing], dtype=np.float64)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"--spacing needs three positive sizes in mm, got {list(np.atleast_1d(spacing))}")
    return size, spacing


def check_intensity_max(intensity_max: float) -> None:
    if not (np.isfinite(intensity_max) and intensity_max > 0):
        raise ValueError(f"--intensity_max must be a positive number, got {intensity_max}")


def lesion_offsets(rng: np.random.Generator, diameter: float, sp: np.ndarray) -> np.ndarray:
    """The voxel offsets (z, y, x) of a random lesion shape of ``diameter`` mm from its centre voxel."""
    bound = diameter / 2.0 * (1.0 + DEFORM_MAX)
    half = np.ceil(bound / sp).astype(np.int64) + 1
    local_idx = np.stack(np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij"), axis=-1)
    local = largest_component(lesion_shape(rng, local_idx * sp, diameter))
    return np.argwhere(local) - half


def rician(rng: np.random.Generator, image: np.ndarray, sigma_range: tuple[float, float]) -> np.ndarray:
    """Rician noise of a random level in ``sigma_range``."""
    sigma = rng.uniform(*sigma_range)
    return np.hypot(image + sigma * rng.standard_normal(image.shape), sigma * rng.standard_normal(image.shape))


def deformed_ellipsoid(rng: np.random.Generator, pos: np.ndarray, semi: Sequence[float],
                        amplitude: float) -> np.ndarray:
    """Normalised radius ``rho / (1 + amplitude h(u))`` of ``pos`` (..., 3 mm, relative to the centre)
    for an axis-aligned ellipsoid of semi-axes ``semi`` (mm) with a smooth radial deformation;
    inside where the result is <= 1."""
    scaled = pos / np.asarray(semi, dtype=np.float64)
    rho = np.linalg.norm(scaled, axis=-1)
    dirs = np.divide(scaled, rho[..., None], out=np.zeros_like(scaled), where=rho[..., None] > 0)
    return rho / radial_deformation(rng, dirs, amplitude)
