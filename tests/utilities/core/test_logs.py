"""A run whose output goes to a file (``python train_... > run.log``) gets readable lines: no
progress-bar frames (carriage returns) when stderr is not a terminal, a bar when it is."""
from __future__ import annotations

import os
import sys

from helpers import a_model, geodesic_args, inference_args, load_script, stage1_args

import inference
import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
from utilities.core.logs import show_progress

GEODESIC = load_script("data/VS/generate_geodesic_labels.py")
SIMULATE = load_script("data/simulate_7points.py")


def test_redirected_runs_write_lines_not_frames(data, tmp_path, capsys):
    stage1.main(stage1_args(data, tmp_path / "run", "--max_epochs", "1", "--rampup_epochs", "0"))
    inference.main(inference_args(data, a_model(tmp_path / "m").parents[2]))
    GEODESIC.main(geodesic_args(data, tmp_path / "geo"))
    SIMULATE.main(["--dataset_split", str(data["split"]), "--path_labels", str(data["label_crop"]),
                   "--path_anno_7points", str(tmp_path / "anno")])
    captured = capsys.readouterr()
    assert "\r" not in captured.out and "\r" not in captured.err
    assert "epoch 1/1 lr" in captured.out  # the per-epoch line
    assert "1/1 vs_gk_4: " in captured.out  # inference: a line per case


def test_progress_bar_on_a_terminal(monkeypatch):
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as tty:
        monkeypatch.setattr(sys, "stderr", tty)
        assert show_progress()
        monkeypatch.undo()
    os.close(leader)
    assert not show_progress()  # pytest's captured stderr is no terminal
