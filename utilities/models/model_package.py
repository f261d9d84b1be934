"""What a trained model is, wherever it comes from: a run folder, a checkpoint file, or a
one-file model package (a zip written by ``export_model.py``).

A :class:`ModelSpec` names the network, the weights and what inference needs besides them
(patch size, normalisation, channel and class counts). From a run folder they come from the
run's own arguments, saved in its resumable ``CP_latest*.pth``; from a package, from its
manifest ``paseg_model.json``. A package also holds a short model card (``model_card.md``):
the training data's fingerprint, the validation score of the packed checkpoints and the
command that trained them.

Package layout (zip, deflated)::

    paseg_model.json        manifest: format, versions, models, card
    model_card.md           the card, readable
    weights/<name>.pth      one checkpoint per model (this project's format, any source converted)
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from networks import IN_CHANNELS, NETWORKS, NUM_CLASSES, get_network
from utilities.data.archives import UntrustedZip, name_problem
from utilities.data.grid import find_subject_file, missing_paths
from utilities.data.io import atomic_path, load_torch, read_image
from utilities.data.layout import MODELS, RunLayout
from utilities.data.splits import read_split, subjects_of
from utilities.method.defaults import PRIMARY_NETWORK, SPATIAL_SHAPE
from utilities.method.sequence import command
from utilities.models.checkpoints import CHECKPOINT_FORMAT, checkpoint_file, load_model_weights, save_model

__all__ = [
    "PACKAGE_FORMAT",
    "PACKAGE_VERSION",
    "MANIFEST",
    "NORMALISATION",
    "DEFAULT_SPATIAL_SHAPE",
    "ModelSpec",
    "project_version",
    "checkpoint_path",
    "find_network",
    "run_args",
    "spec_from_run",
    "scm_specs",
    "spec_from_checkpoint",
    "load_weights",
    "data_fingerprint",
    "SPACING_FACTOR",
    "spacing_warning",
    "training_command",
    "export_package",
    "open_package",
    "read_manifest",
    "resolve_models",
]

logger = logging.getLogger("paseg")

PACKAGE_FORMAT = "paseg-model-package"
#: Raised when the package layout changes; a package of a newer version is refused.
PACKAGE_VERSION = 1
MANIFEST = "paseg_model.json"
CARD = "model_card.md"
#: The one normalisation of this project: RAS reorientation, then whole-volume z-normalisation
#: of the image (:func:`utilities.data.loading.preprocess_transform`).
NORMALISATION = "zscore"
#: ``inference.py``'s patch size when neither ``--spatial_shape`` nor the model says one (the paper's VS).
DEFAULT_SPATIAL_SHAPE = SPATIAL_SHAPE
#: ``--epoch_inf``'s default (inference and export): the best checkpoint. Another value picks the
#: package models packed from ``CP_<epoch_inf>.pth``.
DEFAULT_EPOCH_INF = "best"
_SCM_SUFFIXES = ("_model1", "_model2")


@dataclass(frozen=True)
class ModelSpec:
    """One network to predict with: ``weights`` is a checkpoint file :func:`load_model_weights`
    reads; ``spatial_shape`` (X, Y, Z) the sliding window (``None``: not known from the model);
    ``source`` what the user named (for messages); ``meta`` the checkpoint's or package's
    metadata (epoch, metric, ...); ``manifest_entry`` the package manifest's entry that gave the
    network and patch size (``models[0]``; ``None`` outside packages), for messages that must
    not name a flag the user did not pass."""

    name: str
    network: str
    weights: Path
    spatial_shape: tuple[int, ...] | None
    source: str
    normalisation: str = NORMALISATION
    in_channels: int = IN_CHANNELS
    num_classes: int = NUM_CLASSES
    meta: Mapping[str, Any] = field(default_factory=dict)
    manifest_entry: str | None = None

    def shape_origin(self, given: bool) -> str:
        """What set :attr:`spatial_shape`, as a message names it: ``--spatial_shape`` when the
        user ``given`` it, else the package's manifest key or the size recorded with the run."""
        if given:
            return "--spatial_shape"
        if self.manifest_entry is not None:
            return f"the patch size of {self.source} ({MANIFEST} key {self.manifest_entry}.spatial_shape)"
        return f"the patch size of {self.source}"


