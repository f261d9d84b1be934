"""networks/unet.py: U_Net's widths level by level, AttU_Net as U_Net with one gate per skip and
nothing else, on the meta device (no memory, no compute). (Outputs against the published code,
norms and activations: tests/networks/test_networks.py.)"""
from __future__ import annotations

import torch

from networks.unet import AttU_Net, U_Net


def _shapes(cls: type, **kwargs) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in cls(**kwargs).state_dict().items()}


def test_u_net_widths_level_by_level():
    """Encoder 16/32/64/128/256; each decoder level up-convolves to the skip's width and reads
    the skip and the up-conv concatenated (twice that width)."""
    shapes = _shapes(U_Net, in_channels=2, num_classes=3)
    assert [shapes[f"encoders.{i}.0.weight"][:2] for i in range(5)] == [(16, 2), (32, 16), (64, 32), (128, 64),
                                                                        (256, 128)]
    assert [shapes[f"decoders.{i}.up.1.weight"][:2] for i in range(4)] == [(128, 256), (64, 128), (32, 64), (16, 32)]
    assert [shapes[f"decoders.{i}.conv.0.weight"][:2] for i in range(4)] == [(128, 256), (64, 128), (32, 64),
                                                                             (16, 32)]
    assert shapes["head.weight"] == (3, 16, 1, 1, 1) and shapes["head.bias"] == (3,)


def test_att_u_net_is_u_net_with_a_gate_on_every_skip():
    plain, gated = _shapes(U_Net), _shapes(AttU_Net)
    extra = sorted(set(gated) - set(plain))
    assert set(plain) <= set(gated) and all(plain[k] == gated[k] for k in plain)
    assert {k.split(".gate.")[0] for k in extra} == {f"decoders.{i}" for i in range(4)}
    # F_int = half the skip's width: the gate's convolutions map the skip's width to it
    assert [gated[f"decoders.{i}.gate.skip.0.weight"][:2] for i in range(4)] == [(64, 128), (32, 64), (16, 32),
                                                                                 (8, 16)]
    assert (U_Net.attention, AttU_Net.attention) == (False, True)
