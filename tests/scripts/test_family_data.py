"""data/family/make_family_data.py: the drawn configurations stay in their declared ranges, the
development and held-back seeds are disjoint, and a member's cases are real, annotated and
reproducible (template and synthetic anatomy)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import load_script
from scipy import ndimage

family = load_script("data/family/make_family_data.py")


def test_declared_seeds_are_disjoint_and_draws_are_in_range():
    assert not set(family.DEVELOPMENT_SEEDS) & set(family.HELD_BACK_SEEDS)
    members = [family.draw_member(s) for s in range(40)]
    assert family.draw_member(7) == members[7]                              # deterministic
    assert {m.anatomy for m in members} == {"template", "synthetic"}
    assert {m.contrast for m in members} == {"flair", "t2", "t1"}
    for m in members:
        assert all(s % 16 == 0 for s in m.size) and np.prod(m.size) <= 2 * family._MAX_VOXELS
        assert 1.0 <= m.spacing[2] / m.spacing[0] <= 5.01 and 8 <= m.counts[0] <= 48
        assert 50 <= m.lesion_voxels <= 0.08 * np.prod(m.size) + 1e-6
        assert m.max_lesions in (1, 2) and 0.15 <= m.lesion_contrast <= 0.9 and 0 <= m.heterogeneity <= 1


@pytest.mark.parametrize("anatomy", ["template", "synthetic"])
def test_member_cases_are_annotated_lesions_in_a_brain(tmp_path, anatomy):
    seed = next(s for s in range(40) if family.draw_member(s).anatomy == anatomy)
    member = dataclasses.replace(family.draw_member(seed), counts=(2, 1, 0))
    split = family.generate_member(member, tmp_path / "a")
    assert split["phase"].tolist() == ["training", "training", "validation"]
    for subject in split["subject"]:
        image = sitk.ReadImage(str(tmp_path / "a" / "image" / f"{subject}_img.nii.gz"))
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a" / "label" / f"{subject}_seg.nii.gz")))
        anno = sitk.GetArrayFromImage(sitk.ReadImage(
            str(tmp_path / "a" / "annotation_7points" / f"{subject}_7points.nii.gz")))
        array = sitk.GetArrayFromImage(image)
        assert image.GetSize() == member.size and image.GetSpacing() == pytest.approx(member.spacing)
        assert array.min() == 0 and 0.1 < (array > 0).mean() < 0.9           # skull-stripped brain, background 0
        assert label.any() and (array[label > 0] > 0).all()                  # lesions inside the brain
        lesions = ndimage.label(label > 0, structure=np.ones((3, 3, 3)))[1]
        assert 1 <= lesions <= member.max_lesions
        for k in range(1, lesions + 1):                                      # 6 extreme points + 1 inside
            assert (anno == 2 * k - 1).sum() == 6 and (anno == 2 * k).sum() == 1
        inside, outside = array[label > 0].mean(), array[(label == 0) & (array > 0)].mean()
        assert (inside > outside) == (member.contrast != "t1")               # hyper-, or hypo-intense on T1
    again = family.generate_member(member, tmp_path / "b")
    assert again.equals(split)
    for folder in ("image", "label", "annotation_7points"):
        for path in sorted((tmp_path / "a" / folder).iterdir()):
            a = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
            b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b" / folder / path.name)))
            np.testing.assert_array_equal(a, b)
