"""Multi-seed ablation runner: stage 0 once, then every (variant, training seed) through the real scripts.

A JSON config names the dataset, a base set of flags and named variants (flag overrides); this
runs the geodesic expansion once, then for each variant and training seed the stage-1 or SCM
training script, ``inference.py`` on the split's inference cases and ``utilities/scores.py``, each
as a subprocess (``python <script> <flags>``, so any flag the scripts accept can be ablated), and
writes ``table.md``, ``table.csv``, ``per_case.csv`` and ``boxplot.png`` under ``--output_dir``.

Finished runs are skipped (``<run>/ablate_done.json``, written atomically after scoring); a killed
run is resumed (``--resume`` when its folder holds ``CP_latest*.pth``, ``--overwrite`` when it
holds checkpoints but no latest one). Config schema: see ``experiments/configs/README.md``.

Example::

    python experiments/ablate.py --config experiments/configs/demo.json --output_dir ./ablation/demo --jobs 2
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import functools
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from utilities.core.jobs import run_logged, stop_all, thread_env
from utilities.core.textdata import loads_json, md_cell, read_csv_table
from utilities.data.io import atomic_path, save_csv, save_text
from utilities.data.layout import RunLayout
from utilities.workflow.plan import flag_args, read_plan

# `utilities` comes from `pip install -e .` (make install); ROOT locates the scripts this runs.
ROOT = Path(__file__).resolve().parents[1]

__all__ = ["KINDS", "Config", "Variant", "Run", "load_config", "plan_runs", "run_ablation", "summarize",
           "wilcoxon_p", "main"]

KINDS = ("seeds", "stage1", "scm", "full", "nnunet")
STAGE1_SCRIPT = "train_gatedcrfloss3d22d_multiview_varianceloss.py"
SCM_SCRIPT = "train_SCM.py"
NNUNET_SCRIPT = "experiments/nnunet_baseline.py"
#: The sub-folder of an ``nnunet`` run (``nnunet_baseline.NETWORK``).
NNUNET_NETWORK = "nnUNet"
GEODESIC_SCRIPTS = {"VS": "data/VS/generate_geodesic_labels.py", "BraTS": "data/BraTS/generate_geodesic_labels.py"}
DONE_NAME = "ablate_done.json"
TRAINED_NAME = "ablate_trained.json"
#: Written before a training starts: a killed run is resumed only with the flags it was started with.
STARTED_NAME = "ablate_started.json"
#: The module whose ``build_parser`` checks each script's flags before anything runs.
_PARSERS = {STAGE1_SCRIPT: "train_gatedcrfloss3d22d_multiview_varianceloss", SCM_SCRIPT: "train_SCM",
            "inference.py": "inference", "scores.py": "utilities.scores", "nnunet_baseline.py": NNUNET_SCRIPT}
LOG_NAME = "ablate_log.txt"

_TOP_KEYS = {"dataset", "base", "variants", "seeds", "baseline", "title"}
_DATASET_KEYS = {"split_file", "images", "image_postfix", "labels", "label_postfix", "annotations",
                 "annotation_postfix", "geodesic_style", "geodesic_weight", "geodesic_threshold",
                 "geodesic_workers", "prepare"}
_DATASET_REQUIRED = ("split_file", "images", "image_postfix", "labels", "label_postfix", "annotations",
                     "annotation_postfix")
_BASE_KEYS = {"stage1", "scm", "inference"}
_VARIANT_KEYS = {"kind", "label", "flags", "from", "aux_seed_offset", "epoch_inf"}
#: Flags the runner sets itself; a config that sets them is an error.
_RESERVED = {"--model_dir", "--seed", "--device", "--resume", "--overwrite", "--dataset_split", "--path_images",
             "--image_postfix", "--path_labels", "--label_postfix", "--path_geodesic_labels",
             "--geodesic_label_postfix", "--pretrained_model1_dir", "--pretrained_model2_dir", "--network1",
             "--network2", "--phase", "--epoch_inf"}


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
def _keys(obj: Any, where: str, allowed: set[str], path: Path) -> dict[str, Any]:
    """``obj`` as a dict after checking its keys (keys starting with ``_`` are comments)."""
    if not isinstance(obj, dict):
        raise ValueError(f"config {path}: {where} must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(k for k in obj if k not in allowed and not k.startswith("_"))
    if unknown:
        raise ValueError(f"config {path}: {where}: unknown key(s) {unknown} (known: {sorted(allowed)})")
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _flags(obj: Any, where: str, path: Path) -> dict[str, Any]:
    """Flag overrides: ``{"--flag": value}``; a list value gives several arguments, ``true`` a
    bare switch, ``null``/``false`` removes a flag set by the base."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ValueError(f"config {path}: {where} must be an object of flags, e.g. {{\"--max_epochs\": 20}}")
    out = {}
    for key, value in obj.items():
        if key.startswith("_"):
            continue
        if not key.startswith("--") or len(key) < 3:
            raise ValueError(f"config {path}: {where}: flag {key!r} must start with '--'")
        if key in _RESERVED:
            raise ValueError(f"config {path}: {where}: {key} is set by the runner; remove it from the config")
        if isinstance(value, dict):
            raise ValueError(f"config {path}: {where}.{key}: a flag value must be a number, string, list, "
                             "true or null")
        out[key] = value
    return out


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Variant:
    """One row of the table."""

    name: str
    kind: str
    label: str
    flags: dict[str, Any]
    sources: tuple[str, str] = ("", "")     # scm: the stage-1 variants of model 1 and model 2
    aux_seed_offset: int = 0                # scm: model 2 is trained with seed + this
    epoch_inf: str = "best"


@dataclass(frozen=True)
class Config:
    path: Path
    title: str
    dataset: dict[str, Any]
    base: dict[str, dict[str, Any]]
    variants: dict[str, Variant]
    seeds: tuple[int, ...]
    baseline: str


def _path(dataset: dict[str, Any], key: str, cfg: Path) -> Path:
    value = dataset[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"config {cfg}: dataset.{key} must be a path string, got {value!r}")
    return Path(value).expanduser().resolve()


def load_config(path: str | os.PathLike) -> Config:
    """Read and check a config; relative dataset paths are taken from the current directory."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path} not found")
    try:
        raw = loads_json(path.read_text(encoding="utf-8"), f"config {path}")
    except json.JSONDecodeError as e:
        raise ValueError(f"config {path} is not valid JSON: {e}") from None
    raw = _keys(raw, "top level", _TOP_KEYS, path)
    for key in ("dataset", "variants", "seeds", "baseline"):
        if key not in raw:
            raise ValueError(f"config {path}: missing key {key!r}")
    dataset = _dataset(raw["dataset"], path)
    base_raw = _keys(raw.get("base", {}), "base", _BASE_KEYS, path)
    base = {k: _flags(base_raw.get(k), f"base.{k}", path) for k in _BASE_KEYS}
    variants_raw = raw["variants"]
    if not isinstance(variants_raw, dict) or not variants_raw:
        raise ValueError(f"config {path}: variants must be a non-empty object of named variants")
    variants = {name: _variant(name, spec, path) for name, spec in variants_raw.items() if not name.startswith("_")}
    _check_sources(variants, path)
    seeds = raw["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise ValueError(f"config {path}: seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"config {path}: seeds must be distinct, got {seeds}")
    baseline = raw["baseline"]
    if baseline not in variants:
        raise ValueError(f"config {path}: baseline {baseline!r} is not a variant (variants: {sorted(variants)})")
    title = raw.get("title", path.stem)
    if not isinstance(title, str):
        raise ValueError(f"config {path}: title must be a string, got {title!r}")
    return Config(path, title, dataset, base, variants, tuple(seeds), baseline)


def _number(spec: dict[str, Any], key: str, default: float, where: str, path: Path, whole: bool = False,
            minimum: float | None = None) -> Any:
    """``spec[key]`` (``default`` when absent) checked: a JSON number (an integer when ``whole``),
    finite, at least ``minimum``; else a one-line error naming the config, ``where`` and ``key``."""
    value = spec.get(key, default)
    kind = "an integer" if whole else "a number"
    ok = isinstance(value, int if whole else (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and (minimum is None or value >= minimum)
    if not ok:
        bound = "" if minimum is None else f" of at least {minimum:g}"
        raise ValueError(f"config {path}: {where}.{key} must be {kind}{bound}, got {value!r}")
    return value


def _dataset(raw: Any, path: Path) -> dict[str, Any]:
    """The config's ``dataset`` block, checked, with its defaults and its paths resolved."""
    ds = _keys(raw, "dataset", _DATASET_KEYS, path)
    for key in _DATASET_REQUIRED:
        if key not in ds:
            raise ValueError(f"config {path}: dataset.{key} is missing")
    dataset = dict(ds)
    for key in ("split_file", "images", "labels", "annotations"):
        dataset[key] = _path(ds, key, path)
    dataset["geodesic_style"] = ds.get("geodesic_style", "VS")
    if dataset["geodesic_style"] not in GEODESIC_SCRIPTS:
        raise ValueError(f"config {path}: dataset.geodesic_style must be one of {sorted(GEODESIC_SCRIPTS)}, "
                         f"got {dataset['geodesic_style']!r}")
    for key in ("image_postfix", "label_postfix", "annotation_postfix"):
        if not isinstance(ds[key], str):
            raise ValueError(f"config {path}: dataset.{key} must be a string, got {ds[key]!r}")
    dataset["geodesic_weight"] = float(_number(ds, "geodesic_weight", 0.5, "dataset", path))
    dataset["geodesic_threshold"] = float(_number(ds, "geodesic_threshold", 0.2, "dataset", path))
    dataset["geodesic_workers"] = _number(ds, "geodesic_workers", 1, "dataset", path, whole=True, minimum=1)
    prepare = ds.get("prepare")
    if prepare is not None and (not isinstance(prepare, list) or not all(isinstance(a, str) for a in prepare)):
        raise ValueError(f"config {path}: dataset.prepare must be a list of strings (a command run from the "
                         "repository root when the split file is missing), e.g. [\"data/demo/make_demo_data.py\"]")
    dataset["prepare"] = prepare
    return dataset


def _variant(name: str, spec: Any, path: Path) -> Variant:
    """One entry of the config's ``variants``, checked (its ``from`` is checked by :func:`_check_sources`)."""
    where = f"variants.{name}"
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"config {path}: {where}: variant names may hold letters, digits, '_' and '-' only")
    spec = _keys(spec, where, _VARIANT_KEYS, path)
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ValueError(f"config {path}: {where}.kind must be one of {list(KINDS)}, got {kind!r}")
    flags = _flags(spec.get("flags"), f"{where}.flags", path)
    if kind == "seeds" and flags:
        raise ValueError(f"config {path}: {where}: a 'seeds' variant trains nothing and takes no flags")
    sources: tuple[str, str] = ("", "")
    offset = 0
    if kind == "scm":
        src = spec.get("from")
        src = [src] if isinstance(src, str) else src
        if not isinstance(src, list) or len(src) not in (1, 2) or not all(isinstance(s, str) for s in src):
            raise ValueError(f"config {path}: {where}.from must name one or two stage-1 variants "
                             "(model 1, model 2), e.g. [\"stage1_recipe\", \"stage1_recipe\"]")
        sources = (src[0], src[-1])
        offset = _number(spec, "aux_seed_offset", 1 if sources[0] == sources[1] else 0, where, path, whole=True)
        if sources[0] == sources[1] and offset == 0:
            raise ValueError(f"config {path}: {where}.aux_seed_offset must not be 0 when both models come "
                             f"from variant {sources[0]!r} (they would be the same run)")
    else:
        for key in ("from", "aux_seed_offset"):
            if key in spec:
                raise ValueError(f"config {path}: {where}.{key} is only for kind 'scm'")
    if kind in ("seeds", "nnunet") and "epoch_inf" in spec:
        raise ValueError(f"config {path}: {where}.epoch_inf: a {kind!r} variant reads no checkpoint (its "
                         "predictions are scored as they are); remove the key")
    epoch_inf = spec.get("epoch_inf", "best_model1" if kind == "scm" else "best")
    if not isinstance(epoch_inf, str) or not epoch_inf.replace("_", "").isalnum():
        raise ValueError(f"config {path}: {where}.epoch_inf must name a checkpoint CP_<epoch_inf>.pth in letters, "
                         f"digits and '_' (e.g. \"best\", \"final\"), got {epoch_inf!r}")
    label = spec.get("label", name)
    if not isinstance(label, str):
        raise ValueError(f"config {path}: {where}.label must be a string, got {label!r}")
    return Variant(name, kind, label, flags, sources, offset, epoch_inf)


