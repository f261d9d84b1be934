"""The ablation config: its schema, one record per key (:data:`SCHEMA`, also the table of
``experiments/configs/README.md``, see :func:`schema_markdown`), and :func:`load_config`, which
reads a config and checks it against the schema before anything runs."""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utilities.core.files import existing_file
from utilities.core.textdata import loads_json

from .scripts import GEODESIC_SCRIPTS

KINDS = ("seeds", "stage1", "scm", "full", "nnunet")


class SeedsAction(argparse.Action):
    """``--seeds`` of the experiment scripts: training seeds written ``0 1 2``, ``0,1,2`` or both
    mixed (every script takes every form)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        seeds = []
        for value in values:
            for part in str(value).replace(",", " ").split():
                try:
                    seeds.append(int(part))
                except ValueError:
                    parser.error(f"argument {option_string}: must be integers (0 1 2 or 0,1,2), got {value!r}")
        setattr(namespace, self.dest, seeds)


@dataclass(frozen=True)
class Key:
    """One key of the config: where it sits (``dataset.split_file``; ``<name>`` stands for any
    variant's name), its JSON type, whether a config must set it, its default and its meaning
    (Markdown, one line). ``default`` is the value the runner uses when the key is absent;
    ``default_note`` says it in words where it depends on other keys."""

    key: str
    type: str
    meaning: str
    required: bool = False
    default: Any = None
    default_note: str = ""


#: Every key a config may hold, in the order of the README's table (keys starting with ``_`` are comments).
SCHEMA: tuple[Key, ...] = (
    Key("title", "string", "heading of `table.md` and the plot", default_note="the config's file name"),
    Key("dataset.split_file", "path", "headerless `subject,phase` CSV", required=True),
    Key("dataset.images", "path", "folder of the images `<images>/<subject>_<image_postfix>.nii.gz`", required=True),
    Key("dataset.image_postfix", "string", "postfix of the image files", required=True),
    Key("dataset.labels", "path", "folder of the full labels (validation Dice, scores, full supervision)",
        required=True),
    Key("dataset.label_postfix", "string", "postfix of the label files", required=True),
    Key("dataset.annotations", "path", "folder of the 7-point annotations for stage 0", required=True),
    Key("dataset.annotation_postfix", "string", "postfix of the annotation files", required=True),
    Key("dataset.geodesic_style", "string", "`VS` or `BraTS` (BraTS: voxels at the image minimum become "
        "background)", default="VS"),
    Key("dataset.geodesic_weight", "number", "stage-0 λ", default=0.5),
    Key("dataset.geodesic_threshold", "number", "stage-0 threshold", default=0.2),
    Key("dataset.geodesic_workers", "integer ≥ 1", "stage-0 processes", default=1),
    Key("dataset.prepare", "list of strings", "command (the interpreter is added) run from the repository root "
        "when the split file is missing, e.g. `[\"data/demo/make_demo_data.py\", \"--preset\", \"brats_small\", "
        "\"--no_report\"]`"),
    Key("base.stage1", "flags object", "flags of every stage-1 and full run"),
    Key("base.scm", "flags object", "flags of every SCM run"),
    Key("base.inference", "flags object", "flags of every inference run"),
    Key("variants.<name>.kind", "string", "`seeds` (expanded seeds scored as predictions), `stage1`, `scm`, `full` "
        "(stage 1 on the full labels: `--path_geodesic_labels <labels>`, `--weight_gatedcrf 0 --weight_variance "
        "0`), `nnunet` (`experiments/nnunet_baseline.py` with the variant's flags, e.g. `--labels full`, "
        "`--epochs`, `--iterations_per_epoch`: nnU-Net v2 trained on the expanded seeds with its ignore label, or "
        "on the full labels; scored with `utilities/scores.py --prediction_dir`)", required=True),
    Key("variants.<name>.label", "string", "row name in the table", default_note="the variant's name"),
    Key("variants.<name>.flags", "flags object", "overrides of the base flags (none for `seeds`)"),
    Key("variants.<name>.from", "string or list of 1–2 strings", "`scm` only: the stage-1 (or full) variant(s) of "
        "model 1 and model 2"),
    Key("variants.<name>.aux_seed_offset", "integer", "`scm` only: model 2 is the `from[1]` run of seed + offset",
        default_note="1 when both models come from the same variant, else 0"),
    Key("variants.<name>.epoch_inf", "string", "checkpoint `CP_<epoch_inf>.pth` for inference (not for `seeds`, "
        "`nnunet`)", default_note="`best`; SCM `best_model1`"),
    Key("seeds", "list of integers", "training seeds (`--seed` of every run), distinct", required=True),
    Key("baseline", "string", "the variant the p-values are against", required=True),
)


def keys(section: str) -> tuple[str, ...]:
    """The names of the keys directly in ``section`` (``""``: the top level; ``"dataset"``,
    ``"base"``, ``"variants.<name>"``), in the schema's order."""
    depth = section.count(".") + 1 if section else 0
    prefix = section + "." if section else ""
    return tuple(dict.fromkeys(k.key.split(".")[depth] for k in SCHEMA if k.key.startswith(prefix)))


def required(section: str) -> tuple[str, ...]:
    """The keys of ``section`` (see :func:`keys`) a config must set, in the schema's order."""
    depth = section.count(".") + 1 if section else 0
    prefix = section + "." if section else ""
    return tuple(dict.fromkeys(k.key.split(".")[depth] for k in SCHEMA if k.key.startswith(prefix) and k.required))


def default_of(key: str) -> Any:
    """The default of ``key`` (e.g. ``"dataset.geodesic_weight"``) as :data:`SCHEMA` gives it."""
    return next(k.default for k in SCHEMA if k.key == key)


def schema_markdown() -> str:
    """The schema as the Markdown table of ``experiments/configs/README.md``."""
    def default(k: Key) -> str:
        if k.required:
            return "required"
        return k.default_note or ("—" if k.default is None else f"`{json.dumps(k.default)}`")

    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k.key}` | {k.type} | {default(k)} | {k.meaning} |" for k in SCHEMA]
    return "\n".join(lines) + "\n"


_TOP_KEYS = set(keys(""))
_DATASET_KEYS = set(keys("dataset"))
_DATASET_REQUIRED = required("dataset")
_BASE_KEYS = set(keys("base"))
_VARIANT_KEYS = set(keys("variants.<name>"))
#: Flags the runner sets itself; a config that sets them is an error.
_RESERVED = {"--model_dir", "--seed", "--device", "--resume", "--overwrite", "--dataset_split", "--path_images",
             "--image_postfix", "--path_labels", "--label_postfix", "--path_geodesic_labels",
             "--geodesic_label_postfix", "--pretrained_model1_dir", "--pretrained_model2_dir", "--network1",
             "--network2", "--phase", "--epoch_inf"}
#: Inference flags that would send the predictions elsewhere than the run folder the runner scores.
_ELSEWHERE = {"--output_folder", "--input_folder", "--model", "--ensemble"}


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
        if key in _ELSEWHERE:
            raise ValueError(f"config {path}: {where}: {key} would make inference predict with other models or "
                             "write elsewhere than the run folder the runner scores; remove it from the config")
        if isinstance(value, dict):
            raise ValueError(f"config {path}: {where}.{key}: a flag value must be a number, string, list, "
                             "true or null")
        out[key] = value
    return out


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
    path = existing_file(path, "--config", folder_hint="; pass the ablation's JSON config file")
    try:
        raw = loads_json(path.read_text(encoding="utf-8"), f"config {path}")
    except json.JSONDecodeError as e:
        raise ValueError(f"config {path} is not valid JSON: {e}") from None
    raw = _keys(raw, "top level", _TOP_KEYS, path)
    for key in required(""):
        if key not in raw:
            raise ValueError(f"config {path}: missing key {key!r}")
    dataset = _dataset(raw["dataset"], path)
    base_raw = _keys(raw.get("base", {}), "base", _BASE_KEYS, path)
    base = {k: _flags(base_raw.get(k), f"base.{k}", path) for k in keys("base")}
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
    dataset["geodesic_style"] = ds.get("geodesic_style", default_of("dataset.geodesic_style"))
    if dataset["geodesic_style"] not in GEODESIC_SCRIPTS:
        raise ValueError(f"config {path}: dataset.geodesic_style must be one of {sorted(GEODESIC_SCRIPTS)}, "
                         f"got {dataset['geodesic_style']!r}")
    for key in ("image_postfix", "label_postfix", "annotation_postfix"):
        if not isinstance(ds[key], str):
            raise ValueError(f"config {path}: dataset.{key} must be a string, got {ds[key]!r}")
    for key in ("geodesic_weight", "geodesic_threshold"):
        dataset[key] = float(_number(ds, key, default_of(f"dataset.{key}"), "dataset", path))
    dataset["geodesic_workers"] = _number(ds, "geodesic_workers", default_of("dataset.geodesic_workers"), "dataset",
                                          path, whole=True, minimum=1)
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
    weighted = [f for f in ("--weight_gatedcrf", "--weight_variance") if flags.get(f) not in (None, 0, 0.0)]
    if kind == "full" and weighted:
        raise ValueError(f"config {path}: {where}.flags: {', '.join(weighted)} has no effect in a 'full' variant, "
                         "which trains on the full labels with the mCRF and VM off (the runner sets both weights to "
                         "0); remove it, or make the variant of kind 'stage1' with its labels")
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
