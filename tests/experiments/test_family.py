"""experiments/family.py: a member's ablation config (every variant, nnU-Net at stage 1's
budget) is one the runner accepts and turns into commands its scripts accept, ``--baseline``
reaches the runner, and the summary's criteria are computed from the member tables."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from helpers import load_script

family = load_script("experiments/family.py")
ablate = load_script("experiments/ablate.py")


def _member(tmp_path, n_train=5, n_val=2, n_inf=3):
    data = tmp_path / "data"
    for sub in ("image", "label", "annotation_7points"):
        (data / sub).mkdir(parents=True)
    rows = ([f"c{i},training" for i in range(n_train)] + [f"v{i},validation" for i in range(n_val)]
            + [f"i{i},inference" for i in range(n_inf)])
    (data / "split.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    plan = {"stage1": {"--network": "U_Net2D5", "--spatial_shape": [32, 32, 16], "--down_size": [32, 32, 16],
                       "--kernel_radius": [2, 2, -1], "--seg_class_balance": True, "--momentum": 0.9,
                       "--grad_clip": 12.0, "--max_epochs": 7, "--rampup_epochs": 2, "--rampup_unit": "step"},
            "scm": {"--network1": "U_Net2D5", "--network2": "AttU_Net", "--spatial_shape": [32, 32, 16],
                    "--max_epochs": 3, "--iterative_epochs": 1},
            "fingerprint": {"training_cases": n_train}}
    return data, plan


def test_member_config_gives_nnunet_stage1s_steps_and_the_runner_accepts_it(tmp_path):
    data, plan = _member(tmp_path, n_train=5)
    cfg = family.member_config(113, data, plan, [0, 1])
    assert set(cfg["variants"]) == set(family.VARIANTS)
    for name in ("nnunet_seeds", "nnunet_full"):
        flags = cfg["variants"][name]["flags"]
        # stage 1: 7 epochs x 5 training cases at batch 1 = 35 steps; nnU-Net: 7 x 5 iterations
        assert flags["--epochs"] == 7 and flags["--iterations_per_epoch"] == 5
    assert cfg["variants"]["nnunet_full"]["flags"]["--labels"] == "full"
    assert "--labels" not in cfg["variants"]["nnunet_seeds"]["flags"]

    path = tmp_path / "ablation.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    loaded = ablate.load_config(path)
    runs = ablate.plan_runs(loaded, tmp_path / "out", (0, 1), list(family.VARIANTS), "cpu", "python")
    nn = [r for r in runs if r.variant.kind == "nnunet"]
    assert len(nn) == 6
    ablate.check_flags([r.train for r in runs if r.train], path)   # every script accepts its flags
    args = ablate.script_parser("nnunet_baseline.py").parse_args(nn[0].train[2:])
    assert (args.epochs, args.iterations_per_epoch, args.labels) == (7, 5, "seeds")
    stage1 = next(r for r in runs if r.variant.name == "stage1_plan")
    planned = ablate.planned_args(stage1.train)   # what the command will train with
    assert ablate.budget_text(planned.max_epochs, planned.batch_size, 5) == "35 (7 × 5), batch 1"
    assert ablate.run_budget(stage1, 5) == "?"      # the table's Steps: what a run recorded, none yet


def test_baseline_flag_reaches_the_runner(tmp_path, monkeypatch):
    seen = {}

    def fake_main(argv):
        seen["argv"] = argv
        return _table({"stage1_plan": 0.7})

    monkeypatch.setattr(family.ablate, "main", fake_main)
    monkeypatch.setattr(family, "generate_member", lambda member, out: None)
    plan = _member(tmp_path / "plan")[1]
    monkeypatch.setattr(family, "_plan_member", lambda data, rules, path: plan)
    (tmp_path / "f113" / "data").mkdir(parents=True)
    (tmp_path / "f113" / "data" / "member.json").write_text("{}", encoding="utf-8")
    (tmp_path / "f113" / "data" / "split.csv").write_text("a,training\nb,inference\n", encoding="utf-8")
    family.main(["--family_seeds", "113", "--output_dir", str(tmp_path), "--variants", "stage1_plan",
                 "nnunet_seeds", "--baseline", "stage1_plan"])
    argv = seen["argv"]
    assert argv[argv.index("--baseline") + 1] == "stage1_plan"
    family.main(["--family_seeds", "113", "--output_dir", str(tmp_path), "--variants", "seeds_only_plan",
                 "stage1_plan", "--overwrite"])   # other arguments: the summary is replaced
    assert seen["argv"][seen["argv"].index("--baseline") + 1] == "seeds_only_plan"
    with pytest.raises(SystemExit):
        family.main(["--family_seeds", "113", "--output_dir", str(tmp_path), "--baseline", "nope"])


def test_nnunet_paseg_gets_the_plans_regularisers_at_full_resolution(tmp_path):
    data, plan = _member(tmp_path)
    flags = family.member_config(113, data, plan, [0])["variants"]["nnunet_paseg"]["flags"]
    # the plan's mCRF grid is the patch: radius 2 and stage 1's default width 6 as they are
    assert flags["--trainer"] == "PASeg" and flags["--kernel_radius"] == 2 and flags["--crf_sigma_xy"] == 6.0
    assert (flags["--rampup_epochs"], flags["--rampup_unit"], flags["--epochs"]) == (2, "step", 7)
    assert "--seg_class_balance" not in flags and "--down_size" not in flags   # nnU-Net's loss, its own grid
    # a grid halved in plane (64x64 patch on a 32x32 grid): radius 3 and width 4 there are 6 and 8 voxels
    plan["stage1"] |= {"--spatial_shape": [64, 64, 16], "--down_size": [32, 32, 16], "--kernel_radius": [3, 3, -1],
                       "--crf_sigma_xy": 4.0}
    flags = family.member_config(113, data, plan, [0])["variants"]["nnunet_paseg"]["flags"]
    assert (flags["--kernel_radius"], flags["--crf_sigma_xy"]) == (6, 8.0)
    args = ablate.script_parser("nnunet_baseline.py").parse_args(
        [str(x) for k, v in flags.items() for x in (k, v)])
    assert (args.trainer, args.kernel_radius, args.crf_sigma_xy) == ("PASeg", 6, 8.0)
    # the trainer's mCRF on stage 1's grid (--crf_downsample 2): stage 1's radius and width as they are
    flags = family.member_config(113, data, plan, [0], {"--crf_downsample": 2})["variants"]["nnunet_paseg"]["flags"]
    assert (flags["--crf_downsample"], flags["--kernel_radius"], flags["--crf_sigma_xy"]) == (2, 3, 4.0)
    args = ablate.script_parser("nnunet_baseline.py").parse_args(
        [str(x) for k, v in flags.items() for x in (k, v)])
    assert (args.crf_downsample, args.kernel_radius) == (2, 3)
    # --nnunet_crf_grid stage1: the factor from the plan's grid (here 2; 1 where the plan keeps the patch)
    flags = family.member_config(113, data, plan, [0], crf_grid="stage1")["variants"]["nnunet_paseg"]["flags"]
    assert (flags["--crf_downsample"], flags["--kernel_radius"], flags["--crf_sigma_xy"]) == (2, 3, 4.0)
    removed = family.member_config(113, data, plan, [0], {"--crf_downsample": None}, crf_grid="stage1")
    flags = removed["variants"]["nnunet_paseg"]["flags"]
    assert "--crf_downsample" not in flags and (flags["--kernel_radius"], flags["--crf_sigma_xy"]) == (6, 8.0)
    plan["stage1"]["--down_size"] = [64, 64, 16]
    flags = family.member_config(113, data, plan, [0], crf_grid="stage1")["variants"]["nnunet_paseg"]["flags"]
    assert (flags["--crf_downsample"], flags["--kernel_radius"], flags["--crf_sigma_xy"]) == (1, 3, 4.0)
    for down_size in ([32, 64, 16], [32, 32, 8], [24, 24, 16]):
        plan["stage1"]["--down_size"] = down_size
        with pytest.raises(ValueError, match=r"--nnunet_crf_grid stage1: the mCRF grid .* is not the patch"):
            family.member_config(113, data, plan, [0], crf_grid="stage1")
    assert family.build_parser().parse_args(["--family_seeds", "1", "--output_dir", "x"]).nnunet_crf_grid == "patch"


def test_nnunet_paseg_flags_go_over_the_variants_own(tmp_path):
    data, plan = _member(tmp_path)
    plain = family.member_config(113, data, plan, [0])["variants"]
    config = family.member_config(113, data, plan, [0], {"--rampup_start": "foreground", "--kernel_radius": None,
                                                         "--weight_gatedcrf": 0.33})["variants"]
    flags = config["nnunet_paseg"]["flags"]
    assert flags == {k: v for k, v in plain["nnunet_paseg"]["flags"].items() if k != "--kernel_radius"} | {
        "--rampup_start": "foreground", "--weight_gatedcrf": 0.33}
    assert {k: v for k, v in config.items() if k != "nnunet_paseg"} == {
        k: v for k, v in plain.items() if k != "nnunet_paseg"}
    args = ablate.script_parser("nnunet_baseline.py").parse_args([str(x) for k, v in flags.items() for x in (k, v)])
    assert (args.rampup_start, args.kernel_radius) == ("foreground", None)
    parsed = family.build_parser().parse_args(["--family_seeds", "1", "--output_dir", str(tmp_path),
                                               "--nnunet_paseg_flags", '{"--rampup_start": "foreground"}'])
    assert parsed.nnunet_paseg_flags == {"--rampup_start": "foreground"}


def _table(values: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame([{"variant": v, "seeds": 3, "dice_mean": d, "dice_std": 0.01, "collapsed": 0,
                          "collapsed_epochs": "0/0/0"} for v, d in values.items()])


def test_summary_compares_stage1_with_nnunet_per_member():
    tables = {113: _table({"seeds": 0.65, "stage1_plan": 0.70, "nnunet_seeds": 0.60, "nnunet_paseg": 0.62,
                           "nnunet_full": 0.80}),
              114: _table({"seeds": 0.40, "stage1_plan": 0.50, "nnunet_seeds": 0.55, "nnunet_paseg": 0.50,
                           "nnunet_full": 0.90})}
    df, criteria = family.summarize_family(tables)
    assert len(df) == 10
    # 0.70 >= 0.65 and 0.50 >= 0.40: differences +0.05 and +0.10
    assert "stage 1 (plan) >= the expanded seeds in mean Dice on 2 of 2 members (mean difference +0.075)" in criteria
    # 0.62 >= 0.60, 0.50 < 0.55: +0.02 and -0.05
    assert "`nnunet_paseg` >= `nnunet_seeds` in mean Dice on 1 of 2 members (mean difference -0.015)" in criteria
    # 113: 0.70 >= 0.60, 114: 0.50 < 0.55; differences +0.10 and -0.05 -> mean +0.025
    assert "`nnunet_seeds` in mean Dice on 1 of 2 members (mean difference +0.025)" in criteria
    # differences -0.10 and -0.40 -> mean -0.250, no win
    assert "`nnunet_full` in mean Dice on 0 of 2 members (mean difference -0.250)" in criteria


@pytest.mark.parametrize("config", sorted((ablate.ROOT / "experiments" / "configs").glob("*.json")),
                         ids=lambda p: p.name)
def test_shipped_configs_give_commands_their_scripts_accept(config, tmp_path):
    """Every config under experiments/configs/ loads, and every command it gives (all variants,
    its seeds) passes the scripts' own parsers: a flag renamed in a script breaks this test,
    not a user's hour-long ablation."""
    cfg = ablate.load_config(config)
    runs = ablate.plan_runs(cfg, tmp_path, cfg.seeds, list(cfg.variants), "cpu", "python")
    assert {r.variant.name for r in runs} == set(cfg.variants)
    ablate.check_flags(ablate.all_commands(cfg, runs, "cpu", "python"), config)