def _check_sources(variants: dict[str, Variant], path: Path) -> None:
    """Every SCM variant starts from known stage-1 (or full) variants."""
    for v in variants.values():
        for src in (v.sources if v.kind == "scm" else ()):
            if src not in variants:
                raise ValueError(f"config {path}: variants.{v.name}.from names unknown variant {src!r}")
            if variants[src].kind not in ("stage1", "full"):
                raise ValueError(f"config {path}: variants.{v.name}.from: {src!r} is of kind "
                                 f"{variants[src].kind!r}; SCM starts from 'stage1' (or 'full') variants")


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------
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
    return str(_script_parser(STAGE1_SCRIPT).get_default("network"))


def _spatial(flags: dict[str, Any]) -> list[str]:
    shape = flags.get("--spatial_shape")
    return [] if shape in (None, False) else ["--spatial_shape", *[str(s) for s in (shape if isinstance(shape, list)
                                                                                   else [shape])]]


def geodesic_dir(cfg: Config, output_dir: Path) -> Path:
    """Where stage 0 writes the expanded seeds."""
    d = cfg.dataset
    weight_threshold = f"weight{d['geodesic_weight']}_threshold{d['geodesic_threshold']}"
    return output_dir / "geodesic" / weight_threshold / "geodesic_label"


