"""Distributed (torchrun + DistributedDataParallel) training on CPU with gloo, 2 processes.

Unit tests: ``shard_indices``, the non-distributed ``DistContext``, the context's collectives in
two real gloo processes, and the training/validation shards that ``make_loaders`` builds per
rank. End to end: both training scripts under ``python -m torch.distributed.run
--nproc_per_node 2`` on tiny data, checking that rank 0 alone writes the outputs, that the
logged validation Dice equals a single-process evaluation of the same weights, and resume.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
from synth import make_vs_dataset

from networks import get_network
from utilities.core.distributed import DistContext, init_distributed, shard_indices
from utilities.data.loading import DataConfig, ImageSource, load_phase, load_training_data, make_volume_loader
from utilities.models.checkpoints import load_model_weights, save_model
from utilities.training.validation import evaluate, mean_scores

ROOT = Path(__file__).resolve().parents[3]
STAGE1 = "train_gatedcrfloss3d22d_multiview_varianceloss.py"
SHAPE = ["32", "32", "16"]
N_TRAIN, N_VAL = 4, 3  # 3 validation volumes on 2 ranks: uneven shards (2 + 1)
LAUNCH_TIMEOUT_S = 300

needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available in this build")


# ---------------------------------------------------------------- shard_indices, DistContext


@pytest.mark.parametrize("n, world_size, expected", [
    (3, 2, [[0, 2], [1]]),
    (4, 2, [[0, 2], [1, 3]]),
    (7, 3, [[0, 3, 6], [1, 4], [2, 5]]),
    (1, 2, [[0], []]),
    (0, 2, [[], []]),
    (5, 1, [[0, 1, 2, 3, 4]]),
])
def test_shard_indices_disjoint_covering_uneven(n, world_size, expected):
    shards = [shard_indices(n, DistContext(rank, world_size, rank)) for rank in range(world_size)]
    assert shards == expected
    flat = [i for shard in shards for i in shard]
    assert sorted(flat) == list(range(n)) and len(flat) == len(set(flat))  # covering, disjoint, no padding
    assert max(map(len, shards)) - min(map(len, shards)) <= (1 if n else 0)


def test_context_not_distributed():
    ctx = DistContext()
    assert (ctx.rank, ctx.world_size, ctx.local_rank) == (0, 1, 0)
    assert not ctx.distributed and ctx.is_main
    obj = {"a": torch.arange(3)}
    gathered = ctx.gather(obj)
    assert len(gathered) == 1 and gathered[0] is obj
    assert ctx.broadcast(obj) is obj
    assert ctx.any(True) is True and ctx.any(False) is False and ctx.any(0) is False
    ctx.barrier()
    ctx.close()  # no process group: both are no-ops
    assert not DistContext(1, 2).is_main and DistContext(1, 2).distributed


def test_init_distributed_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx, device = init_distributed(torch.device("cpu"))
    assert ctx == DistContext() and device == torch.device("cpu") and not dist.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_distributed(torch.device("cpu"))[0] == DistContext()


# One rank of a 2-process job, started with the environment torchrun sets; imports only torch
# and utilities.core.distributed so that it starts fast.
COLLECTIVES_WORKER = """
import sys
import numpy as np
import torch
import torch.distributed as dist
from utilities.core.distributed import init_distributed, shard_indices

