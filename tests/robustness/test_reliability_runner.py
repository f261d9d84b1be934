"""The ablation runner as careful as the scripts (issue 22 items 2, 3 and 5): a killed run is
resumed only with the flags it was started with, every script's flags are parsed before the first
training, a child's argparse error reaches the console, and SIGTERM stops the runner's children.

The scripts are replaced by a fake interpreter (``python=``) that records its command and
pretends to train, so these tests take seconds."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, load_script, script_env
from synth import make_vs_dataset

from experiments.ablation import execution

ablate = load_script("experiments/ablate.py")

FAKE = '''#!{python}
import os, sys, time, pathlib
args = sys.argv[1:]
script = pathlib.Path(args[0]).name
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(f"{{os.getpid()}} {{' '.join(args)}}\\n")
mode = os.environ.get("FAKE_MODE", "")
if "geodesic" in script:
    if mode == "sleep_stage0":
        time.sleep(120)
    sys.exit(0)
if script.startswith("train_"):
    network = args[args.index("--network") + 1] if "--network" in args else "U_Net2D5"
    folder = pathlib.Path(args[args.index("--model_dir") + 1]) / network / "models"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "CP_latest.pth").write_bytes(b"x")
    if mode == "sleep_train":
        time.sleep(120)
    sys.exit(137)  # killed mid-training
'''


@pytest.fixture
def setup(tmp_path, monkeypatch):
    p = make_vs_dataset(tmp_path / "data", 1, 1, 1)
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE.format(python=sys.executable))
    fake.chmod(0o755)
    log = tmp_path / "fake.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    return tmp_path, p, fake, log


def write_config(root: Path, p, **stage1) -> Path:
    cfg = {"title": "t", "dataset": {"split_file": str(p["split"]), "images": str(p["image_crop"]),
                                     "image_postfix": "T2", "labels": str(p["label_crop"]), "label_postfix": "Label",
                                     "annotations": str(p["annotation_7points"]), "annotation_postfix": "7points"},
           "base": {"stage1": {"--max_epochs": 30, "--spatial_shape": [32, 32, 16], "--down_size": [16, 16, 16],
                               **stage1}},
           "variants": {"a": {"kind": "stage1", "label": "A"}}, "seeds": [0], "baseline": "a"}
    path = root / "cfg.json"
    path.write_text(json.dumps(cfg))
    return path


def test_killed_run_with_changed_flags_is_refused(setup):
    root, p, fake, log = setup
    out = root / "out"
    cfg = ablate.load_config(write_config(root, p, **{"--learning_rate": 0.01}))
    with pytest.raises(RuntimeError, match="1 run"):
        ablate.run_ablation(cfg, out, device="cpu", python=str(fake))  # killed at its first epoch
    cfg2 = ablate.load_config(write_config(root, p, **{"--learning_rate": 0.04}))
    with pytest.raises(RuntimeError) as err:
        ablate.run_ablation(cfg2, out, device="cpu", python=str(fake))
    assert (f"variant=a seed=0: run folder {out.resolve()}/runs/a/seed0 holds a killed run made with other flags "
            "than the config now gives (--learning_rate 0.01 -> 0.04); it cannot be resumed with them: delete that "
            "folder to train it again, or restore the config") in str(err.value)
    trainings = [line for line in log.read_text().splitlines() if "train_" in line]
    assert len(trainings) == 1  # the changed run never started
    # the same flags again: resumed, with --resume
    with pytest.raises(RuntimeError, match="1 run"):
        ablate.run_ablation(cfg, out, device="cpu", python=str(fake))
    trainings = [line for line in log.read_text().splitlines() if "train_" in line]
    assert len(trainings) == 2 and trainings[1].endswith("--resume") and "--learning_rate 0.01" in trainings[1]


def test_a_run_started_from_another_checkout_is_the_same_run(setup):
    """A pinned worktree or a newer clone reads the ablation another checkout started: its markers
    name the training script at that checkout's path. The same flags resume the run; a changed flag
    is still refused."""
    root, p, fake, log = setup
    out = root / "out"
    cfg = ablate.load_config(write_config(root, p))
    with pytest.raises(RuntimeError, match="1 run"):
        ablate.run_ablation(cfg, out, device="cpu", python=str(fake))   # killed at its first epoch
    started = out / "runs" / "a" / "seed0" / "ablate_started.json"
    record = json.loads(started.read_text())
    script = Path(record["command"][0])
    assert script.is_absolute() and script.name.startswith("train_")
    record["command"][0] = f"/elsewhere/run-pinned/{script.name}"
    started.write_text(json.dumps(record))
    with pytest.raises(RuntimeError, match="1 run"):
        ablate.run_ablation(cfg, out, device="cpu", python=str(fake))
    trainings = [line for line in log.read_text().splitlines() if "train_" in line]
    assert len(trainings) == 2 and trainings[1].endswith("--resume")
    record["command"][0] = "/elsewhere/run-pinned/other_script.py"   # not the same script: refused
    started.write_text(json.dumps(record))
    (out / "runs" / "a" / "seed0" / "ablate_trained.json").unlink(missing_ok=True)
    with pytest.raises(RuntimeError, match="holds a killed run made with other flags"):
        ablate.run_ablation(cfg, out, device="cpu", python=str(fake))


def test_a_moved_ablation_folder_holds_the_same_runs(setup, capsys):
    """The ablation folder moved elsewhere (another disk, a renamed folder): its killed run is
    resumed there with --resume, stage 0 is not run again, and a changed flag is still refused,
    naming the flag, not the paths that moved with the folder."""
    import shutil
    root, p, fake, log = setup
    cfg = ablate.load_config(write_config(root, p))
    with pytest.raises(RuntimeError, match="1 run"):
        ablate.run_ablation(cfg, root / "out", device="cpu", python=str(fake))   # killed at its first epoch
    moved = root / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(root / "out", moved)
    capsys.readouterr()
    with pytest.raises(RuntimeError, match="1 run"):
        ablate.run_ablation(cfg, moved, device="cpu", python=str(fake))
    assert "[stage 0] done, skipped" in capsys.readouterr().out
    trainings = [line for line in log.read_text().splitlines() if "train_" in line]
    geodesic = [line for line in log.read_text().splitlines() if "geodesic" in line.split()[1]]
    assert len(trainings) == 2 and len(geodesic) == 1
    assert trainings[1].endswith("--resume") and f"--model_dir {moved}/runs/a/seed0" in trainings[1]
    with pytest.raises(RuntimeError) as err:
        ablate.run_ablation(ablate.load_config(write_config(root, p, **{"--learning_rate": 0.04})), moved,
                            device="cpu", python=str(fake))
    assert "made with other flags than the config now gives (--learning_rate (absent) -> 0.04); it cannot" in str(
        err.value)


def test_network_changed_in_a_killed_run_names_the_folder_to_delete(setup):
    root, p, fake, log = setup
    out = root / "out"
    with pytest.raises(RuntimeError, match="1 run"):
        ablate.run_ablation(ablate.load_config(write_config(root, p)), out, device="cpu", python=str(fake))
    with pytest.raises(RuntimeError) as err:
        ablate.run_ablation(ablate.load_config(write_config(root, p, **{"--network": "U_Net"})), out,
                            device="cpu", python=str(fake))
    assert "(--network (absent) -> U_Net); it cannot be resumed with them: delete that folder" in str(err.value)


def test_a_flag_typo_is_refused_before_any_training(setup, capsys):
    root, p, fake, log = setup
    path = write_config(root, p)
    cfg = json.loads(path.read_text())
    cfg["base"]["inference"] = {"--sw_overlapp": 0.5}
    path.write_text(json.dumps(cfg))
    code = ablate.run(["--config", str(path), "--output_dir", str(root / "out"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: config {path}: variant 'a': inference.py refuses --sw_overlapp 0.5 from "
                                 "base.inference (unrecognized arguments: --sw_overlapp 0.5 (did you mean "
                                 "--sw_overlap?)); fix it there (flags spelled out in full)"]
    assert not log.exists()  # nothing ran, not even stage 0
    cfg["base"]["inference"] = {}
    stage1 = dict(cfg["base"]["stage1"])
    # a misspelt flag, and an abbreviation argparse would expand: the base's --max_epochs and a
    # variant's --max_epoch would both reach the script, and the later one would win unseen
    for typo, value, meant in (("--lerning_rate", 0.1, "--learning_rate"), ("--max_epoch", 3, "--max_epochs")):
        cfg["base"]["stage1"] = stage1 | {typo: value}
        path.write_text(json.dumps(cfg))
        with pytest.raises(ValueError, match=r"variant 'a': train_gatedcrfloss3d22d_multiview_varianceloss.py "
                                             rf"refuses {typo} {value} from base.stage1 \(unrecognized arguments: "
                                             rf"{typo} {value} \(did you mean {meant}\?\)\); fix it there \(flags "
                                             r"spelled out in full\)"):
            ablate.run_ablation(ablate.load_config(path), root / "out", device="cpu", python=str(fake))
        assert not log.exists()


def test_an_argparse_exit_in_process_becomes_an_error(tmp_path):
    log = tmp_path / "log.txt"
    with pytest.raises(RuntimeError, match=rf"inference.py exited with 2 \(a flag it does not accept\); log: {log}"):
        execution.call_in_process([sys.executable, "inference.py", "--sw_overlapp", "0.5"], log, 1)
    assert "unrecognized arguments: --sw_overlapp 0.5" in log.read_text()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie has ended
        return fh.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.parametrize("mode", ["sleep_stage0", "sleep_train"])
def test_sigterm_stops_the_runner_and_its_children(setup, mode):
    root, p, fake, log = setup
    path = write_config(root, p)
    code = ("import functools, sys; import experiments.ablate as a; "
            f"a.run_ablation = functools.partial(a.run_ablation, python={str(fake)!r}); sys.exit(a.run(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, "--config", str(path), "--output_dir", str(root / "out"),
                             "--device", "cpu"], cwd=ROOT, env=script_env(FAKE_LOG=str(log), FAKE_MODE=mode),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child = None
    deadline = time.time() + 60
    wanted = "geodesic" if mode == "sleep_stage0" else "train_"
    while child is None and time.time() < deadline:
        time.sleep(0.2)
        lines = [line for line in (log.read_text().splitlines() if log.exists() else []) if wanted in line]
        child = int(lines[0].split()[0]) if lines else None
        assert proc.poll() is None, proc.communicate()
    assert child is not None and _alive(child)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert err.strip().splitlines()[-1] == "terminated; run the same command again to resume"
    time.sleep(0.2)
    assert not _alive(child)


# --------------------------------------------------------------------------------------------
# A table says what the run did (issue 30, item 5), a bad config value is one line naming the
# config, the variant and the key, and an impossible epoch_inf is refused before any training.
# --------------------------------------------------------------------------------------------
#: A fake interpreter whose trainings record their arguments as the real scripts do (their parser
#: with the plan applied, in CP_latest.pth) and whose scores are a fixed table.
RECORDING = '''#!{python}
import os, sys, pathlib
sys.path.insert(0, {root!r})
args = sys.argv[1:]
script = pathlib.Path(args[0]).name
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(" ".join(args) + "\\n")
def value(flag):
    return args[args.index(flag) + 1]
if script.startswith("train_"):
    import torch
    import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
    from utilities.workflow.plan import apply_plan
    recorded = vars(apply_plan(stage1.build_parser(), args[1:], "stage1"))
    folder = pathlib.Path(value("--model_dir")) / recorded["network"] / "models"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({{"epoch": recorded["max_epochs"], "args": recorded}}, folder / "CP_latest.pth")
if script == "scores.py":
    import pandas as pd
    from utilities.data.io import save_csv
    from utilities.evaluation.scoring import with_summary
    from utilities.data.splits import read_split, subjects_of
    cases = subjects_of(read_split(value("--dataset_split")), "inference")
    table = pd.DataFrame({{"subject": cases, "dice": 0.5, "assd": 1.0, "pred_voxels": 9}})
    save_csv(with_summary(table, ["dice", "assd"]), pathlib.Path(value("--model_dir")) / value("--network")
             / "results_inference.csv")
'''


def _plan(path: Path, epochs: int) -> Path:
    from utilities.workflow.plan import PLAN_VERSION

    path.write_text(json.dumps({"version": PLAN_VERSION, "stage1": {"--max_epochs": epochs}, "scm": {},
                                "inference": {}}), encoding="utf-8")
    return path


def test_the_steps_column_reads_what_the_runs_recorded_not_the_defaults(setup):
    """Three runs of a config whose epochs come from its --plan (20 epochs x 24 training cases):
    the table says 480 steps each, the runs' record; the trainer's default (300 epochs) would
    have given 7200. A plan edited after the runs does not change what they did."""
    root, p, _, log = setup
    fake = root / "recording_python"
    fake.write_text(RECORDING.format(python=sys.executable, root=str(ROOT)))
    fake.chmod(0o755)
    split = root / "split24.csv"
    split.write_text("".join(f"t{i},training\n" for i in range(24)) + "v1,validation\ni1,inference\ni2,inference\n")
    path = write_config(root, p)
    cfg = json.loads(path.read_text())
    cfg["dataset"]["split_file"] = str(split)
    d = cfg["dataset"]
    for name in [f"t{i}" for i in range(24)] + ["v1", "i1", "i2"]:   # the runner checks every case's files first
        for folder, postfix in ((d["images"], d["image_postfix"]), (d["labels"], d["label_postfix"]),
                                (d["annotations"], d["annotation_postfix"])):
            target = Path(folder) / f"{name}_{postfix}.nii.gz"
            if not target.exists():
                target.write_bytes(b"")   # the stand-in trainer reads none of them
    cfg["base"]["stage1"] = {"--plan": str(_plan(root / "plan.json", 20)), "--spatial_shape": [32, 32, 16]}
    cfg["seeds"] = [0, 1, 2]
    path.write_text(json.dumps(cfg))
    out = root / "out"
    table = ablate.run_ablation(ablate.load_config(path), out, device="cpu", jobs=2, python=str(fake))
    assert table.set_index("variant").loc["a", "budget"] == "480 (20 × 24), batch 1"
    # 480 steps of one 32x32x16 patch: 7.86 M voxels; the stand-in trainer logged no epoch times
    assert ("| A (`a`) | 3 | 0.500 ± 0.000 | 1.00 ± 0.00 | 0/3 | 0/0/0 | baseline | 480 (20 × 24), batch 1 | "
            "7.86 M | — |") in (out / "table.md").read_text(encoding="utf-8").splitlines()
    assert len([line for line in log.read_text().splitlines() if "train_" in line]) == 3
    _plan(root / "plan.json", 30)   # edited after the runs: the table still says what they did
    again = ablate.run_ablation(ablate.load_config(path), out, device="cpu", python=str(fake), finished_only=True)
    assert again.set_index("variant").loc["a", "budget"] == "480 (20 × 24), batch 1"


def test_a_run_that_recorded_nothing_has_unknown_steps(setup):
    root, p, _, _ = setup
    cfg = ablate.load_config(write_config(root, p))
    run = ablate.plan_runs(cfg, root / "out", (0,), ["a"], "cpu", "python")[0]
    assert ablate.run_budget(run, 24) == "?"   # not the 30 epochs of its config
    planned = ablate.planned_args(run.train)
    assert ablate.budget_text(planned.max_epochs, planned.batch_size, 24) == "720 (30 × 24), batch 1"


def _edited(root: Path, p, edit) -> Path:
    path = write_config(root, p)
    cfg = json.loads(path.read_text())
    edit(cfg)
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["dataset"].update(geodesic_workers="two"),
     "dataset.geodesic_workers must be an integer of at least 1, got 'two'"),
    (lambda c: c["dataset"].update(geodesic_weight=[0.5]), "dataset.geodesic_weight must be a number, got [0.5]"),
    (lambda c: c["variants"]["a"].update(flags={"--spatial_shape": "abc"}),
     "variant 'a': train_gatedcrfloss3d22d_multiview_varianceloss.py refuses --spatial_shape \"abc\" from "
     "variants.a.flags (argument --spatial_shape: expected 3 arguments); fix it there (flags spelled out in full)"),
    (lambda c: c["base"]["stage1"].update({"--spatial_shape": ["a", "b", "c"]}),
     "variant 'a': train_gatedcrfloss3d22d_multiview_varianceloss.py refuses --spatial_shape [\"a\", \"b\", \"c\"] "
     "from base.stage1 (argument --spatial_shape: invalid int value: 'a'); fix it there (flags spelled out "
     "in full)"),
    (lambda c: c["variants"].update(s={"kind": "scm", "from": "a", "aux_seed_offset": "one"}),
     "variants.s.aux_seed_offset must be an integer, got 'one'"),
    (lambda c: c["variants"]["a"].update(label=["A"]), "variants.a.label must be a string, got ['A']"),
])
def test_a_bad_config_value_names_the_config_the_variant_and_the_key(setup, capsys, edit, message):
    root, p, fake, log = setup
    path = _edited(root, p, edit)
    code = ablate.run(["--config", str(path), "--output_dir", str(root / "out"), "--device", "cpu"])
    assert code == 2 and capsys.readouterr().err.strip().splitlines() == [f"error: config {path}: {message}"]
    assert not log.exists() and not (root / "out").exists()


@pytest.mark.parametrize("variant, message", [
    ({"kind": "stage1", "epoch_inf": "best_model1"},
     "variants.a.epoch_inf 'best_model1': the variant's training never writes CP_best_model1.pth where inference "
     "reads it (it writes best, best_seed_dice, final); choose one of those"),
    ({"kind": "stage1", "epoch_inf": "best_dice"},   # --val_metric dice: CP_best.pth is that one
     "variants.a.epoch_inf 'best_dice': the variant's training never writes CP_best_dice.pth where inference reads "
     "it (it writes best, best_seed_dice, final); choose one of those"),
    ({"kind": "full", "epoch_inf": "latest"},   # the resumable state, not a model
     "variants.a.epoch_inf 'latest': the variant's training never writes CP_latest.pth where inference reads it "
     "(it writes best, best_seed_dice, final); choose one of those"),
    ({"kind": "seeds", "epoch_inf": "best"},
     "variants.a.epoch_inf: a 'seeds' variant reads no checkpoint (its predictions are scored as they are); "
     "remove the key"),
])
def test_an_impossible_epoch_inf_is_refused_before_any_training(setup, capsys, variant, message):
    root, p, fake, log = setup
    path = _edited(root, p, lambda c: c["variants"].update(a={"label": "A", **variant}))
    code = ablate.run(["--config", str(path), "--output_dir", str(root / "out"), "--device", "cpu"])
    assert code == 2 and capsys.readouterr().err.strip().splitlines() == [f"error: config {path}: {message}"]
    assert not log.exists() and not (root / "out").exists()


def test_the_checkpoints_a_variant_writes_follow_its_flags(setup):
    root, p, _, _ = setup
    path = _edited(root, p, lambda c: c["variants"].update(
        b={"kind": "stage1", "flags": {"--val_metric": "seed_dice"}, "epoch_inf": "best_dice"},
        s={"kind": "scm", "from": ["a", "a"], "epoch_inf": "final_model2"},
        s2={"kind": "scm", "from": ["a", "b"], "flags": {}, "epoch_inf": "best_model1"}))
    cfg = ablate.load_config(path)
    runs = {r.key: r for r in ablate.plan_runs(cfg, root / "out", (0,), ["a", "b", "s", "s2"], "cpu", "python")}
    assert ablate.written_checkpoints(runs["variant=b seed=0"]) == {"best", "best_dice", "final"}
    assert ablate.written_checkpoints(runs["variant=s seed=0"]) == {"best_model1", "final_model1", "best_model2",
                                                                    "final_model2"}   # both U_Net2D5: one folder
    ablate.check_epoch_inf(cfg, list(runs.values()))   # all possible: no error


def test_a_plans_network_names_the_run_folder(setup):
    """The run's sub-folder (where inference and scores look, and SCM's --network1) is the network
    the training will use: its --plan's when the config names none."""
    from utilities.workflow.plan import PLAN_VERSION

    root, p, _, _ = setup
    plan = root / "plan.json"
    plan.write_text(json.dumps({"version": PLAN_VERSION, "stage1": {"--network": "AttU_Net"}, "scm": {},
                                "inference": {}}), encoding="utf-8")
    path = _edited(root, p, lambda c: c["base"].update(stage1={"--plan": str(plan), "--spatial_shape": [32, 32, 16]}))
    run = ablate.plan_runs(ablate.load_config(path), root / "out", (0,), ["a"], "cpu", "python")[0]
    assert run.network == "AttU_Net" and ablate.planned_args(run.train).network == "AttU_Net"
    assert run.results == root / "out" / "runs" / "a" / "seed0" / "AttU_Net" / "results_inference.csv"