def stage0_command(cfg: Config, output_dir: Path, python: str) -> list[str]:
    d = cfg.dataset
    return [python, str(ROOT / GEODESIC_SCRIPTS[d["geodesic_style"]]), "--dataset_split", str(d["split_file"]),
            "--path_images", str(d["images"]), "--image_postfix", d["image_postfix"],
            "--path_labels", str(d["labels"]), "--label_postfix", d["label_postfix"],
            "--path_anno_7points", str(d["annotations"]), "--anno_7points_postfix", d["annotation_postfix"],
            "--path_geodesic", str(output_dir / "geodesic"), "--geodesic_weight", _fmt(d["geodesic_weight"]),
            "--geodesic_threshold", _fmt(d["geodesic_threshold"]), "--num_workers", str(d["geodesic_workers"])]


def _data_args(cfg: Config) -> list[str]:
    d = cfg.dataset
    return ["--dataset_split", str(d["split_file"]), "--path_images", str(d["images"]),
            "--image_postfix", d["image_postfix"], "--path_labels", str(d["labels"]),
            "--label_postfix", d["label_postfix"]]


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
        flags = _merged(cfg.base["stage1"], v.flags)
        folder = output_dir / "runs" / v.name / f"seed{seed}"
        if v.kind == "full":
            labels = ["--path_geodesic_labels", str(cfg.dataset["labels"]), "--geodesic_label_postfix",
                      cfg.dataset["label_postfix"]]
            flags = _merged(flags, {"--weight_gatedcrf": 0, "--weight_variance": 0})
        else:
            labels = ["--path_geodesic_labels", str(seeds_dir), "--geodesic_label_postfix", "GeodesicLabel"]
        train = [python, str(ROOT / STAGE1_SCRIPT), *flag_args(flags), *_data_args(cfg), *labels,
                 "--model_dir", str(folder), "--seed", str(seed), "--device", device]
        run = Run(v, seed, folder, _network(flags), train, in_table=in_table)
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
            if v.kind == "nnunet":
                folder = output_dir / "runs" / name / f"seed{seed}"
                train = [python, str(ROOT / NNUNET_SCRIPT), *flag_args(v.flags), *_data_args(cfg),
                         "--path_geodesic_labels", str(seeds_dir), "--geodesic_label_postfix", "GeodesicLabel",
                         "--model_dir", str(folder), "--seed", str(seed), "--device", device]
                runs[(name, seed)] = Run(v, seed, folder, NNUNET_NETWORK, train)
                continue
            m1 = stage1_run(cfg.variants[v.sources[0]], seed, False)
            m2 = stage1_run(cfg.variants[v.sources[1]], seed + v.aux_seed_offset, False)
            s1_flags = _merged(cfg.base["stage1"], cfg.variants[v.sources[0]].flags)
            flags = _merged({k: s1_flags[k] for k in ("--spatial_shape",) if k in s1_flags}, cfg.base["scm"], v.flags)
            folder = output_dir / "runs" / name / f"seed{seed}"
            train = [python, str(ROOT / SCM_SCRIPT), *flag_args(flags), *_data_args(cfg),
                     "--path_geodesic_labels", str(seeds_dir), "--geodesic_label_postfix", "GeodesicLabel",
                     "--pretrained_model1_dir", str(m1.folder), "--network1", m1.network,
                     "--pretrained_model2_dir", str(m2.folder), "--network2", m2.network,
                     "--model_dir", str(folder), "--seed", str(seed), "--device", device]
            runs[(name, seed)] = Run(v, seed, folder, m1.network, train, needs=[m1, m2])
    ordered = ([r for r in runs.values() if r.variant.kind != "scm"]
               + [r for r in runs.values() if r.variant.kind == "scm"])
    return ordered


def _inference_commands(cfg: Config, run: Run, device: str, python: str) -> list[list[str]]:
    d = cfg.dataset
    commands = []
    if run.variant.kind == "nnunet":   # nnunet_baseline.py has predicted: score its folder
        return [[python, str(ROOT / "utilities" / "scores.py"), "--dataset_split", str(d["split_file"]),
                 "--phase", "inference", "--path_labels", str(d["labels"]), "--label_postfix", d["label_postfix"],
                 "--prediction_dir", str(run.predictions)]]
    if run.variant.kind != "seeds":
        s1 = _merged(cfg.base["stage1"], run.variant.flags)
        if run.variant.kind == "scm":
            s1 = _merged(cfg.base["stage1"], cfg.variants[run.variant.sources[0]].flags)
        commands.append([python, str(ROOT / "inference.py"), "--model_dir", str(run.folder), "--network", run.network,
                         "--epoch_inf", run.variant.epoch_inf, "--dataset_split", str(d["split_file"]),
                         "--path_images", str(d["images"]), "--image_postfix", d["image_postfix"],
                         "--phase", "inference", *_spatial(s1), *flag_args(cfg.base["inference"]),
                         "--device", device])
    commands.append([python, str(ROOT / "utilities" / "scores.py"), "--model_dir", str(run.folder), "--network",
                     run.network, "--dataset_split", str(d["split_file"]), "--image_postfix", d["image_postfix"],
                     "--phase", "inference", "--path_labels", str(d["labels"]), "--label_postfix",
                     d["label_postfix"]])
    return commands


def train_mode(folder: Path) -> str | None:
    """``--resume`` if the run folder holds a latest checkpoint (or an nnU-Net run), ``--overwrite``
    if it holds other checkpoints (a run killed before its first latest checkpoint), ``None`` for
    a fresh folder."""
    nnunet = RunLayout(folder, NNUNET_NETWORK).folder
    if nnunet.is_dir() and any(nnunet.iterdir()):
        return "--resume"
    runs = [RunLayout.of_folder(d) for d in folder.glob("*")]
    if any(run.latest().is_file() or run.latest(scm=True).is_file() for run in runs):
        return "--resume"
    return "--overwrite" if any(any(run.models.glob("*.pth")) for run in runs) else None


def _read_json(path: Path) -> dict[str, Any] | None:
    """A marker the runner wrote (or nnU-Net's ``budget.json``); ``None`` when it is missing or
    unreadable (the step runs again). A key repeated in it is a one-line error naming the file."""
    try:
        return loads_json(path.read_text(encoding="utf-8"), f"run marker {path}")
    except (OSError, json.JSONDecodeError):
        return None


def _write_json(obj: dict[str, Any], path: Path) -> None:
    save_text(json.dumps(obj, indent=1) + "\n", path)


def _signature(run: Run) -> list[str]:
    """What identifies a run's training: its command minus the interpreter."""
    return run.train[1:]


def _execute(command: list[str], log: Path, env: dict[str, str]) -> None:
    run_logged(command, log, env, cwd=ROOT)


