"""utilities/method/geodesic.py: the geodesic expansion of the 7-point annotations on arrays (the
files, the scripts and their settings record: tests/utilities/workflow/test_stage0.py)."""
from __future__ import annotations

import GeodisTK
import numpy as np
import pytest
from synth import ellipsoid_case as blob_case

from utilities.method.geodesic import expand_seeds, merge_labels

SHAPE = (12, 24, 24)  # (z, y, x), as SimpleITK arrays are


def bbox(mask):
    return tuple(slice(int(c.min()), int(c.max()) + 1) for c in np.nonzero(mask))


# ------------------------------------------------------------------------------ array level
def test_blob_core_is_foreground_background_is_not():
    image, annotation, inside = blob_case()
    label, distance = expand_seeds(image, annotation, (2.0, 1.0, 1.0), 0.5, 0.2)
    assert label.dtype == np.uint8 and distance.dtype == np.float32
    assert label.shape == distance.shape == SHAPE
    box = bbox(annotation > 0)
    in_box = np.zeros(SHAPE, bool)
    in_box[box] = True
    # 0 exactly outside the inclusive bounding box of the 7 points, 1 or 2 inside it.
    assert np.all(label[~in_box] == 0) and np.all(distance[~in_box] == 0)
    assert set(np.unique(label[in_box])) == {1, 2}
    assert inside[in_box].sum() == inside.sum()  # the blob lies inside the box
    assert (label[inside] == 1).mean() > 0.95
    assert (label[in_box & ~inside] == 1).mean() < 0.02
    # the seed label is the threshold on the box's distance
    d = distance[box]
    assert np.array_equal(label[box] == 1, d < 0.2 * d.max())
    assert distance[6, 12, 11] == 0


def test_matches_direct_geodistk_call_on_the_crop():
    image, annotation, _ = blob_case(noise=5.0, seed=1)
    spacing = (3.0, 0.7, 1.1)
    label, distance = expand_seeds(image, annotation, spacing, 0.3, 0.4)
    box = bbox(annotation > 0)
    oracle = GeodisTK.geodesic3d_raster_scan(np.ascontiguousarray(image[box]),
                                             np.ascontiguousarray(annotation[box] == 2, dtype=np.uint8),
                                             list(spacing), 0.3, 4)
    np.testing.assert_array_equal(distance[box], oracle)
    np.testing.assert_array_equal(label[box], np.where(oracle < 0.4 * oracle.max(), 1, 2))


def test_spacing_is_taken_in_the_array_axis_order():
    # weight 0: Euclidean distance, so the distances are hand-computable.
    image = np.zeros((7, 7, 7), np.float32)
    annotation = np.zeros((7, 7, 7), np.uint8)
    annotation[3, 3, 3] = 2
    annotation[0, 3, 3] = annotation[6, 3, 3] = annotation[3, 0, 3] = 1
    annotation[3, 6, 3] = annotation[3, 3, 0] = annotation[3, 3, 6] = 1
    _, distance = expand_seeds(image, annotation, (3.0, 1.0, 0.5), 0.0, 0.5)
    assert distance[4, 3, 3] == pytest.approx(3.0)
    assert distance[3, 4, 3] == pytest.approx(1.0)
    assert distance[3, 3, 5] == pytest.approx(1.0)
    # max distance: the corner, sqrt(9² + 3² + 1.5²) = 9.6; threshold 0.3 → 2.88
    label, _ = expand_seeds(image, annotation, (3.0, 1.0, 0.5), 0.0, 0.3)
    assert label[2, 3, 3] == 2 and label[3, 3, 0] == 1
    label_t, _ = expand_seeds(image, annotation, (0.5, 1.0, 3.0), 0.0, 0.3)
    assert label_t[2, 3, 3] == 1 and label_t[3, 3, 0] == 2


@pytest.mark.parametrize("a, b, expected", [
    (0, 0, 0), (0, 1, 1), (0, 2, 2),
    (1, 0, 1), (1, 1, 1), (1, 2, 1),
    (2, 0, 2), (2, 1, 1), (2, 2, 2),
])
def test_merge_labels_table(a, b, expected):
    merged = merge_labels(np.full((2, 2, 2), a, np.uint8), np.full((2, 2, 2), b, np.uint8))
    assert merged.dtype == np.uint8
    assert np.all(merged == expected)