def _fake_family(tmp_path, monkeypatch, dice):
    """family.main with the ablation runner replaced by a table of ``dice`` (per call) and a member
    that exists; returns the list of the runner's argv."""
    calls = []

    def fake_main(argv):
        calls.append(argv)
        return _table({"stage1_plan": dice[len(calls) - 1]})

    monkeypatch.setattr(family.ablate, "main", fake_main)
    plan = _member(tmp_path / "plan")[1]
    monkeypatch.setattr(family, "_plan_member", lambda data, rules, path: plan)
    data = tmp_path / "out" / "f113" / "data"
    data.mkdir(parents=True)
    (data / "member.json").write_text("{}", encoding="utf-8")
    return calls


def test_output_dir_needs_overwrite_unless_it_holds_the_same_family_run(tmp_path, monkeypatch, capsys):
    """utilities.data.io.check_overwrite's rule for --output_dir: the same arguments again resume the
    family run (its record matches); other arguments, or a summary of no family run, are refused
    in one line before anything is written, and replaced with --overwrite."""
    from helpers import one_line

    calls = _fake_family(tmp_path, monkeypatch, [0.5, 0.6, 0.7])
    out = tmp_path / "out"
    args = ["--family_seeds", "113", "--output_dir", str(out), "--variants", "stage1_plan", "--seeds", "0"]
    family.main(args)
    family.main(args + ["--jobs", "1"])               # the same run again (--jobs changes nothing it writes)
    assert len(calls) == 2 and "| 113 | 0.600 |" in (out / "summary.md").read_text()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    with pytest.raises(FileExistsError) as err:
        family.main(args[:-1] + ["1"])                 # other training seeds
    assert one_line(err) == (f"4 family file(s) exist already, e.g. {out / 'summary.csv'}; pass --overwrite to "
                             "replace them, or choose another --output_dir")
    assert (f"{out} holds a family run with other arguments: --seeds [0] -> [1] (--overwrite replaces its summary, "
            "plans and configs; the ablation runner keeps its finished runs)") in capsys.readouterr().out
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before and len(calls) == 2
    family.main(args[:-1] + ["1", "--overwrite"])
    assert len(calls) == 3 and "| 113 | 0.700 |" in (out / "summary.md").read_text()
    assert json.loads((out / family.RECORD_NAME).read_text())["seeds"] == [1]
    # a folder holding a summary of no family run (no record): refused as well
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.md").write_text("my notes\n", encoding="utf-8")
    with pytest.raises(FileExistsError, match=r"^1 family file\(s\) exist already, e.g. .*summary.md; pass "):
        family.main(["--family_seeds", "113", "--output_dir", str(mine)])
    assert (mine / "summary.md").read_text() == "my notes\n" and sorted(os.listdir(mine)) == ["summary.md"]