def project_version() -> str:
    """This project's version (``pyproject.toml``), ``unknown`` when not installed."""
    try:
        return metadata.version("paseg")
    except metadata.PackageNotFoundError:
        return "unknown"


def checkpoint_path(model_dir: str | os.PathLike, network: str, epoch_inf: str) -> Path:
    """``<model_dir>/<network>/models/CP_<epoch_inf>.pth``; a missing one is an error listing
    the checkpoints that exist."""
    layout = RunLayout(model_dir, network)
    path = layout.checkpoint(epoch_inf)
    if not path.is_file():
        found = layout.checkpoint_kinds(models_only=True)
        hint = (f"checkpoints there: --epoch_inf {{{','.join(found)}}}" if found
                else f"no checkpoint in {layout.models}; train first or check --model_dir/--network")
        if not found:  # the run folder itself was given?
            hint = layout.parent_hint("--model_dir", epoch_inf) or hint
        raise FileNotFoundError(f"checkpoint {path} not found; {hint}")
    return path


def find_network(model_dir: str | os.PathLike, epoch_inf: str, default: str = PRIMARY_NETWORK) -> str:
    """The network whose run in ``model_dir`` holds ``CP_<epoch_inf>.pth``: the only one, else
    ``default`` (whose missing checkpoint :func:`checkpoint_path` then explains).

    Raises:
        ValueError: several networks of ``model_dir`` hold that checkpoint.
    """
    found = sorted(n for n in NETWORKS if RunLayout(model_dir, n).checkpoint(epoch_inf).is_file())
    if len(found) > 1:
        raise ValueError(f"--model_dir {model_dir} holds CP_{epoch_inf}.pth of several networks ({', '.join(found)}); "
                         "pass --network to choose one")
    return found[0] if found else default


def _load_args(path: Path) -> dict[str, Any] | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an unreadable latest state only costs the recorded arguments
        logger.warning("cannot read the training arguments from %s; the model's patch size is unknown", path)
        return None
    args = state.get("args") if isinstance(state, dict) else None
    return dict(args) if isinstance(args, Mapping) else None


def run_args(model_dir: str | os.PathLike, network: str, epoch_inf: str) -> dict[str, Any] | None:
    """The arguments of the training run that wrote ``<model_dir>/<network>/models/CP_<epoch_inf>.pth``,
    from its resumable state (stage 1: ``CP_latest.pth`` beside it; SCM: ``CP_latest_SCM.pth`` in
    the folder of ``network1``); ``None`` when the run kept none."""
    scm = epoch_inf.endswith(_SCM_SUFFIXES)
    candidates = [RunLayout(model_dir, network).latest(scm)]
    if scm:
        candidates += _scm_latest(model_dir)
    for path in dict.fromkeys(candidates):
        if path.is_file():
            args = _load_args(path)
            if args is None:
                continue
            key = "network" + epoch_inf[-1] if scm else "network"
            if args.get(key, network) == network:
                return args
    return None


def _scm_latest(model_dir: str | os.PathLike) -> list[Path]:
    """The resumable SCM states (``CP_latest_SCM.pth``) of every network's run in ``model_dir``, sorted."""
    return sorted(p for p in (RunLayout.of_folder(d).latest(scm=True) for d in Path(model_dir).glob("*"))
                  if p.is_file())


def _shape(args: Mapping[str, Any] | None) -> tuple[int, ...] | None:
    shape = (args or {}).get("spatial_shape")
    return tuple(int(s) for s in shape) if isinstance(shape, (list, tuple)) and len(shape) == 3 else None


def _checkpoint_meta(path: Path) -> dict[str, Any]:
    """The metadata of one of our checkpoints (nothing for other layouts; never raises)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return {}
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        return {k: v for k, v in payload.items() if k != "state_dict" and isinstance(v, (str, int, float))}
    return {}


def spec_from_run(model_dir: str | os.PathLike, network: str | None, epoch_inf: str,
                  spatial_shape: Sequence[int] | None = None) -> ModelSpec:
    """The model ``CP_<epoch_inf>.pth`` of a run folder; ``network`` ``None``: the run's only
    network (:func:`find_network`); ``spatial_shape`` ``None``: the run's patch size."""
    network = network or find_network(model_dir, epoch_inf)
    path = checkpoint_path(model_dir, network, epoch_inf)
    args = run_args(model_dir, network, epoch_inf)
    shape = tuple(spatial_shape) if spatial_shape is not None else _shape(args)
    meta = _checkpoint_meta(path) | ({"run_args": args} if args else {})
    return ModelSpec(f"{network} CP_{epoch_inf}", network, path, shape, str(path), meta=meta)