def _flag_values(command: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``--flag`` -> its values in a command (the script as ``""``)."""
    out: dict[str, tuple[str, ...]] = {"": (Path(command[0]).name,)} if command else {}
    flag = None
    for token in command[1:]:
        if token.startswith("--"):
            flag = token
            out[flag] = ()
        elif flag is not None:
            out[flag] += (token,)
    return out


def _changes(old: Sequence[str], new: Sequence[str]) -> str:
    """What differs between two commands, e.g. ``--learning_rate 0.01 -> 0.04``."""
    a, b = _flag_values(old), _flag_values(new)
    shown = []
    for flag in dict.fromkeys([*a, *b]):
        if a.get(flag) != b.get(flag):
            before = " ".join(a[flag]) if flag in a else "(absent)"
            after = " ".join(b[flag]) if flag in b else "(absent)"
            shown.append(f"{flag or 'script'} {before} -> {after}")
    return ", ".join(shown[:5]) + (" ..." if len(shown) > 5 else "")


def _refusal(command: Sequence[str]) -> str | None:
    """What the parser of the script ``command[1]`` says against the command's flags (``None``:
    it accepts them). Flags must be spelled out: an abbreviation that argparse would expand
    (``--max_epoch``) escapes the runner's own checks (the base/variant merge and the flags it
    sets itself), so it is refused."""
    import contextlib
    import io

    parser = _script_parser(Path(command[1]).name)
    parser.allow_abbrev = False
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(list(command[2:]))
    except SystemExit as e:
        if e.code:
            lines = [line for line in err.getvalue().splitlines() if line.strip()]
            return lines[-1].split("error:", 1)[-1].strip() if lines else f"exit status {e.code}"
    return None


def check_flags(commands: Sequence[Sequence[str]], cfg_path: Path) -> None:
    """Parse every command's flags with its script's own parser before anything runs (a typo in
    a config would otherwise surface after hours of training); see :func:`_refusal`.

    Raises:
        ValueError: one line naming the script and argparse's complaint.
    """
    seen: set[tuple[str, ...]] = set()
    for command in commands:
        key = tuple(command[1:])
        if key in seen or Path(command[1]).name not in _PARSERS:
            continue
        seen.add(key)
        reason = _refusal(command)
        if reason is not None:
            raise ValueError(f"config {cfg_path}: {Path(command[1]).name} refuses the flags it would be given "
                             f"({reason}); fix the flags in base or the variant (spelled out in full)")


def _flag_origins(cfg: Config, run: Run, script: str) -> list[tuple[str, dict[str, Any]]]:
    """Where the config sets the flags of ``run``'s command of ``script``, the winning place first."""
    v = run.variant
    s1 = cfg.variants[v.sources[0]] if v.kind == "scm" else v
    stage1 = [(f"variants.{s1.name}.flags", s1.flags), ("base.stage1", cfg.base["stage1"])]
    if script == SCM_SCRIPT:
        return [(f"variants.{v.name}.flags", v.flags), ("base.scm", cfg.base["scm"]), *stage1]
    if script == "inference.py":
        return [("base.inference", cfg.base["inference"]), *stage1]
    return stage1 if script == STAGE1_SCRIPT else [(f"variants.{v.name}.flags", v.flags)]


def check_runs(cfg: Config, runs: Sequence[Run], device: str, python: str) -> None:
    """:func:`check_flags` of every command of every run, before anything runs; a refusal is one
    line naming the config, the variant, the flag and where the config sets it."""
    seen: set[tuple[str, ...]] = set()
    for run in runs:
        for command in ([run.train] if run.variant.kind != "seeds" else []) + _inference_commands(cfg, run, device,
                                                                                                  python):
            script = Path(command[1]).name
            if tuple(command[1:]) in seen or script not in _PARSERS:
                continue
            seen.add(tuple(command[1:]))
            reason = _refusal(command)
            if reason is None:
                continue
            named = re.search(r"(?:argument |arguments: )(--[A-Za-z0-9_-]+)", reason)
            flag = named.group(1) if named else ""
            origin = next(((where, flags[flag]) for where, flags in _flag_origins(cfg, run, script) if flag in flags),
                          None)
            what = (f"{flag} {json.dumps(origin[1])} from {origin[0]}" if origin
                    else "the flags it would be given")
            raise ValueError(f"config {cfg.path}: variant {run.variant.name!r}: {script} refuses {what} ({reason}); "
                             f"fix {'it there' if origin else 'the flags in base or the variant'} (flags spelled "
                             "out in full)")


@functools.cache
def _script_module(name: str) -> Any:
    """The module of a script the runner calls (imported by name, or loaded once from its file for
    experiments/, which is no package)."""
    import importlib
    import importlib.util

    target = _PARSERS[name]
    if not target.endswith(".py"):
        return importlib.import_module(target)
    spec = importlib.util.spec_from_file_location(Path(target).stem, ROOT / target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _script_parser(name: str) -> argparse.ArgumentParser:
    """The argparse parser of a script the runner calls."""
    return _script_module(name).build_parser()


def planned_args(command: Sequence[str]) -> argparse.Namespace:
    """The arguments a training command will run with, as its script reads them: its parser,
    with the flags of its ``--plan`` as defaults (a relative plan path is taken from the
    repository root, where the runner starts the script)."""
    from utilities.workflow.plan import apply_plan

    name = Path(command[1]).name
    argv = list(command[2:])
    if "--plan" in argv[:-1] and not Path(argv[argv.index("--plan") + 1]).is_absolute():
        argv[argv.index("--plan") + 1] = str(ROOT / argv[argv.index("--plan") + 1])
    section = {STAGE1_SCRIPT: "stage1", SCM_SCRIPT: "scm"}.get(name)
    parser = _script_parser(name)
    return apply_plan(parser, argv, section) if section else parser.parse_args(argv)


def written_checkpoints(run: Run) -> set[str]:
    """The ``<kind>`` of every ``CP_<kind>.pth`` model checkpoint that ``run``'s training writes
    into the folder inference reads (``<run>/<network>/models``): stage 1 ``best``, ``final`` and
    the best of the other validation metric; SCM model 1's ``best_model1`` and ``final_model1``,
    and model 2's when both networks share the folder."""
    args = planned_args(run.train)
    if run.variant.kind == "scm":
        models = (1, 2) if args.network2 == args.network1 else (1,)
        return {f"{kind}_model{k}" for kind in ("best", "final") for k in models}
    return {"best", "final", "best_" + ("seed_dice" if args.val_metric == "dice" else "dice")}


def check_epoch_inf(cfg: Config, runs: Sequence[Run]) -> None:
    """Refuse, before anything runs, a variant whose ``epoch_inf`` names a checkpoint its
    training never writes (inference would fail only after the training)."""
    for run in runs:
        v = run.variant
        if v.kind in ("seeds", "nnunet"):
            continue
        written = written_checkpoints(run)
        if v.epoch_inf not in written:
            raise ValueError(f"config {cfg.path}: variants.{v.name}.epoch_inf {v.epoch_inf!r}: the variant's training "
                             f"never writes CP_{v.epoch_inf}.pth where inference reads it (it writes "
                             f"{', '.join(sorted(written))}); choose one of those")


def recorded_args(run: Run) -> dict[str, Any] | None:
    """The arguments ``run``'s training recorded in its resumable state (``CP_latest.pth``,
    SCM ``CP_latest_SCM.pth``): what it ran with, its plan's flags included; ``None`` when it
    kept none."""
    from utilities.models.model_package import run_args

    return run_args(run.folder, run.network, "final_model1" if run.variant.kind == "scm" else "final")


def budget_text(epochs: int, batch_size: int, training_cases: int) -> str:
    """``"<steps> (<epochs> × <per epoch>), batch <b>"``: one step per ``batch_size`` training
    cases (the last batch of an epoch may be smaller)."""
    per_epoch = math.ceil(training_cases / batch_size)
    return f"{epochs * per_epoch} ({epochs} × {per_epoch}), batch {batch_size}"


def run_budget(run: Run, training_cases: int) -> str:
    """The optimisation steps of a run's training as the run recorded them (:func:`budget_text`
    of its recorded ``max_epochs`` and ``batch_size``; nnU-Net: its ``budget.json``), never
    from the config: a ``--plan`` or a changed default is what the run did. ``"—"`` for the
    expanded seeds, ``"?"`` when the run recorded nothing."""
    if run.variant.kind == "seeds":
        return "—"
    if run.variant.kind == "nnunet":
        b = _read_json(RunLayout(run.folder, NNUNET_NETWORK).folder / "budget.json")
        if b is None:
            return "?"
        return f"{b['steps']} ({b['epochs']} × {b['iterations_per_epoch']}), batch {b['batch_size']}"
    args = recorded_args(run)
    if args is None or not all(isinstance(args.get(k), int) for k in ("max_epochs", "batch_size")):
        return "?"
    return budget_text(args["max_epochs"], args["batch_size"], training_cases)


def _all_commands(cfg: Config, runs: Sequence[Run], device: str, python: str) -> list[list[str]]:
    return [c for r in runs for c in ([r.train] if r.variant.kind != "seeds" else [])
            + _inference_commands(cfg, r, device, python)]


def _call_in_process(command: list[str], log: Path, threads: int) -> None:
    """Run ``inference.py`` or ``utilities/scores.py`` (``command[1]``) by calling its ``main``
    with the same arguments, output to ``log``: the same code path as the subprocess without a
    second interpreter start (imports dominate a tiny run)."""
    import contextlib
    import importlib

    import torch

    module_name = {"inference.py": "inference", "scores.py": "utilities.scores"}[Path(command[1]).name]
    module = importlib.import_module(module_name)
    torch.set_num_threads(threads)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        fh.write(f"\n$ {shlex.join(command)}\n")
        try:
            module.main(command[2:])
        except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, OSError) as e:
            raise RuntimeError(f"{Path(command[1]).name} failed ({' '.join(str(e).split())[:300]}); "
                               f"log: {log}") from None
        except SystemExit as e:  # argparse: its message went to the log
            if e.code:
                raise RuntimeError(f"{Path(command[1]).name} exited with {e.code} (a flag it does not accept); "
                                   f"log: {log}") from None
        finally:
            logging_reset()


