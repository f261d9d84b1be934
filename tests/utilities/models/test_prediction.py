"""utilities/models/prediction.py: sliding-window logits of networks whose output is known (a
constant, a voxel-wise map), volumes smaller than the window, and the mask and probability of
one model and of an ensemble (probabilities averaged, not logits)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from utilities.models.prediction import class_probabilities, segment, sliding_window_predict


class _Constant(nn.Module):
    """The same two logits at every voxel, whatever the input."""

    def __init__(self, background: float, foreground: float) -> None:
        super().__init__()
        self.logits = torch.tensor([background, foreground])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.view(1, 2, 1, 1, 1).expand(x.shape[0], 2, *x.shape[2:]).clone()


def _voxelwise() -> nn.Module:
    """Logits (x, -x) at every voxel: a 1×1×1 convolution."""
    conv = nn.Conv3d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1, 1))
        conv.bias.zero_()
    return conv


def test_a_constant_network_gives_its_constant_everywhere():
    logits = sliding_window_predict(_Constant(0.25, -1.5), torch.rand(1, 1, 9, 7, 5), (4, 4, 4), overlap=0.5)
    assert logits.shape == (1, 2, 9, 7, 5) and logits.dtype == torch.float32
    torch.testing.assert_close(logits[0, 0], torch.full((9, 7, 5), 0.25))
    torch.testing.assert_close(logits[0, 1], torch.full((9, 7, 5), -1.5))


@pytest.mark.parametrize("shape, roi", [((1, 1, 9, 7, 5), (4, 4, 4)),   # overlapping windows, blended
                                        ((2, 1, 3, 5, 2), (4, 4, 4))])  # smaller than the window: padded, cropped
def test_a_voxelwise_network_is_unchanged_by_the_windows(shape, roi):
    image = torch.randn(shape)
    logits = sliding_window_predict(_voxelwise(), image, roi)
    assert logits.shape == (shape[0], 2, *shape[2:])
    torch.testing.assert_close(logits, torch.cat([image, -image], 1), rtol=1e-5, atol=1e-6)


def test_class_probabilities_are_a_float64_softmax():
    assert class_probabilities(torch.zeros(1, 2, 1, 1, 1)).dtype == torch.float64   # from float32 logits
    probs = class_probabilities(torch.tensor([0.0, math.log(3.0)], dtype=torch.float64).view(1, 2, 1, 1, 1))
    assert probs.flatten().tolist() == pytest.approx([0.25, 0.75], rel=1e-14)


def test_segment_with_one_model():
    image = torch.rand(1, 1, 6, 5, 4)
    mask, prob = segment([(_Constant(0.0, math.log(3.0)), (4, 4, 4))], image, probability=True)
    assert mask.dtype == np.uint8 and mask.shape == (6, 5, 4) and (mask == 1).all()
    assert prob.dtype == np.float32 and prob.shape == (6, 5, 4)
    np.testing.assert_allclose(prob, 0.75, rtol=1e-6)
    mask, prob = segment([(_Constant(1.0, 0.0), (4, 4, 4))], image)
    assert (mask == 0).all() and prob is None


def test_an_ensemble_averages_probabilities_not_logits():
    """Foreground probabilities 3/4 (logits 0, ln 3) and 1/10 (ln 9, 0): their mean 0.425 makes the
    mask background; the mean of the logits (ln 9 / 2, ln 3 / 2) would give 1 / (1 + √3) ≈ 0.366."""
    models = [(_Constant(0.0, math.log(3.0)), (4, 4, 4)), (_Constant(math.log(9.0), 0.0), (2, 2, 2))]
    mask, prob = segment(models, torch.rand(1, 1, 5, 5, 3), probability=True)
    assert (mask == 0).all()
    np.testing.assert_allclose(prob, 0.425, rtol=1e-6)
    with pytest.raises(ValueError, match="at least one model"):
        segment([], torch.rand(1, 1, 5, 5, 3))