def scm_specs(model_dir: str | os.PathLike, epoch_inf: str, network: str | None = None,
              spatial_shape: Sequence[int] | None = None) -> list[ModelSpec] | None:
    """Both models of the SCM run in ``model_dir`` (``CP_<kind>_model1`` and ``_model2``, kind
    = ``epoch_inf`` without a ``_model<k>`` suffix), or ``None`` when it holds no SCM run
    (``network``: that of model 1, when several SCM runs share the folder)."""
    latest = [RunLayout(model_dir, network).latest(scm=True)] if network else _scm_latest(model_dir)
    latest = [p for p in latest if p.is_file()]
    if not latest:
        return None
    if len(latest) > 1:
        names = ", ".join(p.parents[1].name for p in latest)
        raise ValueError(f"--model_dir {model_dir} holds several SCM runs ({names}); pass --network (that of model 1)")
    args = _load_args(latest[0]) or {}
    kind = epoch_inf.removesuffix("_model1").removesuffix("_model2")
    nets = [args.get("network1", latest[0].parents[1].name), args.get("network2")]
    if nets[1] is None:
        raise ValueError(f"{latest[0]} does not record the SCM run's networks; name the models: --ensemble A B")
    specs = []
    for k, net in enumerate(nets, 1):
        spec = spec_from_run(model_dir, net, f"{kind}_model{k}", spatial_shape)
        specs.append(ModelSpec(f"model{k} ({net} CP_{kind}_model{k})", net, spec.weights, spec.spatial_shape or
                               _shape(args), spec.source, meta=spec.meta))
    return specs


def _peek_network(path: Path) -> str | None:
    """The network a checkpoint holds (ours, a bare state dict in our or the authors' layout);
    a file torch cannot read is a one-line error saying what it is (:func:`load_torch`)."""
    from networks.published import detect_our_network, detect_published_network

    payload = load_torch(path)
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        return payload.get("network")
    if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return detect_published_network(payload) or detect_our_network(payload)
    return None


def spec_from_checkpoint(path: str | os.PathLike, network: str | None = None,
                         spatial_shape: Sequence[int] | None = None) -> ModelSpec:
    """A single ``.pth`` (ours or the authors' released layout); the network is read from it
    when ``network`` is ``None``, the patch size from the run beside it when there is one."""
    path = checkpoint_file(path)
    found = _peek_network(path)
    network = network or found
    if network is None:
        raise ValueError(f"cannot tell which network checkpoint {path} holds; pass --network")
    shape = tuple(spatial_shape) if spatial_shape is not None else None
    meta = _checkpoint_meta(path)
    if path.parent.name == MODELS:   # in a run folder: its recorded arguments (the model card's provenance)
        layout = RunLayout.of_folder(path.parents[1])
        args = run_args(layout.model_dir, layout.network, path.stem.removeprefix("CP_"))
        shape = shape if shape is not None else _shape(args)
        meta |= {"run_args": args} if args else {}
    return ModelSpec(f"{network} {path.name}", network, path, shape, str(path), meta=meta)


def load_weights(model: torch.nn.Module, spec: ModelSpec, map_location: Any = "cpu") -> dict[str, Any]:
    """:func:`load_model_weights` for ``spec``; a bare state dict of another network (whose
    tensors torch refuses with a ``RuntimeError`` of many lines) is a one-line ``ValueError``.
    Messages name ``spec.source`` (a package's weights live in a temporary folder)."""
    remedy = None
    if spec.manifest_entry is not None:
        remedy = (f"the package's {MANIFEST} names the wrong network ({spec.manifest_entry}.network "
                  f"{spec.network}); export the model again with export_model.py")
    try:
        return load_model_weights(model, spec.weights, spec.network, map_location=map_location, remedy=remedy)
    except RuntimeError as e:
        if "size mismatch" not in str(e) and "state_dict" not in str(e):
            raise
        raise ValueError(f"checkpoint {spec.source} does not fit network {spec.network} (parameter shapes differ); "
                         + (remedy or "was it trained with another --network?")) from None
    except (ValueError, FileNotFoundError) as e:
        if spec.source == str(spec.weights):
            raise
        raise type(e)(str(e).replace(str(spec.weights), spec.source)) from None


