"""The runs of an ablation and the command line of every step: stage 0 (:func:`stage0_command`),
each run's training (:attr:`Run.train`, built by :func:`plan_runs`), and its inference and
scores (:func:`inference_commands`). Every command is a list ``[python, <script>, <flags>...]``
run from the repository root; nothing here runs or checks one."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utilities.data.layout import RunLayout
from utilities.method.defaults import SEED_FOLDER
from utilities.method.sequence import Launcher, command, script_command, seed_args, teacher_args
from utilities.workflow.plan import read_plan
from utilities.workflow.stage0 import output_folder

from .config import Config, Variant
from .scripts import GEODESIC_SCRIPTS, NNUNET_NETWORK, NNUNET_SCRIPT, ROOT, STAGE1_SCRIPT, script_parser

__all__ = ["Run", "geodesic_dir", "stage0_command", "stage1_flags", "stage1_command", "scm_command", "nnunet_command",
           "plan_runs", "inference_commands", "all_commands", "evaluation_signature"]


def _launcher(python: str) -> Launcher:
    """The runner's commands: ``python``, the scripts of this checkout by their full path."""
    return Launcher(python, ROOT)


@dataclass
class Run:
    """One (variant, training seed): its folder and its commands."""

    variant: Variant
    seed: int | None                      # None: the expanded seeds (no training)
    folder: Path
    network: str
    train: list[str] = field(default_factory=list)   # training command without --resume/--overwrite
    needs: list[Run] = field(default_factory=list)
    in_table: bool = True
    #: what its scores depend on beyond the training: the inference and scoring commands (and, for
    #: the expanded seeds, their folder), set by :func:`plan_runs`; a change re-infers and re-scores
    evaluation: list[str] = field(default_factory=list)
    #: the split file the run trains and is scored on (its content is recorded with the run)
    split_file: Path | None = None
    #: the ablation's ``--output_dir`` its commands name: recorded with the run, so that the
    #: ablation folder moved elsewhere holds the same runs (:func:`~.markers.same_run`)
    ablation_dir: Path | None = None

    @property
    def key(self) -> str:
        return f"variant={self.variant.name} seed={'-' if self.seed is None else self.seed}"

    @property
    def predictions(self) -> Path:
        """The folder of an ``nnunet`` run's predictions (``<case>.nii.gz``, scored with ``--prediction_dir``)."""
        return RunLayout(self.folder, NNUNET_NETWORK).output_pred

    @property
    def results(self) -> Path:
        """The scores CSV of the inference cases."""
        if self.variant.kind == "nnunet":
            return self.predictions / "results_inference.csv"
        return RunLayout(self.folder, self.network).results("inference")


