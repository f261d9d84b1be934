"""Published checkpoints: key mapping against the published key list, golden outputs through a
saved published-format file, CPU loading of CUDA-saved tensors, exact round trips, errors."""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from helpers import ROOT

from convert_checkpoint import main
from networks import NETWORKS, get_network
from networks.published import (
    detect_our_network,
    detect_published_network,
    ours_to_published,
    published_keys,
    published_to_ours,
    to_our_state_dict,
)
from utilities.models.checkpoints import convert_checkpoint, load_state_dict

KEYS = json.loads((ROOT / "tests" / "data" / "published_state_dict_keys.json").read_text())


def published_state(name: str, golden, dtype=torch.float32) -> OrderedDict[str, torch.Tensor]:
    """A published-format state dict built from the key list alone: parameter k (published order)
    ← sin(0.01·arange(numel) + k)·0.05 in float64, stored as ``dtype``; alias keys share the tensor."""
    by_index: dict[int, torch.Tensor] = {}
    state = OrderedDict()
    for key, shape, index in KEYS[name]:
        if index not in by_index:
            assert list(golden[f"{name}_param_shapes"][index]) == shape
            numel = int(torch.tensor(shape).prod())
            values = torch.sin(0.01 * torch.arange(numel, dtype=torch.float64) + index) * 0.05
            by_index[index] = values.reshape(shape).to(dtype)
        state[key] = by_index[index]
    return state


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_generated_key_list_is_the_published_one(golden, name):
    listed = [(key, index) for key, _, index in KEYS[name]]
    assert published_keys(name) == listed
    # the indices cover the golden file's registration order exactly
    assert sorted({i for _, i in listed}) == list(range(len(golden[f"{name}_param_shapes"])))


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_detection(golden, name):
    published = published_state(name, golden)
    assert detect_published_network(published) == name
    assert detect_published_network({f"module.{k}": v for k, v in published.items()}) == name
    ours = get_network(name).state_dict()
    assert detect_published_network(ours) is None
    assert detect_our_network(ours) == name
    assert detect_our_network(published) is None
    assert detect_published_network({"weight": torch.zeros(1)}) is None


def _save_as_if_on_cuda(obj, path: Path, monkeypatch) -> None:
    """torch.save with every storage tagged as living on cuda:0, as the published files are."""
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    torch.save(obj, path)
    monkeypatch.undo()


def test_cuda_saved_file_loads_on_cpu_with_map_location(golden, tmp_path, monkeypatch):
    path = tmp_path / "published_cuda.pth"
    _save_as_if_on_cuda(published_state("U_Net2D5", golden), path, monkeypatch)
    assert b"cuda:0" in _zip_member(path, "data.pkl")  # the file records CUDA storages
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)  # what a CPU-only machine gets without map_location
    state = load_state_dict(path, map_location="cpu")
    assert all(t.device.type == "cpu" for t in state.values())
    net = get_network("U_Net2D5")
    net.load_state_dict(published_to_ours(state, "U_Net2D5"))


def _zip_member(path: Path, suffix: str) -> bytes:
    import zipfile

    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith(suffix))
        return z.read(name)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_saved_published_checkpoint_reproduces_golden_output(golden, tmp_path, monkeypatch, name):
    path = tmp_path / f"{name}.pth"
    _save_as_if_on_cuda(published_state(name, golden), path, monkeypatch)
    state = load_state_dict(path, map_location="cpu")
    net = get_network(name)
    net.load_state_dict(published_to_ours(state, name), strict=True)
    expected = golden[f"{name}_output"]
    if name == "U_Net2D5":
        # same tolerance as tests/networks/test_networks.py (float32)
        with torch.no_grad():
            out = net.eval()(golden["net_input"])
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-4 * expected.abs().max().item())
    else:
        # ill-conditioned outputs (see tests/networks/test_networks.py): float64, the same relative bounds
        with torch.no_grad():
            out = net.double().eval()(golden["net_input"].double())
        expected = expected.double()
        max_rel = ((out - expected).abs().max() / expected.abs().max()).item()
        l2_rel = ((out - expected).norm() / expected.norm()).item()
        assert max_rel < 0.05, max_rel
        assert l2_rel < 0.04, l2_rel


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_round_trips_are_exact(golden, name):
    torch.manual_seed(0)
    ours = get_network(name).state_dict()
    published = ours_to_published(ours, name)
    assert list(published) == [k for k, _, _ in KEYS[name]]
    assert [list(v.shape) for v in published.values()] == [s for _, s, _ in KEYS[name]]
    back = published_to_ours(published, name)
    assert list(back) == list(ours)
    assert all(torch.equal(back[k], ours[k]) for k in ours)
    original = published_state(name, golden)
    again = ours_to_published(published_to_ours(original, name), name)
    assert list(again) == list(original) and all(torch.equal(again[k], original[k]) for k in original)
    if name == "U_Net2D5":  # aliases share one tensor, as in the published module
        assert published["conv_blocks_context.0.block.0.weight"] is published["conv_blocks_context.0.first_conv.weight"]


def test_to_our_state_dict_passes_ours_through(golden):
    ours = get_network("U_Net").state_dict()
    assert to_our_state_dict(ours, "U_Net") is ours
    converted = to_our_state_dict(published_state("U_Net", golden), "U_Net")
    assert list(converted) == list(ours)


