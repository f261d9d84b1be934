"""networks/blocks.py: the checks every block makes on its sizes (kernel, channels), the
nearest-neighbour up-conv, and the decoder level of U_Net/AttU_Net concatenating [skip, up].
(The in-plane block, UpBlock's order and the attention gate: tests/networks/test_networks.py.)"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from networks.blocks import AttentionGate, ConvBlock, UpConv, UpConvBlock, check_channels


@pytest.mark.parametrize("kernel", [2, 0, (3, 3), (3, 3, 0), (3, -1, 3), (3, 3, 4)])
def test_a_kernel_must_be_odd_and_positive(kernel):
    with pytest.raises(ValueError, match="kernel_size must be one odd positive size or three of them"):
        ConvBlock(1, 2, kernel)


@pytest.mark.parametrize("kernel, shape", [(3, (3, 3, 3)), ((3, 3, 1), (3, 3, 1)), (1, (1, 1, 1))])
def test_a_kernel_and_its_same_padding(kernel, shape):
    block = ConvBlock(1, 2, kernel)
    assert block[0].kernel_size == block[3].kernel_size == shape
    assert block[0].padding == tuple(k // 2 for k in shape)   # the size is kept
    assert block(torch.randn(1, 1, 4, 4, 4)).shape == (1, 2, 4, 4, 4)


@pytest.mark.parametrize("value", [0, -1, 2.0, True, None])
def test_channels_must_be_positive_integers(value):
    with pytest.raises(ValueError, match=f"out_channels must be a positive integer, got {value!r}"):
        check_channels("out_channels", value)
    with pytest.raises(ValueError, match="must be a positive integer"):
        UpConv(4, value)
    assert check_channels("out_channels", 3) == 3


def test_up_conv_repeats_each_voxel_before_its_convolution():
    """With a 3×3×3 kernel holding only its centre, the up-conv's convolution is the identity:
    the output (before its norm) is the input repeated 2×2×2 (nearest upsampling)."""
    up = UpConv(1, 1)
    with torch.no_grad():
        up[1].weight.zero_()
        up[1].weight[0, 0, 1, 1, 1] = 1.0
        up[1].bias.zero_()
    x = torch.arange(8.0).reshape(1, 1, 2, 2, 2)
    upsampled = nn.Sequential(up[0], up[1])(x)
    assert upsampled.shape == (1, 1, 4, 4, 4)
    expected = x.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4)
    torch.testing.assert_close(upsampled, expected)


@pytest.mark.parametrize("attention", [None, 2])
def test_up_conv_block_puts_the_skip_first(attention):
    """A decoder level whose first convolution reads only its first ``out_channels`` inputs gives
    an output that does not depend on the deeper features: those inputs are the (gated) skip."""
    torch.manual_seed(0)
    block = UpConvBlock(8, 4, attention_channels=attention).eval()
    assert (block.gate is None) == (attention is None)
    if attention is not None:
        assert isinstance(block.gate, AttentionGate)
        with torch.no_grad():   # alpha = sigmoid(IN(...)) on one channel is 1/2 everywhere: the skip halved
            block.gate.psi[0].weight.zero_()
    with torch.no_grad():
        block.conv[0].weight[:, 4:] = 0.0
    skip = torch.randn(1, 4, 4, 4, 4)
    a = block(torch.randn(1, 8, 2, 2, 2), skip)
    b = block(torch.randn(1, 8, 2, 2, 2), skip)
    assert a.shape == (1, 4, 4, 4, 4)
    torch.testing.assert_close(a, b)
