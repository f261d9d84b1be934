"""networks/published.py: the published key lists (counted by hand from the published classes),
our state dicts to the published layout and back with the very same tensors, the detection of
either layout (wrapper prefixes stripped), and the one-line refusals. State dicts are built on the
meta device where no value is read. (Files and the command line: tests/scripts/test_convert_checkpoint.py.)"""
from __future__ import annotations

import re

import pytest
import torch

from networks import NETWORKS, get_network
from networks.published import (
    detect_our_network,
    detect_published_network,
    ours_to_published,
    published_keys,
    published_to_ours,
    strip_wrapper_prefix,
    to_our_state_dict,
)


def _ours(network: str, device: str = "meta", **kwargs) -> dict[str, torch.Tensor]:
    with torch.device(device):
        return get_network(network, **kwargs).state_dict()


@pytest.mark.parametrize("network, keys, parameters", [
    # final conv + 9 blocks of (conv, norm) x 2, weight and bias, each under two names
    ("U_Net2D5", 1 + 9 * 16, 1 + 9 * 8),
    # Conv1..5 (2 convs each), per level k = 5..2 Up<k> and Up_conv<k> (2 convs), Conv_1x1: 23 layers
    ("U_Net", 2 * 23, 2 * 23),
    ("AttU_Net", 2 * (23 + 4 * 3), 2 * (23 + 4 * 3)),   # + W_g, W_x, psi per level
])
def test_published_key_lists(network, keys, parameters):
    listed = published_keys(network)
    assert len(listed) == keys and len({k for k, _ in listed}) == keys
    assert sorted({i for _, i in listed}) == list(range(parameters)) == list(range(len(_ours(network))))


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_to_the_published_layout_and_back_with_the_same_tensors(network):
    ours = _ours(network, in_channels=2, num_classes=3)
    published = ours_to_published(ours, network)
    assert list(published) == [k for k, _ in published_keys(network)]
    assert detect_published_network(published) == network and detect_our_network(ours) == network
    back = published_to_ours(published, network)
    assert list(back) == list(ours) and all(back[k] is ours[k] for k in ours)
    assert to_our_state_dict(published, network).keys() == ours.keys()
    assert to_our_state_dict(ours, network) is ours


def test_the_aliases_of_u_net2d5_are_one_tensor():
    published = ours_to_published(_ours("U_Net2D5"), "U_Net2D5")
    assert published["conv_blocks_context.0.first_conv.weight"] is published["conv_blocks_context.0.block.0.weight"]
    assert published["conv_blocks_context.4.second_norm.bias"] is published["conv_blocks_context.4.block.4.bias"]


def test_aliases_that_differ_are_refused():
    published = ours_to_published(_ours("U_Net2D5", "cpu"), "U_Net2D5")
    published["conv_blocks_context.0.block.0.weight"] = published["conv_blocks_context.0.block.0.weight"] + 1
    with pytest.raises(ValueError, match=r"conv_blocks_context.0.block.0.weight and "
                                         r"conv_blocks_context.0.first_conv.weight must hold the same tensor"):
        published_to_ours(published, "U_Net2D5")


@pytest.mark.parametrize("keys, stripped", [
    (["module.a", "module.b"], ["a", "b"]),
    (["module._orig_mod.a", "module._orig_mod.b"], ["a", "b"]),   # nested: DDP around torch.compile
    (["_orig_mod.module.a"], ["a"]),
    (["module.a", "b"], ["module.a", "b"]),   # not on every key: not a wrapper's
    ([], []),
])
def test_strip_wrapper_prefix(keys, stripped):
    assert list(strip_wrapper_prefix(dict.fromkeys(keys, torch.zeros(1)))) == stripped


def test_wrapped_state_dicts_are_recognised():
    ours = _ours("AttU_Net")
    published = ours_to_published(ours, "AttU_Net")
    assert detect_our_network({f"module.{k}": v for k, v in ours.items()}) == "AttU_Net"
    assert detect_published_network({f"module.{k}": v for k, v in published.items()}) == "AttU_Net"   # not U_Net
    assert detect_published_network(ours) is None and detect_our_network(published) is None
    del ours["head.bias"]
    assert detect_our_network(ours) is None   # a key short: none of the networks


def test_the_wrong_network_or_layout_is_named():
    unet = ours_to_published(_ours("U_Net"), "U_Net")
    with pytest.raises(ValueError, match=re.escape("the checkpoint is a published U_Net state dict, not a published "
                                                   "AttU_Net state dict; use --network U_Net")):
        published_to_ours(unet, "AttU_Net")
    with pytest.raises(ValueError, match=re.escape("the checkpoint is a U_Net2D5 state dict in our layout, not a "
                                                   "published U_Net2D5 state dict; check the file (it needs no "
                                                   "conversion)")):
        published_to_ours(_ours("U_Net2D5"), "U_Net2D5")
    with pytest.raises(ValueError, match=re.escape("the checkpoint is a U_Net state dict in our layout, not a "
                                                   "U_Net2D5 state dict in our layout; use --network U_Net")):
        ours_to_published(_ours("U_Net"), "U_Net2D5")
    with pytest.raises(ValueError, match=re.escape("the checkpoint is a published U_Net state dict, not a U_Net state "
                                                   "dict in our layout; it needs no conversion")):
        ours_to_published(unet, "U_Net")
    with pytest.raises(ValueError, match=r"--network must be one of \['AttU_Net', 'U_Net', 'U_Net2D5'\], got 'UNet'"):
        published_keys("UNet")
