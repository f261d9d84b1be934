"""The command lines of the sequence: the script of each step, started as the launcher says, then
each part (flags as JSON holds them, or words) in turn."""
from __future__ import annotations

from pathlib import Path

import pytest

from utilities.method.defaults import SCRIPTS, SEED_POSTFIX
from utilities.method.sequence import USER, Launcher, command, flag_args, seed_args, teacher_args


def test_flag_args():
    assert flag_args({"--a": 1, "--b": [2, 3], "--c": True, "--d": None, "--e": False, "--f": 0.1,
                      "--g": (4, -1), "--h": 12.0}) == ["--a", "1", "--b", "2", "3", "--c", "--f", "0.1", "--g", "4",
                                                        "-1", "--h", "12.0"]


@pytest.mark.parametrize("step", list(SCRIPTS))
def test_every_step_starts_with_its_script(step):
    assert command(step) == ["python", SCRIPTS[step]]
    assert command(step, launcher=Launcher("/env/bin/python", Path("/repo"))) == \
        ["/env/bin/python", str(Path("/repo") / SCRIPTS[step])]


def test_parts_in_order():
    words = command("scm", {"--max_epochs": 4, "--amp": True}, teacher_args("m1", Path("m2")),
                    ["--model_dir", Path("out")], seed_args("seeds"))
    assert words == ["python", SCRIPTS["scm"], "--max_epochs", "4", "--amp", "--pretrained_model1_dir", "m1",
                     "--pretrained_model2_dir", "m2", "--model_dir", "out", "--path_geodesic_labels", "seeds",
                     "--geodesic_label_postfix", SEED_POSTFIX]
    assert teacher_args("a", "b", "U_Net2D5", "AttU_Net") == ["--pretrained_model1_dir", "a", "--network1", "U_Net2D5",
                                                              "--pretrained_model2_dir", "b", "--network2", "AttU_Net"]
    assert seed_args("labels", "Label")[-1] == "Label"
    assert USER == Launcher()


def test_unknown_step():
    with pytest.raises(ValueError, match="unknown step 'stage2'"):
        command("stage2")