def test_two_lesions_are_expanded_separately_and_merged():
    image, ann1, inside1 = blob_case(center=(5, 7, 7), radii=(3, 4, 4), shape=(12, 24, 28))
    image2, ann2, inside2 = blob_case(center=(6, 15, 18), radii=(3, 5, 5), shape=(12, 24, 28), seed=3)
    image = np.where(inside2, image2, image)
    annotation = ann1.copy()
    annotation[ann2 == 1] = 3
    annotation[ann2 == 2] = 4
    label, distance = expand_seeds(image, annotation, (2.0, 1.0, 1.0), 0.5, 0.2)
    lab1, d1 = expand_seeds(image, ann1, (2.0, 1.0, 1.0), 0.5, 0.2)
    lab2, d2 = expand_seeds(image, ann2, (2.0, 1.0, 1.0), 0.5, 0.2)
    np.testing.assert_array_equal(label, merge_labels(lab1, lab2))
    assert (label[inside1] == 1).mean() > 0.95 and (label[inside2] == 1).mean() > 0.95
    # the two boxes overlap here; distance is the smaller one there and each one alone elsewhere
    in1 = np.zeros(label.shape, bool)
    in1[bbox(ann1 > 0)] = True
    in2 = np.zeros(label.shape, bool)
    in2[bbox(ann2 > 0)] = True
    assert (in1 & in2).any()
    np.testing.assert_array_equal(distance[in1 & in2], np.minimum(d1, d2)[in1 & in2])
    np.testing.assert_array_equal(distance[in1 & ~in2], d1[in1 & ~in2])
    assert np.all(distance[~in1 & ~in2] == 0)


def test_zero_at_min_clears_voxels_at_the_image_minimum():
    image, annotation, inside = blob_case()
    image[:, :, :8] = -5.0  # below everything else: a padded border that cuts the box
    plain, _ = expand_seeds(image, annotation, (2.0, 1.0, 1.0), 0.5, 0.2)
    zeroed, _ = expand_seeds(image, annotation, (2.0, 1.0, 1.0), 0.5, 0.2, zero_at_min=True)
    at_min = image == image.min()
    assert (plain[at_min] > 0).any()
    assert np.all(zeroed[at_min] == 0)
    np.testing.assert_array_equal(zeroed[~at_min], plain[~at_min])


def test_array_level_checks():
    image, annotation, _ = blob_case()
    with pytest.raises(ValueError, match="no annotated points"):
        expand_seeds(image, np.zeros_like(annotation), (1, 1, 1), 0.5, 0.2)
    with pytest.raises(ValueError, match="spacing"):
        expand_seeds(image, annotation, (1, 1), 0.5, 0.2)
    with pytest.raises(ValueError, match="differs from image shape"):
        expand_seeds(image, annotation[:-1], (1, 1, 1), 0.5, 0.2)
    with pytest.raises(ValueError, match="geodesic_weight"):
        expand_seeds(image, annotation, (1, 1, 1), 1.5, 0.2)


# ------------------------------------------------------------------------------ points that cannot be right
def test_array_level_point_checks():
    image, annotation, _ = blob_case()
    fewer = annotation.copy()
    fewer[tuple(np.argwhere(annotation == 1)[0])] = 0
    with pytest.raises(ValueError, match=r"lesion 1 has 5 background point\(s\) \(value 1\), expected 6"):
        expand_seeds(image, fewer, (2.0, 1.0, 1.0), 0.5, 0.2)
    label, _ = expand_seeds(image, fewer, (2.0, 1.0, 1.0), 0.5, 0.2, allow_partial_points=True)
    assert (label == 1).any()
    outside = annotation.copy()
    outside[annotation == 2] = 0
    outside[6, 12, 20] = 2  # beyond the x-maximum background point (x = 17)
    with pytest.raises(ValueError, match=r"lesion 1: the foreground point \(value 2\) at array index \[6, 12, 20\] "
                                         r"lies outside the box \[2, 5, 5\]..\[10, 19, 17\] of its background points"):
        expand_seeds(image, outside, (2.0, 1.0, 1.0), 0.5, 0.2)
    label, _ = expand_seeds(image, outside, (2.0, 1.0, 1.0), 0.5, 0.2, allow_partial_points=True)
    assert label[6, 12, 20] == 1


def test_second_lesion_is_checked_too():
    image, ann1, _ = blob_case(center=(5, 7, 7), radii=(3, 4, 4), shape=(12, 24, 28))
    _, ann2, _ = blob_case(center=(6, 15, 18), radii=(3, 5, 5), shape=(12, 24, 28), seed=3)
    annotation = ann1.copy()
    annotation[ann2 == 1] = 3
    annotation[ann2 == 2] = 4
    annotation[tuple(np.argwhere(annotation == 3)[:2].T)] = 0
    with pytest.raises(ValueError, match=r"lesion 2 has 4 background point\(s\) \(value 3\)"):
        expand_seeds(image, annotation, (2.0, 1.0, 1.0), 0.5, 0.2)
