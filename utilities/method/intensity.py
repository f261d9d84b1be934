"""Intensity normalisations for stage 0: what the image looks like to the geodesic distance.

GeodisTK's raster scan (the one stage 0 uses) charges a step between neighbouring voxels of
length ``l`` mm and intensity difference ``dI`` the cost

    l / ((1 - lam) + lam / (|dI| + 1e-5))  =  l / (1 - lam) * s,
    s = (1 - lam)(|dI| + 1e-5) / ((1 - lam)(|dI| + 1e-5) + lam)  in [0, 1).

The share ``s`` depends on the intensity scale, not on the spacing (``l`` multiplies every
step alike): where ``|dI|`` is far below ``lam / (1 - lam)`` (1 at the paper's lam 0.5) a step
costs in proportion to its intensity change (the geodesic term decides), where it is far above
every step costs about ``l / (1 - lam)`` and the distance is Euclidean. Raw scanner values
(int16, hundreds to thousands) put almost every step in the Euclidean regime; the paper's data
were in a range where they did not. A normalisation brings a user's scan to such a range; each
is applied to the crop of one lesion's box, with statistics of the box or of the whole image.

Every normalisation here is affine in the intensities, so a scan and the same scan times a gain
plus an offset give the same seeds (up to float rounding).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["IntensityNormalisation", "NORMALISATIONS", "normalisation", "GEODESIC_REGIME_SHARE",
           "euclidean_step_counts", "euclidean_limit", "SCAN_DEFAULT", "SCAN_DEFAULT_REASON"]

Box = tuple[slice, ...]

#: A step whose cost is at least this share of its Euclidean limit ``l / (1 - lam)`` counts as
#: Euclidean: the geodesic term can raise it by at most 1 / 0.9 - 1 = 11 %.
GEODESIC_REGIME_SHARE = 0.9


@dataclass(frozen=True)
class IntensityNormalisation:
    """``none``: the raw intensities, as the paper's scripts use them. A variant overrides
    :meth:`scale` (the offset and the divisor of one lesion's crop)."""

    name: str = "none"
    reason: str = "the raw intensities (the paper's behaviour)"

    def scale(self, image: np.ndarray, crop: np.ndarray) -> tuple[float, float] | None:
        """``(offset, divisor)`` for ``(crop - offset) / divisor``; ``None``: leave the crop as is."""
        return None

    def crop(self, image: np.ndarray, box: Box) -> np.ndarray:
        """The (float32, C-contiguous) crop ``image[box]`` given to GeodisTK.

        Args:
            image: (A, B, C) intensities of the whole scan.
            box: the lesion's box, slices into ``image``.
        """
        crop = np.ascontiguousarray(image[box], dtype=np.float32)
        scale = self.scale(image, crop)
        if scale is None:
            return crop
        offset, divisor = scale
        if not np.isfinite(divisor) or divisor <= 0:
            divisor = 1.0   # a flat region: every difference is 0 whatever the divisor
        return np.ascontiguousarray((crop.astype(np.float64) - offset) / divisor, dtype=np.float32)


@dataclass(frozen=True)
class MinMax(IntensityNormalisation):
    """The whole image mapped to [0, 1] (its minimum to 0, its maximum to 1)."""

    def scale(self, image: np.ndarray, crop: np.ndarray) -> tuple[float, float] | None:
        lo, hi = float(image.min()), float(image.max())
        return lo, hi - lo


@dataclass(frozen=True)
class BoxPercentile(IntensityNormalisation):
    """The box's ``low``-th percentile to 0 and its ``high``-th to 1 (not clipped)."""

    low: float = 1.0
    high: float = 99.0

    def scale(self, image: np.ndarray, crop: np.ndarray) -> tuple[float, float] | None:
        lo, hi = np.percentile(crop.astype(np.float64), [self.low, self.high])
        return float(lo), float(hi - lo)


@dataclass(frozen=True)
class ZScoreForeground(IntensityNormalisation):
    """Zero mean and unit standard deviation over the image's foreground: the voxels above the
    image's minimum (a skull-stripped scan's brain; with air around the head, head and air
    above the lowest value)."""

    def scale(self, image: np.ndarray, crop: np.ndarray) -> tuple[float, float] | None:
        foreground = image[image > image.min()].astype(np.float64)
        if foreground.size == 0:
            return None
        return float(foreground.mean()), float(foreground.std())


@dataclass(frozen=True)
class BoxZScore(IntensityNormalisation):
    """Zero mean and unit standard deviation over the lesion's box."""

    def scale(self, image: np.ndarray, crop: np.ndarray) -> tuple[float, float] | None:
        values = crop.astype(np.float64)
        return float(values.mean()), float(values.std())


#: The normalisations by name (``--intensity``'s choices).
NORMALISATIONS: dict[str, IntensityNormalisation] = {n.name: n for n in (
    IntensityNormalisation(),
    MinMax("minmax", "the whole image to [0, 1], what rescaling a scan by hand does"),
    BoxPercentile("box_percentile", "robust percentiles (1st, 99th) of the lesion's box to 0 and 1: the "
                                    "box's own contrast, whatever the scanner's scale"),
    ZScoreForeground("zscore_fg", "z-scores over the image's foreground (voxels above its minimum), "
                                  "nnU-Net's MR normalisation"),
    BoxZScore("box_zscore", "z-scores over the lesion's box"),
)}


def normalisation(name: str | IntensityNormalisation) -> IntensityNormalisation:
    """The normalisation called ``name`` (a one-line ``ValueError`` listing the choices)."""
    if isinstance(name, IntensityNormalisation):
        return name
    if name not in NORMALISATIONS:
        raise ValueError(f"--intensity must be one of {sorted(NORMALISATIONS)}, got {name!r}")
    return NORMALISATIONS[name]


def euclidean_limit(weight: float) -> float:
    """The intensity step ``|dI|`` above which a GeodisTK step costs at least
    :data:`GEODESIC_REGIME_SHARE` of its Euclidean limit: ``s >= q`` where
    ``|dI| + 1e-5 >= q / (1 - q) * lam / (1 - lam)`` (9 lam / (1 - lam) for q 0.9);
    ``inf`` for lam 1 (intensity only), 0 for lam 0 (Euclidean by choice)."""
    q = GEODESIC_REGIME_SHARE
    if weight >= 1.0:
        return float("inf")
    return q / (1.0 - q) * weight / (1.0 - weight)


#: The 13 neighbour offsets of one raster-scan pass (the other 13 are their opposites).
_OFFSETS: tuple[tuple[int, int, int], ...] = tuple(
    (a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) > (0, 0, 0))


def _shifted(crop: np.ndarray, offset: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of neighbouring voxels at ``offset`` as two equally shaped views."""
    first = tuple(slice(0, n - o) if o >= 0 else slice(-o, n) for n, o in zip(crop.shape, offset))
    second = tuple(slice(o, n) if o >= 0 else slice(0, n + o) for n, o in zip(crop.shape, offset))
    return crop[first], crop[second]


def euclidean_step_counts(crop: np.ndarray, weight: float) -> tuple[int, int]:
    """``(euclidean, total)``: of the steps between 26-neighbours in ``crop`` (each pair once),
    how many cost at least :data:`GEODESIC_REGIME_SHARE` of their Euclidean limit at GeodisTK
    weight ``weight`` (``|dI| + 1e-5 >= euclidean_limit(weight)``)."""
    limit = euclidean_limit(weight)
    euclidean = total = 0
    values = np.asarray(crop, dtype=np.float32)
    for offset in _OFFSETS:
        a, b = _shifted(values, offset)
        step = np.abs(a - b) + np.float32(1e-5)
        euclidean += int(np.count_nonzero(step >= limit))
        total += int(step.size)
    return euclidean, total


#: The normalisation ``data/generate_geodesic_labels.py`` uses by default (a user's scans), with
#: the reason: chosen on the dataset family's development members at raw scanner intensities
#: (docs/results/stage0_intensity.md). The paper's two scripts keep ``none``.
SCAN_DEFAULT = "box_percentile"
SCAN_DEFAULT_REASON = ("on development members 0-7 at raw intensities (style brats) the highest mean seed Dice "
                       "(0.447 against 0.171 for none) among the normalisations with mean precision >= 0.80 "
                       "(0.823); minmax's 0.463 came at precision 0.797, the z-scores kept precision "
                       "(0.91-0.93) at Dice 0.27-0.32")
