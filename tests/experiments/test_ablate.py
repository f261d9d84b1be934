"""experiments/ablate.py: a quick real ablation on tiny data, skip/resume, the table's numbers, config errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import ROOT, ScriptsInProcess, load_script
from scipy.stats import wilcoxon

from experiments.ablation import config as ablation_config
from experiments.ablation import execution, markers
from utilities.workflow.plan import flag_args

ablate = load_script("experiments/ablate.py")
make_demo = load_script("data/demo/make_demo_data.py")

BASE = {"stage1": {"--max_epochs": 1, "--rampup_epochs": 1, "--spatial_shape": [32, 32, 16],
                   "--down_size": [16, 16, 16]}}
VARIANTS = {"seeds": {"kind": "seeds", "label": "Expanded seeds"},
            "seeds_only": {"kind": "stage1", "label": "Seeds only",
                           "flags": {"--weight_gatedcrf": 0, "--weight_variance": 0}}}


def config(root: Path, **overrides) -> dict:
    cfg = {"title": "tiny", "dataset": {
        "split_file": str(root / "split.csv"), "images": str(root / "data" / "image_crop"), "image_postfix": "T2",
        "labels": str(root / "data" / "label_crop"), "label_postfix": "Label",
        "annotations": str(root / "data" / "annotation_7points"), "annotation_postfix": "7points"},
        "base": BASE, "variants": VARIANTS, "seeds": [0, 1], "baseline": "seeds_only"}
    cfg.update(overrides)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The --quick demo data (4/2/2 cases of 32x32x16) and one finished ablation: 2 variants
    (expanded seeds, seeds-only stage 1 for 1 epoch) x 2 training seeds. Stage 0 starts as a
    subprocess, the two trainings run in this process (``helpers.ScriptsInProcess``)."""
    root = tmp_path_factory.mktemp("ablate")
    make_demo.main(["--quick", "--output_dir", str(root / "data"), "--split_file", str(root / "split.csv"),
                    "--no_report"])
    cfg_path = write_config(root / "tiny.json", config(root))
    out = root / "out"
    with pytest.MonkeyPatch.context() as mp:
        scripts = ScriptsInProcess(subprocesses=1).install(mp)
        table = ablate.main(["--config", str(cfg_path), "--output_dir", str(out), "--device", "cpu"])
    assert [Path(c[1]).name for c in scripts.in_process] == ["train_gatedcrfloss3d22d_multiview_varianceloss.py"] * 2
    return root, cfg_path, out, table


def run_scores(out: Path, variant: str, seed: str, network: str) -> pd.DataFrame:
    df = pd.read_csv(out / "runs" / variant / seed / network / "results_inference.csv")
    return df[~df["subject"].isin(["mean", "std"])].set_index("subject")


