"""Scoring keeps an empty label as a case and counts it in the summary."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synth import write

from utilities import scores
from utilities.data.layout import RunLayout


# ------------------------------------------------------------------------ empty cases in scoring
def test_empty_label_kept_and_counted(tmp_path, capsys):
    """Complements tests/utilities/evaluation/test_scoring.py::test_scores_script_keeps_empty_cases
    (empty predictions and both empty): a non-empty prediction on an empty label is kept and
    counted too."""
    shape = (8, 12, 12)
    full = np.zeros(shape, np.uint8)
    full[2:6, 2:8, 2:8] = 1
    cases = {"a": (full, full), "b": (full, np.zeros(shape, np.uint8))}
    split = tmp_path / "split.csv"
    split.write_text("a,inference\nb,inference\n")
    for subject, (pred, label) in cases.items():
        write(pred, RunLayout(tmp_path / "m", "U_Net2D5").prediction(subject, "T2"))
        write(label, tmp_path / "labels" / f"{subject}_Label.nii.gz")
    out = scores.main(["--model_dir", str(tmp_path / "m"), "--network", "U_Net2D5", "--dataset_split", str(split),
                       "--path_labels", str(tmp_path / "labels")])
    table = pd.read_csv(out).set_index("subject")
    assert list(table.index) == ["a", "b", "mean", "std"]
    assert table.loc["b", "dice"] == 0.0 and np.isnan(table.loc["b", "hd95"])
    assert table.loc["mean", "dice"] == pytest.approx(0.5) and table.loc["mean", "hd95"] == 0.0
    printed = capsys.readouterr().out
    assert "empty label (1): b" in printed
    assert "over 2 of 2 cases" in printed and "over 1 of 2 cases" in printed
