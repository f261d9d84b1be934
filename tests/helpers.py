"""What several test files share: the repository root, script loading, the argument lists of the
scripts on the tiny synthetic data of ``tests/synth.py``, small checkpoints, a subprocess runner
and comparisons. Tests import this module (never ``conftest``)."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from networks import get_network
from utilities.data.layout import RunLayout
from utilities.models.checkpoints import save_model
from utilities.training.engine import Callback

# `networks`/`utilities` come from `pip install -e .` (make install); the root scripts are importable
# through pyproject.toml's pytest `pythonpath`.
ROOT = Path(__file__).resolve().parents[1]

__all__ = ["ROOT", "SHAPE", "STAGE1", "SCM", "load_script", "stage1_args", "scm_args", "inference_args",
           "geodesic_args", "pretrained", "a_model", "one_line", "weights", "same_weights", "run_script",
           "script_env", "make_quick_demo", "demo_dataset"]

#: The patch size of every test run (the synthetic volumes are 32×32×16).
SHAPE = ["--spatial_shape", "32", "32", "16"]
STAGE1 = "train_gatedcrfloss3d22d_multiview_varianceloss.py"
SCM = "train_SCM.py"


def project_sources() -> list[Path]:
    """The project's Python files: those git tracks or would track (not what ``.gitignore``
    leaves out: the virtual environment, a user's ``ablation/`` scratch scripts); every ``.py``
    outside ``.venv`` where the clone has no git."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "*.py"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return [p for p in sorted(ROOT.rglob("*.py")) if not p.relative_to(ROOT).as_posix().startswith(".venv/")]
    return sorted(ROOT / name for name in out.split("\0") if name and (ROOT / name).is_file())


def load_script(relpath: str) -> ModuleType:
    """Import a script of the repository (e.g. ``data/VS/convert.py``) as a module."""
    path = ROOT / relpath
    name = "script_" + relpath.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def stage1_args(p: Mapping[str, Path], model_dir: Path | str, *extra: str) -> list[str]:
    """Stage 1 on the data of :func:`synth.make_vs_dataset`: 2 epochs, seed 7, CPU."""
    return ["--model_dir", str(model_dir), "--network", "U_Net2D5", "--dataset_split", str(p["split"]),
            "--path_images", str(p["image_crop"]), "--path_labels", str(p["label_crop"]),
            "--path_geodesic_labels", str(p["geodesic_label"]), *SHAPE, "--down_size", "16", "16", "16",
            "--max_epochs", "2", "--rampup_epochs", "1", "--device", "cpu", "--seed", "7", *extra]


def scm_args(p: Mapping[str, Path], pre: Sequence[Path], model_dir: Path | str, *extra: str) -> list[str]:
    """SCM from the two stage-1 folders ``pre`` (see :func:`pretrained`): 2 epochs, seed 7, CPU."""
    return ["--pretrained_model1_dir", str(pre[0]), "--network1", "U_Net2D5",
            "--pretrained_model2_dir", str(pre[1]), "--network2", "U_Net2D5", "--model_dir", str(model_dir),
            "--dataset_split", str(p["split"]), "--path_images", str(p["image_crop"]),
            "--path_labels", str(p["label_crop"]), *SHAPE, "--max_epochs", "2", "--iterative_epochs", "1",
            "--device", "cpu", "--seed", "7", *extra]


def inference_args(p: Mapping[str, Path], model_dir: Path | str, *extra: str) -> list[str]:
    return ["--model_dir", str(model_dir), "--network", "U_Net2D5", "--dataset_split", str(p["split"]),
            "--path_images", str(p["image_crop"]), *SHAPE, "--device", "cpu", *extra]


def geodesic_args(p: Mapping[str, Path], out: Path | str, *extra: str) -> list[str]:
    return ["--dataset_split", str(p["split"]), "--path_images", str(p["image_crop"]),
            "--path_labels", str(p["label_crop"]), "--path_anno_7points", str(p["annotation_7points"]),
            "--path_geodesic", str(out), "--num_workers", "1", "--phase", "training", *extra]


def pretrained(root: Path, seed: int = 0) -> list[Path]:
    """Two stage-1 run folders, each with a random U_Net2D5 CP_best.pth (different weights)."""
    dirs = []
    for k in (1, 2):
        torch.manual_seed(seed + k)
        folder = root / f"pre{k}"
        save_model(folder / "U_Net2D5" / "models" / "CP_best.pth", get_network("U_Net2D5", 1, 2), "U_Net2D5")
        dirs.append(folder)
    return dirs


