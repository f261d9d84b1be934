"""experiments/replay_seed_rule.py: the seed rule replayed from logs, against the runs' Dice, on hand-made folders."""
from __future__ import annotations

import pandas as pd
import pytest
from helpers import load_script

from utilities.workflow.cli import run_main

replay = load_script("experiments/replay_seed_rule.py")

SHARES = ("seed_fg", "seed_unknown", "fg_core", "fg_unknown", "fg_outside")


def _log(path, rows, best_epoch):
    """A stage-1 log with the seed rule's columns, a row per epoch of the counts (core, unknown, and the
    prediction on the core, on the unknown and outside the boxes)."""
    table = pd.DataFrame([dict(zip(SHARES, (c / 1000 for c in counts)), epoch=e + 1) for e, counts in enumerate(rows)])
    table["best_epoch"] = best_epoch
    table.to_csv(path, index=False)


@pytest.fixture
def folder(tmp_path):
    runs = tmp_path / "member"
    (runs / "logs").mkdir(parents=True)
    cases = ["a", "b"]
    pd.DataFrame({"variant": "seeds", "seed": "-", "subject": cases, "dice": [0.5, 0.5]}).to_csv(
        tmp_path / "seeds.csv", index=False)
    pd.DataFrame({"variant": ["good"] * 2 + ["flood"] * 2 + ["tie"] * 2, "seed": [0] * 6, "subject": cases * 3,
                  "dice": [0.6, 0.8, 0.1, 0.1, 0.48, 0.48]}).to_csv(runs / "per_case.csv", index=False)
    # good (0.7 against 0.5): keeps 4 of a 10-voxel core at its last epoch, 8/14 = 0.571;
    # its best epoch 1 copies the seeds
    _log(runs / "good_seed0_log.csv", [(10, 20, 10, 0, 0), (10, 20, 4, 0, 0)], best_epoch=1)
    # flood (0.1): 300 of 340 predicted voxels outside the boxes at its best epoch (the certain reading)
    _log(runs / "logs" / "flood_seed0_log.csv", [(10, 20, 10, 30, 300), (10, 20, 10, 0, 0)], best_epoch=1)
    # tie (0.48, within 10 % under 0.5): 2 of 10 core voxels at its last epoch, 4/12 = 0.333
    _log(runs / "tie_seed0_log.csv", [(10, 20, 10, 0, 0), (10, 20, 2, 0, 0)], best_epoch=1)
    return runs, tmp_path / "seeds.csv"


def test_replay_flags_by_hand(folder, tmp_path):
    runs, seeds = folder
    table = replay.main(["--runs", f"{runs}={seeds}", "--margins", "0", "0.5", "0.9",
                         "--output_dir", str(tmp_path / "out")])
    flagged = table.pivot_table(index="variant", columns="margin", values="flagged", aggfunc="first")
    assert flagged.loc["flood"].tolist() == [True, True, True]     # certain reading: any margin
    assert flagged.loc["good"].tolist() == [False, False, True]    # 0.571: only a margin near 1 flags it
    assert flagged.loc["tie"].tolist() == [False, True, True]      # 0.333
    truth = table.drop_duplicates("variant").set_index("variant")["truth"]
    assert truth.to_dict() == {"flood": "clearly below", "good": "at or above", "tie": "within 10 % under"}
    assert table.set_index("variant")["dice"].groupby(level=0).first()["good"] == pytest.approx(0.7)
    md = (tmp_path / "out" / "replay.md").read_text()
    assert "| 0.9 | 1 | 1 | 1 | member good seed 0 (0.700 vs 0.500) |" in md
    assert "| 0.5 | 1 | 1 | 0 | none |" in md
    assert len(pd.read_csv(tmp_path / "out" / "replay.csv")) == 9


def test_replay_user_errors(folder, tmp_path, capsys):
    runs, seeds = folder
    out = str(tmp_path / "out")
    assert run_main(replay.main, ["--runs", f"{runs}={tmp_path / 'none.csv'}", "--output_dir", out]) == 2
    assert capsys.readouterr().err.strip() == f"error: --runs: {tmp_path / 'none.csv'} does not exist"
    (runs / "per_case.csv").write_text("variant,seed,subject,dice\nflood,0,a,0.1\n")
    assert run_main(replay.main, ["--runs", f"{runs}={seeds}", "--output_dir", out]) == 2
    assert "no per-case rows for variant good seed 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        replay.main(["--runs", str(runs), "--output_dir", out])   # FOLDER=SEEDS_CSV expected