def test_summary_shows_voxels_seen_and_seconds_per_row():
    tables = {m: _table({"seeds": 0.5, "stage1_plan": 0.7, "nnunet_seeds": 0.6}).assign(
        voxels=[0.0, 24e6 + m, 30e6], train_s=[0.0, 200.0 + 20 * (m - 130), 900.0]) for m in (130, 131)}
    df, criteria = family.summarize_family(tables)
    text = family._markdown(df, criteria, "t")
    # stage 1: (24,000,130 + 24,000,131) / 2 voxels and (200 + 220) / 2 s; the expanded seeds train nothing
    assert "- `stage1_plan`: 24 M voxels, 210 s" in text and "- `nnunet_seeds`: 30 M voxels, 900 s" in text
    assert "`seeds`: " not in text.split("Voxels seen")[1]


def test_finished_only_summarises_what_finished_and_writes_nothing_else(tmp_path, monkeypatch, capsys):
    seen = []

    def fake_main(argv):
        seen.append(argv)
        return _table({"seeds": 0.4, "stage1_plan": 0.7, "nnunet_seeds": 0.6})

    monkeypatch.setattr(family.ablate, "main", fake_main)
    monkeypatch.setattr(family, "generate_member", lambda member, out: pytest.fail("no member is generated"))
    (tmp_path / "f130").mkdir()
    (tmp_path / "f130" / "ablation.json").write_text("{}", encoding="utf-8")
    df = family.main(["--family_seeds", "130", "131", "--output_dir", str(tmp_path), "--variants", "seeds",
                      "stage1_plan", "nnunet_seeds", "--finished_only"])
    assert len(seen) == 1 and seen[0][-1] == "--finished_only"   # member 131 has no config yet
    assert seen[0][seen[0].index("--baseline") + 1] == "seeds"
    assert "[family 131] no " in capsys.readouterr().out
    assert df["member"].unique().tolist() == [130]
    text = (tmp_path / "summary_finished.md").read_text(encoding="utf-8")
    assert "stage 1 (plan) >= the expanded seeds in mean Dice on 1 of 1 members (mean difference +0.300)" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f130", "summary_finished.csv", "summary_finished.md"]
    assert (tmp_path / "f130" / "ablation.json").read_text(encoding="utf-8") == "{}"   # not rewritten


