"""A checkpoint of another network, or a file that is no checkpoint, is named in one line."""
from __future__ import annotations

import pytest
from helpers import a_model, inference_args, one_line, pretrained, scm_args

import inference
import train_SCM as scm


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
