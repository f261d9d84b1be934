"""The 7-point annotation simulator: hand-computed points, validity under jitter, the script."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import load_script, one_line

sim = load_script("data/simulate_7points.py")
simulate_points = sim.simulate_points


def box_mask(shape, *boxes) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    for box in boxes:
        mask[box] = 1
    return mask


def points_of(anno: np.ndarray, value: int) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in p) for p in np.argwhere(anno == value)}


# A 4 x 5 x 6 box (z 3..6, y 4..8, x 5..10) with spacing (2, 1, 1) mm in (z, y, x).
BOX_SHAPE = (10, 12, 14)
BOX = np.s_[3:7, 4:9, 5:11]
BOX_SPACING = (2.0, 1.0, 1.0)
# Farthest from the boundary: 3 mm (y = 6, x = 7 or 8, z = 4 or 5); all four tie with the
# centroid (4.5, 6, 7.5), first in raster order wins. Background: one voxel beyond each face, at
# the face voxel nearest the face centre (first in raster order among ties).
BOX_FOREGROUND = {(4, 6, 7)}
BOX_BACKGROUND = {(2, 6, 7), (7, 6, 7), (4, 3, 7), (4, 9, 7), (4, 6, 4), (4, 6, 11)}


def test_box_points_hand_computed():
    anno = simulate_points(box_mask(BOX_SHAPE, BOX), BOX_SPACING)
    assert anno.dtype == np.uint8 and anno.shape == BOX_SHAPE
    assert points_of(anno, 2) == BOX_FOREGROUND
    assert points_of(anno, 1) == BOX_BACKGROUND
    assert set(np.unique(anno)) == {0, 1, 2}


def brute_force_depth(mask: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) from each mask voxel to the nearest voxel outside it (or outside the image)."""
    padded = np.pad(mask != 0, 1)
    inside = np.argwhere(padded)
    outside = np.argwhere(~padded)
    d = np.sqrt((((inside[:, None, :] - outside[None, :, :]) * np.asarray(spacing)) ** 2).sum(-1)).min(1)
    depth = np.zeros(padded.shape)
    depth[tuple(inside.T)] = d
    return depth[1:-1, 1:-1, 1:-1]


def test_foreground_is_deepest_voxel_of_irregular_lesion():
    rng = np.random.default_rng(5)
    zz, yy, xx = np.meshgrid(np.arange(9), np.arange(11), np.arange(12), indexing="ij")
    mask = (((zz - 4) / 3.2) ** 2 + ((yy - 5) / 4.5) ** 2 + ((xx - 6) / 4.0) ** 2 < 1).astype(np.uint8)
    mask[4, 5:10, 6:11] = 1  # an appendix makes it irregular (not touching the border)
    mask &= rng.random(mask.shape) > 0.05
    mask[4, 5, 6] = 1
    from scipy import ndimage
    labels, _ = ndimage.label(mask, np.ones((3, 3, 3)))
    mask = (labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1).astype(np.uint8)
    spacing = (1.5, 0.8, 1.0)
    anno = simulate_points(mask, spacing)
    depth = brute_force_depth(mask, spacing)
    (fg,) = points_of(anno, 2)
    assert depth[fg] == pytest.approx(depth.max())
    check_background(anno, mask, value=1, exact=True)


# An L-shaped lesion: part A thick in z and thin in x, part B thin in z and long in x. With 2 mm
# slices B is deeper (3 mm vs 2 mm); with 2 mm along x, A is (3 mm vs 2 mm). Ties go to the voxel
# nearest the centroid (x ~ 6.7).
L_SHAPE = (12, 7, 20)
L_PARTS = (np.s_[1:10, 1:6, 1:4], np.s_[4:7, 1:6, 4:17])


