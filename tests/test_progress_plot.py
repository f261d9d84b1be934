"""progress.png: drawn beside log.csv after every epoch of both trainers, collapse streaks found
from the logged columns, a drawing failure never stops training."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from helpers import pretrained, scm_args, stage1_args
from PIL import Image

import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
import train_SCM as scm
from utilities import progress
from utilities.progress import collapse_streaks, collapsed_epochs, plot_progress, progress_path


def _stage1_log(val_empty, fg_train, seed_fg=0.004):
    n = len(val_empty)
    return pd.DataFrame({"epoch": np.arange(1, n + 1), "lr": np.linspace(0.01, 0.001, n), "loss": np.ones(n),
                         "loss_seg": np.ones(n), "ramp": np.linspace(0, 1, n), "fg_train": fg_train,
                         "seed_fg": [seed_fg] * n, "grad_seg": np.full(n, 1e-3), "val_dice": np.linspace(0, .8, n),
                         "val_fg_fraction": np.where(np.array(val_empty) == 1, 0.0, 0.01), "val_empty": val_empty})


def test_collapse_streaks_from_the_columns():
    # epochs 2-3: validation empty; 5: training patches under a tenth of the seeds; 7: fine again
    log = _stage1_log([0, 1, 1, 0, 0, 0, 0], [0.01, 0.01, 0.0, 0.01, 0.0003, 0.01, 0.01])
    assert collapsed_epochs(log) == [2, 3, 5]
    assert collapse_streaks(collapsed_epochs(log)) == [(2, 3), (5, 5)]
    # no foreground in the seeds: nothing to compare with, never a collapse
    assert collapsed_epochs(_stage1_log([1, 1], [0.0, 0.0], seed_fg=0.0)) == []
    # SCM: each model against its teacher
    scm_log = pd.DataFrame({"epoch": [1, 2, 3], "val_empty1": [0, 0, 1], "fg_train1": [0.1, 0.1, 0.1],
                            "teacher_fg1": [0.1, 0.1, 0.1], "val_empty2": [0, 0, 0],
                            "fg_train2": [0.1, 0.001, 0.1], "teacher_fg2": [0.1, 0.1, 0.1]})
    assert collapsed_epochs(scm_log) == [2, 3]
    # the engine's own column counts too (a prediction of foreground everywhere)
    assert collapsed_epochs(_stage1_log([0, 0], [0.01, 0.01]).assign(collapsed=[0, 1])) == [2]


def test_plot_names_the_collapse(tmp_path):
    csv = tmp_path / "log.csv"
    _stage1_log([0, 1, 1, 0], [0.01, 0.0, 0.0, 0.01]).to_csv(csv, index=False)
    out = plot_progress(csv)
    assert out == tmp_path / "progress.png"
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 500 and image.size[1] > 800
        pixels = np.asarray(image.convert("RGB")).astype(int)
    # the shaded streak: pale red columns (red clearly above green and blue) somewhere in the figure
    pale_red = (pixels[..., 0] > 240) & (pixels[..., 1] < 225) & (pixels[..., 1] > 180) & (pixels[..., 2] < 225)
    assert pale_red.sum() > 1000
    assert progress_path(tmp_path / "log_SCM.csv") == tmp_path / "progress_SCM.png"


def test_both_trainers_draw_each_epoch(data, tmp_path, monkeypatch):
    drawn = []
    real = progress.plot_progress
    monkeypatch.setattr(progress, "plot_progress", lambda csv: drawn.append(len(pd.read_csv(csv))) or real(csv))
    run = stage1.main(stage1_args(data, tmp_path / "run", "--rampup_epochs", "0"))
    assert drawn == [1, 2]  # redrawn after each epoch's row, from the CSV
    with Image.open(run / "progress.png") as image:
        assert image.format == "PNG"
    scm.main(scm_args(data, pretrained(tmp_path), tmp_path / "scm", "--max_epochs", "1"))
    assert (tmp_path / "scm" / "U_Net2D5" / "progress_SCM.png").is_file()
    assert drawn == [1, 2, 1]


def test_a_drawing_failure_is_a_warning(data, tmp_path, monkeypatch, capsys):
    def broken(csv):
        raise RuntimeError("no fonts\nsecond line")

    monkeypatch.setattr(progress, "plot_progress", broken)
    run = stage1.main(stage1_args(data, tmp_path / "run", "--max_epochs", "1", "--rampup_epochs", "0"))
    assert (run / "models" / "CP_final.pth").is_file()  # the run finished
    warnings = [line.split(" WARNING ", 1)[1] for line in capsys.readouterr().out.splitlines()
                if " WARNING " in line and "progress" in line]
    assert warnings == [f"could not draw {run / 'progress.png'} (RuntimeError: no fonts); training continues"]


@pytest.mark.parametrize("content, message", [("", "training log {} is empty \\(no header row\\)"),
                                              ("a,b\n1,2\n", "{} has no epoch column"),
                                              ("epoch,loss,loss\n1,2,3\n", "training log {}: its header names "
                                                                          "column 'loss' twice")])
def test_unreadable_log_is_refused_by_the_plot(tmp_path, content, message):
    csv = tmp_path / "log.csv"
    csv.write_text(content)
    with pytest.raises(ValueError, match=message.format(re.escape(str(csv)))):
        plot_progress(csv)
    assert progress.draw_progress(csv) is None and not (tmp_path / "progress.png").exists()