def logging_reset() -> None:
    """Drop the handlers a script's logger holds on the redirected stream."""
    import logging

    from utilities.core.logs import LOGGER_NAME

    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def _write_seed_predictions(cfg: Config, run: Run, seeds_dir: Path) -> None:
    """The expanded foreground (label 1) of each inference case as that case's prediction; every
    label is read by the one reader (:func:`utilities.data.io.read_image`) before the first is written."""
    import SimpleITK as sitk

    from utilities.data.grid import subject_path
    from utilities.data.io import read_image, write_like
    from utilities.data.splits import read_split, subjects_of

    cases = subjects_of(read_split(cfg.dataset["split_file"]), "inference")
    labels = {case: read_image(subject_path(seeds_dir, case, "GeodesicLabel"), "expanded-seed label")
              for case in cases}
    for case, ref in labels.items():
        fg = (sitk.GetArrayFromImage(ref) == 1).astype(np.uint8)
        write_like(fg, ref, RunLayout(run.folder, run.network).prediction(case, cfg.dataset["image_postfix"]))


def _do_run(cfg: Config, run: Run, device: str, python: str, env: dict[str, str], seeds_dir: Path,
            in_process: int = 0) -> str:
    """Train (or resume), infer, score, then write the done marker; returns what was done."""
    log = run.folder / LOG_NAME
    t0 = time.time()
    done = []
    if run.variant.kind != "seeds":
        trained = _read_json(run.folder / TRAINED_NAME)
        if trained is None or trained.get("command") != _signature(run):
            mode = train_mode(run.folder)
            started = trained or _read_json(run.folder / STARTED_NAME)
            if mode and started is not None and started.get("command") != _signature(run):
                changed = _changes(started.get("command") or [], _signature(run))
                raise ValueError(f"run folder {run.folder} holds a {'trained' if trained else 'killed'} run made with "
                                 f"other flags than the config now gives ({changed}); "
                                 "it cannot be resumed with them: delete that folder to train it again, or restore "
                                 "the config")
            _write_json({"command": _signature(run)}, run.folder / STARTED_NAME)
            _execute(run.train + ([mode] if mode else []), log, env)
            _write_json({"command": _signature(run)}, run.folder / TRAINED_NAME)
            done.append("trained" + (f" ({mode})" if mode else ""))
    else:
        _write_seed_predictions(cfg, run, seeds_dir)
    for command in _inference_commands(cfg, run, device, python):
        if in_process:
            _call_in_process(command, log, in_process)
        else:
            _execute(command, log, env)
    scores = run.results
    _write_json({"variant": run.variant.name, "seed": run.seed, "network": run.network,
                 "command": _signature(run), "scores": str(scores), "seconds": round(time.time() - t0, 1)},
                run.folder / DONE_NAME)
    return ", ".join(done + ["inferred, scored"]) + f" in {time.time() - t0:.0f} s"


def _finished(run: Run) -> bool:
    marker = _read_json(run.folder / DONE_NAME)
    if marker is None:
        return False
    if marker.get("command") != _signature(run):
        raise ValueError(f"run folder {run.folder} holds a finished run made with other flags than the config "
                         "now gives; delete that folder or choose another --output_dir")
    return run.results.is_file()


