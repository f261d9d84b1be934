"""networks/unet2d5.py: the 2.5D U-Net's widths level by level (decoder blocks reading [upsampled,
skip]), and ``reset_parameters`` drawing every weight again. (Kernels, He statistics and
outputs against the published code: tests/networks/test_networks.py.)"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from networks.unet2d5 import BOTTLENECK, DECODER, FEATURES, U_Net2D5


def test_widths_level_by_level():
    net = U_Net2D5(in_channels=2, num_classes=3)
    assert [(b[0].in_channels, b[0].out_channels) for b in net.encoders] == [(2, 16), (16, 32), (32, 64), (64, 128)]
    assert (net.bottleneck[0].in_channels, net.bottleneck[0].out_channels) == (128, BOTTLENECK)
    # each decoder block reads the upsampled deeper features and the skip of its level, concatenated
    assert [(d.conv[0].in_channels, d.conv[0].out_channels) for d in net.decoders] == [(256, 64), (128, 32),
                                                                                      (64, 16), (32, 16)]
    assert (FEATURES, DECODER) == ((16, 32, 64, 128), (64, 32, 16, 16))
    assert net.head.weight.shape == (3, 16, 1, 1, 1) and net.head.bias is None


def test_reset_parameters_draws_every_weight_again():
    """After every parameter is overwritten: conv weights drawn again (He, a = 0.01: the deepest
    encoder conv, 128 → 128 at 3×3×3, has std sqrt(2 / 1.0001) / sqrt(128·27)), conv biases 0,
    norms (1, 0)."""
    torch.manual_seed(3)
    net = U_Net2D5()
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(0.5)
    net.reset_parameters()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d)]
    assert len(convs) == 19 and all(not (m.weight == 0.5).any() for m in convs)
    deep = net.encoders[3][3].weight
    assert deep.shape == (128, 128, 3, 3, 3)
    assert deep.std().item() == pytest.approx((2 / 1.0001) ** 0.5 / (128 * 27) ** 0.5, rel=0.01)
    assert all(not m.bias.any() for m in convs if m.bias is not None)
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any() for m in norms)