def test_table_matches_the_per_run_score_files(tiny):
    root, _, out, table = tiny
    written = pd.read_csv(out / "table.csv")
    assert written["variant"].tolist() == ["seeds", "seeds_only"]
    assert list(written.columns) == ["variant", "label", "kind", "seeds", "cases", "dice_mean", "dice_std",
                                     "assd_mean", "assd_std", "collapsed", "recovered", "collapsed_epochs",
                                     "wilcoxon_p", "budget", "voxels", "train_s"]
    # one step per training case (batch 1): the --quick data has 4 training cases, 1 epoch
    assert written["budget"].tolist() == ["—", "4 (1 × 4), batch 1"]
    # 4 steps of one 32x32x16 patch; the seconds are those its epoch logged, the mean over the 2 seeds
    assert written["voxels"].tolist() == [0, 4 * 32 * 32 * 16]
    logged = [pd.read_csv(out / "runs" / "seeds_only" / f"seed{s}" / "U_Net2D5" / "log.csv")["time_s"].sum()
              for s in (0, 1)]
    assert written.loc[1, "train_s"] == pytest.approx(np.mean(logged)) and written.loc[0, "train_s"] == 0
    assert "| 0.0655 M | " in (out / "table.md").read_text()
    assert written["seeds"].tolist() == [1, 2] and written["cases"].tolist() == [2, 2]
    runs = {s: run_scores(out, "seeds_only", f"seed{s}", "U_Net2D5") for s in (0, 1)}
    per_seed = [runs[s]["dice"].mean() for s in (0, 1)]
    row = written.set_index("variant").loc["seeds_only"]
    assert row["dice_mean"] == pytest.approx(np.mean(per_seed))
    assert row["dice_std"] == pytest.approx(np.std(per_seed, ddof=1))
    assd = [runs[s]["assd"].mean() for s in (0, 1)]  # NaN cases skipped, as in the table
    assert row["assd_mean"] == pytest.approx(np.nanmean(assd))
    health = pd.read_csv(out / "health.csv")
    mine = health[health["variant"] == "seeds_only"].set_index("seed")
    for s in (0, 1):  # failed = all predictions empty, warned, or best before the ramp-up ended
        log = pd.read_csv(out / "runs" / "seeds_only" / f"seed{s}" / "U_Net2D5" / "log.csv")
        assert mine.loc[str(s), "collapsed_epochs"] == int(log["collapsed"].sum())
        assert bool(mine.loc[str(s), "empty"]) == bool((runs[s]["pred_voxels"] == 0).all())
        assert not mine.loc[str(s), "best_before_ramp"]  # seeds-only: no mCRF/VM, no ramp to wait for
    assert row["collapsed"] == int(mine["failed"].sum())
    assert str(row["collapsed_epochs"]) == "/".join(str(int(mine.loc[str(s), "collapsed_epochs"])) for s in (0, 1))
    seeds = run_scores(out, "seeds", "expanded", "seeds")
    srow = written.set_index("variant").loc["seeds"]
    assert srow["dice_mean"] == pytest.approx(seeds["dice"].mean()) and np.isnan(srow["dice_std"])
    # the expanded seeds scored as predictions: precision-like, never empty
    assert (seeds["pred_voxels"] > 0).all()
    # p-value: scipy's paired Wilcoxon on the per-case Dice averaged over the seeds
    base = (runs[0]["dice"] + runs[1]["dice"]) / 2
    expected = wilcoxon(seeds["dice"].loc[base.index].to_numpy(), base.to_numpy()).pvalue
    assert srow["wilcoxon_p"] == pytest.approx(expected)
    assert np.isnan(row["wilcoxon_p"])  # the baseline itself
    md = (out / "table.md").read_text()
    assert "| Seeds only (`seeds_only`) | 2 |" in md and "baseline" in md
    assert (out / "boxplot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    per_case = pd.read_csv(out / "per_case.csv")
    assert len(per_case) == 2 + 2 * 2 and set(per_case["variant"]) == {"seeds", "seeds_only"}
    assert table["variant"].tolist() == ["seeds", "seeds_only"]


def test_baseline_override_recomputes_the_p_values(tiny):
    """--baseline: the same finished runs (skipped), the p-values against another variant."""
    _, cfg_path, out, _ = tiny
    before = pd.read_csv(out / "table.csv").set_index("variant")
    try:
        table = ablate.main(["--config", str(cfg_path), "--output_dir", str(out), "--device", "cpu",
                             "--baseline", "seeds"]).set_index("variant")
        md = (out / "table.md").read_text()
    finally:  # the module's other tests read the fixture's table
        ablate.main(["--config", str(cfg_path), "--output_dir", str(out), "--device", "cpu"])
    assert np.isnan(table.loc["seeds", "wilcoxon_p"])
    # the two-sided paired test is symmetric: seeds_only vs seeds = seeds vs seeds_only
    assert table.loc["seeds_only", "wilcoxon_p"] == pytest.approx(before.loc["seeds", "wilcoxon_p"])
    assert table.loc["seeds_only", "dice_mean"] == before.loc["seeds_only", "dice_mean"]
    assert "against `seeds`" in md
    assert pd.read_csv(out / "table.csv").set_index("variant").equals(before)  # restored
    with pytest.raises(ValueError, match="--baseline 'nope' is not a variant"):
        ablate.main(["--config", str(cfg_path), "--output_dir", str(out), "--baseline", "nope"])


def test_second_run_skips_and_a_partial_run_resumes(tiny, capsys):
    _, cfg_path, out, _ = tiny
    logs = {p: p.stat().st_size for p in out.glob("runs/*/*/ablate_log.txt")}
    assert len(logs) == 3
    capsys.readouterr()
    before = pd.read_csv(out / "table.csv")
    ablate.main(["--config", str(cfg_path), "--output_dir", str(out), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert "[stage 0] done, skipped" in printed
    for i, key in enumerate(["variant=seeds seed=-", "variant=seeds_only seed=0", "variant=seeds_only seed=1"], 1):
        assert f"[run {i}/3] {key}: done, skipped" in printed
    assert {p: p.stat().st_size for p in logs} == logs  # nothing was run
    pd.testing.assert_frame_equal(pd.read_csv(out / "table.csv"), before)

    # a run killed after its last checkpoint: no done/trained markers, CP_latest.pth present -> --resume
    run = out / "runs" / "seeds_only" / "seed1"
    (run / ablate.DONE_NAME).unlink()
    (run / ablate.TRAINED_NAME).unlink()
    assert ablate.train_mode(run) == "--resume"
    ablate.main(["--config", str(cfg_path), "--output_dir", str(out), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert "[run 3/3] variant=seeds_only seed=1: trained (--resume), inferred, scored" in printed
    assert "[run 2/3] variant=seeds_only seed=0: done, skipped" in printed
    commands = [line for line in (run / ablate.LOG_NAME).read_text().splitlines() if line.startswith("$ ")]
    assert commands[-3].endswith("--seed 1 --device cpu --resume")
    assert (run / ablate.DONE_NAME).is_file()
    pd.testing.assert_frame_equal(pd.read_csv(out / "table.csv"), before)


def test_finished_only_tables_the_finished_runs_and_runs_nothing(tiny, capsys):
    """--finished_only with a seed that never ran: the interim table holds the finished runs,
    names the missing one, runs nothing and leaves the complete table alone."""
    _, cfg_path, out, _ = tiny
    before = pd.read_csv(out / "table.csv")
    logs = {p: p.stat().st_size for p in out.glob("runs/*/*/ablate_log.txt")}
    capsys.readouterr()
    table = ablate.main(["--config", str(cfg_path), "--output_dir", str(out), "--device", "cpu", "--seeds", "0,1,2",
                         "--finished_only"])
    err = capsys.readouterr().err
    assert "1 run(s) not finished and not in the table: variant=seeds_only seed=2" in err
    assert not (out / "runs" / "seeds_only" / "seed2").exists()                      # nothing ran
    assert {p: p.stat().st_size for p in out.glob("runs/*/*/ablate_log.txt")} == logs
    pd.testing.assert_frame_equal(pd.read_csv(out / "table.csv"), before)          # untouched
    written = pd.read_csv(out / "table_finished.csv")
    pd.testing.assert_frame_equal(written, before)   # the same two seeds finished: the same numbers
    assert table["seeds"].tolist() == [1, 2]
    md = (out / "table_finished.md").read_text()
    assert "Interim table: 3 of 4 runs finished; not finished: variant=seeds_only seed=2." in md
    assert (out / "boxplot_finished.png").is_file() and (out / "per_case_finished.csv").is_file()
    with pytest.raises(ValueError, match="--finished_only: no run of the baseline 'seeds_only' has finished"):
        ablate.main(["--config", str(cfg_path), "--output_dir", str(out), "--seeds", "7", "--finished_only"])
    with pytest.raises(SystemExit):   # argparse: not allowed with --dry_run
        ablate.main(["--config", str(cfg_path), "--output_dir", str(out), "--dry_run", "--finished_only"])


def test_train_mode(tmp_path):
    assert ablate.train_mode(tmp_path / "none") is None
    (tmp_path / "U_Net2D5" / "models").mkdir(parents=True)
    assert ablate.train_mode(tmp_path) is None
    (tmp_path / "U_Net2D5" / "models" / "CP_best.pth").write_bytes(b"x")
    assert ablate.train_mode(tmp_path) == "--overwrite"
    (tmp_path / "U_Net2D5" / "models" / "CP_latest_SCM.pth").write_bytes(b"x")
    assert ablate.train_mode(tmp_path) == "--resume"


def test_dry_run_scm_uses_two_stage1_seeds(tmp_path, capsys):
    variants = {**VARIANTS, "recipe": {"kind": "stage1", "flags": {"--grad_clip": 12}},
                "scm": {"kind": "scm", "from": ["recipe", "recipe"]},
                "full": {"kind": "full", "flags": {"--max_epochs": 2}}}
    cfg = write_config(tmp_path / "c.json", config(tmp_path, variants=variants, base={
        **BASE, "scm": {"--max_epochs": 1, "--iterative_epochs": 1}}))
    out = tmp_path / "out"
    assert ablate.main(["--config", str(cfg), "--output_dir", str(out), "--dry_run", "--seeds", "3",
                        "--variants", "scm", "full"]) is None
    printed = capsys.readouterr().out
    assert not out.exists()  # a dry run writes nothing
    # baseline added; scm at seed 3 needs recipe seeds 3 and 4 (not table rows but runs)
    keys = [line.split("] ", 1)[1] for line in printed.splitlines() if line.startswith("[run ")]
    assert keys == ["variant=seeds_only seed=3", "variant=recipe seed=3", "variant=recipe seed=4",
                    "variant=full seed=3", "variant=scm seed=3"]
    scm = next(line for line in printed.splitlines() if "train_SCM.py" in line)
    assert f"--pretrained_model1_dir {out.resolve() / 'runs' / 'recipe' / 'seed3'} --network1 U_Net2D5" in scm
    assert f"--pretrained_model2_dir {out.resolve() / 'runs' / 'recipe' / 'seed4'} --network2 U_Net2D5" in scm
    assert "--spatial_shape 32 32 16 --max_epochs 1 --iterative_epochs 1" in scm
    full = next(line for line in printed.splitlines() if "runs/full/seed3 " in line and "train_gated" in line)
    # full supervision: the full labels as seeds, no mCRF / VM, variant flags over the base
    assert f"--path_geodesic_labels {Path(tmp_path / 'data' / 'label_crop').resolve()} " \
           "--geodesic_label_postfix Label" in full
    assert "--max_epochs 2" in full and "--weight_gatedcrf 0 --weight_variance 0" in full
    assert "--epoch_inf best_model1" in printed and "--grad_clip 12" in printed


@pytest.mark.parametrize("change, message", [
    ({"variants": {"seeds_only": {"kind": "stage1", "flgs": {}}}},
     r"variants.seeds_only: unknown key\(s\) \['flgs'\]"),
    ({"variants": {"seeds_only": {"kind": "stage2"}}}, r"variants.seeds_only.kind must be one of"),
    ({"variants": {"seeds_only": {"kind": "stage1", "flags": {"--seed": 3}}}},
     r"variants.seeds_only.flags: --seed is set by the runner"),
    ({"variants": {**VARIANTS, "scm": {"kind": "scm", "from": ["nope"]}}},
     r"variants.scm.from names unknown variant 'nope'"),
    ({"variants": {**VARIANTS, "scm": {"kind": "scm", "from": ["seeds"]}}},
     r"variants.scm.from: 'seeds' is of kind 'seeds'"),
    ({"baseline": "stage1"}, r"baseline 'stage1' is not a variant"),
    ({"seeds": [0, 0]}, r"seeds must be distinct"),
    ({"extra": 1}, r"top level: unknown key\(s\) \['extra'\]"),
    ({"base": {"stage2": {}}}, r"base: unknown key\(s\) \['stage2'\]"),
    ({"dataset": {"split_file": "s.csv"}}, r"dataset.images is missing"),
    ({"variants": {**VARIANTS, "full": {"kind": "full", "flags": {"--weight_gatedcrf": 1.0}}}},
     r"variants.full.flags: --weight_gatedcrf has no effect in a 'full' variant"),
    ({"base": {**BASE, "inference": {"--output_folder": "elsewhere"}}},
     r"base.inference: --output_folder would make inference predict with other models or write elsewhere"),
])
def test_config_errors(tmp_path, change, message):
    cfg = write_config(tmp_path / "c.json", config(tmp_path, **change))
    with pytest.raises(ValueError, match=message):
        ablate.load_config(cfg)


def test_missing_dataset_files_and_cli_error_line(tmp_path):
    cfg = write_config(tmp_path / "c.json", config(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"dataset.split_file .*split.csv not found"):
        ablate.main(["--config", str(cfg), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(FileNotFoundError, match="^--config not found: .*nope.json$"):
        ablate.load_config(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="^--config .* is a folder, not a file; pass the ablation's JSON config file$"):
        ablate.load_config(tmp_path)
    bad = write_config(tmp_path / "bad.json", config(tmp_path, variants={"a": {"kind": "stage1", "x": 1}},
                                                     baseline="a"))
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "ablate.py"), "--config", str(bad)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: config {bad}: variants.a: unknown key(s) ['x'] (known: {sorted(ablation_config._VARIANT_KEYS)})"]


def test_flag_args_and_wilcoxon():
    assert flag_args({"--a": 1, "--b": [2, 3], "--c": True, "--d": None, "--e": False, "--f": 0.1}) == \
        ["--a", "1", "--b", "2", "3", "--c", "--f", "0.1"]
    x, y = [0.8, 0.7, 0.9, 0.6, 0.75], [0.7, 0.72, 0.5, 0.55, 0.6]
    assert ablate.wilcoxon_p(x, y) == pytest.approx(wilcoxon(x, y).pvalue)
    assert np.isnan(ablate.wilcoxon_p([0.5, 0.6], [0.5, 0.6]))
    with pytest.raises(ValueError, match="differ in length"):
        ablate.wilcoxon_p([1.0], [1.0, 2.0])


def test_brats_layout_stage0_and_seed_rows(tmp_path):
    """The BraTS-style path on the brats_small --quick data: BraTS stage 0 (image minimum is
    background), flair/seg postfixes, the expanded seeds scored as a variant (no training)."""
    import SimpleITK as sitk

    make_demo.main(["--preset", "brats_small", "--quick", "--output_dir", str(tmp_path / "data"),
                    "--split_file", str(tmp_path / "split.csv"), "--no_report"])
    cfg = config(tmp_path, variants={"seeds": {"kind": "seeds"}}, baseline="seeds", seeds=[0])
    cfg["dataset"].update({"images": str(tmp_path / "data" / "image"), "image_postfix": "flair",
                           "labels": str(tmp_path / "data" / "label"), "label_postfix": "seg",
                           "geodesic_style": "BraTS"})
    out = tmp_path / "out"
    table = ablate.main(["--config", str(write_config(tmp_path / "b.json", cfg)), "--output_dir", str(out)])
    marker = json.loads((out / "geodesic" / ablate.DONE_NAME).read_text())
    assert marker["command"][0].endswith("data/BraTS/generate_geodesic_labels.py")
    assert table["variant"].tolist() == ["seeds"] and np.isnan(table["wilcoxon_p"].iloc[0])
    scores = run_scores(out, "seeds", "expanded", "seeds")
    assert sorted(scores.index) == ["bsmall_006", "bsmall_007"]
    assert table["dice_mean"].iloc[0] == pytest.approx(scores["dice"].mean())
    for case in scores.index:
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "data" / "image" / f"{case}_flair.nii.gz")))
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(
            out / "runs" / "seeds" / "expanded" / "seeds" / "output_pred" / f"{case}_flair"
            / f"{case}_flair_seg.nii.gz")))
        assert pred.any() and not pred[image == 0].any()


def _log(tmp_path, name, **columns):
    path = tmp_path / name
    pd.DataFrame({"epoch": range(1, 1 + len(next(iter(columns.values())))), **columns}).to_csv(path, index=False)
    return path


def test_run_health_counts_collapse_and_a_best_checkpoint_from_before_the_ramp(tmp_path):
    # collapsed in epochs 2-4 (a streak of 3 = the warning's patience), ramp full from epoch 3, best at 2
    log = _log(tmp_path, "a.csv", ramp=[0.1, 0.5, 1.0, 1.0, 1.0], grad_crf=[0.0, 0.1, 0.1, 0.1, 0.1],
               grad_vm=[0.0] * 5, collapsed=[0, 1, 1, 1, 0], best_epoch=[1, 2, 2, 2, 2])
    h = ablate.run_health(log)
    assert (h["collapsed_epochs"], h["longest_streak"], h["warned"]) == (3, 3, True)
    assert (h["best_epoch"], h["ramp_end"], h["best_before_ramp"]) == (2.0, 3.0, True)
    assert ablate.run_health(log, patience=4)["warned"] is False
    # the same run without mCRF/VM (seeds-only): no ramp-up to wait for
    quiet = _log(tmp_path, "b.csv", ramp=[0.1, 0.5, 1.0], grad_crf=[0.0] * 3, grad_vm=[0.0] * 3,
                 collapsed=[0, 0, 0], best_epoch=[1, 1, 1])
    h = ablate.run_health(quiet)
    assert (h["collapsed_epochs"], h["warned"], h["best_before_ramp"]) == (0, False, False)
    assert np.isnan(h["ramp_end"])
    # a ramp that never reached 1 within the run: every best checkpoint predates its end
    short = _log(tmp_path, "c.csv", ramp=[0.1, 0.3], grad_crf=[0.0, 0.1], grad_vm=[0.0, 0.0], best_epoch=[1, 2])
    assert ablate.run_health(short)["best_before_ramp"] is True


def test_run_health_reads_logs_without_collapse_columns(tmp_path):
    """Logs of runs trained before the ``collapsed`` column: the stage-1 rule on val_empty,
    fg_train (below a tenth of seed_fg) and seed_fg."""
    log = _log(tmp_path, "old.csv", val_empty=[0, 1, 0, 0, 0], fg_train=[0.01, 0.01, 0.0001, 0.0001, 0.01],
               seed_fg=[0.004] * 5, ramp=[1.0] * 5, grad_crf=[0.0] * 5, grad_vm=[0.0] * 5, best_epoch=[1] * 5)
    h = ablate.run_health(log)
    assert (h["collapsed_epochs"], h["longest_streak"], h["warned"]) == (3, 3, True)


def test_seed_predictions_read_by_the_one_reader_before_any_is_written(tmp_path):
    """The expanded seeds written as predictions: each label read by utilities.data.io.read_image (a
    missing file and NaN voxels are one line naming the file), all before the first is written;
    label 1 becomes the mask on the label's grid."""
    from types import SimpleNamespace

    import SimpleITK as sitk

    (tmp_path / "split.csv").write_text("c0,training\nc1,inference\nc2,inference\n", encoding="utf-8")
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1, 2, 3], labels[2, 2, 3] = 1, 2          # one foreground voxel, one unknown (2) voxel
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((1.0, 2.0, 3.0))
    sitk.WriteImage(image, str(seeds / "c1_GeodesicLabel.nii.gz"))
    cfg = SimpleNamespace(dataset={"split_file": tmp_path / "split.csv", "image_postfix": "T2"})
    run = SimpleNamespace(folder=tmp_path / "run", network="seeds")
    missing = seeds / "c2_GeodesicLabel.nii.gz"
    with pytest.raises(FileNotFoundError) as err:
        execution.write_seed_predictions(cfg, run, seeds)
    assert str(err.value) == f"expanded-seed label file not found: {missing}"
    nan = labels.astype(np.float32)
    nan[0, 0, 0] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(nan), str(missing))
    with pytest.raises(ValueError) as err:
        execution.write_seed_predictions(cfg, run, seeds)
    assert str(err.value) == (f"expanded-seed label file {missing} has 1 NaN or Inf voxel(s) (NaN/Inf values are "
                              "not allowed); fix or re-export it")
    assert not (tmp_path / "run").exists()             # c1 was read, not written
    sitk.WriteImage(image, str(missing))
    execution.write_seed_predictions(cfg, run, seeds)
    for case in ("c1", "c2"):
        pred = sitk.ReadImage(str(tmp_path / "run" / "seeds" / "output_pred" / f"{case}_T2" / f"{case}_T2_seg.nii.gz"))
        assert pred.GetSpacing() == (1.0, 2.0, 3.0)
        assert np.argwhere(sitk.GetArrayFromImage(pred)).tolist() == [[1, 2, 3]]