def run_ablation(cfg: Config, output_dir: Path, seeds: Sequence[int] | None = None,
                 variants: Sequence[str] | None = None, device: str = "auto", threads: int = 1, jobs: int = 1,
                 dry_run: bool = False, python: str = sys.executable,
                 finished_only: bool = False) -> pd.DataFrame | None:
    """Run (or, with ``dry_run``, print) the whole ablation; returns the table (None on a dry run).

    With ``finished_only`` nothing runs: the interim table of the runs finished so far is written
    as ``table_finished.md`` (and ``.csv``, ``per_case_finished.csv``, ...), naming the runs
    still missing; the table of the whole ablation is never written from part of it.

    Training runs as subprocesses (``python <script> <flags>``, ``OMP_NUM_THREADS=threads``);
    with ``jobs == 1`` inference and scoring call the scripts' ``main`` with the same arguments
    in this process (saving an interpreter start per step), with ``jobs > 1`` they are
    subprocesses too."""
    seeds = tuple(cfg.seeds if seeds is None else seeds)
    names = list(cfg.variants) if variants is None else list(dict.fromkeys(variants))
    unknown = [n for n in names if n not in cfg.variants]
    if unknown:
        raise ValueError(f"--variants: unknown variant(s) {unknown}; the config has {list(cfg.variants)}")
    if cfg.baseline not in names:
        names.insert(0, cfg.baseline)
        print(f"the baseline variant {cfg.baseline!r} is added to --variants (the p-values are against it)")
    if threads < 1 or jobs < 1:
        raise ValueError(f"--threads and --jobs must be at least 1, got {threads} and {jobs}")
    output_dir = Path(output_dir).resolve()
    runs = plan_runs(cfg, output_dir, seeds, names, device, python)
    env = thread_env(threads)
    seeds_dir = geodesic_dir(cfg, output_dir)
    stage0 = stage0_command(cfg, output_dir, python)
    check_runs(cfg, runs, device, python)
    check_epoch_inf(cfg, runs)

    if dry_run:
        _print_plan(cfg, runs, stage0, seeds_dir, device, python)
        return None
    if finished_only:
        return _finished_table(cfg, runs, names, output_dir)

    _check_dataset(cfg, python, env)
    output_dir.mkdir(parents=True, exist_ok=True)
    _run_stage0(cfg, stage0, output_dir, env)

    def one(run: Run) -> str:
        return _do_run(cfg, run, device, python, env, seeds_dir, in_process=threads if jobs == 1 else 0)

    failures = _run_waves(runs, one, jobs)
    if failures:
        raise RuntimeError(f"{len(failures)} run(s) failed, no table written: " + " | ".join(failures))
    table, per_case = summarize(cfg, [r for r in runs if r.in_table], names)
    write_outputs(cfg, table, per_case, output_dir)
    return table


def _finished_table(cfg: Config, runs: Sequence[Run], names: Sequence[str], output_dir: Path) -> pd.DataFrame:
    """``--finished_only``: the table of the finished runs, with the missing ones named."""
    wanted = [r for r in runs if r.in_table]
    done = [r for r in wanted if _finished(r)]
    missing = [r.key for r in wanted if r not in done]
    shown = [n for n in names if any(r.variant.name == n for r in done)]
    if cfg.baseline not in shown:
        raise ValueError(f"--finished_only: no run of the baseline {cfg.baseline!r} has finished in {output_dir}; "
                         "run the ablation first (or choose another --baseline)")
    table, per_case = summarize(cfg, done, shown)
    note = (f"Interim table: {len(done)} of {len(wanted)} runs finished; not finished: "
            + ("; ".join(missing) if missing else "none") + ".")
    write_outputs(cfg, table, per_case, output_dir, suffix="_finished", note=note)
    if missing:
        print(f"{len(missing)} run(s) not finished and not in the table: " + "; ".join(missing), file=sys.stderr)
    return table


def _print_plan(cfg: Config, runs: list[Run], stage0: list[str], seeds_dir: Path, device: str, python: str) -> None:
    """``--dry_run``: every command, in order, without running any."""
    if not cfg.dataset["split_file"].is_file() and cfg.dataset["prepare"]:
        print(f"[prepare] {shlex.join([python, *cfg.dataset['prepare']])}")
    print(f"[stage 0] {shlex.join(stage0)}")
    for i, run in enumerate(runs, 1):
        print(f"[run {i}/{len(runs)}] {run.key}")
        if run.variant.kind != "seeds":
            mode = train_mode(run.folder)
            print("  " + shlex.join(run.train + ([mode] if mode else [])))
        else:
            print(f"  (expanded seeds of {seeds_dir} written as predictions)")
        for command in _inference_commands(cfg, run, device, python):
            print("  " + shlex.join(command))


def _run_stage0(cfg: Config, stage0: list[str], output_dir: Path, env: dict[str, str]) -> None:
    """The geodesic expansion, unless the same command already finished in this folder."""
    marker = output_dir / "geodesic" / DONE_NAME
    stage0_done = _read_json(marker)
    if stage0_done is None or stage0_done.get("command") != stage0[1:]:
        print(f"[stage 0] geodesic expansion ({cfg.dataset['geodesic_style']} style)", flush=True)
        _execute(stage0, output_dir / "geodesic" / LOG_NAME, env)
        _write_json({"command": stage0[1:]}, marker)
    else:
        print("[stage 0] done, skipped", flush=True)


def _run_waves(runs: list[Run], do: Callable[[Run], str], jobs: int) -> list[str]:
    """Every unfinished run through ``do`` (which says what it did), ``jobs`` at a time, the SCM runs
    after the others; a run whose stage-1 source failed is not started. Returns the failures
    (one line each); on Ctrl-C/SIGTERM no run starts and the running ones stop."""
    total = len(runs)
    index = {id(r): i for i, r in enumerate(runs, 1)}
    failures: list[str] = []
    failed: set[str] = set()

    def one(run: Run) -> None:
        i = index[id(run)]
        if _finished(run):
            print(f"[run {i}/{total}] {run.key}: done, skipped", flush=True)
            return
        print(f"[run {i}/{total}] {run.key}: running (log {run.folder / LOG_NAME})", flush=True)
        print(f"[run {i}/{total}] {run.key}: {do(run)}", flush=True)

    for wave in ([r for r in runs if r.variant.kind != "scm"], [r for r in runs if r.variant.kind == "scm"]):
        with cf.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {}
            for r in wave:
                if any(d.key in failed for d in r.needs):
                    failures.append(f"{r.key}: not run, a stage-1 run it starts from failed")
                    continue
                futures[pool.submit(one, r)] = r
            try:
                for future in cf.as_completed(futures):
                    try:
                        future.result()
                    except (RuntimeError, ValueError, OSError) as e:
                        failed.add(futures[future].key)
                        failures.append(f"{futures[future].key}: {e}")
                        print(f"[run {index[id(futures[future])]}/{total}] {futures[future].key}: FAILED: {e}",
                              flush=True)
            except BaseException:  # Ctrl-C, SIGTERM: no run starts, the running ones stop (checkpoints intact)
                pool.shutdown(wait=False, cancel_futures=True)
                stop_all()
                raise
    return failures


def _check_dataset(cfg: Config, python: str, env: dict[str, str]) -> None:
    d = cfg.dataset
    if not d["split_file"].is_file() and d["prepare"]:
        command = [python, *d["prepare"]]
        print(f"[prepare] {shlex.join(command)}", flush=True)
        rc = subprocess.run(command, cwd=ROOT, env=env).returncode
        if rc != 0:
            raise RuntimeError(f"dataset.prepare exited with {rc}: {shlex.join(command)}")
    if not d["split_file"].is_file():
        raise FileNotFoundError(f"config {cfg.path}: dataset.split_file {d['split_file']} not found"
                                + ("" if d["prepare"] else "; create it or add a dataset.prepare command"))
    for key in ("images", "labels", "annotations"):
        if not d[key].is_dir():
            raise FileNotFoundError(f"config {cfg.path}: dataset.{key} folder {d[key]} not found")