@pytest.mark.parametrize("actual, asked", [("AttU_Net", "U_Net"), ("U_Net", "AttU_Net"), ("U_Net2D5", "U_Net")])
def test_wrong_network_names_the_network_it_is(golden, actual, asked):
    with pytest.raises(ValueError, match=f"is a published {actual} state dict, not a published {asked} "
                                         f"state dict; use --network {actual}"):
        published_to_ours(published_state(actual, golden), asked)
    article = {"AttU_Net": "an", "U_Net": "a", "U_Net2D5": "a"}
    with pytest.raises(ValueError, match=f"is {article[actual]} {actual} state dict in our layout, not "
                                         f"{article[asked]} {asked} state dict in our layout; use --network {actual}"):
        ours_to_published(get_network(actual).state_dict(), asked)
    with pytest.raises(ValueError, match=f"use --network {actual}"):
        to_our_state_dict(published_state(actual, golden), asked)


def test_damaged_published_state_dicts(golden):
    state = published_state("U_Net2D5", golden)
    missing = OrderedDict(state)
    del missing["conv_blocks_context.2.second_norm.bias"]
    with pytest.raises(ValueError, match=r"1 missing \['conv_blocks_context.2.second_norm.bias'\]"):
        published_to_ours(missing, "U_Net2D5")
    alias = OrderedDict(state)
    alias["conv_blocks_context.1.block.3.weight"] = alias["conv_blocks_context.1.block.3.weight"] + 1
    with pytest.raises(ValueError, match="block.3.weight and .*second_conv.weight must hold the same tensor"):
        published_to_ours(alias, "U_Net2D5")
    shaped = OrderedDict(state)
    shaped["final_conv.weight"] = torch.zeros(2, 8, 1, 1, 1)
    with pytest.raises(ValueError, match=r"final_conv.weight has shape \[2, 8, 1, 1, 1\], expected \[2, 16, 1, 1, 1\]"):
        published_to_ours(shaped, "U_Net2D5")
    with pytest.raises(ValueError, match="--network must be one of"):
        published_to_ours(state, "UNet")
    with pytest.raises(ValueError, match="not a state dict of any of"):
        published_to_ours({"weight": torch.zeros(1)}, "U_Net")


def test_more_channels_and_classes_convert(golden):
    net = get_network("AttU_Net", in_channels=2, num_classes=3)
    published = ours_to_published(net.state_dict(), "AttU_Net")
    assert list(published["Conv1.conv.0.weight"].shape) == [16, 2, 3, 3, 3]
    assert list(published["Conv_1x1.weight"].shape) == [3, 16, 1, 1, 1]
    back = get_network("AttU_Net", in_channels=2, num_classes=3)
    back.load_state_dict(published_to_ours(published, "AttU_Net"))


def test_cli_converts_both_ways(golden, tmp_path, monkeypatch, capsys):
    source = tmp_path / "published.pth"
    _save_as_if_on_cuda(published_state("AttU_Net", golden), source, monkeypatch)
    ours = main(["--input", str(source), "--output", str(tmp_path / "ours.pth"), "--network", "AttU_Net",
                 "--to", "ours"])
    assert "written" in capsys.readouterr().out
    state = torch.load(ours, map_location="cpu", weights_only=True)
    assert detect_our_network(state) == "AttU_Net"
    back = convert_checkpoint(ours, tmp_path / "published_again.pth", "AttU_Net", "published")
    again = torch.load(back, weights_only=True)
    original = published_state("AttU_Net", golden)
    assert list(again) == list(original) and all(torch.equal(again[k], original[k]) for k in original)
    with pytest.raises(ValueError, match=f"^--input {source}: the checkpoint is a published AttU_Net state dict, "
                                         "not a published U_Net"):
        main(["--input", str(source), "--output", str(tmp_path / "x.pth"), "--network", "U_Net", "--to", "ours"])
    with pytest.raises(ValueError, match=f"^--input {source}: the checkpoint is a published AttU_Net state dict, not "
                                         "an AttU_Net state dict in our layout; it needs no conversion$"):
        main(["--input", str(source), "--output", str(tmp_path / "x.pth"), "--network", "AttU_Net", "--to",
              "published"])
    with pytest.raises(FileNotFoundError, match="checkpoint file not found: .*nothing.pth"):
        main(["--input", str(tmp_path / "nothing.pth"), "--output", str(tmp_path / "x.pth"),
              "--network", "U_Net", "--to", "ours"])
    (tmp_path / "broken.pth").write_bytes(source.read_bytes()[:1000])
    with pytest.raises(ValueError, match="broken.pth is not a PyTorch file, or a truncated or damaged one"):
        load_state_dict(tmp_path / "broken.pth")
    assert not (tmp_path / "x.pth").exists()


def test_project_checkpoint_converts_to_published(tmp_path):
    from utilities.models.checkpoints import save_model

    torch.manual_seed(0)
    net = get_network("U_Net2D5")
    save_model(tmp_path / "CP_best.pth", net, "U_Net2D5", epoch=3)
    out = convert_checkpoint(tmp_path / "CP_best.pth", tmp_path / "published.pth", "U_Net2D5", "published")
    published = torch.load(out, weights_only=True)
    assert detect_published_network(published) == "U_Net2D5"
    back = published_to_ours(published, "U_Net2D5")
    assert all(torch.equal(back[k], v) for k, v in net.state_dict().items())