@pytest.mark.parametrize("spacing, expected", [((2.0, 1.0, 1.0), (5, 3, 7)), ((1.0, 1.0, 2.0), (5, 3, 2))])
def test_foreground_depends_on_spacing(spacing, expected):
    mask = box_mask(L_SHAPE, *L_PARTS)
    anno = simulate_points(mask, spacing)
    assert points_of(anno, 2) == {expected}
    depth = brute_force_depth(mask, spacing)
    assert depth[expected] == pytest.approx(depth.max())
    check_background(anno, mask.astype(bool), 1, exact=True)


def check_background(anno: np.ndarray, lesion: np.ndarray, value: int, exact: bool) -> None:
    """Six points outside the label and beyond the lesion's bounding box, one per side of each axis;
    with ``exact``, each exactly one voxel beyond an extreme voxel of the lesion."""
    points = np.argwhere(anno == value)
    assert len(points) == 6
    idx = np.argwhere(lesion)
    lo, hi = idx.min(0), idx.max(0)
    assert not lesion[tuple(points.T)].any()
    for axis in range(3):
        below = points[points[:, axis] < lo[axis]]
        above = points[points[:, axis] > hi[axis]]
        assert len(below) >= 1 and len(above) >= 1
        if exact:
            assert len(below) == len(above) == 1
            for p, step in ((below[0], 1), (above[0], -1)):
                q = p.copy()
                q[axis] += step
                assert lesion[tuple(q)]  # one voxel beyond an extreme voxel


def two_lesions_and_a_speck() -> np.ndarray:
    return box_mask((12, 16, 20), np.s_[2:7, 3:9, 2:8], np.s_[6:10, 10:14, 12:16], np.s_[10:11, 1:2, 18:19])


def test_two_lesions_and_ignored_third(caplog):
    mask = two_lesions_and_a_speck()
    caplog.set_level(logging.INFO, logger="paseg")
    logging.getLogger("paseg").addHandler(caplog.handler)
    try:
        anno = simulate_points(mask, (1.0, 1.0, 1.0), max_instances=2, name="case_7")
    finally:
        logging.getLogger("paseg").removeHandler(caplog.handler)
    assert "case_7: 1 connected component(s) of [1] voxel(s) ignored" in caplog.text
    values, counts = np.unique(anno, return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist())) == {0: anno.size - 14, 1: 6, 2: 1, 3: 6, 4: 1}
    big = box_mask(mask.shape, np.s_[2:7, 3:9, 2:8]).astype(bool)  # 180 voxels: lesion 1
    small = box_mask(mask.shape, np.s_[6:10, 10:14, 12:16]).astype(bool)  # 64 voxels: lesion 2
    assert big[tuple(np.argwhere(anno == 2)[0])] and small[tuple(np.argwhere(anno == 4)[0])]
    check_background(anno, big, 1, exact=True)
    check_background(anno, small, 3, exact=True)
    assert not anno[10, 1, 18]

    three = simulate_points(mask, (1.0, 1.0, 1.0), max_instances=3)
    assert (three == 6).sum() == 1 and (three == 5).sum() == 6 and three[10, 1, 18] == 6
    one = simulate_points(mask, (1.0, 1.0, 1.0), max_instances=1)
    assert set(np.unique(one)) == {0, 1, 2}


def test_diagonal_contact_is_one_lesion():
    mask = box_mask((10, 10, 10), np.s_[2:4, 2:4, 2:4], np.s_[4:6, 4:6, 4:6])  # touch at a corner only
    anno = simulate_points(mask, (1.0, 1.0, 1.0))
    assert set(np.unique(anno)) == {0, 1, 2}
    check_background(anno, mask.astype(bool), 1, exact=True)


def test_background_points_of_close_lesions_do_not_collide():
    # x-max of the first and x-min of the second lesion share the voxel x = 5 at the same (z, y)
    mask = box_mask((7, 7, 11), np.s_[2:5, 2:5, 2:5], np.s_[2:5, 2:5, 6:9])
    anno = simulate_points(mask, (1.0, 1.0, 1.0))
    assert (anno == 1).sum() == 6 and (anno == 3).sum() == 6
    assert not mask[anno % 2 == 1].any()