ctx, device = init_distributed(torch.device("cpu"))
rank = ctx.rank
result = {
    "ctx": (ctx.rank, ctx.world_size, ctx.local_rank, ctx.distributed, ctx.is_main),
    "backend": dist.get_backend(),
    # uint32 tensors (the NumPy RNG state in rng_state) do not survive plain object pickling
    "gather": ctx.gather({"rank": rank, "u32": torch.from_numpy(np.arange(3, dtype=np.uint32) + rank)}),
    "broadcast": ctx.broadcast({"path": f"from rank {rank}", "t": torch.full((2,), rank)}),
    "any_one": ctx.any(rank == 1),
    "any_none": ctx.any(False),
    "shard": shard_indices(3, ctx),
}
ctx.barrier()
torch.save(result, sys.argv[1] + f"/rank{rank}.pt")
ctx.close()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_gloo
def test_context_collectives_two_processes(tmp_path):
    port = _free_port()
    procs = []
    for rank in range(2):
        env = os.environ | {"WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
                            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
                            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        procs.append(subprocess.Popen([sys.executable, "-c", COLLECTIVES_WORKER, str(tmp_path)], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rank, (proc, output) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"rank {rank} exited {proc.returncode}:\n{output[-4000:]}"
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for rank, res in enumerate(results):
        assert res["ctx"] == (rank, 2, rank, True, rank == 0)
        assert res["backend"] == "gloo"
        assert [g["rank"] for g in res["gather"]] == [0, 1]
        for r, g in enumerate(res["gather"]):
            assert g["u32"].dtype == torch.uint32 and g["u32"].tolist() == [r, r + 1, r + 2]
        assert res["broadcast"]["path"] == "from rank 0" and res["broadcast"]["t"].tolist() == [0, 0]
        assert res["any_one"] is True and res["any_none"] is False
    assert [res["shard"] for res in results] == [[0, 2], [1]]


# ---------------------------------------------------------------- tiny data, launches


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return make_vs_dataset(tmp_path_factory.mktemp("dist_data"), n_train=N_TRAIN, n_val=N_VAL, n_inf=0)


def _data_args(p: dict[str, Path]) -> list[str]:
    return ["--dataset_split", str(p["split"]), "--path_images", str(p["image_crop"]),
            "--path_labels", str(p["label_crop"]), "--spatial_shape", *SHAPE, "--device", "cpu"]


def _torchrun(script: str, args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script, *args]
    # its own process group; on a timeout torchrun and every process under it are killed: torchrun
    # starts each rank in a session of its own, which killing torchrun's group does not reach, and a
    # rank left alive holds the output pipes open, so that reading them would wait for ever
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as child:
        try:
            stdout, stderr = child.communicate(timeout=LAUNCH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for pid in [*_descendants(child.pid), child.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.communicate(timeout=30)
            raise
    proc = subprocess.CompletedProcess(cmd, child.returncode, stdout, stderr)
    assert proc.returncode == 0, f"torchrun {script} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-6000:]}"
    return proc


def _descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (children first found, grandchildren after), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_descendants_are_found_through_new_sessions(tmp_path):
    """The helper the launches' timeout uses finds a grandchild in a session of its own."""
    script = ("import subprocess, sys, time; "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True); "
              "time.sleep(60)")
    with subprocess.Popen([sys.executable, "-c", script]) as parent:
        try:
            for _ in range(200):   # until the grandchild runs in its own session
                found = _descendants(parent.pid)
                if found and os.getsid(found[0]) == found[0]:
                    break
                time.sleep(0.05)
            assert len(found) == 1 and os.getsid(found[0]) == found[0] != os.getsid(parent.pid)
        finally:
            for pid in [*_descendants(parent.pid), parent.pid]:
                os.kill(pid, signal.SIGKILL)
            parent.wait()


def _stage1_args(p: dict[str, Path], model_dir: Path, max_epochs: int, *extra: str) -> list[str]:
    return [*_data_args(p), "--path_geodesic_labels", str(p["geodesic_label"]), "--down_size", "16", "16", "16",
            "--rampup_epochs", "1", "--max_epochs", str(max_epochs), "--model_dir", str(model_dir), *extra]


def _single_process_dice(p: dict[str, Path], network: str, checkpoint: Path) -> dict[str, float]:
    """Mean validation scores of a checkpoint evaluated in this (single) process."""
    model = get_network(network, 1, 2)
    load_model_weights(model, checkpoint, network)
    cache = load_phase(p["split"], "validation",
                       [ImageSource("image", p["image_crop"], "T2", False, "image"),
                        ImageSource("label", p["label_crop"], "Label", True, "label")],
                       [ImageSource("seeds", p["geodesic_label"], "GeodesicLabel", True, "expanded-seed label")])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the launched processes (OMP_NUM_THREADS=1)
    try:
        scores = evaluate(model, make_volume_loader(cache), [int(s) for s in SHAPE], torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert sorted(scores) == [f"vs_gk_{N_TRAIN + i + 1}" for i in range(N_VAL)]
    return mean_scores(scores)


def _no_temp_files(folder: Path) -> None:
    leftovers = [f for f in folder.rglob("*") if f.is_file() and (".tmp" in f.name or f.name.startswith("."))]
    assert not leftovers, leftovers


# ---------------------------------------------------------------- shards of make_loaders


def test_make_loaders_shards_per_rank(data):
    config = DataConfig(str(data["split"]), data["image_crop"], "T2", data["label_crop"], "Label",
                        data["image_crop"], "no_seeds_here", val_metric="dice", cache_gb=1.0)
    training_data = load_training_data(config, ["image"])  # validation: image + label (seeds absent: not used)
    shape = [int(s) for s in SHAPE]

    def make_loaders(ctx: DistContext):
        return training_data.loaders(shape, 1, 0, 0, ctx, torch.Generator().manual_seed(0))

    loaders = [make_loaders(DistContext(rank, 2, rank)) for rank in range(2)]
    train_names = [f"vs_gk_{i + 1}" for i in range(N_TRAIN)]
    orders = []
    for epoch in range(4):
        seen = []
        for train_loader, _, sampler in loaders:
            assert sampler is not None
            sampler.set_epoch(epoch)
            seen.append([name for batch in train_loader for name in batch["subject"]])
        assert [len(s) for s in seen] == [N_TRAIN // 2] * 2
        assert sorted(seen[0] + seen[1]) == train_names  # distinct shards that cover the subjects
        orders.append(tuple(seen[0] + seen[1]))
    assert len(set(orders)) > 1  # the epoch seeds the shuffle
    val = [[batch["subject"][0] for batch in val_loader] for _, val_loader, _ in loaders]
    assert val == [["vs_gk_5", "vs_gk_7"], ["vs_gk_6"]]
    # without a distributed context: no sampler, one loader over everything
    train_loader, val_loader, sampler = make_loaders(DistContext())
    assert sampler is None and len(val_loader) == N_VAL
    assert sorted(name for batch in train_loader for name in batch["subject"]) == train_names


# ---------------------------------------------------------------- stage 1 under torchrun


@pytest.fixture(scope="module")
def stage1_run(data, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    model_dir = tmp_path_factory.mktemp("dist_stage1")
    proc = _torchrun(STAGE1, _stage1_args(data, model_dir, 2))
    return model_dir, proc


@needs_gloo
def test_stage1_torchrun_outputs_written_once(stage1_run):
    model_dir, _ = stage1_run
    run = model_dir / "U_Net2D5"
    for name in ("CP_best.pth", "CP_final.pth", "CP_latest.pth"):
        assert (run / "models" / name).is_file(), name
    assert sorted(f.name for f in (run / "models").iterdir()) == ["CP_best.pth", "CP_best_seed_dice.pth",
                                                                   "CP_final.pth", "CP_latest.pth"]
    logs = list(run.glob("log_*.txt"))
    events = list((run / "tensorboard").glob("events.*"))
    assert len(logs) == 1 and len(events) == 1  # rank 0 only (event file names carry the pid)
    text = logs[0].read_text()
    assert "2 process(es)" in text
    assert text.count("epoch 2/2 lr") == 1 and text.count("done: best dice") == 1  # no second writer
    log = pd.read_csv(run / "log.csv")
    assert log["epoch"].tolist() == [1, 2]
    _no_temp_files(model_dir)
    latest = torch.load(run / "models" / "CP_latest.pth", weights_only=False)
    assert latest["epoch"] == 2 and len(latest["rng"]) == 2  # one RNG state per rank
    assert not torch.equal(latest["rng"][0]["torch"], latest["rng"][1]["torch"])  # ranks seeded apart


@needs_gloo
def test_stage1_torchrun_dice_equals_single_process(stage1_run, data):
    model_dir, _ = stage1_run
    run = model_dir / "U_Net2D5"
    last = pd.read_csv(run / "log.csv").iloc[-1]
    # CP_final holds the weights validated in the last epoch (sharded 2 + 1 volumes, gathered)
    single = _single_process_dice(data, "U_Net2D5", run / "models" / "CP_final.pth")
    assert 0.0 <= single["dice"] <= 1.0
    assert last["val_dice"] == pytest.approx(single["dice"], abs=1e-6)
    assert last["val_seed_dice"] == pytest.approx(single["seed_dice"], abs=1e-6)
    # and the model state in CP_latest is the same as CP_final's
    final = torch.load(run / "models" / "CP_final.pth", weights_only=True)["state_dict"]
    latest = torch.load(run / "models" / "CP_latest.pth", weights_only=False)["model"]
    assert final.keys() == latest.keys() and all(torch.equal(final[k], latest[k]) for k in final)


@needs_gloo
def test_stage1_torchrun_resume(stage1_run, data, tmp_path):
    model_dir, _ = stage1_run
    copy = tmp_path / "resumed"
    shutil.copytree(model_dir, copy)
    run = copy / "U_Net2D5"
    before = pd.read_csv(run / "log.csv")
    proc = _torchrun(STAGE1, _stage1_args(data, copy, 3, "--resume"))
    assert "resumed from" in proc.stdout and "at epoch 2" in proc.stdout
    log = pd.read_csv(run / "log.csv")
    assert log["epoch"].tolist() == [1, 2, 3]
    pd.testing.assert_frame_equal(log.iloc[:2].reset_index(drop=True), before)  # finished epochs are kept
    latest = torch.load(run / "models" / "CP_latest.pth", weights_only=False)
    assert latest["epoch"] == 3 and len(latest["rng"]) == 2
    assert len(list(run.glob("log_*.txt"))) == 2 and len(list((run / "tensorboard").glob("events.*"))) == 2
    _no_temp_files(copy)


# ---------------------------------------------------------------- SCM under torchrun


@needs_gloo
def test_scm_torchrun(data, tmp_path):
    torch.manual_seed(0)
    pretrained = tmp_path / "stage1"
    for network in ("U_Net2D5", "AttU_Net"):  # untrained stage-1 checkpoints are enough for a smoke run
        save_model(pretrained / network / "models" / "CP_best.pth", get_network(network, 1, 2), network)
    out = tmp_path / "scm"
    _torchrun("train_SCM.py", [*_data_args(data), "--pretrained_model1_dir", str(pretrained),
                               "--network1", "U_Net2D5", "--pretrained_model2_dir", str(pretrained),
                               "--network2", "AttU_Net", "--max_epochs", "1", "--iterative_epochs", "1",
                               "--model_dir", str(out)])
    m1, m2 = out / "U_Net2D5" / "models", out / "AttU_Net" / "models"
    assert sorted(f.name for f in m1.iterdir()) == ["CP_best_model1.pth", "CP_final_model1.pth", "CP_latest_SCM.pth"]
    assert sorted(f.name for f in m2.iterdir()) == ["CP_best_model2.pth", "CP_final_model2.pth"]
    assert len(list((out / "U_Net2D5").glob("log_SCM_*.txt"))) == 1
    assert len(list((out / "U_Net2D5" / "tensorboard_SCM").glob("events.*"))) == 1
    assert not list((out / "AttU_Net").glob("log*"))
    _no_temp_files(out)
    log = pd.read_csv(out / "U_Net2D5" / "log_SCM.csv")
    assert log["epoch"].tolist() == [1] and log["teachers_reloaded"].tolist() == [1]
    for k, folder, network in ((1, m1, "U_Net2D5"), (2, m2, "AttU_Net")):
        single = _single_process_dice(data, network, folder / f"CP_final_model{k}.pth")
        assert log[f"val_dice{k}"].iloc[0] == pytest.approx(single["dice"], abs=1e-6)
    # the teachers were reloaded from the best students after the (only, iterative) epoch
    latest = torch.load(m1 / "CP_latest_SCM.pth", weights_only=False)
    best1 = torch.load(m1 / "CP_best_model1.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(latest["teacher1"][key], best1[key]) for key in best1)