def a_model(model_dir: Path | str, network: str = "U_Net2D5", name: str = "CP_best.pth",
            folder: str | None = None) -> Path:
    """A random ``network`` saved as ``<model_dir>/<folder>/models/<name>`` (``folder``: the
    network's own run folder unless given, e.g. another network's to plant a wrong checkpoint);
    returns its path."""
    torch.manual_seed(0)
    path = RunLayout(model_dir, folder or network).checkpoint(name.removeprefix("CP_").removesuffix(".pth"))
    save_model(path, get_network(network, 1, 2), network, epoch=1)
    return path


def one_line(err: Any) -> str:
    """The message of a ``pytest.raises`` exception, checked to be a single line."""
    message = str(err.value)
    assert "\n" not in message, message
    return message


def weights(path: Path, key: str = "state_dict") -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)[key]


def same_weights(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def script_env(**extra: str) -> dict[str, str]:
    """The environment of a script run as a shell user would: one thread, no debug."""
    env = {k: v for k, v in os.environ.items() if k not in ("PASEG_DEBUG", "WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}
    return env


def run_script(script: str, args: Sequence[str], timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """Run ``python <script> <args>`` from the repository root (stdout and stderr captured, not a
    terminal: what a redirected run or a batch job sees)."""
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT, env=script_env(**env),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def run_printed(command: Sequence[str]) -> tuple[int, str]:
    """A printed ``python <script> <args>`` command as a shell runs it: a process started from the
    repository root with this project's Python first on the PATH (what ``python`` means with the
    environment active): ``(exit code, stderr)``."""
    env = script_env(PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    done = subprocess.run(list(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    return done.returncode, done.stderr


def run_printed_in_process(command: Sequence[str], monkeypatch: Any, capsys: Any) -> tuple[int, str]:
    """A printed ``python <script> <args>`` command, its arguments unchanged, in this process from
    the repository root, through ``run_main`` as the script's ``__main__`` calls it: ``(exit code,
    stderr)``. Spares the Python, torch and library start-up of a process."""
    from utilities.workflow.cli import run_main

    assert command[0] == "python", command
    with monkeypatch.context() as m:
        m.chdir(ROOT)
        code = run_main(load_script(command[1]).main, list(command[2:]))
    return code, capsys.readouterr().err


def run_printed_sequence(commands: Mapping[str, Sequence[str]], monkeypatch: Any, capsys: Any) -> None:
    """Printed commands in their order, each of which must succeed: the first as a shell runs it
    (:func:`run_printed`), the others in this process (:func:`run_printed_in_process`)."""
    for i, (name, command) in enumerate(commands.items()):
        code, err = run_printed(command) if i == 0 else run_printed_in_process(command, monkeypatch, capsys)
        assert code == 0, f"[{name}] {shlex.join(command)}\n{err[-3000:]}"


class ScriptsInProcess:
    """Stands in for :func:`utilities.core.jobs.run_logged`, which the demo and the ablation runner
    start every training with: after the first ``subprocesses`` commands (each a real subprocess,
    so that path stays tested), a command ``<this Python> <a script of the repository> <args>``
    runs in this process, through ``run_main`` as the script's ``__main__`` calls it, with its
    output appended to the same log and the same error on failure. Spares the ~5 s of Python,
    torch, MONAI and dynamo start-up of each process. One script at a time (the process's
    working folder, environment, output streams and logging are shared); any other command runs
    as a subprocess. Install it with :meth:`install`."""

    def __init__(self, subprocesses: int = 1) -> None:
        self.subprocesses = subprocesses
        self.in_process: list[list[str]] = []
        self._count = threading.Lock()   # the choice of subprocess or not
        self._running = threading.Lock()   # one script in this process at a time
        from utilities.core import jobs

        self._run_logged = jobs.run_logged

    def install(self, monkeypatch: Any) -> ScriptsInProcess:
        """Replace ``run_logged`` in every loaded module that imported it (the demo's and the
        runner's job pools)."""
        for module in list(sys.modules.values()):
            if getattr(module, "run_logged", None) is self._run_logged:
                monkeypatch.setattr(module, "run_logged", self)
        return self

    def _script(self, command: Sequence[str], cwd: Path | None) -> str | None:
        if len(command) < 2 or command[0] != sys.executable or not command[1].endswith(".py"):
            return None
        path = (Path(cwd or os.getcwd()) / command[1]).resolve()
        return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) and path.is_file() else None

    def __call__(self, command: Sequence[str], log: Path, env: Mapping[str, str], cwd: Path | None = None,
                 started: Any = None) -> None:
        script = self._script(command, cwd)
        with self._count:
            as_subprocess = script is None or self.subprocesses > 0
            if script is not None and as_subprocess:
                self.subprocesses -= 1
        if as_subprocess:
            return self._run_logged(command, log, env, cwd, started)
        from utilities.core.jobs import exit_error
        from utilities.core.logs import close_handlers
        from utilities.workflow.cli import run_main

        log = Path(log)
        log.parent.mkdir(parents=True, exist_ok=True)
        with self._running, open(log, "a", encoding="utf-8") as fh, _environment(env), \
                _working_folder(cwd), contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
            self.in_process.append(list(command))
            fh.write(f"\n$ {shlex.join(command)}\n")
            try:
                rc = run_main(load_script(script).main, list(command[2:]))
            finally:
                close_handlers()
        if rc != 0:
            raise exit_error(command, rc, log)


@contextlib.contextmanager
def _working_folder(folder: Path | None) -> Any:
    """The process works in ``folder`` (if given) inside the block (``contextlib.chdir`` from Python 3.11)."""
    saved = os.getcwd()
    if folder is not None:
        os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(saved)


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Any:
    """``os.environ`` is ``env`` inside the block."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Killed(KeyboardInterrupt):
    """Stands for the process being killed."""


class KillAt(Callback):
    """Kills the run at the start of a (0-based) epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, epoch: int, state: Any) -> None:
        if epoch == self.epoch:
            raise Killed


def tiny_seeded(root: Path) -> tuple[Path, list[str]]:
    """A tiny VS-like dataset (2 training, 1 validation case of 32x32x16), its stage-0 seeds and
    the stage-1 data flags for it: ``(seeds folder, flags)``."""
    from synth import make_vs_dataset

    p = make_vs_dataset(root, n_train=2, n_val=1, n_inf=0)
    geodesic = load_script("data/VS/generate_geodesic_labels.py")
    out = geodesic.main(["--dataset_split", str(p["split"]), "--path_images", str(p["image_crop"]),
                         "--path_labels", str(p["label_crop"]), "--path_anno_7points", str(p["annotation_7points"]),
                         "--path_geodesic", str(root / "geodesic"), "--num_workers", "1"])
    seeds = out / "geodesic_label"
    return seeds, ["--dataset_split", str(p["split"]), "--path_images", str(p["image_crop"]),
                   "--path_labels", str(p["label_crop"]), "--path_geodesic_labels", str(seeds),
                   "--spatial_shape", "32", "32", "16", "--down_size", "16", "16", "16", "--device", "cpu"]


def train_tiny_runs(root: Path) -> tuple[dict[str, Path], Path]:
    """A tiny VS dataset (2 training, 1 validation, 2 inference cases) in ``<root>/data``, two
    stage-1 runs on it (``run1``: 2 epochs; ``run2``: 1 epoch, seed 8; no ramp-up) and the SCM run
    on both (``scm``, 1 epoch): ``(dataset paths, root)``. The session fixture ``tiny_runs``
    (conftest.py) trains them once per worker."""
    from synth import make_vs_dataset

    stage1 = load_script("train_gatedcrfloss3d22d_multiview_varianceloss.py")
    scm = load_script("train_SCM.py")
    p = make_vs_dataset(root / "data", n_train=2, n_val=1, n_inf=2)
    stage1.main(stage1_args(p, root / "run1", "--max_epochs", "2", "--rampup_epochs", "0"))
    stage1.main(stage1_args(p, root / "run2", "--max_epochs", "1", "--rampup_epochs", "0", "--seed", "8"))
    scm.main(scm_args(p, [root / "run1", root / "run2"], root / "scm", "--max_epochs", "1"))
    return p, root


def copy_runs(root: Path, dest: Path) -> Path:
    """A copy of :func:`train_tiny_runs`'s run folders (``run1``, ``run2``, ``scm``) under ``dest``
    (the dataset stays where it is, read only); returns ``dest``."""
    for name in ("run1", "run2", "scm"):
        shutil.copytree(root / name, dest / name)
    return dest


def make_quick_demo(root: Path) -> Path:
    """The ``--quick`` demo dataset of ``data/demo/make_demo_data.py`` (4 training, 2 validation,
    2 inference cases of 32x32x16) in ``<root>/data``, its split in ``<root>/split.csv``; returns
    ``root``. The session fixture ``quick_demo`` (conftest.py) writes it once per worker."""
    make_demo = load_script("data/demo/make_demo_data.py")
    make_demo.main(["--quick", "--output_dir", str(root / "data"), "--split_file", str(root / "split.csv"),
                    "--no_report"])
    return root


def demo_dataset(root: Path) -> dict[str, str]:
    """The ``dataset`` section of an ablation config (experiments/configs/README.md) for the demo
    dataset written by :func:`make_quick_demo` under ``root``."""
    data = root / "data"
    return {"split_file": str(root / "split.csv"), "images": str(data / "image_crop"), "image_postfix": "T2",
            "labels": str(data / "label_crop"), "label_postfix": "Label",
            "annotations": str(data / "annotation_7points"), "annotation_postfix": "7points"}
