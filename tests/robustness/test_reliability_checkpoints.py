"""Checkpoint files as users bring them (issue 22, class: every loader of weights).

The loaders: ``utilities/models/checkpoints.py: load_model_weights`` (stage 1's --init_checkpoint, SCM's
stage-1 models, inference, export_model.py) and ``convert_checkpoint.py``; the network
of a bare ``.pth`` is read by ``utilities/models/model_package.py``. Every one loads a state dict saved
through a ``DataParallel``/``DistributedDataParallel`` (``module.``) or ``torch.compile``
(``_orig_mod.``) wrapper, and says in one line what a file is when it cannot use it.
"""
from __future__ import annotations

import fractions
import pickle

import pytest
import torch
from helpers import SHAPE, one_line, pretrained, same_weights, scm_args, stage1_args

import export_model
import inference
import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
import train_SCM as scm
from convert_checkpoint import main as convert_main
from networks import get_network
from networks.published import ours_to_published
from utilities.models.checkpoints import load_model_weights, load_state_dict, save_model
from utilities.workflow.cli import run_main

ACCEPTED = ("pass a state dict (save model.state_dict(), not the model), a CP_*.pth of this project or one of the "
            "authors' released checkpoints")


def _net(num_classes: int = 2, network: str = "U_Net2D5") -> torch.nn.Module:
    torch.manual_seed(3)
    return get_network(network, 1, num_classes)


def _prefixed(state, prefix):
    return {prefix + k: v for k, v in state.items()}


# ------------------------------------------------------------------ wrapper prefixes: loaded
@pytest.mark.parametrize("kind", ["ddp", "compiled", "ddp_compiled", "ddp_ours_format", "ddp_published"])
def test_a_wrapped_state_dict_is_loaded(tmp_path, kind):
    net = _net()
    path = tmp_path / f"{kind}.pth"
    state = net.state_dict()
    if kind == "ddp":
        torch.save(_prefixed(state, "module."), path)
    elif kind == "compiled":
        torch.save(_prefixed(state, "_orig_mod."), path)
    elif kind == "ddp_compiled":
        torch.save(_prefixed(state, "module._orig_mod."), path)
    elif kind == "ddp_ours_format":
        save_model(path, net, "U_Net2D5")
        payload = torch.load(path, weights_only=True)
        payload["state_dict"] = _prefixed(payload["state_dict"], "module.")
        torch.save(payload, path)
    else:
        torch.save(_prefixed(ours_to_published(state, "U_Net2D5"), "module."), path)
    fresh = get_network("U_Net2D5", 1, 2)
    load_model_weights(fresh, path, "U_Net2D5")
    assert same_weights(fresh.state_dict(), state)
    # SCM's stage-1 models and convert_checkpoint.py read it too
    students = scm.load_students({1: "U_Net2D5", 2: "U_Net2D5"}, {1: path, 2: path})
    assert same_weights(students[2].state_dict(), state)
    if kind != "ddp_published":
        out = convert_main(["--input", str(path), "--output", str(tmp_path / "pub.pth"), "--network", "U_Net2D5",
                            "--to", "published"])
        assert same_weights(torch.load(out, weights_only=True), ours_to_published(state, "U_Net2D5"))


def test_a_ddp_state_dict_through_inference_without_network(data, tmp_path):
    """``--model`` of a bare, ``module.``-prefixed state dict: its network is recognised."""
    path = tmp_path / "ddp.pth"
    torch.save(_prefixed(_net().state_dict(), "module."), path)
    out = inference.main(["--model", str(path), "--dataset_split", str(data["split"]), "--path_images",
                          str(data["image_crop"]), *SHAPE, "--device", "cpu", "--output_folder", str(tmp_path / "o")])
    assert len(out) == 1 and out[0].is_file()


def test_a_ddp_state_dict_of_another_network_is_named(tmp_path):
    path = tmp_path / "unet_ddp.pth"
    torch.save(_prefixed(_net(network="U_Net").state_dict(), "module."), path)
    with pytest.raises(ValueError) as err:
        load_model_weights(get_network("U_Net2D5", 1, 2), path, "U_Net2D5", flag="--network1")
    assert one_line(err) == (f"checkpoint {path} does not fit network U_Net2D5: it holds a U_Net state dict; pass "
                             "--network1 U_Net or another checkpoint")


# ------------------------------------------------------------------ another class count
def _three_classes(tmp_path, layout):
    net = _net(3)
    path = tmp_path / f"three_{layout}.pth"
    if layout == "bare":
        torch.save(net.state_dict(), path)
    elif layout == "ours":
        save_model(path, net, "U_Net2D5")
    else:
        torch.save(ours_to_published(net.state_dict(), "U_Net2D5"), path)
    return path


def _classes_message(path):
    return (f"checkpoint {path} holds a U_Net2D5 with 3 output classes; this project's networks have 2 (background "
            "and lesion): pass a checkpoint trained with 2 classes")


@pytest.mark.parametrize("layout", ["bare", "ours", "published"])
def test_another_class_count_is_one_line(tmp_path, layout):
    path = _three_classes(tmp_path, layout)
    with pytest.raises(ValueError) as err:
        load_model_weights(get_network("U_Net2D5", 1, 2), path, "U_Net2D5")
    assert one_line(err) == _classes_message(path)