def test_lesion_on_the_border_clamps_to_the_border_slice():
    mask = box_mask((6, 8, 8), np.s_[0:3, 2:5, 2:5])
    anno = simulate_points(mask, (1.0, 1.0, 1.0))
    background = points_of(anno, 1)
    # z-min: clamped to z = 0, moved to the nearest voxel outside the label (2 voxels away)
    assert (0, 1, 3) in background
    assert {(3, 3, 3), (0, 1, 3), (1, 5, 3), (1, 3, 1), (1, 3, 5)} <= background  # y/x extremes at z = 1
    assert len(background) == 6 and not mask[tuple(np.array(sorted(background)).T)].any()


def test_impossible_border_point_is_an_error():
    mask = box_mask((4, 5, 5), np.s_[0:2, :, :])  # fills the whole z = 0 slice
    with pytest.raises(ValueError,
                       match=r"case_9: no voxel outside the label below the minimum of lesion 1 along axis 0"):
        simulate_points(mask, (1.0, 1.0, 1.0), name="case_9")


def test_empty_mask_and_bad_arguments():
    with pytest.raises(ValueError, match="case_1: the label is empty"):
        simulate_points(np.zeros((4, 4, 4)), (1, 1, 1), name="case_1")
    with pytest.raises(ValueError, match="must be 3D"):
        simulate_points(np.ones((4, 4)), (1, 1, 1))
    with pytest.raises(ValueError, match="max_instances"):
        simulate_points(np.ones((4, 4, 4)), (1, 1, 1), max_instances=0)
    with pytest.raises(ValueError, match="jitter_mm"):
        simulate_points(np.ones((4, 4, 4)), (1, 1, 1), jitter_mm=-1.0)
    with pytest.raises(ValueError, match="spacing"):
        simulate_points(np.ones((4, 4, 4)), (1, 0, 1))


def test_jitter_stays_valid_and_is_seeded():
    mask = two_lesions_and_a_speck()
    spacing = (2.0, 1.0, 0.8)
    plain = simulate_points(mask, spacing)
    big = box_mask(mask.shape, np.s_[2:7, 3:9, 2:8]).astype(bool)
    small = box_mask(mask.shape, np.s_[6:10, 10:14, 12:16]).astype(bool)
    changed = 0
    for seed in range(8):
        anno = simulate_points(mask, spacing, jitter_mm=2.5, rng=np.random.default_rng(seed))
        again = simulate_points(mask, spacing, jitter_mm=2.5, rng=np.random.default_rng(seed))
        np.testing.assert_array_equal(anno, again)
        changed += not np.array_equal(anno, plain)
        for lesion, fg_value in ((big, 2), (small, 4)):
            (fg,) = np.argwhere(anno == fg_value)
            (fg0,) = np.argwhere(plain == fg_value)
            assert lesion[tuple(fg)]
            assert np.linalg.norm((fg - fg0) * spacing) <= 2.5 + 1e-9
            check_background(anno, lesion, fg_value - 1, exact=False)
            for p0 in np.argwhere(plain == fg_value - 1):  # each point moved by at most 2.5 mm
                moved = np.argwhere(anno == fg_value - 1)
                assert np.linalg.norm((moved - p0) * spacing, axis=1).min() <= 2.5 + 1e-9
    assert changed == 8


# ----------------------------------------------------------------------------- the script

DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def write_label(path, array_zyx, spacing_xyz=(1.0, 1.0, 2.0)):
    image = sitk.GetImageFromArray(array_zyx.astype(np.uint8))
    image.SetSpacing(spacing_xyz)
    image.SetOrigin((3.0, -4.0, 5.0))
    image.SetDirection(DIRECTION)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return image


@pytest.fixture()
def labelled(tmp_path):
    labels = tmp_path / "label_crop"
    write_label(labels / "s1_Label.nii.gz", box_mask(BOX_SHAPE, BOX))  # spacing (z, y, x) = (2, 1, 1)
    write_label(labels / "s2_Label.nii.gz", two_lesions_and_a_speck(), spacing_xyz=(0.8, 1.0, 2.0))
    write_label(labels / "s3_Label.nii.gz", box_mask(L_SHAPE, *L_PARTS))  # spacing (z, y, x) = (2, 1, 1)
    split = tmp_path / "split.csv"
    split.write_text("s1,training\ns2,inference\ns3,validation\n")
    return tmp_path, split, labels


