"""Networks: golden outputs of the published code, parameter counts, shapes, input checks, blocks."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from networks import NETWORKS, AttU_Net, U_Net, U_Net2D5, check_network_shape, get_network
from networks.blocks import AttentionGate, ConvBlock, UpBlock, check_network_input

PARAM_COUNTS = {"U_Net2D5": 2_466_128, "U_Net": 6_471_810, "AttU_Net": 6_493_934}


def published_parameters(name: str, net: nn.Module) -> list[nn.Parameter]:
    """Our parameters listed in the order the published code registers its own.

    U_Net2D5 (published): final conv, decoder blocks deep → shallow, encoder blocks shallow → deep,
    bottleneck. U_Net/AttU_Net (published): forward order, which is ours too: encoder levels, then
    per decoder level the up-conv, the attention gate (W_g, W_x, psi) and the block; final conv.
    Within a block both codes register conv weight, conv bias, [norm weight, norm bias] per conv.
    """
    if name == "U_Net2D5":
        modules = [net.head, *net.decoders, *net.encoders, net.bottleneck]
    else:
        modules = [*net.encoders, *net.decoders, net.head]
    params = [p for module in modules for p in module.parameters()]
    assert len({id(p) for p in params}) == len(params) == len(list(net.parameters()))
    return params


def set_published_weights(name: str, net: nn.Module) -> None:
    """Parameter k (published order) ← sin(0.01·arange(numel) + k)·0.05, computed in float64."""
    with torch.no_grad():
        for k, p in enumerate(published_parameters(name, net)):
            values = torch.sin(0.01 * torch.arange(p.numel(), dtype=torch.float64) + k) * 0.05
            p.copy_(values.reshape(p.shape).to(p.dtype))


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_parameter_shapes_in_published_order(golden, name):
    net = get_network(name)
    shapes = [tuple(p.shape) for p in published_parameters(name, net)]
    assert shapes == [tuple(s) for s in golden[f"{name}_param_shapes"]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_u_net2d5_matches_published_code(golden, dtype):
    # Measured max |diff|: 5.6e-9 (float32), 1.4e-8 (float64) on an output scale of 0.028.
    net = U_Net2D5().to(dtype).eval()
    set_published_weights("U_Net2D5", net)
    with torch.no_grad():
        out = net(golden["net_input"].to(dtype))
    expected = golden["U_Net2D5_output"].to(dtype)
    assert out.shape == expected.shape == (1, 2, 32, 32, 16)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4 * expected.abs().max().item())


@pytest.mark.parametrize("name", ["U_Net", "AttU_Net"])
def test_u_net_and_att_u_net_match_published_code(golden, name):
    """The recorded U_Net/AttU_Net outputs are ill-conditioned, so the bound is a few percent.

    At the 2×2×1 bottleneck of this 32×32×16 input, InstanceNorm meets channels whose four
    values are nearly equal (variance ~3e-11, below eps = 1e-5); the following norms amplify
    rounding by ~1e6. Float32 on our CPU reproduces the recorded values to 7e-7 of the output
    scale, but other float32 kernels (another CPU, a GPU) land up to 2.8% away, float64 1.8-2.2%,
    and float64 with the weights perturbed at float32 rounding level 1.8-2.6%. We run float64
    (the same result on every machine): max |diff| is 1.8% (U_Net) and 2.2% (AttU_Net) of the
    scale, relative L2 error 1.2% and 2.2%. Structural mistakes give far more (no norm in the
    up-conv: 25%/44%; gate inputs swapped: 15%; [up, skip] concatenation: 80%; eps 1e-4:
    relative L2 9.7%/5.9%).
    """
    net = NETWORKS[name]().double().eval()
    set_published_weights(name, net)
    with torch.no_grad():
        out = net(golden["net_input"].double())
    expected = golden[f"{name}_output"].double()
    assert out.shape == expected.shape == (1, 2, 32, 32, 16)
    max_rel = ((out - expected).abs().max() / expected.abs().max()).item()
    l2_rel = ((out - expected).norm() / expected.norm()).item()
    assert max_rel < 0.05, max_rel
    assert l2_rel < 0.04, l2_rel


@pytest.mark.parametrize("name", ["U_Net", "AttU_Net"])
def test_u_net_norms_and_activations(name):
    net = get_network(name)
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert norms and all(not m.affine and not m.track_running_stats and m.eps == 1e-5 for m in norms)
    assert not any(isinstance(m, (nn.LeakyReLU, nn.BatchNorm3d)) for m in net.modules())
    assert net.head.bias is not None and net.head.kernel_size == (1, 1, 1)
    gates = [m for m in net.modules() if isinstance(m, AttentionGate)]
    expected = [64, 32, 16, 8] if name == "AttU_Net" else []
    assert [gate.psi[0].in_channels for gate in gates] == expected


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_parameter_count(name):
    assert sum(p.numel() for p in get_network(name).parameters()) == PARAM_COUNTS[name]


def test_registry_and_get_network():
    assert sorted(NETWORKS) == ["AttU_Net", "U_Net", "U_Net2D5"]
    assert NETWORKS == {"U_Net2D5": U_Net2D5, "U_Net": U_Net, "AttU_Net": AttU_Net}
    net = get_network("AttU_Net", in_channels=2, num_classes=3)
    assert type(net) is AttU_Net
    assert (net.in_channels, net.num_classes) == (2, 3)
    with pytest.raises(ValueError, match=r"unknown network 'UNet'.*\['AttU_Net', 'U_Net', 'U_Net2D5'\]"):
        get_network("UNet")


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("shape", [(1, 1, 32, 32, 16), (2, 1, 48, 32, 16)])
def test_output_shape(name, shape):
    net = get_network(name).eval()
    with torch.no_grad():
        out = net(torch.randn(shape))
    assert out.shape == (shape[0], 2, *shape[2:])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_more_channels_and_classes(name):
    net = get_network(name, in_channels=2, num_classes=3).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 2, 16, 32, 16))
    assert out.shape == (1, 3, 16, 32, 16)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_items_of_a_batch_are_independent(name):
    # InstanceNorm normalises each item on its own, so an item's output does not depend on the batch.
    torch.manual_seed(0)
    # float64: the 1×1×2 bottleneck's InstanceNorm amplifies float32 rounding (up to ~1e-4 here).
    net = get_network(name).double().eval()
    x = torch.randn(2, 1, 16, 16, 32, dtype=torch.float64)
    with torch.no_grad():
        both, second = net(x), net(x[1:])
    torch.testing.assert_close(both[1:], second, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_bad_inputs_raise(name):
    net = get_network(name)
    msg = (r"input spatial shape \(30, 32, 16\) must be divisible by 16 in every axis; "
           r"pad or choose --spatial_shape accordingly")
    with pytest.raises(ValueError, match=msg):
        net(torch.zeros(1, 1, 30, 32, 16))
    with pytest.raises(ValueError, match=r"expected 1 input channel\(s\), got shape \(1, 2, 32, 32, 16\)"):
        net(torch.zeros(1, 2, 32, 32, 16))
    with pytest.raises(ValueError, match=r"5D input .* got shape \(1, 32, 32, 16\)"):
        net(torch.zeros(1, 32, 32, 16))


@pytest.mark.parametrize("cls", [U_Net2D5, U_Net, AttU_Net])
@pytest.mark.parametrize("kwargs", [{"in_channels": 0}, {"num_classes": -1}, {"num_classes": 2.0}])
def test_bad_constructor_args_raise(cls, kwargs):
    with pytest.raises(ValueError, match=r"must be a positive integer, got"):
        cls(**kwargs)


#: Spatial shapes on both sides of the rule: multiples of 16 with a bottleneck of 2+ voxels fit;
#: 24 and 40 pool to odd sizes whose upsampling misses the skip, 8 pools to nothing, 16³ leaves
#: one bottleneck voxel, 0 is empty.
SHAPES = [(32, 32, 16), (16, 32, 16), (48, 16, 16), (16, 16, 16), (24, 32, 16), (32, 32, 8), (40, 32, 16),
          (32, 32, 24), (0, 32, 16)]


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_shape_rule_agrees_with_the_forward_pass(name, monkeypatch):
    """``check_network_shape`` (the scripts' check of --spatial_shape, without running the network)
    accepts a shape exactly when the network, its own input check switched off, runs on it and
    returns logits of that shape."""
    import networks.unet
    import networks.unet2d5

    for module in (networks.unet, networks.unet2d5):
        monkeypatch.setattr(module, "check_network_input", lambda *args: None)
    net = get_network(name).eval()
    for shape in SHAPES:
        try:
            with torch.no_grad():
                runs = net(torch.zeros(1, 1, *shape)).shape == (1, 2, *shape)
        except (RuntimeError, ValueError):
            runs = False
        try:
            check_network_shape(name, shape)
            accepted = True
        except ValueError as e:
            accepted = False
            assert str(e).startswith(f"--spatial_shape {list(shape)} does not fit {name}: input spatial shape "), e
        assert accepted == runs, (name, shape, runs)
    assert {s for s in SHAPES if math.prod(s) and all(d % 16 == 0 for d in s) and math.prod(s) >= 2 * 16 ** 3} == \
        {(32, 32, 16), (16, 32, 16), (48, 16, 16)}   # three shapes that fit, six that do not


def test_shape_check_names_the_flag_and_the_network():
    with pytest.raises(ValueError, match=r"^--patch \[24, 32, 16\] does not fit U_Net: input spatial shape "
                                         r"\(24, 32, 16\) must be divisible by 16 in every axis"):
        check_network_shape("U_Net", [24, 32, 16], flag="--patch")
    with pytest.raises(ValueError, match=r"unknown network 'UNet'"):
        check_network_shape("UNet", [32, 32, 16])


def test_check_network_input_degenerate_sizes():
    with pytest.raises(ValueError, match=r"input spatial shape \(0, 16, 16\) must be divisible"):
        check_network_input(torch.zeros(1, 1, 0, 16, 16), in_channels=1)
    with pytest.raises(ValueError, match=r"\(16, 16, 16\) leaves a single bottleneck voxel"):
        get_network("U_Net2D5")(torch.zeros(1, 1, 16, 16, 16))
    check_network_input(torch.zeros(1, 1, 16, 32, 16), in_channels=1)  # 1×2×1 bottleneck: fine


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_channels_last_3d(name):
    torch.manual_seed(0)
    net = get_network(name).eval()
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad():
        ref = net(x)
        net_cl = net.to(memory_format=torch.channels_last_3d)
        out = net_cl(x.to(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_autocast_forward_and_backward(name):
    torch.manual_seed(0)
    net = get_network(name)
    x = torch.randn(1, 1, 32, 16, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert out.dtype == torch.bfloat16 and out.shape == (1, 2, 32, 16, 16)
    assert torch.isfinite(out).all()
    out.float().square().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters())
    # Only the input and the full-resolution layers are checked for values: in torch 2.13 the CPU
    # (oneDNN) bfloat16 Conv3d weight gradient is garbage (NaN, 1e36) when the input is as small
    # as the 3×3×3 kernel, e.g. the (2, 1, 1) bottleneck here; reproduced with a bare nn.Conv3d.
    shallow = [p for m in (net.encoders[0], net.decoders[-1], net.head) for p in m.parameters()]
    assert all(torch.isfinite(p.grad).all() for p in shallow)
    assert all(p.grad.abs().sum() > 0 for p in shallow if p.ndim > 1)
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_u_net2d5_he_init():
    torch.manual_seed(0)
    net = U_Net2D5()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d)]
    assert net.head.bias is None
    for conv in convs:
        if conv.bias is not None:
            assert torch.count_nonzero(conv.bias) == 0
    big = net.bottleneck[3]  # 128 → 128, 3×3×3: 442,368 weights
    fan_in = 128 * 27
    expected_std = math.sqrt(2.0 / (1 + 0.01**2)) / math.sqrt(fan_in)
    assert big.weight.std().item() == pytest.approx(expected_std, rel=0.01)
    assert abs(big.weight.mean().item()) < 0.01 * expected_std
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert len(norms) == 18 and all(m.affine and m.eps == 1e-5 for m in norms)


def test_u_net2d5_kernels_and_activations():
    net = U_Net2D5()
    encoder_kernels = [b[0].kernel_size for b in net.encoders]
    decoder_kernels = [d.conv[0].kernel_size for d in net.decoders]
    assert encoder_kernels == [(3, 3, 1), (3, 3, 1), (3, 3, 3), (3, 3, 3)]
    assert net.bottleneck[0].kernel_size == (3, 3, 3)
    assert decoder_kernels == [(3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 1)]
    slopes = {m.negative_slope for m in net.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.01}


def test_in_plane_conv_block_does_not_mix_slices():
    torch.manual_seed(0)
    block = ConvBlock(1, 4, (3, 3, 1), affine=True, negative_slope=0.01).eval()
    assert [type(m) for m in block] == [nn.Conv3d, nn.InstanceNorm3d, nn.LeakyReLU] * 2
    # The norms mix slices through their statistics; the convolutions alone must not.
    convs = nn.Sequential(block[0], block[2], block[3], block[5])
    x = torch.randn(1, 1, 8, 8, 4)
    y = x.clone()
    y[..., 2] += torch.randn(8, 8)
    with torch.no_grad():
        assert block(x).shape == (1, 4, 8, 8, 4)
        diff = (convs(x) - convs(y)).abs().amax(dim=(0, 1, 2, 3))
    assert diff[2] > 0.1
    assert torch.equal(diff[[0, 1, 3]], torch.zeros(3))


def test_up_block_upsamples_trilinear_and_puts_upsampled_first():
    block = UpBlock(1, 1, 1, kernel_size=1, mode="trilinear", align_corners=False)
    deep = torch.tensor([0.0, 4.0]).reshape(1, 1, 2, 1, 1).expand(1, 1, 2, 2, 2).contiguous()
    skip = torch.zeros(1, 1, 4, 4, 4)
    captured = {}
    block.conv.register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
    block(deep, skip)
    up = captured["x"][0, 0]
    # align_corners=False: 0, 4 → 0, 1, 3, 4 along X (edges clamp).
    assert torch.allclose(up[:, 0, 0], torch.tensor([0.0, 1.0, 3.0, 4.0]))
    assert torch.equal(captured["x"][0, 1], skip[0, 0])


def test_attention_gate_scales_skip_into_unit_interval():
    torch.manual_seed(0)
    gate = AttentionGate(4, 6, 2)
    g, x = torch.randn(2, 4, 4, 4, 4), torch.randn(2, 6, 4, 4, 4)
    out = gate(g, x)
    assert out.shape == x.shape
    alpha = out / x
    # One attention coefficient per voxel, shared by all channels, strictly inside (0, 1).
    assert torch.allclose(alpha, alpha[:, :1].expand_as(alpha), atol=1e-5)
    assert ((alpha > 0) & (alpha < 1)).all()
    assert sum(p.numel() for p in gate.parameters()) == (4 * 2 + 2) + (6 * 2 + 2) + (2 + 1)


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@requires_cuda
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_cuda_channels_last_autocast_matches_cpu(name):
    torch.manual_seed(0)
    net = get_network(name).double().eval()
    x = torch.randn(2, 1, 32, 32, 16, dtype=torch.float64)
    with torch.no_grad():
        ref = net(x)
        out64 = net.to("cuda")(x.to("cuda")).cpu()
    # Same arithmetic on another device: float64 leaves only rounding differences.
    torch.testing.assert_close(out64, ref, rtol=0, atol=1e-6 * ref.abs().max().item())
    net = net.float().to(memory_format=torch.channels_last_3d).train()
    xc = x.float().to("cuda").to(memory_format=torch.channels_last_3d)
    with torch.autocast("cuda", dtype=torch.float16):
        out = net(xc)
    assert out.dtype == torch.float16 and out.shape == (2, 2, 32, 32, 16) and out.device.type == "cuda"
    out.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@requires_cuda
def test_cuda_u_net2d5_golden(golden):
    net = U_Net2D5().to("cuda").eval()
    set_published_weights("U_Net2D5", net)
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            out = net(golden["net_input"].to("cuda")).cpu()
    finally:
        torch.backends.cudnn.allow_tf32 = previous
    expected = golden["U_Net2D5_output"]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4 * expected.abs().max().item())