# --------------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------------
def wilcoxon_p(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided paired Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon(x, y)``); NaN when it
    is undefined (fewer than one non-zero difference)."""
    from scipy.stats import wilcoxon

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"paired samples differ in length: {len(x)} and {len(y)}")
    if not np.any(x - y != 0):
        return float("nan")
    return float(wilcoxon(x, y).pvalue)


def _patience(run: Run) -> int:
    """The ``--collapse_patience`` ``run`` trained with: recorded with it (else what its command
    gives, its plan included)."""
    recorded = recorded_args(run) or {}
    patience = recorded.get("collapse_patience")
    return patience if isinstance(patience, int) else int(planned_args(run.train).collapse_patience)


def run_health(log_csv: Path, patience: int = 3) -> dict[str, Any]:
    """What a training run's ``log.csv`` says about its health.

    Returns ``collapsed_epochs`` (epochs in which any model was collapsed:
    :func:`utilities.method.health.collapsed_rows`, the engine's ``collapsed*`` columns or, for logs
    without them, the rule on their other columns),
    ``longest_streak``, ``warned`` (a streak reached ``patience``: the collapse warning fired),
    ``best_epoch`` (1-based; NaN when not logged), ``ramp_end`` (the first epoch whose mean
    ramp weight reached 0.999; NaN if it never did, or when the run has no mCRF/VM term:
    ``grad_crf`` and ``grad_vm`` all zero), ``best_before_ramp`` (the best checkpoint comes
    from before the ramp-up ended: it never met the full loss), ``recoveries`` (``--on_collapse
    recover``), ``recovered`` (the warning fired, and the run came back: its best checkpoint
    comes after the last recovery and its last epoch is not collapsed) and ``below_seeds`` (its
    last epoch, or its best checkpoint's, is below its own seeds:
    :func:`utilities.method.health.ends_below_seeds`)."""
    from utilities.method.health import collapsed_rows, ends_below_seeds

    log = read_csv_table(log_csv, "training log")
    flags = collapsed_rows(log)
    streak = longest = 0
    for f in flags:
        streak = streak + 1 if f else 0
        longest = max(longest, streak)
    best_epoch = float(log["best_epoch"].iloc[-1]) if "best_epoch" in log.columns and len(log) else math.nan
    regularised = any(c in log.columns and (log[c].fillna(0) != 0).any() for c in ("grad_crf", "grad_vm"))
    ramp_end = math.nan
    if regularised and "ramp" in log.columns:
        reached = log.index[log["ramp"] >= 0.999]
        ramp_end = float(log.loc[reached[0], "epoch"]) if len(reached) else math.inf
    before = bool(regularised and not math.isnan(best_epoch) and best_epoch < ramp_end)
    recovered_at = log.loc[log["recovered"].fillna(0) > 0, "epoch"] if "recovered" in log.columns else pd.Series([])
    warned = longest >= patience
    came_back = bool(warned and len(recovered_at) and best_epoch > float(recovered_at.max()) and not flags[-1:].any())
    return {"collapsed_epochs": int(flags.sum()), "longest_streak": longest, "warned": warned,
            "best_epoch": best_epoch, "ramp_end": ramp_end, "best_before_ramp": before,
            "recoveries": int(len(recovered_at)), "recovered": came_back, "below_seeds": bool(ends_below_seeds(log))}


def health_table(runs: Sequence[Run], per_case: pd.DataFrame) -> pd.DataFrame:
    """Per (variant, seed): :func:`run_health` of its training log plus ``empty`` (every
    inference prediction empty) and ``failed`` = empty, warned (and not recovered), best before
    the ramp-up ended or below its seeds."""
    rows = []
    for run in runs:
        seed = "-" if run.seed is None else run.seed
        preds = per_case[(per_case["variant"] == run.variant.name) & (per_case["seed"] == seed)]["pred_voxels"]
        empty = bool(len(preds) and preds.max() == 0)
        log_csv = RunLayout(run.folder, run.network).log_csv(scm=run.variant.kind == "scm")
        health: dict[str, Any] = {"collapsed_epochs": 0, "longest_streak": 0, "warned": False,
                                  "best_epoch": math.nan, "ramp_end": math.nan, "best_before_ramp": False,
                                  "recoveries": 0, "recovered": False, "below_seeds": False}
        if run.variant.kind != "seeds" and log_csv.is_file():
            health = run_health(log_csv, _patience(run))
        rows.append({"variant": run.variant.name, "seed": seed, **health, "empty": empty,
                     "failed": bool(empty or (health["warned"] and not health["recovered"])
                                    or health["best_before_ramp"] or health["below_seeds"])})
    return pd.DataFrame(rows)


def summarize(cfg: Config, runs: Sequence[Run], names: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-variant table and the long per-case table (variant, seed, subject, dice, assd, pred_voxels).

    Per variant: mean ± sample std (ddof 1) over training seeds of the per-seed mean Dice and ASSD
    over the inference cases (ASSD over the cases where it is defined), the number of failed
    seeds (every inference prediction empty, or the collapse warning fired, or the best
    checkpoint comes from before the ramp-up ended: :func:`health_table`, also returned as
    ``table.attrs["health"]``), the epochs each seed spent collapsed, and the paired Wilcoxon
    signed-rank p-value against the baseline, computed per case on the Dice averaged over the
    seeds of each variant (pairs = the inference cases)."""
    from utilities.evaluation.scoring import read_scores

    rows = []
    for run in runs:
        for r in read_scores(run.results)[0].itertuples():   # every case, whatever its name
            rows.append({"variant": run.variant.name, "seed": "-" if run.seed is None else run.seed,
                         "subject": r.subject, "dice": float(r.dice), "assd": float(r.assd),
                         "pred_voxels": int(r.pred_voxels)})
    per_case = pd.DataFrame(rows)
    health = health_table(runs, per_case)
    from utilities.data.splits import read_split, subjects_of

    training_cases = len(subjects_of(read_split(cfg.dataset["split_file"]), "training"))
    budgets: dict[str, list[str]] = {}
    for r in runs:   # each seed's own record; seeds that differ are all shown
        budgets.setdefault(r.variant.name, [])
        budget = run_budget(r, training_cases)
        if budget not in budgets[r.variant.name]:
            budgets[r.variant.name].append(budget)
    case_mean = per_case.groupby(["variant", "subject"])["dice"].mean()
    base = case_mean.loc[cfg.baseline]
    table = []
    for name in names:
        v = cfg.variants[name]
        sub = per_case[per_case["variant"] == name]
        by_seed = sub.groupby("seed", sort=False)
        dice = by_seed["dice"].mean()
        assd = by_seed["assd"].mean()          # NaN cases skipped
        mine_health = health[health["variant"] == name]
        collapsed = int(mine_health["failed"].sum())
        recovered = int((mine_health["recovered"] & ~mine_health["failed"]).sum())
        streaks = "/".join(str(int(n)) for n in mine_health["collapsed_epochs"])
        mine = case_mean.loc[name].reindex(base.index)
        p = float("nan") if name == cfg.baseline else wilcoxon_p(mine.to_numpy(), base.to_numpy())
        table.append({"variant": name, "label": v.label, "kind": v.kind, "seeds": len(dice),
                      "cases": int(sub["subject"].nunique()), "dice_mean": float(dice.mean()),
                      "dice_std": float(dice.std(ddof=1)) if len(dice) > 1 else float("nan"),
                      "assd_mean": float(assd.mean()),
                      "assd_std": float(assd.std(ddof=1)) if assd.notna().sum() > 1 else float("nan"),
                      "collapsed": collapsed, "recovered": recovered, "collapsed_epochs": streaks, "wilcoxon_p": p,
                      "budget": " / ".join(budgets.get(name, ["—"]))})
    out = pd.DataFrame(table)
    out.attrs["health"] = health
    return out, per_case