# ---------------------------------------------------------------------------------- model card
def data_fingerprint(dataset_split: str | os.PathLike, path_images: str | os.PathLike,
                     image_postfix: str) -> dict[str, Any]:
    """Number of training cases, their spacing and shape ranges, and intensity statistics
    (median over the cases of each case's mean, std, 0.5th and 99.5th percentile), read from
    the training images. Missing images are counted and named, never skipped silently."""
    try:
        subjects = subjects_of(read_split(dataset_split), "training")
    except (OSError, ValueError) as e:
        return {"available": False, "reason": f"cannot read the split {dataset_split}: {e}"}
    paths = [find_subject_file(path_images, s, image_postfix) for s in subjects]
    present = [p for p in paths if p.is_file()]
    if not present:
        return {"available": False, "cases": len(subjects),
                "reason": f"none of the {len(subjects)} training images found under {path_images}"}
    spacing, shapes, stats = [], [], []
    for path in present:
        image = read_image(path)
        data = sitk.GetArrayViewFromImage(image).astype(np.float64, copy=False)
        spacing.append(image.GetSpacing())
        shapes.append(image.GetSize())
        p_low, p_high = np.percentile(data, [0.5, 99.5])
        stats.append((float(data.mean()), float(data.std()), float(p_low), float(p_high)))
    spacing_arr, shapes_arr, stats_arr = np.array(spacing), np.array(shapes), np.array(stats)
    result: dict[str, Any] = {
        "available": True, "cases": len(subjects), "cases_read": len(present),
        "spacing_median_mm": [round(float(v), 4) for v in np.median(spacing_arr, 0)],
        "spacing_min_mm": [round(float(v), 4) for v in spacing_arr.min(0)],
        "spacing_max_mm": [round(float(v), 4) for v in spacing_arr.max(0)],
        "size_min": [int(v) for v in shapes_arr.min(0)], "size_max": [int(v) for v in shapes_arr.max(0)],
        "intensity_median": {k: round(float(v), 4) for k, v in
                             zip(("mean", "std", "p0.5", "p99.5"), np.median(stats_arr, 0))},
    }
    if len(present) < len(paths):
        missing = missing_paths(paths)
        result["missing"] = missing
        logger.warning("model card: %d of %d training image(s) not found (e.g. %s); the fingerprint uses the rest",
                       len(missing), len(paths), missing[0])
    return result


#: How far (a factor, either way) a scan's voxel size may lie outside the training images' range
#: before inference warns (:func:`spacing_warning`).
SPACING_FACTOR = 2.0


def spacing_warning(training_data: Mapping[str, Any], spacings: Mapping[str, Sequence[float]],
                    factor: float = SPACING_FACTOR) -> str | None:
    """One warning line naming the scans (``{name: spacing}``, mm) whose voxel size lies more
    than ``factor`` outside the range of the training images of a package's card
    (:func:`data_fingerprint`), or ``None``. Sizes are compared sorted, so that the same voxels
    stored in another axis order (a sagittal acquisition) compare equal. PA-Seg does not resample:
    the network sees such a scan's structures at another scale in voxels."""
    if not training_data.get("available") or "spacing_min_mm" not in training_data:
        return None
    low, high = sorted(training_data["spacing_min_mm"]), sorted(training_data["spacing_max_mm"])
    far = {name: sorted(float(v) for v in spacing) for name, spacing in spacings.items()}
    far = {name: sp for name, sp in far.items()
           if len(sp) == len(low) and any(v < lo / factor or v > hi * factor for v, lo, hi in zip(sp, low, high))}
    if not far:
        return None
    name, sp = next(iter(far.items()))
    shown = " x ".join(f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}" for lo, hi in zip(low, high))
    return (f"{len(far)} of {len(spacings)} scan(s) have a voxel size more than {factor:g}x finer or coarser than the "
            f"training images' ({shown} mm, sorted), e.g. {name}: {' x '.join(f'{v:g}' for v in sp)} mm; PA-Seg does "
            "not resample, so the network sees their structures at another scale: resample them to the training "
            "voxel size first")