def test_run_markers_with_a_repeated_key_are_named(tmp_path):
    """The runner's markers go through utilities.core.textdata.loads_json: a key written twice is one
    line naming the file; a missing or broken marker is no marker (the step runs again)."""
    marker = tmp_path / ablate.DONE_NAME
    assert markers.read_json(marker) is None
    marker.write_text('{"command": ["a"', encoding="utf-8")
    assert markers.read_json(marker) is None
    marker.write_text('{"command": ["a"], "command": ["b"]}', encoding="utf-8")
    with pytest.raises(ValueError) as err:
        markers.read_json(marker)
    assert str(err.value) == (f"run marker {marker}: key 'command' appears twice in one JSON object (the second "
                              "would silently replace the first); keep one")
    marker.write_text('{"command": ["a"], "seconds": 1.5}', encoding="utf-8")
    assert markers.read_json(marker) == {"command": ["a"], "seconds": 1.5}


def test_the_readme_schema_table_is_the_schema_in_code():
    """experiments/configs/README.md documents the config by the table that SCHEMA (the records the
    runner checks a config against) writes; a key added in one place only fails here."""
    readme = (ROOT / "experiments" / "configs" / "README.md").read_text(encoding="utf-8")
    table = ablation_config.schema_markdown()
    assert table in readme, f"replace the schema table of experiments/configs/README.md with:\n{table}"
    documented = [line.split("`")[1] for line in readme.splitlines() if line.startswith("| `")]
    assert documented == [k.key for k in ablation_config.SCHEMA]
    assert set(ablation_config.keys("")) == {"title", "dataset", "base", "variants", "seeds", "baseline"}
    assert ablation_config.required("") == ("dataset", "variants", "seeds", "baseline")


