"""The quick demo end to end: the five rows of the paper's table and the overlay pictures."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers import ScriptsInProcess, load_script

ROWS = ["Expanded seeds (geodesic)", "Seeds only (partial DiceCE)", "PA-Seg stage 1 (+ mCRF + VM)",
        "PA-Seg stage 2 (SCM)", "Full supervision"]


@pytest.mark.slow
def test_quick_demo(tmp_path, monkeypatch):
    """The quick demo end to end: its first training starts as a subprocess of the real script,
    the other four run in this process with the same arguments (``helpers.ScriptsInProcess``)."""
    demo = load_script("data/demo/run_demo.py")
    scripts = ScriptsInProcess(subprocesses=1).install(monkeypatch)
    out = tmp_path / "out"
    results = demo.main(["--quick", "--output_dir", str(out), "--data_dir", str(tmp_path / "data"),
                         "--split_file", str(tmp_path / "split.csv"), "--device", "cpu", "--overlays", "1"])
    assert results["method"].tolist() == ROWS
    assert results["dice_mean"].between(0, 1).all()
    assert (results["assd_mean"].dropna() >= 0).all()
    saved = pd.read_csv(out / "results.csv")
    assert saved["method"].tolist() == ROWS
    markdown = (out / "results.md").read_text()
    assert all(f"| {row} |" in markdown for row in ROWS) and "total:" in markdown
    selection = pd.read_csv(out / "selection.csv")
    assert selection["selected_by"].tolist() == ["dice (full labels)", "seed_dice (points only)"]
    assert selection["dice_mean"].between(0, 1).all()
    assert selection["dice_mean"].iloc[0] == saved["dice_mean"].iloc[2]  # the stage-1 row
    assert "Selected by" in markdown
    pngs = sorted(out.glob("overlay_*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every method's predictions exist for every inference case
    split = pd.read_csv(tmp_path / "split.csv", header=None, names=["subject", "phase"])
    n_inf = int((split["phase"] == "inference").sum())
    assert len(list((out / "models").rglob("*_seg.nii.gz"))) == 6 * n_inf
    in_process = sorted(Path(c[1]).name for c in scripts.in_process)   # the order depends on the two slots
    assert in_process == ["train_SCM.py"] + ["train_gatedcrfloss3d22d_multiview_varianceloss.py"] * 3