def training_command(args: Mapping[str, Any] | None) -> str | None:
    """The command line that trained a run, rebuilt from its recorded arguments (SCM's when they
    name a ``network1``, else stage 1's)."""
    if not args:
        return None
    return shlex.join(command("scm" if "network1" in args else "stage1", {f"--{key}": v for key, v in args.items()}))


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def _md_code(value: object) -> str:
    """``value`` as one Markdown code span, shown verbatim: delimited by one backtick more than
    its longest run of backticks (padded with a space where it starts or ends with one), line
    breaks as spaces (a code span shows them so; a raw one could end the paragraph or list item)."""
    text = " ".join(str(value).splitlines())
    fence = "`" * (_longest_backtick_run(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_code_block(lines: Sequence[str]) -> list[str]:
    """``lines`` as one fenced Markdown code block, shown verbatim (a line break inside an
    argument included): fenced by more backticks than any run inside, so no line can end it."""
    fence = "`" * max(3, max((_longest_backtick_run(line) for line in lines), default=0) + 1)
    return [fence + "sh", *lines, fence]


def _card_markdown(manifest: Mapping[str, Any]) -> str:
    card = manifest["card"]
    lines = [f"# PA-Seg model: {', '.join(m['network'] for m in manifest['models'])}", "",
             f"- packed with PA-Seg {manifest['project_version']}, torch {manifest['torch_version']}",
             f"- inference: patch {manifest['models'][0]['spatial_shape']}, normalisation "
             f"{manifest['normalisation']} (RAS, whole-volume z-score), {manifest['num_classes']} classes", ""]
    lines.append("## Models")
    for m in manifest["models"]:
        score = m.get("metric")
        value = m.get("value")
        shown = (f"validation {score} {value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value)
                 else "validation score not recorded")
        lines.append(f"- {_md_code(m['name'])}: {m['network']}, from {_md_code(m['checkpoint'])} "
                     f"(epoch {m.get('epoch', '?')}), {shown}")
    fp = card.get("training_data") or {}
    lines += ["", "## Training data"]
    if fp.get("available"):
        lines += [f"- {fp['cases']} training case(s) ({fp['cases_read']} read)",
                  f"- spacing (x, y, z mm): median {fp['spacing_median_mm']}, range {fp['spacing_min_mm']} to "
                  f"{fp['spacing_max_mm']}",
                  f"- size (x, y, z voxels): {fp['size_min']} to {fp['size_max']}",
                  "- intensity (median over cases): " + ", ".join(f"{k} {v:g}" for k, v in
                                                                  fp['intensity_median'].items())]
    else:
        lines.append(f"- not recorded: {fp.get('reason', 'unknown')}")
    lines += ["", "## Training command", ""]
    commands = card.get("training_commands") or []
    lines += (_md_code_block(commands) if commands else ["not recorded (no CP_latest*.pth with the run's arguments)"])
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- packages
def export_package(specs: Sequence[ModelSpec], output: str | os.PathLike,
                   fingerprint: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``specs`` as one zip at ``output`` (atomic); returns the manifest.

    Every checkpoint is loaded into its network first (a foreign, damaged or mismatched one is
    refused with :func:`load_model_weights`'s one-line error) and written in this project's
    format, so the authors' released checkpoints are packed converted.
    """
    if not specs:
        raise ValueError("nothing to pack")
    for spec in specs:
        if spec.spatial_shape is None:
            raise ValueError(f"the patch size of {spec.source} is unknown (no training arguments beside it); "
                             "pass --spatial_shape X Y Z")
    models, commands, blobs = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, spec in enumerate(specs, 1):
            assert spec.spatial_shape is not None  # every spec's was checked above
            net = get_network(spec.network, spec.in_channels, spec.num_classes)
            meta = load_weights(net, spec)
            name = f"model{k}"
            keep = {key: meta.get(key, spec.meta.get(key)) for key in ("epoch", "metric", "value")}
            keep = {key: v for key, v in keep.items() if v is not None}
            save_model(Path(tmp) / f"{name}.pth", net, spec.network, **keep)
            blobs[f"weights/{name}.pth"] = (Path(tmp) / f"{name}.pth").read_bytes()
            models.append({"name": name, "network": spec.network, "file": f"weights/{name}.pth",
                           "checkpoint": Path(spec.weights).name, "spatial_shape": list(spec.spatial_shape),
                           "in_channels": spec.in_channels, "num_classes": spec.num_classes, **keep})
            command = training_command(spec.meta.get("run_args"))
            if command and command not in commands:
                commands.append(command)
    manifest = {"format": PACKAGE_FORMAT, "package_version": PACKAGE_VERSION, "project_version": project_version(),
                "torch_version": torch.__version__, "normalisation": specs[0].normalisation,
                "num_classes": specs[0].num_classes, "models": models,
                "card": {"training_data": dict(fingerprint or {"available": False, "reason": "not given"}),
                         "training_commands": commands}}
    with atomic_path(output) as tmp_zip:
        with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(MANIFEST, json.dumps(manifest, indent=1))
            z.writestr(CARD, _card_markdown(manifest))
            for name, blob in blobs.items():
                z.writestr(name, blob)
    return manifest


def _major(version: str) -> str:
    return version.split(".")[0]


#: Bytes the manifest may hold (a fingerprint naming thousands of missing images stays below it).
MAX_MANIFEST_BYTES = 4 * 2**20
#: Models a package may hold.
MAX_MODELS = 16
_PACKAGE_EXPECTED = "a model package written by export_model.py"
_AGAIN = "export it again"


def _is_text(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 200 and value.isprintable()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_count(value: object) -> bool:
    return _is_int(value) and 0 < value <= 2**16  # type: ignore[operator]


def _is_shape(value: object) -> bool:
    return isinstance(value, list) and len(value) == 3 and all(_is_count(v) for v in value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_TEXT = (_is_text, "a one-line string of 1 to 200 characters")
_COUNT = (_is_count, "a positive integer")
#: What each manifest key must be: (test, description, required). Keys not listed are kept unread.
_MANIFEST_KEYS: dict[str, tuple[Callable[[object], bool], str, bool]] = {
    "package_version": (_is_int, "an integer", True),
    "project_version": (*_TEXT, False),
    "torch_version": (*_TEXT, False),
    "normalisation": (*_TEXT, False),
    "num_classes": (*_COUNT, False),
    "models": (lambda v: isinstance(v, list) and 0 < len(v) <= MAX_MODELS,
               f"a list of 1 to {MAX_MODELS} models", True),
    "card": (lambda v: isinstance(v, dict), "an object", False),
}
_MODEL_KEYS: dict[str, tuple[Callable[[object], bool], str, bool]] = {
    "name": (*_TEXT, True),
    "network": (*_TEXT, True),
    "file": (*_TEXT, True),
    "spatial_shape": (_is_shape, "a list of 3 positive integers", True),
    "in_channels": (*_COUNT, False),
    "num_classes": (*_COUNT, False),
    "checkpoint": (*_TEXT, False),
    "epoch": (_is_int, "an integer", False),
    "metric": (*_TEXT, False),
    "value": (_is_number, "a number", False),
}


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_keys(path: Path, record: Mapping[str, Any], rules: Mapping[str, tuple[Callable[[object], bool], str, bool]],
                where: str = "") -> None:
    for key, (test, what, required) in rules.items():
        if key not in record:
            if required:
                raise ValueError(f"--model {path}: {MANIFEST} has no key {where}{key} ({what}); {_AGAIN}")
        elif not test(record[key]):
            raise ValueError(f"--model {path}: {MANIFEST} key {where}{key} must be {what}, got "
                             f"{_shown(record[key])}; {_AGAIN}")


def _checked_manifest(archive: UntrustedZip, path: Path) -> dict[str, Any]:
    """The manifest of an opened package, every key it uses of the type it must have."""
    info = archive.file(MANIFEST)
    if info is None:
        raise ValueError(f"--model {path} is a zip but not a PA-Seg model package (no {MANIFEST}); pass a package "
                         "written by export_model.py")
    manifest = archive.read_json(info, MAX_MANIFEST_BYTES)
    if not isinstance(manifest, dict) or manifest.get("format") != PACKAGE_FORMAT:
        raise ValueError(f"--model {path}: {MANIFEST} is not a PA-Seg package manifest; pass a package written by "
                         "export_model.py")
    _check_keys(path, manifest, _MANIFEST_KEYS)
    for k, entry in enumerate(manifest["models"]):
        if not isinstance(entry, dict):
            raise ValueError(f"--model {path}: {MANIFEST} key models[{k}] must be an object, got {_shown(entry)}; "
                             f"{_AGAIN}")
        _check_keys(path, entry, _MODEL_KEYS, f"models[{k}].")
        problem = name_problem(entry["file"])
        if problem is not None:
            raise archive.refuse(f"{MANIFEST} key models[{k}].file {entry['file']!r} {problem}")
    _check_versions(path, manifest)
    return manifest


@contextmanager
def _package_zip(path: Path) -> Iterator[UntrustedZip]:
    """``path`` opened as an untrusted zip (:class:`UntrustedZip`): its member list checked."""
    try:
        archive = UntrustedZip(path, f"--model {path}", _PACKAGE_EXPECTED, _AGAIN)
    except zipfile.BadZipFile:
        raise ValueError(f"--model {path} is not a zip file (or a truncated one); pass {_PACKAGE_EXPECTED}") from None
    with archive:
        yield archive


def _extract_models(archive: UntrustedZip, path: Path, manifest: Mapping[str, Any], folder: Path) -> list[ModelSpec]:
    """The specs of a checked manifest's models, each file the manifest names extracted once into
    ``folder`` under a name of ours (``weights<k>.pth``), never under the member's own."""
    specs: list[ModelSpec] = []
    extracted: dict[str, Path] = {}
    for k, entry in enumerate(manifest["models"]):
        network = entry["network"]
        if network not in NETWORKS:
            raise ValueError(f"--model {path} holds a {network} network, which this version does not know "
                             f"(known: {', '.join(sorted(NETWORKS))}); update PA-Seg")
        info = archive.file(entry["file"])
        if info is None:
            raise ValueError(f"--model {path}: {MANIFEST} key models[{k}].file names {entry['file']!r}, which the "
                             f"package does not hold; {_AGAIN}")
        if info.filename not in extracted:
            extracted[info.filename] = archive.extract(info, folder / f"weights{len(extracted) + 1}.pth")
        meta = {key: entry[key] for key in ("epoch", "metric", "value", "checkpoint") if key in entry}
        specs.append(ModelSpec(f"{entry['name']} ({network}, {path.name})", network, extracted[info.filename],
                               tuple(entry["spatial_shape"]), f"{path}:{entry['name']}",
                               manifest.get("normalisation", NORMALISATION), entry.get("in_channels", IN_CHANNELS),
                               entry.get("num_classes", NUM_CLASSES), meta, f"models[{k}]"))
    return specs


def open_package(path: str | os.PathLike, workdir: str | os.PathLike) -> list[ModelSpec]:
    """The models of a package, their weights extracted into a fresh private folder (``mkdtemp``,
    mode 0700) inside ``workdir``, a folder the caller removes when done with the specs
    (``inference.py``: a temporary folder around the whole prediction).

    The package is untrusted: its members pass :class:`UntrustedZip`'s checks (names, links,
    counts, sizes) before anything is read, the manifest's keys are type-checked, and only the
    files it names are written, under names of ours. A refused package leaves nothing behind.

    Raises a one-line ``ValueError`` naming ``path`` (never a temporary path) for a file that is
    no zip or a damaged one, an unsafe or oversized zip, a zip that is not a PA-Seg package, a
    manifest key of the wrong type, a package of a newer format or another major version of
    this project, or a network, normalisation, channel or class count this version does not know.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--model {path} not found; pass a model package written by export_model.py")
    folder = Path(tempfile.mkdtemp(prefix="package-", dir=workdir))
    try:
        with _package_zip(path) as archive:
            specs = _extract_models(archive, path, _checked_manifest(archive, path), folder)
        for spec in specs:
            if (spec.normalisation, spec.in_channels, spec.num_classes) != (NORMALISATION, IN_CHANNELS, NUM_CLASSES):
                raise ValueError(f"--model {path}: {spec.name} needs normalisation {spec.normalisation!r}, "
                                 f"{spec.in_channels} channel(s), {spec.num_classes} classes; this version supports "
                                 f"{NORMALISATION!r}, {IN_CHANNELS}, {NUM_CLASSES}")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return specs


def _check_versions(path: Path, manifest: Mapping[str, Any]) -> None:
    version = manifest["package_version"]
    made_by = manifest.get("project_version", "unknown")
    ours = project_version()
    if version > PACKAGE_VERSION or version < 1:
        raise ValueError(f"--model {path} is a package of format version {version} (PA-Seg {made_by}); this PA-Seg "
                         f"{ours} reads version {PACKAGE_VERSION}: use a matching PA-Seg version")
    if "unknown" not in (made_by, ours) and _major(made_by) != _major(ours):
        raise ValueError(f"--model {path} was made by PA-Seg {made_by}, incompatible with this PA-Seg {ours} "
                         "(another major version): use a matching PA-Seg version")
    torch_made = manifest.get("torch_version", "unknown")
    if _major(torch_made) != _major(torch.__version__):
        logger.warning("--model %s was packed with torch %s, this is torch %s", path, torch_made, torch.__version__)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a package, read and checked as :func:`open_package` does (nothing extracted)."""
    with _package_zip(Path(path)) as archive:
        return _checked_manifest(archive, Path(path))


# ---------------------------------------------------------------------------------- resolving
def resolve_models(entry: str | os.PathLike, workdir: str | os.PathLike, network: str | None, epoch_inf: str,
                   spatial_shape: Sequence[int] | None, all_of_scm: bool = False) -> list[ModelSpec]:
    """The model(s) one command-line entry names: a package (``.zip``: every model in it,
    extracted by :func:`open_package` into a private folder inside ``workdir``, which the caller
    removes when done with the specs), a checkpoint file (``.pth``) or a run folder
    (``CP_<epoch_inf>.pth`` of its network; with ``all_of_scm``, both models of an SCM run)."""
    path = Path(entry)
    if path.suffix == ".zip" or (path.is_file() and zipfile.is_zipfile(path) and path.suffix != ".pth"):
        specs = open_package(path, workdir)
        held = ", ".join(f"{s.name.split(' ')[0]} ({s.network}, from {s.meta.get('checkpoint', '?')})" for s in specs)
        if network is not None:   # a package's model chosen by its network (model 2 of an SCM package)
            if not any(s.network == network for s in specs):
                raise ValueError(f"--model {path} holds {held}: no {network}; drop --network or pass one of "
                                 f"{', '.join(dict.fromkeys(s.network for s in specs))}")
            specs = [s for s in specs if s.network == network]
        if epoch_inf != DEFAULT_EPOCH_INF:   # ... or by the checkpoint it was packed from
            chosen = [s for s in specs if s.meta.get("checkpoint") == f"CP_{epoch_inf}.pth"]
            if not chosen:
                raise ValueError(f"--model {path} holds {held}: none from CP_{epoch_inf}.pth (--epoch_inf "
                                 f"{epoch_inf}); pick one it holds (e.g. --epoch_inf "
                                 f"{str(specs[-1].meta.get('checkpoint', 'CP_best.pth'))[3:-4]}), or export the run "
                                 f"again with --epoch_inf {epoch_inf}")
            specs = chosen
        if spatial_shape is not None:
            specs = [replace(s, spatial_shape=tuple(spatial_shape)) for s in specs]
        return specs
    if path.suffix == ".pth" or path.is_file():
        return [spec_from_checkpoint(path, network, spatial_shape)]
    if not path.is_dir():
        raise FileNotFoundError(f"model {path} not found; pass a model package (.zip), a checkpoint (.pth) or a run "
                                "folder (--model_dir)")
    if all_of_scm:
        scm = scm_specs(path, epoch_inf, network, spatial_shape)
        if scm is not None:
            return scm
    return [spec_from_run(path, network, epoch_inf, spatial_shape)]