def _pm(mean: float, std: float, digits: int) -> str:
    if np.isnan(mean):
        return "—"
    return f"{mean:.{digits}f}" + ("" if np.isnan(std) else f" ± {std:.{digits}f}")


def table_markdown(cfg: Config, table: pd.DataFrame, note: str = "") -> str:
    lines = [f"# {md_cell(cfg.title)}", "", *([note, ""] if note else []),
             f"Inference cases of `{cfg.dataset['split_file'].name}`; mean ± std (ddof 1) over training seeds of the "
             "per-seed mean over the cases; *failed*: seeds whose every inference prediction is empty, whose "
             "collapse warning fired (unless `--on_collapse recover` brought the run back: best checkpoint after "
             "the last recovery, last epoch healthy; counted as *recovered*), whose best checkpoint comes from "
             "before the ramp-up ended, or whose last epoch or best checkpoint is below its own seeds (worse than "
             "the expanded seeds as the prediction whatever the lesion in the points' boxes) (health.csv); "
             "*collapsed epochs*: per seed, the epochs in which the predictions were collapsed; "
             f"*p*: two-sided paired Wilcoxon signed-rank test against `{cfg.baseline}` on the per-case Dice "
             "averaged over each variant's seeds (pairs = cases; scipy.stats.wilcoxon); *steps*: optimisation "
             "steps of the training (epochs × steps per epoch) and its batch size, as the run recorded them "
             "(`?`: not recorded).", "",
             "| Variant | Seeds | Dice | ASSD (mm) | Failed | Collapsed epochs | p vs baseline | Steps |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        p = "baseline" if r.variant == cfg.baseline else ("—" if np.isnan(r.wilcoxon_p) else f"{r.wilcoxon_p:.3g}")
        lines.append(f"| {md_cell(r.label)} (`{md_cell(r.variant)}`) | {r.seeds} | {_pm(r.dice_mean, r.dice_std, 3)} | "
                     f"{_pm(r.assd_mean, r.assd_std, 2)} | {r.collapsed}/{r.seeds}"
                     f"{f' ({r.recovered} recovered)' if getattr(r, 'recovered', 0) else ''} | "
                     f"{r.collapsed_epochs or '—'} | {p} | {r.budget} |")
    return "\n".join(lines) + "\n"


def write_outputs(cfg: Config, table: pd.DataFrame, per_case: pd.DataFrame, output_dir: Path, suffix: str = "",
                  note: str = "") -> None:
    """``table{suffix}.md`` (with ``note`` under its title), ``table{suffix}.csv``,
    ``per_case{suffix}.csv``, ``health{suffix}.csv`` and ``boxplot{suffix}.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    save_csv(table, output_dir / f"table{suffix}.csv")
    save_csv(per_case, output_dir / f"per_case{suffix}.csv")
    if "health" in table.attrs:
        save_csv(table.attrs["health"], output_dir / f"health{suffix}.csv")
    markdown = table_markdown(cfg, table, note)
    save_text(markdown, output_dir / f"table{suffix}.md")
    names = table["variant"].tolist()
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(names), 4.2))
    case_mean = per_case.groupby(["variant", "subject"])["dice"].mean()
    ax.boxplot([case_mean.loc[n].to_numpy() for n in names], showmeans=True)
    for i, n in enumerate(names, 1):
        seed_means = per_case[per_case["variant"] == n].groupby("seed")["dice"].mean()
        ax.plot(np.full(len(seed_means), i) + np.linspace(-0.12, 0.12, len(seed_means)), seed_means, "o",
                color="C3", ms=4, label="per-seed mean" if i == 1 else None)
    ax.set_xticks(range(1, len(names) + 1))
    ax.set_xticklabels(table["label"].tolist(), rotation=20, ha="right", fontsize=8)
    ax.set(ylabel="Dice (per case, averaged over seeds)", title=cfg.title, ylim=(0, 1))
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(output_dir / f"boxplot{suffix}.png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    print("\n" + markdown + f"\nwritten {output_dir / f'table{suffix}.md'}, table{suffix}.csv, "
          f"per_case{suffix}.csv, boxplot{suffix}.png")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be integers separated by commas, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="JSON config (see experiments/configs/README.md)")
    p.add_argument("--output_dir", default=None, help="where runs and tables go (default ./ablation/<config name>)")
    p.add_argument("--seeds", type=_int_list, default=None, help="training seeds overriding the config's, e.g. 0,1,2")
    p.add_argument("--variants", nargs="+", default=None, help="run only these variants (and what SCM needs)")
    p.add_argument("--baseline", default=None,
                   help="the variant the p-values are against, overriding the config's (e.g. seeds)")
    nothing = p.add_mutually_exclusive_group()
    nothing.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    nothing.add_argument("--finished_only", action="store_true",
                   help="run nothing: write the interim table of the runs finished so far (table_finished.md, "
                        "...), naming the missing ones")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="passed to every script")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per run (OMP_NUM_THREADS)")
    p.add_argument("--jobs", type=int, default=1, help="runs side by side (each with --threads threads)")
    return p


def main(argv: list[str] | None = None) -> pd.DataFrame | None:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config)
    if args.baseline is not None:
        if args.baseline not in cfg.variants:
            raise ValueError(f"--baseline {args.baseline!r} is not a variant of {cfg.path} "
                             f"(variants: {sorted(cfg.variants)})")
        cfg = replace(cfg, baseline=args.baseline)
    output_dir = Path(args.output_dir) if args.output_dir else Path("ablation") / cfg.path.stem
    if args.seeds is not None and (not args.seeds or len(set(args.seeds)) != len(args.seeds)):
        raise ValueError(f"--seeds must be distinct integers, got {args.seeds}")
    return run_ablation(cfg, output_dir, args.seeds, args.variants, args.device, args.threads, args.jobs,
                        args.dry_run, finished_only=args.finished_only)


def run(argv: list[str] | None = None) -> int:
    """The command line: ``main`` with one ``error:`` line (exit 2) for a user error; Ctrl-C
    (exit 130) and SIGTERM (a scheduler's time limit, exit 143) stop the running trainings
    (SIGTERM: they save and exit as on their own SIGTERM) and say how to resume."""
    import signal

    from utilities.core.runtime import Terminated, raise_terminated
    from utilities.workflow.cli import EXIT_INTERRUPTED, EXIT_TERMINATED

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        main(argv)
        return 0
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt as error:
        stop_all()
        what = "terminated" if isinstance(error, Terminated) else "interrupted"
        print(f"{what}; run the same command again to resume", file=sys.stderr, flush=True)
        return EXIT_TERMINATED if isinstance(error, Terminated) else EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(run())
