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
    assert code == 2 and err == [f"error: config {path}: inference.py refuses the flags it would be given "
                                 "(unrecognized arguments: --sw_overlapp 0.5); fix the flags in base or the variant "
                                 "(spelled out in full)"]
    assert not log.exists()  # nothing ran, not even stage 0
    cfg["base"]["inference"] = {}
    stage1 = dict(cfg["base"]["stage1"])
    # a misspelt flag, and an abbreviation argparse would expand: the base's --max_epochs and a
    # variant's --max_epoch would both reach the script, and the later one would win unseen
    for typo, value in (("--lerning_rate", 0.1), ("--max_epoch", 3)):
        cfg["base"]["stage1"] = stage1 | {typo: value}
        path.write_text(json.dumps(cfg))
        with pytest.raises(ValueError, match=r"train_gatedcrfloss3d22d_multiview_varianceloss.py refuses the flags "
                                             rf"it would be given \(unrecognized arguments: {typo} {value}\); fix "
                                             r"the flags in base or the variant \(spelled out in full\)"):
            ablate.run_ablation(ablate.load_config(path), root / "out", device="cpu", python=str(fake))
        assert not log.exists()


def test_an_argparse_exit_in_process_becomes_an_error(tmp_path):
    log = tmp_path / "log.txt"
    with pytest.raises(RuntimeError, match=rf"inference.py exited with 2 \(a flag it does not accept\); log: {log}"):
        ablate._call_in_process([sys.executable, "inference.py", "--sw_overlapp", "0.5"], log, 1)
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