def test_criteria_count_the_members_where_full_supervision_learns_and_add_an_earlier_summary(tmp_path):
    """Members count where full supervision reaches 0.5; an earlier summary's rows (runs whose
    folders are gone) join the finished ones, a (member, variant) in both is refused."""
    tables = {130: _table({"seeds": 0.44, "stage1_plan": 0.75, "seeds_only_plan": 0.73, "full_plan": 0.77}),
              133: _table({"seeds": 0.63, "stage1_plan": 0.00, "seeds_only_plan": 0.01, "full_plan": 0.00})}
    tables[133].loc[tables[133]["variant"] == "stage1_plan", "collapsed"] = 3
    earlier = pd.DataFrame([{"member": 132, "variant": v, "seeds": 3, "dice_mean": d, "dice_std": 0.01, "failed": f,
                             "collapsed_epochs": "0/0/0", "budget": "504 (63 × 8), batch 1", "voxels": 1e6,
                             "train_s": 100.0} for v, d, f in (("seeds", 0.42, 0), ("stage1_plan", 0.83, 3),
                                                                ("seeds_only_plan", 0.84, 0))])
    df, criteria = family.summarize_family(tables, earlier)
    assert sorted(set(df["member"])) == [130, 132, 133] and len(df) == 11
    # columns in the family's order of variants, whatever order the rows came in
    assert "| member | `seeds` | `seeds_only_plan` | `stage1_plan` | `full_plan` |" in family._markdown(df, "", "t")
    # 130: 0.77 >= 0.5 counts; 133: 0.00 does not; 132: full supervision not run, not counted
    assert "- members that count (full supervision reaches 0.5): 1 of 3; below it: 133; " \
           "full supervision not run yet: 132" in criteria
    # stage 1 >= seeds: 130 (+0.31), 132 (+0.41), 133 (-0.63) -> 2 of 3, mean +0.030; counted: 130 only
    assert "stage 1 (plan) >= the expanded seeds in mean Dice on 2 of 3 members (mean difference +0.030); " \
           "on the members that count, 1 of 1" in criteria
    # stage 1 >= seeds-only: 130 +0.02, 132 -0.01, 133 -0.01 -> 1 of 3
    assert "seeds-only (same optimiser) in mean Dice on 1 of 3 members (mean difference +0.000); " \
           "on the members that count, 1 of 1" in criteria
    # failed stage-1 runs: 3 on 132 (earlier) + 3 on 133, none on 130, the member that counts
    assert "- `stage1_plan`: 6 failed run(s) of 9 (0 of 3 on the members that count)" in criteria
    with pytest.raises(ValueError, match=r"--earlier: 1 \(member, variant\) row\(s\) are both .* \(e.g. 130 seeds\)"):
        family.summarize_family(tables, earlier.assign(member=130).iloc[:1])
    # the same row in both (the expanded seeds, regenerated): kept once
    again, _ = family.summarize_family(tables, pd.concat([earlier, earlier.assign(member=130, dice_mean=0.44,
                                                                                   seeds=3).iloc[:1]]))
    assert len(again) == 11 and (again["member"] == 130).sum() == 4
    path = tmp_path / "summary_finished.csv"
    earlier.to_csv(path, index=False)
    read = family._read_earlier(str(path))
    assert read["collapsed_epochs"].tolist() == ["0/0/0"] * 3 and read["dice_mean"].tolist() == [0.42, 0.83, 0.84]
    earlier.drop(columns=["budget"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['budget'\]"):
        family._read_earlier(str(path))
    with pytest.raises(ValueError, match="pass it with --finished_only"):
        family.main(["--family_seeds", "130", "--output_dir", str(tmp_path / "o"), "--earlier", str(path)])
