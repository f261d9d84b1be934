"""experiments/collapse_analysis.py: the measurements on tiny inputs, checked against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import load_script

ca = load_script("experiments/collapse_analysis.py")


def test_rampup_table_in_steps():
    table = ca.rampup_table().set_index("steps_per_epoch")
    paper = table.loc[176]
    assert paper["ramp_steps"] == 5280 and paper["total_steps"] == 52800
    # exp(-5 (1 - e/30)^2) >= 0.5  <=>  e >= 30 (1 - sqrt(ln 2 / 5)) = 18.83  -> epoch 19 -> 19 * 176 steps
    assert paper["steps_to_0.5"] == 19 * 176
    assert paper["w_epoch1"] == pytest.approx(math.exp(-5.0))
    demo = table.loc[16].iloc[0]  # make demo: ramp 6 epochs of 16 steps
    assert demo["ramp_steps"] == 96 and demo["steps_to_1"] == 96
    assert demo["w_epoch2"] == pytest.approx(math.exp(-5.0 * (5 / 6) ** 2))


def test_crf_vs_size_empty_is_zero_and_low_contrast_shrinks():
    df = ca.crf_vs_size(radii=(1.0, 3.0), contrasts=(0.5, 20.0), noises=(0.0,))
    assert len(df) == 4
    assert df["lesion_voxels"].tolist() == [8, 8, 136, 136]
    assert (df["E_empty"].abs() < 1e-3 * df["E_dilated"]).all()
    low = df[df["contrast"] == 0.5]
    # without an intensity edge every cut pair costs: dilating costs more, eroding saves
    assert (low["E_dilated"] > low["E_true"]).all() and (low["E_eroded"] < low["E_true"]).all()
    assert (low["dE_per_eroded_voxel"] < 0).all() and (low["inward_push"] > 0).all()
    high = df[(df["contrast"] == 20.0) & (df["lesion_voxels"] == 136)].iloc[0]
    # a 20 sigma_rgb edge: the kernel across it is exp(-200), the true mask costs ~nothing
    assert high["E_true"] < 1e-2 * high["E_eroded"]


def test_margin_logits_and_value_and_grad():
    import torch

    margin = torch.tensor([[[2.0]]])
    logits = ca.margin_logits(margin)
    assert logits.shape == (1, 2, 1, 1, 1)
    assert torch.softmax(logits, 1)[0, 1].item() == pytest.approx(1 / (1 + math.exp(-2.0)))
    value, grad = ca.value_and_grad(lambda lg: (lg[:, 1] - lg[:, 0]).pow(2).sum(), margin)
    assert value == pytest.approx(4.0) and grad.item() == pytest.approx(4.0)
    assert np.array_equal(ca.mask_margin(np.array([[[True, False]]]), 3.0).numpy(), [[[3.0, -3.0]]])


def test_a_new_measurement_keeps_the_sections_on_training_runs(tmp_path):
    """The page is rewritten above the marker; the hand-written run sections below it stay, and a
    page without the marker (or none) is just the new text."""
    page = tmp_path / "collapse.md"
    assert ca.with_kept_sections("new\n", page) == "new\n"
    page.write_text("old measured\n\n" + ca.KEPT_MARKER + "\n## 5. runs\nkept\n", encoding="utf-8")
    assert ca.with_kept_sections("new\n\n", page) == "new\n\n" + ca.KEPT_MARKER + "\n## 5. runs\nkept\n"
    page.write_text("old measured only\n", encoding="utf-8")
    assert ca.with_kept_sections("new\n", page) == "new\n"


def test_outputs_are_the_files_the_page_links():
    """outputs() names every file a measurement writes: the page, the six CSVs and four plots the
    committed page was made with (nothing else of that folder is its)."""
    from helpers import ROOT

    results = ROOT / "docs" / "results"
    written = ca.outputs(results)
    assert written[0] == results / "collapse.md" and all(p.is_file() for p in written)
    committed = {p.name for p in (results / ca.DATA_DIR).iterdir() if p.suffix in (".csv", ".png")}
    assert {p.name for p in written[1:]} == committed and len(written) == 11


def test_existing_outputs_need_overwrite(tmp_path, monkeypatch, capsys):
    """utilities.data.io.check_overwrite's rule: a page, CSV or plot already in --output_dir is refused
    in one line before anything is measured, and replaced with --overwrite."""
    from helpers import one_line

    from utilities.workflow.cli import run_main

    measured = []
    monkeypatch.setattr(ca, "run", lambda out, cases, seed: measured.append((out, cases, seed)) or {})
    plot = tmp_path / "data" / "collapse" / "collapse_rampup.png"
    plot.parent.mkdir(parents=True)
    plot.write_bytes(b"mine")
    with pytest.raises(FileExistsError) as err:
        ca.main(["--output_dir", str(tmp_path)])
    assert one_line(err) == (f"1 file(s) exist already, e.g. {plot}; pass --overwrite to replace them, or choose "
                             "another --output_dir")
    assert run_main(ca.main, ["--output_dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {err.value}\n"
    assert measured == [] and plot.read_bytes() == b"mine"
    ca.main(["--output_dir", str(tmp_path), "--overwrite", "--cases", "2"])
    assert measured == [(tmp_path, 2, 0)]
    ca.main(["--output_dir", str(tmp_path / "fresh")])          # nothing there: no flag needed
    assert measured[-1] == (tmp_path / "fresh", 4, 0)