def run(tmp_path, split, labels, out, *extra):
    return sim.main(["--dataset_split", str(split), "--path_labels", str(labels), "--label_postfix", "Label",
                     "--path_anno_7points", str(out), "--anno_7points_postfix", "7points", *extra])


def test_script_writes_annotations_in_label_geometry(labelled):
    tmp_path, split, labels = labelled
    written = run(tmp_path, split, labels, tmp_path / "anno")
    assert [p.name for p in written] == ["s1_7points.nii.gz", "s2_7points.nii.gz", "s3_7points.nii.gz"]
    anno1 = sitk.ReadImage(str(tmp_path / "anno" / "s1_7points.nii.gz"))
    label1 = sitk.ReadImage(str(labels / "s1_Label.nii.gz"))
    assert anno1.GetPixelID() == sitk.sitkUInt8
    assert anno1.GetSize() == label1.GetSize()
    np.testing.assert_allclose(anno1.GetDirection(), DIRECTION)
    np.testing.assert_allclose(anno1.GetOrigin(), (3.0, -4.0, 5.0))
    np.testing.assert_allclose(anno1.GetSpacing(), (1.0, 1.0, 2.0))
    arr1 = sitk.GetArrayFromImage(anno1)
    # the NIfTI spacing (x, y, z) = (1, 1, 2) is the (z, y, x) = (2, 1, 1) of the hand-computed case
    assert points_of(arr1, 2) == BOX_FOREGROUND and points_of(arr1, 1) == BOX_BACKGROUND
    arr2 = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "anno" / "s2_7points.nii.gz")))
    assert {v: int((arr2 == v).sum()) for v in (1, 2, 3, 4, 5, 6)} == {1: 6, 2: 1, 3: 6, 4: 1, 5: 0, 6: 0}
    # 2 mm slices (NIfTI z): the foreground point is in the thin, long part (read in the right axis order)
    arr3 = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "anno" / "s3_7points.nii.gz")))
    assert points_of(arr3, 2) == {(5, 3, 7)}


def test_script_is_deterministic_per_seed_and_phase(labelled):
    tmp_path, split, labels = labelled
    run(tmp_path, split, labels, tmp_path / "a", "--jitter_mm", "2", "--seed", "7")
    run(tmp_path, split, labels, tmp_path / "b", "--jitter_mm", "2", "--seed", "7", "--phase", "inference")
    run(tmp_path, split, labels, tmp_path / "c", "--jitter_mm", "2", "--seed", "8")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["s2_7points.nii.gz"]

    def read(folder, name):
        return sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / folder / name)))

    # same seed: same file, whether or not the other subjects are processed
    np.testing.assert_array_equal(read("a", "s2_7points.nii.gz"), read("b", "s2_7points.nii.gz"))
    assert not np.array_equal(read("a", "s2_7points.nii.gz"), read("c", "s2_7points.nii.gz"))
    label2 = sitk.ReadImage(str(labels / "s2_Label.nii.gz"))
    expected = simulate_points(sitk.GetArrayFromImage(label2), label2.GetSpacing()[::-1], jitter_mm=2.0,
                               rng=sim.subject_rng(7, "s2"))
    np.testing.assert_array_equal(read("a", "s2_7points.nii.gz"), expected)


def test_script_errors_name_the_file(labelled):
    tmp_path, split, labels = labelled
    write_label(labels / "s1_Label.nii.gz", np.zeros(BOX_SHAPE))
    with pytest.raises(ValueError, match=r"s1 \(.*s1_Label.nii.gz\): the label is empty"):
        run(tmp_path, split, labels, tmp_path / "anno")
    split.write_text("s1,training\ns5,training\ns4,validation\n")
    with pytest.raises(FileNotFoundError, match=r"2 label file\(s\).*s5_Label.nii.gz.*s4_Label.nii.gz"):
        run(tmp_path, split, labels, tmp_path / "anno")