def _merged(*dicts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in dicts:
        out.update(d)
    return out


def _network(flags: dict[str, Any]) -> str:
    """The network a stage-1 command with ``flags`` trains (its run's sub-folder): ``--network``,
    else its ``--plan``'s, else the script's default."""
    if flags.get("--network"):
        return str(flags["--network"])
    plan = flags.get("--plan")
    if isinstance(plan, str):
        try:
            planned = read_plan(plan if Path(plan).is_absolute() else ROOT / plan)["stage1"].get("--network")
        except (OSError, ValueError):   # the plan's own error comes when the flags are checked
            planned = None
        if planned:
            return str(planned)
    return str(script_parser(STAGE1_SCRIPT).get_default("network"))


def _spatial(flags: dict[str, Any]) -> list[str]:
    shape = flags.get("--spatial_shape")
    return [] if shape in (None, False) else ["--spatial_shape", *[str(s) for s in (shape if isinstance(shape, list)
                                                                                   else [shape])]]


def geodesic_dir(cfg: Config, output_dir: Path) -> Path:
    """Where stage 0 writes the expanded seeds."""
    d = cfg.dataset
    return output_folder(output_dir / "geodesic", d["geodesic_weight"], d["geodesic_threshold"]) / SEED_FOLDER


def stage0_command(cfg: Config, output_dir: Path, python: str) -> list[str]:
    d = cfg.dataset
    return script_command(GEODESIC_SCRIPTS[d["geodesic_style"]], [
        "--dataset_split", str(d["split_file"]), "--path_images", str(d["images"]),
        "--image_postfix", d["image_postfix"], "--path_labels", str(d["labels"]), "--label_postfix", d["label_postfix"],
        "--path_anno_7points", str(d["annotations"]), "--anno_7points_postfix", d["annotation_postfix"],
        "--path_geodesic", str(output_dir / "geodesic")],
        {"--geodesic_weight": d["geodesic_weight"], "--geodesic_threshold": d["geodesic_threshold"],
         "--num_workers": d["geodesic_workers"]},
        launcher=_launcher(python))


def _data_args(cfg: Config) -> list[str]:
    d = cfg.dataset
    return ["--dataset_split", str(d["split_file"]), "--path_images", str(d["images"]),
            "--image_postfix", d["image_postfix"], "--path_labels", str(d["labels"]),
            "--label_postfix", d["label_postfix"]]


def _seed_labels(seeds_dir: Path) -> list[str]:
    """The flags that point a training at the expanded seeds of stage 0."""
    return seed_args(seeds_dir)


def _run_args(folder: Path, seed: int, device: str) -> list[str]:
    return ["--model_dir", str(folder), "--seed", str(seed), "--device", device]


def stage1_flags(cfg: Config, variant: Variant) -> dict[str, Any]:
    """The flags of a ``stage1`` or ``full`` variant's training: the base's, then the variant's
    (``full``: without the mCRF and VM terms)."""
    flags = _merged(cfg.base["stage1"], variant.flags)
    if variant.kind == "full":
        flags = _merged(flags, {"--weight_gatedcrf": 0, "--weight_variance": 0})
    return flags


def stage1_command(cfg: Config, variant: Variant, seed: int, folder: Path, seeds_dir: Path, device: str,
                   python: str) -> list[str]:
    """Stage 1 of a ``stage1`` variant on the expanded seeds in ``seeds_dir`` (or of a ``full``
    variant on the full labels) with training seed ``seed``, into ``folder``."""
    d = cfg.dataset
    labels = seed_args(str(d["labels"]), d["label_postfix"]) if variant.kind == "full" else _seed_labels(seeds_dir)
    return command("stage1", stage1_flags(cfg, variant), _data_args(cfg), labels, _run_args(folder, seed, device),
                   launcher=_launcher(python))


def scm_command(cfg: Config, variant: Variant, seed: int, folder: Path, seeds_dir: Path, models: tuple[Run, Run],
                device: str, python: str) -> list[str]:
    """SCM of an ``scm`` variant from the stage-1 runs ``models`` (model 1, model 2), into
    ``folder``; the ``--spatial_shape`` of model 1's stage-1 flags is passed on."""
    s1_flags = _merged(cfg.base["stage1"], cfg.variants[variant.sources[0]].flags)
    flags = _merged({k: s1_flags[k] for k in ("--spatial_shape",) if k in s1_flags}, cfg.base["scm"], variant.flags)
    m1, m2 = models
    return command("scm", flags, _data_args(cfg), _seed_labels(seeds_dir),
                   teacher_args(m1.folder, m2.folder, m1.network, m2.network), _run_args(folder, seed, device),
                   launcher=_launcher(python))


def nnunet_command(cfg: Config, variant: Variant, seed: int, folder: Path, seeds_dir: Path, device: str,
                   python: str) -> list[str]:
    """nnU-Net v2 (``experiments/nnunet_baseline.py``) of an ``nnunet`` variant with its flags, into ``folder``."""
    return script_command(NNUNET_SCRIPT, variant.flags, _data_args(cfg), _seed_labels(seeds_dir),
                          _run_args(folder, seed, device), launcher=_launcher(python))


def plan_runs(cfg: Config, output_dir: Path, seeds: Sequence[int], names: Sequence[str], device: str,
              python: str) -> list[Run]:
    """The runs in execution order (stage-1 runs an SCM run needs come before it; those not in
    the table are marked ``in_table=False``)."""
    runs: dict[tuple[str, int | None], Run] = {}
    seeds_dir = geodesic_dir(cfg, output_dir)

    def stage1_run(v: Variant, seed: int, in_table: bool) -> Run:
        key = (v.name, seed)
        if key in runs:
            runs[key].in_table |= in_table
            return runs[key]
        folder = output_dir / "runs" / v.name / f"seed{seed}"
        train = stage1_command(cfg, v, seed, folder, seeds_dir, device, python)
        run = Run(v, seed, folder, _network(stage1_flags(cfg, v)), train, in_table=in_table)
        runs[key] = run
        return run

    for name in names:
        v = cfg.variants[name]
        if v.kind == "seeds":
            runs[(name, None)] = Run(v, None, output_dir / "runs" / name / "expanded", "seeds")
            continue
        for seed in seeds:
            if v.kind in ("stage1", "full"):
                stage1_run(v, seed, True)
                continue
            folder = output_dir / "runs" / name / f"seed{seed}"
            if v.kind == "nnunet":
                train = nnunet_command(cfg, v, seed, folder, seeds_dir, device, python)
                runs[(name, seed)] = Run(v, seed, folder, NNUNET_NETWORK, train)
                continue
            m1 = stage1_run(cfg.variants[v.sources[0]], seed, False)
            m2 = stage1_run(cfg.variants[v.sources[1]], seed + v.aux_seed_offset, False)
            train = scm_command(cfg, v, seed, folder, seeds_dir, (m1, m2), device, python)
            runs[(name, seed)] = Run(v, seed, folder, m1.network, train, needs=[m1, m2])
    ordered = ([r for r in runs.values() if r.variant.kind != "scm"]
               + [r for r in runs.values() if r.variant.kind == "scm"])
    for run in ordered:
        run.split_file = cfg.dataset["split_file"]
        run.ablation_dir = output_dir
        run.evaluation = evaluation_signature(cfg, run, seeds_dir, device, python)
    return ordered


def evaluation_signature(cfg: Config, run: Run, seeds_dir: Path, device: str, python: str) -> list[str]:
    """What a run's scores depend on besides its training: each inference and scoring command
    (its script's name and its flags, without the interpreter and ``--device``) and, for the
    expanded seeds, the stage-0 folder they are read from."""
    out = ["expanded seeds", str(seeds_dir)] if run.variant.kind == "seeds" else []
    for c in inference_commands(cfg, run, device, python):
        flags = c[2:]
        kept = [t for i, t in enumerate(flags) if t != "--device" and (i == 0 or flags[i - 1] != "--device")]
        out += ["|", Path(c[1]).name, *kept]
    return out


def inference_commands(cfg: Config, run: Run, device: str, python: str) -> list[list[str]]:
    d = cfg.dataset
    launcher = _launcher(python)
    commands = []
    if run.variant.kind == "nnunet":   # nnunet_baseline.py has predicted: score its folder
        return [command("scores", ["--dataset_split", str(d["split_file"]), "--phase", "inference", "--path_labels",
                                   str(d["labels"]), "--label_postfix", d["label_postfix"], "--prediction_dir",
                                   str(run.predictions)], launcher=launcher)]
    if run.variant.kind != "seeds":
        s1 = _merged(cfg.base["stage1"], run.variant.flags)
        if run.variant.kind == "scm":
            s1 = _merged(cfg.base["stage1"], cfg.variants[run.variant.sources[0]].flags)
        commands.append(command("inference", [
            "--model_dir", str(run.folder), "--network", run.network, "--epoch_inf", run.variant.epoch_inf,
            "--dataset_split", str(d["split_file"]), "--path_images", str(d["images"]), "--image_postfix",
            d["image_postfix"], "--phase", "inference", *_spatial(s1)], cfg.base["inference"], ["--device", device],
            launcher=launcher))
    commands.append(command("scores", [
        "--model_dir", str(run.folder), "--network", run.network, "--dataset_split", str(d["split_file"]),
        "--image_postfix", d["image_postfix"], "--phase", "inference", "--path_labels", str(d["labels"]),
        "--label_postfix", d["label_postfix"]], launcher=launcher))
    return commands



def all_commands(cfg: Config, runs: Sequence[Run], device: str, python: str) -> list[list[str]]:
    return [c for r in runs for c in ([r.train] if r.variant.kind != "seeds" else [])
            + inference_commands(cfg, r, device, python)]