def test_another_class_count_through_the_scripts(data, tmp_path, capsys):
    path = _three_classes(tmp_path, "ours")
    expected = f"error: {_classes_message(path)}\n"
    assert run_main(inference.main, ["--model", str(path), "--dataset_split", str(data["split"]), "--path_images",
                                     str(data["image_crop"]), *SHAPE, "--device", "cpu", "--output_folder",
                                     str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == expected
    assert run_main(export_model.main, ["--checkpoint", str(path), *SHAPE, "--output", str(tmp_path / "x.zip")]) == 2
    assert capsys.readouterr().err == expected
    pre = pretrained(tmp_path)
    stage1 = pre[1] / "U_Net2D5" / "models" / "CP_best.pth"
    stage1.write_bytes(path.read_bytes())
    assert run_main(scm.main, scm_args(data, pre, tmp_path / "scm")) == 2
    assert capsys.readouterr().err == f"error: {_classes_message(stage1)}\n"
    assert not list(tmp_path.glob("o/*")) and not (tmp_path / "x.zip").exists() and not (tmp_path / "scm").exists()


def test_another_input_channel_count_is_one_line(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "two_channels.pth"
    torch.save(get_network("U_Net2D5", 2, 2).state_dict(), path)
    with pytest.raises(ValueError) as err:
        load_model_weights(get_network("U_Net2D5", 1, 2), path, "U_Net2D5")
    assert one_line(err) == (f"checkpoint {path} holds a U_Net2D5 with 2 input channel(s); this project's networks "
                             "take 1 (one image): pass a checkpoint trained with 1")


# ------------------------------------------------------------------ pickles and damaged files
class _Model(torch.nn.Module):  # a foreign model class, pickled whole
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 1)


def _bad_file(tmp_path, kind):
    path = tmp_path / f"{kind}.pth"
    if kind == "model_object":
        torch.save(_net(), path)
    elif kind == "foreign_model_object":
        torch.save(_Model(), path)
    elif kind == "pickle":
        torch.save({"weights": _net().state_dict(), "ratio": fractions.Fraction(1, 3)}, path)
    elif kind == "plain_pickle":
        path.write_bytes(pickle.dumps({"a": 1j}, protocol=4))
    elif kind == "text":
        path.write_text("not a checkpoint")
    elif kind == "truncated":
        torch.save(_net().state_dict(), path)
        path.write_bytes(path.read_bytes()[:1000])
    else:
        path.write_bytes(b"")
    return path


def _bad_message(path, kind):
    refused = "that torch.load refuses (weights_only=True: loading it would run code from the file); " + ACCEPTED
    return {
        "model_object": f"{path} is a pickled model object (networks.unet2d5.U_Net2D5, the whole model saved by "
                        "torch.save) " + refused,
        "foreign_model_object": f"{path} is a pickled model object (test_reliability_checkpoints._Model, the whole "
                                "model saved by torch.save) " + refused,
        "pickle": f"{path} holds pickled Python objects (fractions.Fraction) " + refused,
        "plain_pickle": f"{path} holds pickled Python objects " + refused,
        "text": f"{path} is not a PyTorch file, or a truncated or damaged one (neither a zip archive nor a "
                "pickle); " + ACCEPTED,
        "truncated": f"{path} is not a PyTorch file, or a truncated or damaged one (PytorchStreamReader failed reading "
                     "zip archive: failed finding central directory); " + ACCEPTED,
        "empty": f"{path} is not a PyTorch file, or a truncated or damaged one (empty file); " + ACCEPTED,
    }[kind]


KINDS = ["model_object", "foreign_model_object", "pickle", "plain_pickle", "text", "truncated", "empty"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_file_that_is_no_state_dict_is_named(tmp_path, kind):
    path = _bad_file(tmp_path, kind)
    with pytest.raises(ValueError) as err:
        load_model_weights(get_network("U_Net2D5", 1, 2), path, "U_Net2D5")
    assert one_line(err) == _bad_message(path, kind)
    with pytest.raises(ValueError) as err:
        load_state_dict(path)
    assert one_line(err) == _bad_message(path, kind)


@pytest.mark.parametrize("kind", ["model_object", "pickle", "plain_pickle"])
def test_a_pickle_through_the_scripts(data, tmp_path, capsys, kind):
    """One line on stderr, no terminal escapes, no torch warning; inference without --network too."""
    path = _bad_file(tmp_path, kind)
    expected = f"error: {_bad_message(path, kind)}\n"
    assert run_main(convert_main, ["--input", str(path), "--output", str(tmp_path / "x.pth"), "--network",
                                   "U_Net2D5", "--to", "published"]) == 2
    assert capsys.readouterr().err == expected
    assert run_main(inference.main, ["--model", str(path), "--dataset_split", str(data["split"]), "--path_images",
                                     str(data["image_crop"]), *SHAPE, "--device", "cpu", "--output_folder",
                                     str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == expected
    assert not (tmp_path / "x.pth").exists() and not list(tmp_path.glob("o/*"))


def test_stage1_init_checkpoint_names_a_pickled_model(data, tmp_path, capsys):
    """Stage 1's --init_checkpoint: the same line, before anything is written."""
    path = _bad_file(tmp_path, "model_object")
    assert run_main(stage1.main, stage1_args(data, tmp_path / "run", "--init_checkpoint", str(path))) == 2
    assert capsys.readouterr().err == f"error: {_bad_message(path, 'model_object')}\n"
    assert not (tmp_path / "run").exists()