def test_script_warns_about_lesions_left_out(labelled, capsys):
    """s2 holds a third component (1 voxel): the script says that stage 0 makes it background."""
    tmp_path, split, labels = labelled
    run(tmp_path, split, labels, tmp_path / "anno")
    warnings = [line for line in capsys.readouterr().out.splitlines() if " WARNING " in line]
    assert len(warnings) == 1
    assert warnings[0].split(" WARNING ", 1)[1] == (
        "1 subject(s) have more lesions (connected components of the label) than the 2 annotated (the largest): s2 "
        "(1 left out, of 1 voxel(s)); stage 0 marks the lesions left out as certain background where they lie outside "
        "the annotated lesions' boxes, so training learns them as background: move these subjects out of the "
        "split's training phase, or remove the components from the label if they are no lesions")
    run(tmp_path, split, labels, tmp_path / "one", "--max_instances", "1")
    warning = next(line for line in capsys.readouterr().out.splitlines() if " WARNING " in line)
    assert ("1 subject(s) have more lesions (connected components of the label) than the 1 annotated (the largest): "
            "s2 (2 left out, of 64, 1 voxel(s))") in warning
    assert "pass --max_instances 2 (stage 0 reads at most 2 lesions per subject), or move" in warning


def test_script_refuses_more_lesions_than_stage0_reads(labelled):
    tmp_path, split, labels = labelled
    with pytest.raises(ValueError) as err:
        run(tmp_path, split, labels, tmp_path / "anno", "--max_instances", "3")
    assert one_line(err) == ("--max_instances 3: stage 0 (generate_geodesic_labels.py) reads at most 2 lesions per "
                             "subject (values 1,2 and 3,4) and refuses an annotation with more; pass --max_instances 2 "
                             "or less")
    assert not (tmp_path / "anno").exists()


@pytest.mark.parametrize("ext", [".nii", ".mha", ".nrrd", ".mhd"])
def test_script_an_annotation_in_any_format_needs_overwrite(labelled, ext):
    tmp_path, split, labels = labelled
    out = tmp_path / "anno"
    out.mkdir()
    label = sitk.ReadImage(str(labels / "s1_Label.nii.gz"))
    earlier = out / f"s1_7points{ext}"
    sitk.WriteImage(sitk.Cast(label, sitk.sitkUInt8), str(earlier))
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(FileExistsError) as err:
        run(tmp_path, split, labels, out)
    assert one_line(err) == (f"1 annotation(s) exist already, e.g. {earlier}; pass --overwrite to replace them, or "
                             "choose another --path_anno_7points")
    assert sorted(p.name for p in out.iterdir()) == before
    # --overwrite with a subject that fails: nothing written, nothing removed
    write_label(labels / "s3_Label.nii.gz", np.zeros(L_SHAPE))
    with pytest.raises(ValueError, match=r"s3 \(.*\): the label is empty"):
        run(tmp_path, split, labels, out, "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == before
    write_label(labels / "s3_Label.nii.gz", box_mask(L_SHAPE, *L_PARTS))
    written = run(tmp_path, split, labels, out, "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in written] == [
        "s1_7points.nii.gz", "s2_7points.nii.gz", "s3_7points.nii.gz"]
    assert points_of(sitk.GetArrayFromImage(sitk.ReadImage(str(written[0]))), 2) == BOX_FOREGROUND


def test_a_seed_without_jitter_is_named_as_without_effect(labelled, capsys):
    tmp_path, split, labels = labelled
    run(tmp_path, split, labels, tmp_path / "a", "--seed", "7")
    assert "--seed 7 has no effect with --jitter_mm 0: the points are not jittered" in capsys.readouterr().out
    run(tmp_path, split, labels, tmp_path / "b", "--seed", "7", "--jitter_mm", "1")
    assert "no effect" not in capsys.readouterr().out
