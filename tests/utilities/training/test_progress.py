"""progress.png: drawn beside log.csv after every epoch of both trainers; shaded exactly where the
training log warned of a collapse (and where a flood after a recovery went unjudged); numbers on
the log-scale axes; a drawing failure never stops training."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from helpers import pretrained, scm_args, stage1_args
from PIL import Image

import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
import train_SCM as scm
from utilities.training import engine, progress
from utilities.training.engine import Callback
from utilities.training.progress import (
    Streak,
    collapse_streaks,
    collapsed_epochs,
    plot_progress,
    progress_figure,
    progress_path,
    recorded_patience,
    unjudged_floods,
    warned_streaks,
)


@pytest.fixture
def _drawn(monkeypatch):
    """The real picture for the trainers' own drawings (elsewhere they build the figure only:
    conftest); the tests below that call :func:`plot_progress` themselves draw the real one."""
    monkeypatch.setattr(progress, "plot_progress", plot_progress)


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
    out = plot_progress(csv, patience=2)
    assert out == tmp_path / "progress.png"
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 500 and image.size[1] > 800
        pixels = np.asarray(image.convert("RGB")).astype(int)
    # the shaded streak: pale red columns (red clearly above green and blue) somewhere in the figure
    pale_red = (pixels[..., 0] > 240) & (pixels[..., 1] < 225) & (pixels[..., 1] > 180) & (pixels[..., 2] < 225)
    assert pale_red.sum() > 1000
    assert progress_path(tmp_path / "log_SCM.csv") == tmp_path / "progress_SCM.png"


@pytest.mark.slow
def test_both_trainers_draw_each_epoch(data, tmp_path, monkeypatch, _drawn):
    drawn = []
    real = progress.plot_progress
    monkeypatch.setattr(progress, "plot_progress",
                        lambda csv, **kw: drawn.append(len(pd.read_csv(csv))) or real(csv, **kw))
    run = stage1.main(stage1_args(data, tmp_path / "run", "--rampup_epochs", "0"))
    assert drawn == [1, 2]  # redrawn after each epoch's row, from the CSV
    with Image.open(run / "progress.png") as image:
        assert image.format == "PNG"
    scm.main(scm_args(data, pretrained(tmp_path), tmp_path / "scm", "--max_epochs", "1"))
    assert (tmp_path / "scm" / "U_Net2D5" / "progress_SCM.png").is_file()
    assert drawn == [1, 2, 1]


@pytest.mark.slow
@pytest.mark.parametrize("interval, expected", [(1e9, [1, 4]), (0.0, [1, 2, 3, 4])])
def test_redrawn_at_most_every_interval_and_always_at_the_end(data, tmp_path, monkeypatch, interval, expected):
    """With epochs shorter than the interval, the picture is drawn after the first epoch and the
    last; with no interval, after every epoch."""
    drawn = []
    real = progress.plot_progress
    monkeypatch.setattr(progress, "plot_progress",
                        lambda csv, **kw: drawn.append(len(pd.read_csv(csv))) or real(csv, **kw))
    monkeypatch.setattr(engine, "PROGRESS_INTERVAL_S", interval)
    # patience 5: no collapse warning on these 4 epochs (an epoch with one is drawn whatever the interval)
    stage1.main(stage1_args(data, tmp_path / "run", "--max_epochs", "4", "--rampup_epochs", "0",
                            "--collapse_patience", "5"))
    assert drawn == expected


@pytest.mark.slow
def test_a_drawing_failure_is_a_warning(data, tmp_path, monkeypatch, capsys):
    def broken(csv, **kw):
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


def _visible_y_labels(ax):
    low, high = sorted(ax.get_ylim())
    return [(float(v), t.get_text()) for v, t in zip(ax.get_yticks(), ax.get_yticklabels()) if low <= v <= high]


def _label_value(text):
    """The number a log axis label shows: '$\\mathdefault{3\\times10^{-1}}$' -> 0.3."""
    found = re.fullmatch(r"\$\\mathdefault\{(?:([\d.]+)\\times)?10\^\{(-?\d+)\}\}\$", text)
    assert found, text
    return float(found.group(1) or 1) * 10.0 ** int(found.group(2))


@pytest.mark.parametrize("grads, shown", [
    (np.linspace(2e-3, 5e-3, 6), [2e-3, 3e-3, 5e-3]),                  # within a decade: 1-2-3-5
    (np.linspace(9e-4, 9e-3, 6), [1e-3, 2e-3, 3e-3, 5e-3, 1e-2]),      # across one
    (np.logspace(-6, 0, 6), [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]),  # six decades: decades only
    (np.linspace(4.1e-3, 4.3e-3, 6), None),                            # within 5 %: linear steps
], ids=["in a decade", "across one", "6 decades", "within 5 percent"])
def test_log_panels_carry_numbers(tmp_path, grads, shown):
    """SCM's log panels (losses 0.3-0.6, foreground 1-3 %, gradients as given): at least two
    numbered ticks on each, every label the value of its tick."""
    n = 6
    log = pd.DataFrame({"epoch": np.arange(1, n + 1), "loss1": np.linspace(0.3, 0.6, n),
                        "self1": np.linspace(0.31, 0.5, n), "fg_train1": np.linspace(0.011, 0.03, n),
                        "teacher_fg1": [0.02] * n, "val_empty1": [0] * n, "grad_self1": grads,
                        "val_dice1": np.linspace(0.1, 0.5, n)})
    fig = progress_figure(log, tmp_path / "log_SCM.csv", patience=3)
    fig.canvas.draw()
    panels = {ax.get_title(loc="left"): ax for ax in fig.axes if ax.get_title(loc="left")}
    for title in ("losses (epoch means)", "health: foreground fraction", "gradient norm w.r.t. the logits"):
        ax = panels[title]
        assert ax.get_yscale() == "log"
        labels = _visible_y_labels(ax)
        assert len(labels) >= 2 and all(text for _, text in labels), (title, labels)
        assert all(_label_value(text) == pytest.approx(value, rel=1e-2) for value, text in labels)
    values = [_label_value(t) for _, t in _visible_y_labels(panels["gradient norm w.r.t. the logits"])]
    if shown is not None:
        assert values == pytest.approx(shown)
    else:
        assert len(values) >= 3 and 4.08e-3 < values[0] < 4.11e-3 < 4.29e-3 < values[-1] < 4.32e-3
        assert np.diff(values) == pytest.approx(np.full(len(values) - 1, values[1] - values[0]))


def test_warned_streaks_replay_the_engine_count():
    """Patience 3: a streak of two epochs draws no warning; a streak of four warns at its third
    epoch and is shaded whole; a recovery ends a streak and the count starts afresh; SCM's
    models are counted apart."""
    log = _stage1_log([0, 1, 1, 0, 1, 1, 1, 1, 0], [0.01] * 9)
    assert collapsed_epochs(log) == [2, 3, 5, 6, 7, 8]          # every collapsed epoch...
    assert warned_streaks(log, 3) == [Streak("model", 5, 8, 7)]  # ...but one warning: epochs 5-7, then 8
    assert warned_streaks(log, 2) == [Streak("model", 2, 3, 3), Streak("model", 5, 8, 6)]
    assert warned_streaks(log, 5) == []
    # recovered at the warning (epoch 7): epochs 8-9 collapsed again, a fresh count of 2 < 3
    recovered = _stage1_log([0, 1, 1, 0, 1, 1, 1, 1, 1], [0.01] * 9).assign(recovered=[0] * 6 + [1, 0, 0])
    assert warned_streaks(recovered, 3) == [Streak("model", 5, 7, 7)]
    # the engine's column wins where logged (a log read back as the engine wrote it)
    assert warned_streaks(log.assign(collapsed=[0] * 9), 1) == []
    scm = pd.DataFrame({"epoch": [1, 2, 3, 4], "val_empty1": [1, 1, 0, 0], "val_empty2": [0, 1, 1, 1],
                        "fg_train1": [0.1] * 4, "fg_train2": [0.1] * 4, "teacher_fg1": [0.1] * 4,
                        "teacher_fg2": [0.1] * 4})
    assert collapse_streaks(collapsed_epochs(scm)) == [(1, 4)]    # the union would be one streak of 4
    assert warned_streaks(scm, 3) == [Streak("model2", 2, 4, 4)]


class Provoke(Callback):
    """Sets the health columns: the training patches at twice the seeds' foreground, inside the
    points' boxes (healthy: the tiny network's own would flood), except in ``empty`` epochs
    (0-based: validation reports every volume empty) and ``flood`` epochs (500 times the seeds'
    foreground, 90 % of it outside the boxes; ``ramp`` as trained, or full in ``full_ramp`` epochs)."""

    def __init__(self, empty=(), flood=(), full_ramp=()):
        self.empty, self.flood, self.full_ramp = set(empty), set(flood), set(full_ramp)

    def on_validated(self, epoch, row, state):
        extra = {"fg_train": 0.004, "seed_fg": 0.002, "fg_outside": 0.0} | (
            {"val_empty": 1.0} if epoch in self.empty else {})
        if epoch in self.flood:
            extra |= {"fg_train": 0.5, "seed_fg": 0.001, "fg_outside": 0.45} | (
                {"ramp": 1.0} if epoch in self.full_ramp else {})
        return extra


def _logged_warnings(out):
    """``(first, last)`` of each collapse warning the training printed."""
    found = re.finditer(r"WARNING collapse: .*? \(epochs (\d+)-(\d+)\)", out)
    return [tuple(int(e) for e in m.groups()) for m in found]


@pytest.fixture(scope="module")
def tiny(tiny_seeds, tmp_path_factory):
    """The shared tiny seeded dataset (conftest's ``tiny_seeds``); this module's runs in its own folder."""
    root = tmp_path_factory.mktemp("progress")
    _, common = tiny_seeds
    return root, [*common, "--num_workers", "1", "--rampup_epochs", "2"]


@pytest.mark.slow
def test_shading_equals_the_logged_warnings(tiny, capsys):
    """A real run, patience 2: empty validation in epochs 2, 4, 5 and 6. The log warns once
    (epochs 4-5) and the model stays collapsed in epoch 6: the figure shades epochs 4-6 only,
    with or without the patience passed (read back from the run's text log)."""
    root, common = tiny
    run = stage1.main(["--model_dir", str(root / "warn"), *common, "--max_epochs", "6", "--collapse_patience", "2"],
                      callbacks=[Provoke(empty={1, 3, 4, 5})])
    logged = _logged_warnings(capsys.readouterr().out)
    assert logged == [(4, 5)]
    log = pd.read_csv(run / "log.csv")
    assert collapsed_epochs(log) == [2, 4, 5, 6]
    streaks = warned_streaks(log, 2)
    assert [(s.first, s.warned_at) for s in streaks] == logged   # one shaded streak per warning, from its start
    assert streaks == [Streak("model", 4, 6, 5)]
    assert recorded_patience(run / "log.csv") == 2
    for patience in (2, None):   # as the engine drew it, and redrawn from the folder alone
        fig = progress_figure(log, run / "log.csv", patience or recorded_patience(run / "log.csv"))
        assert [(p.get_x(), p.get_width()) for p in fig.axes[0].patches] == [(3.5, 3.0)]   # epochs 4-6
        assert "collapse warnings (shaded red): epochs 4-6 (warned at 5)" in fig._suptitle.get_text()
    plot_progress(run / "log.csv")
    with Image.open(run / "progress.png") as image:
        assert image.format == "PNG"


@pytest.mark.slow
def test_a_flood_after_a_recovery_is_shaded(tiny, capsys):
    """Recover on a flood at full ramp (epoch 2, warned, red); the flood goes on in epochs 3-4 while
    the restarted ramp-up is below full weight, so the rule is off and nothing is warned: shaded
    orange, and named as such."""
    root, common = tiny
    run = stage1.main(["--model_dir", str(root / "flood"), *common, "--max_epochs", "4", "--collapse_patience", "1",
                       "--on_collapse", "recover"], callbacks=[Provoke(flood={1, 2, 3}, full_ramp={1})])
    assert _logged_warnings(capsys.readouterr().out) == [(2, 2)]
    log = pd.read_csv(run / "log.csv")
    assert log["collapsed"].tolist() == [0, 1, 0, 0] and log["recovered"].tolist() == [0, 1, 0, 0]
    assert (log["ramp"].iloc[2:] < 0.99).all() and (log["fg_train"].iloc[1:] == 0.5).all()
    assert warned_streaks(log, 1) == [Streak("model", 2, 2, 2)]
    assert unjudged_floods(log) == [Streak("model", 3, 4)]
    fig = progress_figure(log, run / "log.csv", 1)
    bands = sorted((p.get_x(), p.get_width(), p.get_facecolor()[:3]) for p in fig.axes[3].patches)
    assert [(x, w) for x, w, _ in bands] == [(1.5, 1.0), (2.5, 2.0)]
    assert bands[0][2] == pytest.approx((1.0, 0.0, 0.0)) and bands[1][2] == pytest.approx((1.0, 0.549, 0.0), abs=1e-3)
    title = fig._suptitle.get_text().replace("\n", " ")
    assert "collapse warnings (shaded red): epochs 2 (warned at 2)" in title
    assert "flood after a recovery, not judged while the ramp-up restarts (shaded orange): epochs 3-4" in title
    # without a recovery the same flood at low ramp is no collapse at all, and nothing is shaded
    assert unjudged_floods(log.drop(columns="recovered")) == []