def test_records_keep_the_tables_without_checkpoints_and_restore_anywhere(tiny, tmp_path, capsys, monkeypatch):
    """experiments/records.py: the record of the finished runs holds their text files with the
    folder's and the checkout's paths as tokens, no checkpoint or image; restored under another
    folder, the runner skips every run and writes the same table."""
    from experiments.ablation.commands import Run
    from experiments.ablation.config import load_config

    records_script = load_script("experiments/records.py")
    root, cfg_path, out, _ = tiny
    before = pd.read_csv(out / "table.csv")
    rec = tmp_path / "record"
    capsys.readouterr()
    assert records_script.main(["save", "--ablation_dir", str(out), "--records", str(rec)]) == 3
    printed = capsys.readouterr().out
    assert "saved the record of 3 finished run(s)" in printed and "checkpoints" in printed
    kept = sorted(p.relative_to(rec).as_posix() for p in rec.rglob("*") if p.is_file())
    assert "runs/seeds_only/seed0/U_Net2D5/log.csv" in kept and "runs/seeds/expanded/ablate_done.json" in kept
    assert "runs/seeds_only/seed1/U_Net2D5/results_inference.csv" in kept
    assert "runs/seeds_only/seed0/ablate_args.json" in kept and "runs/seeds/expanded/ablate_args.json" not in kept
    assert not [k for k in kept if k.endswith((".pth", ".nii.gz", ".txt")) or k.startswith("geodesic")]
    texts = [p.read_text() for p in rec.rglob("*") if p.is_file()]
    assert not [t for t in texts if str(out.resolve()) in t or str(ROOT) in t]
    done = json.loads((rec / "runs/seeds_only/seed0" / ablate.DONE_NAME).read_text())
    assert done["command"][0] == "<repository>/train_gatedcrfloss3d22d_multiview_varianceloss.py"
    assert "<ablation_dir>/runs/seeds_only/seed0" in done["command"]
    with pytest.raises(ValueError, match="lies inside --ablation_dir"):
        records_script.main(["save", "--ablation_dir", str(out), "--records", str(out / "rec")])
    # a save or a restore that fails midway: each run's record is written whole or not at all
    files = {p: p.read_bytes() for p in sorted(rec.rglob("*")) if p.is_file()}
    real, calls = records_script.save_text, []

    def fourth_fails(text, path):
        calls.append(path)
        if len(calls) == 4:
            raise OSError(28, "No space left on device")
        real(text, path)

    monkeypatch.setattr(records_script, "save_text", fourth_fails)
    with pytest.raises(OSError, match="No space left"):
        records_script.main(["save", "--ablation_dir", str(out), "--records", str(rec)])
    assert {p: p.read_bytes() for p in sorted(rec.rglob("*")) if p.is_file()} == files   # the earlier record
    calls.clear()
    with pytest.raises(OSError, match="No space left"):
        records_script.main(["restore", "--records", str(rec), "--ablation_dir", str(tmp_path / "half")])
    left = sorted(p.relative_to(tmp_path / "half").as_posix() for p in (tmp_path / "half").rglob("*") if p.is_file())
    first = sorted(p.relative_to(rec).as_posix() for p in (rec / "runs/seeds/expanded").rglob("*") if p.is_file())
    assert len(first) < 4 and left == first   # the run before the failure whole; nothing of the one it hit
    monkeypatch.setattr(records_script, "save_text", real)

    # a new folder: the record back, then the runner skips every run and writes the same table
    out2 = tmp_path / "elsewhere" / "out"
    (out2 / "runs" / "seeds_only" / "seed1").mkdir(parents=True)
    (out2 / "runs" / "seeds_only" / "seed1" / "ablate_started.json").write_text("{}")   # a run started there
    assert records_script.main(["restore", "--records", str(rec), "--ablation_dir", str(out2)]) == 2
    captured = capsys.readouterr()
    assert "restored 2 of 3 run record(s)" in captured.out
    assert "hold a run of their own" in captured.err and "runs/seeds_only/seed1" in captured.err
    import shutil
    shutil.rmtree(out2 / "runs" / "seeds_only" / "seed1")
    assert records_script.main(["restore", "--records", str(rec), "--ablation_dir", str(out2)]) == 1
    assert "2 already finished there" in capsys.readouterr().out
    assert not list(out2.rglob("*.pth"))
    restored = json.loads((out2 / "runs/seeds_only/seed0" / ablate.DONE_NAME).read_text())
    assert str(out2.resolve() / "runs/seeds_only/seed0") in restored["command"]
    ablate.main(["--config", str(cfg_path), "--output_dir", str(out2), "--device", "cpu"])
    printed = capsys.readouterr().out
    for i, key in enumerate(["variant=seeds seed=-", "variant=seeds_only seed=0", "variant=seeds_only seed=1"], 1):
        assert f"[run {i}/3] {key}: done, skipped" in printed
    pd.testing.assert_frame_equal(pd.read_csv(out2 / "table.csv"), before)
    pd.testing.assert_frame_equal(pd.read_csv(out2 / "per_case.csv"), pd.read_csv(out / "per_case.csv"))
    # --device is the runner's, not a run's: the restored runs are tabled with another one too
    ablate.main(["--config", str(cfg_path), "--output_dir", str(out2), "--device", "auto", "--finished_only"])
    assert "3 of 3 runs finished" in capsys.readouterr().out

    # an SCM run cannot start from a restored stage-1 run: named before its training starts
    cfg = load_config(cfg_path)

    def stage1_run(folder: Path) -> Run:
        recorded = json.loads((folder / ablate.DONE_NAME).read_text())["command"]
        return Run(cfg.variants["seeds_only"], 0, folder, "U_Net2D5", ["python", *recorded])

    scm = Run(cfg.variants["seeds_only"], 0, out2 / "runs" / "scm" / "seed0", "U_Net2D5",
              needs=[stage1_run(out2 / "runs" / "seeds_only" / "seed0")])
    with pytest.raises(ValueError, match="is finished but has no CP_best.pth"):
        execution._check_sources(scm)
    execution._check_sources(Run(cfg.variants["seeds_only"], 0, out / "scm", "U_Net2D5",   # the original has it
                                 needs=[stage1_run(out / "runs" / "seeds_only" / "seed0")]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no run record"):
        records_script.main(["restore", "--records", str(tmp_path / "empty"), "--ablation_dir", str(out2)])
    # for another checkout (a worktree pinned at the round's commit): its script path in the markers
    pinned = tmp_path / "pinned"
    with pytest.raises(FileNotFoundError, match="--repository .* holds no train_gatedcrfloss3d22d"):
        records_script.main(["restore", "--records", str(rec), "--ablation_dir", str(tmp_path / "o3"),
                             "--repository", str(pinned)])
    pinned.mkdir()
    (pinned / "train_gatedcrfloss3d22d_multiview_varianceloss.py").write_text("")
    assert records_script.main(["restore", "--records", str(rec), "--ablation_dir", str(tmp_path / "o3"),
                                "--repository", str(pinned)]) == 3
    marker = json.loads((tmp_path / "o3/runs/seeds_only/seed1" / ablate.DONE_NAME).read_text())
    assert marker["command"][0] == str(pinned.resolve() / "train_gatedcrfloss3d22d_multiview_varianceloss.py")


def test_records_leave_out_nnunets_own_working_files(tmp_path):
    """An nnU-Net run's record keeps what the tables read (budget.json, the scores, the runner's
    files), not nnU-Net's raw, preprocessed and results folders or the plans beside its predictions."""
    records_script = load_script("experiments/records.py")
    run = tmp_path / "runs" / "nnunet_seeds" / "seed0"
    files = ["ablate_done.json", "nnUNet/budget.json", "nnUNet/nnunet_run.json", "nnUNet/output_pred/plans.json",
             "nnUNet/output_pred/results_inference.csv", "nnUNet/nnUNet_raw/Dataset501_PASeg/dataset.json",
             "nnUNet/nnUNet_preprocessed/Dataset501_PASeg/nnUNetPlans.json",
             "nnUNet/nnUNet_results/Dataset501_PASeg/T__P__3d_fullres/fold_0/debug.json",
             "nnUNet/nnUNet_results/Dataset501_PASeg/T__P__3d_fullres/fold_0/checkpoint_final.pth"]
    for name in files:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("{}")
    kept, left = records_script._kept(run)
    assert sorted(p.relative_to(run).as_posix() for p in kept) == [
        "ablate_done.json", "nnUNet/budget.json", "nnUNet/nnunet_run.json", "nnUNet/output_pred/results_inference.csv"]
    assert left == {"nnU-Net's own working files": 5}


def test_a_run_is_the_same_run_on_another_device(tmp_path):
    """--device is the runner's, not the config's: a run finished (or killed) on one device is the
    same run when it is tabled or resumed on another; any other flag still makes another run."""
    script = str(ROOT / "train_gatedcrfloss3d22d_multiview_varianceloss.py")
    run = markers.Run(None, 0, tmp_path, "U_Net2D5",
                      train=[sys.executable, script, "--max_epochs", "3", "--device", "auto", "--seed", "0"])
    assert markers.same_run({"command": [script, "--max_epochs", "3", "--device", "cpu", "--seed", "0"]}, run)
    assert markers.same_run({"command": [script, "--max_epochs", "3", "--seed", "0"]}, run)
    assert not markers.same_run({"command": [script, "--max_epochs", "4", "--device", "auto", "--seed", "0"]}, run)
    assert not markers.same_run({"command": "not a command"}, run) and not markers.same_run(None, run)


def test_paths_inside_the_ablation_folder_are_compared_relative_to_it(tmp_path):
    """A marker records the ablation folder its commands name: the folder moved, its paths still
    name the same run; a path outside it (the dataset's), or a marker of a run elsewhere, do not.
    A marker written before the folder was recorded is read as made where the run now lies."""
    script = str(ROOT / "train_gatedcrfloss3d22d_multiview_varianceloss.py")
    here, before = tmp_path / "moved", tmp_path / "first"

    def command(root, data="/data/images"):
        return [script, "--model_dir", f"{root}/runs/a/seed0", "--path_images", data, "--geodesic",
                f"{root}/geodesic/labels"]

    run = markers.Run(None, 0, here / "runs" / "a" / "seed0", "U_Net2D5", train=[sys.executable, *command(here)],
                      ablation_dir=here)
    assert markers.relocated(command(here), str(here))[1:4:2] == ["--model_dir", "--path_images"]
    assert markers.relocated([f"{here}x/runs"], str(here)) == [f"{here}x/runs"]   # a sibling folder: not inside
    assert markers.same_run({"command": command(before), markers.ABLATION_KEY: str(before)}, run)
    assert not markers.same_run({"command": command(before, "/data/other"), markers.ABLATION_KEY: str(before)}, run)
    assert not markers.same_run({"command": command(before)}, run)   # recorded before: made where it lies now
    assert markers.same_run({"command": command(here)}, run)
    assert markers.recorded_changes({"command": command(before, "/data/other"), markers.ABLATION_KEY: str(before)},
                                    run) == "--path_images /data/other -> /data/images"


@pytest.mark.slow
def test_a_changed_inference_rescores_and_a_changed_split_is_refused(tiny, tmp_path, capsys):
    """A finished run is the same run only with the same inference, scoring and split content:
    another ``epoch_inf`` (or inference flag, or stage-0 folder for the expanded seeds) infers and
    scores again without training; a split file edited in place is refused, naming it."""
    root, _, _, _ = tiny
    split = tmp_path / "split.csv"
    split.write_bytes((root / "split.csv").read_bytes())
    cfg = config(root, seeds=[0])
    cfg["dataset"]["split_file"] = str(split)
    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as mp:
        ScriptsInProcess(subprocesses=1).install(mp)
        ablate.main(["--config", str(write_config(tmp_path / "a.json", cfg)), "--output_dir", str(out),
                     "--device", "cpu"])
        capsys.readouterr()
        cfg["variants"] = {**VARIANTS, "seeds_only": {**VARIANTS["seeds_only"], "epoch_inf": "final"}}
        ablate.main(["--config", str(write_config(tmp_path / "b.json", cfg)), "--output_dir", str(out),
                     "--device", "cpu"])
    printed = capsys.readouterr().out
    assert "variant=seeds_only seed=0: finished with other inference or scoring settings (--epoch_inf best -> " \
           "final); inferred and scored again" in printed
    assert "variant=seeds_only seed=0: inferred, scored in" in printed and "trained" not in printed
    assert "variant=seeds seed=-: done, skipped" in printed
    log = (out / "runs" / "seeds_only" / "seed0" / ablate.LOG_NAME).read_text()
    assert [line.split("--epoch_inf ")[1].split()[0] for line in log.splitlines()
            if line.startswith("$ ") and "--epoch_inf" in line] == ["best", "final"]

    assert "This table holds" not in (out / "table.md").read_text()
    # a dry run with another inference: the run would be inferred and scored again, not trained
    cfg["variants"] = {**VARIANTS, "seeds_only": {**VARIANTS["seeds_only"], "epoch_inf": "best_seed_dice"}}
    ablate.main(["--config", str(write_config(tmp_path / "d.json", cfg)), "--output_dir", str(out), "--device", "cpu",
                 "--dry_run"])
    dry = capsys.readouterr().out
    assert "(--epoch_inf final -> best_seed_dice); would be inferred and scored again" in dry
    assert "train_gatedcrfloss3d22d_multiview_varianceloss.py" not in dry and "--epoch_inf best_seed_dice" in dry
    # a selection of the variants: the table says what it holds
    ablate.main(["--config", str(tmp_path / "b.json"), "--output_dir", str(out), "--device", "cpu",
                 "--variants", "seeds_only"])
    assert ("This table holds the variants seeds_only and the training seeds 0 that its command selected (the "
            "config: seeds, seeds_only; seeds 0)") in (out / "table.md").read_text()

    # the split edited in place: the run's cases were others
    lines = split.read_text().splitlines()
    split.write_text("\n".join(lines[::-1]) + "\n")
    with pytest.raises(RuntimeError, match=f"was trained and scored with another content of the split file {split}"):
        ablate.run_ablation(ablation_config.load_config(tmp_path / "b.json"), out, device="cpu")


def test_the_expanded_seeds_row_depends_on_its_stage0_folder(tiny, tmp_path):
    """Stage 0's settings name the folder the expanded seeds are read from: another setting is
    another evaluation of the ``seeds`` row (so it is written and scored again)."""
    from experiments.ablation.commands import geodesic_dir, plan_runs

    root, _, _, _ = tiny

    def seeds_run(**dataset):
        cfg = config(root)
        cfg["dataset"].update(dataset)
        loaded = ablation_config.load_config(write_config(tmp_path / "c.json", cfg))
        run = next(r for r in plan_runs(loaded, tmp_path / "out", [0], ["seeds"], "cpu", sys.executable)
                   if r.variant.kind == "seeds")
        return run, geodesic_dir(loaded, tmp_path / "out")

    (before, folder), (after, other) = seeds_run(), seeds_run(geodesic_weight=0.9, geodesic_threshold=0.5)
    assert folder != other
    assert before.evaluation[:2] == ["expanded seeds", str(folder)]
    assert after.evaluation[:2] == ["expanded seeds", str(other)]


def test_false_on_a_flag_that_takes_a_value_is_refused(tiny, tmp_path, capsys):
    """``"--weight_gatedcrf": false`` would leave the flag out (the mCRF at its default weight);
    ``false`` on a switch is the switch off."""
    root, _, _, _ = tiny
    variants = {**VARIANTS, "seeds_only": {"kind": "stage1", "flags": {"--weight_gatedcrf": False,
                                                                        "--weight_variance": 0}}}
    cfg = write_config(tmp_path / "c.json", config(root, variants=variants))
    with pytest.raises(ValueError) as err:
        ablate.main(["--config", str(cfg), "--output_dir", str(tmp_path / "out"), "--dry_run"])
    assert str(err.value) == (f"config {cfg}: variant 'seeds_only': --weight_gatedcrf false from variants.seeds_only"
                              ".flags: --weight_gatedcrf takes a value, and false leaves it out (the script's default "
                              "then applies); give the value (e.g. 0), or null to leave it out on purpose")
    variants["seeds_only"]["flags"] = {"--weight_gatedcrf": 0, "--weight_variance": 0, "--seg_class_balance": False}
    ablate.main(["--config", str(write_config(tmp_path / "c.json", config(root, variants=variants))),
                 "--output_dir", str(tmp_path / "out"), "--dry_run"])
    assert "--weight_gatedcrf 0" in capsys.readouterr().out


def test_records_replace_only_whole_paths():
    """The ablation folder ``/w/p/dat`` is a token in ``/w/p/dat/runs`` and ``/w/p/dat``, never in
    ``/w/p/data`` (a data folder beside it) or ``/w/p/daté``."""
    records_script = load_script("experiments/records.py")
    text = json.dumps({"a": "/w/p/dat/runs/x", "b": "/w/p/data/split.csv", "c": "/w/p/dat", "d": "/w/p/daté/x",
                       "e": ["--model_dir", "/w/repo_data/x", "/w/repo/train.py"]})
    out = json.loads(records_script._portable(text, Path("/w/p/dat"), "/w/repo"))
    assert out == {"a": "<ablation_dir>/runs/x", "b": "/w/p/data/split.csv", "c": "<ablation_dir>",
                   "d": "/w/p/daté/x", "e": ["--model_dir", "/w/repo_data/x", "<repository>/train.py"]}


def test_an_output_dir_that_is_a_file_is_named_before_anything_runs(tmp_path):
    cfg = write_config(tmp_path / "c.json", config(tmp_path))
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match=r"^--output_dir: cannot create output folder .*afile: a file of that name"):
        ablate.main(["--config", str(cfg), "--output_dir", str(tmp_path / "afile")])
    with pytest.raises(ValueError, match=r"^--output_dir: cannot create output folder .*afile/sub: .*afile is not a "
                                         "folder"):
        ablate.main(["--config", str(cfg), "--output_dir", str(tmp_path / "afile" / "sub")])


def test_a_dry_run_says_what_the_real_run_would_skip(tiny, capsys):
    _, cfg_path, out, _ = tiny
    capsys.readouterr()
    assert ablate.main(["--config", str(cfg_path), "--output_dir", str(out), "--device", "cpu", "--dry_run"]) is None
    printed = capsys.readouterr().out
    assert "[stage 0] done, would be skipped" in printed
    for i, key in enumerate(["variant=seeds seed=-", "variant=seeds_only seed=0", "variant=seeds_only seed=1"], 1):
        assert f"[run {i}/3] {key}: done, would be skipped" in printed
    assert "--resume" not in printed


def test_every_experiment_script_takes_seeds_in_either_form(capsys):
    parsers = [ablate.build_parser()]
    for value in (["0,1,2"], ["0", "1", "2"], ["0,1", "2"]):
        assert parsers[0].parse_args(["--config", "c.json", "--seeds", *value]).seeds == [0, 1, 2]
    with pytest.raises(SystemExit):
        parsers[0].parse_args(["--config", "c.json", "--seeds", "0,x"])
    assert "argument --seeds: must be integers (0 1 2 or 0,1,2), got '0,x'" in capsys.readouterr().err
    family = load_script("experiments/family.py")
    parsed = family.build_parser().parse_args(["--family_seeds", "1", "--output_dir", "o", "--seeds", "0,1"])
    assert parsed.seeds == [0, 1]


def test_a_wrong_postfix_names_the_config_key_before_stage0(tiny, tmp_path):
    root, _, _, _ = tiny
    cfg = config(root)
    cfg["dataset"]["image_postfix"] = "T1"
    path = write_config(tmp_path / "c.json", cfg)
    with pytest.raises(FileNotFoundError) as err:
        ablate.main(["--config", str(path), "--output_dir", str(tmp_path / "out"), "--device", "cpu"])
    assert str(err.value).startswith(f"config {path}: ")
    assert "Check dataset.images/dataset.image_postfix or the split" in str(err.value)
    assert not (tmp_path / "out" / "geodesic").exists()
