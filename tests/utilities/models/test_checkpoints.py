"""utilities/models/checkpoints.py: a checkpoint of another network, or a file that is no
checkpoint, is named in one line; the best-epoch tracker never prefers an epoch below its seeds."""
from __future__ import annotations

import math

import pytest
from helpers import a_model, inference_args, one_line, pretrained, scm_args

import inference
import train_SCM as scm
from utilities.models.checkpoints import BestTracker


# ------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("script", ["inference", "scm"])
@pytest.mark.parametrize("bad", ["other_network", "not_a_checkpoint"])
def test_wrong_checkpoint_named(data, tmp_path, script, bad):
    if script == "inference":
        path = a_model(tmp_path / "m")
    else:
        pre = pretrained(tmp_path)
        path = pre[1] / "U_Net2D5" / "models" / "CP_best.pth"
    if bad == "other_network":
        a_model(path.parents[2], network="U_Net", folder="U_Net2D5")   # a U_Net where U_Net2D5 is expected
    else:
        path.write_text("not a checkpoint")
    with pytest.raises(ValueError) as err:
        if script == "inference":
            inference.main(inference_args(data, tmp_path / "m"))
        else:
            scm.main(scm_args(data, pre, tmp_path / "scm"))
    flag = "--network" if script == "inference" else "--network2"
    expected = (f"checkpoint {path} holds a U_Net network, not U_Net2D5; pass {flag} U_Net or another checkpoint"
                if bad == "other_network" else
                f"{path} is not a PyTorch file, or a truncated or damaged one (neither a zip archive nor a pickle); "
                "pass a state dict (save model.state_dict(), not the model), a CP_*.pth of this project or one of the "
                "authors' released checkpoints")
    assert one_line(err) == expected
    assert not (tmp_path / "scm").exists() and not list(tmp_path.rglob("*_seg.nii.gz"))


# ------------------------------------------------------------------ the best epoch and the seed rule
@pytest.mark.parametrize("epochs, guarded, chosen, updates", [
    ([(0.5, False), (0.9, True), (0.4, False)], True, (1, 0.5), [True, False, False]),
    ([(0.5, False), (0.9, True), (0.4, False)], False, (2, 0.9), [True, True, False]),
    # every epoch so far below its seeds: the best of them, until one is not, whatever its value
    ([(0.9, True), (0.95, True), (0.3, False), (0.99, True), (0.2, False)], True, (3, 0.3),
     [True, True, True, False, False]),
    ([(0.3, False), (math.nan, False)], True, (1, 0.3), [True, False]),
])
def test_best_tracker_never_prefers_an_epoch_below_its_seeds(epochs, guarded, chosen, updates):
    tracker = BestTracker()
    got = [tracker.update(value, epoch, below=below, guarded=guarded)
           for epoch, (value, below) in enumerate(epochs, start=1)]
    assert got == updates and (tracker.epoch, tracker.value) == chosen
    assert tracker.below == epochs[chosen[0] - 1][1]


def test_a_folder_given_as_a_checkpoint_is_named_as_one(tmp_path):
    """--init_checkpoint (or export_model.py --checkpoint) given a run folder: one line saying it is
    a folder and what file to pass, not "not found"."""
    from networks import get_network
    from utilities.models.checkpoints import load_model_weights
    from utilities.models.model_package import spec_from_checkpoint

    message = (f"checkpoint {tmp_path} is a folder, not a file; pass a checkpoint file, e.g. "
               "<run folder>/<network>/models/CP_best.pth")
    with pytest.raises(ValueError) as err:
        load_model_weights(get_network("U_Net2D5", 1, 2), tmp_path, "U_Net2D5")
    assert str(err.value) == message
    with pytest.raises(ValueError) as err:
        spec_from_checkpoint(tmp_path, "U_Net2D5")
    assert str(err.value) == message


def test_another_networks_checkpoint_is_named_with_its_article(tmp_path):
    from networks import get_network
    from utilities.models.checkpoints import load_model_weights, save_model

    path = tmp_path / "CP_best.pth"
    save_model(path, get_network("AttU_Net", 1, 2), "AttU_Net")
    with pytest.raises(ValueError, match=r"holds an AttU_Net network, not U_Net2D5; pass --network AttU_Net or "):
        load_model_weights(get_network("U_Net2D5", 1, 2), path, "U_Net2D5")
