"""Checkpoints: one writer and one reader for each kind.

- Model checkpoints (``CP_best*.pth``, ``CP_final*.pth``): :func:`save_model` /
  :func:`load_model_weights` — the weights plus what is needed to check them on load.
- Bare state dicts in either layout (ours or the authors' published one):
  :func:`load_state_dict`, :func:`convert_checkpoint` (the key mapping is
  :mod:`networks.published`).
- The resumable training state (``CP_latest*.pth``): :class:`TrainingState` ``save`` / ``load``
  — named models, optimisers, extra modules (e.g. SCM's teachers), the gradient scaler, the
  best-metric trackers, every RNG state and the arguments of the run.
"""
from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from networks import NETWORKS
from networks.published import (
    detect_our_network,
    detect_published_network,
    ours_to_published,
    published_to_ours,
    strip_wrapper_prefix,
    with_article,
)
from utilities.core.distributed import unwrap
from utilities.core.files import existing_file
from utilities.data.io import STATE_DICT_ACCEPTED, load_torch, save_torch
from utilities.method.optim import Amp

__all__ = [
    "CHECKPOINT_FORMAT",
    "ResumeRecord",
    "save_model",
    "load_model_weights",
    "checkpoint_file",
    "load_state_dict",
    "convert_checkpoint",
    "load_resume_state",
    "rng_state",
    "set_rng_state",
    "BestTracker",
    "TrainingState",
]

logger = logging.getLogger("paseg")

CHECKPOINT_FORMAT = "paseg-model-v1"


@dataclass(frozen=True)
class ResumeRecord:
    """What ``--resume`` checks a checkpoint against: a run's arguments, sorted by what a change does.

    Each script builds it from its arguments (:func:`utilities.workflow.cli.resume_record`); a checkpoint
    keeps it as one flat mapping (``"args"``, the format of every ``CP_latest*.pth`` so far), read
    back split the same way (:meth:`saved_like`).

    ``settings`` decide the result: a resume that changes one is logged as a warning (the run no
    longer matches an uninterrupted one). ``fixed`` cannot change on resume (the saved optimizer
    state is of that optimizer): a change is refused; ``legacy`` gives their value in
    checkpoints written before they existed. ``free`` may change without changing the result
    (device, workers). ``epochs`` is the planned number of epochs (``epochs_flag``): a
    checkpoint that trained more is refused.
    """

    settings: Mapping[str, Any]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    free: Mapping[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    legacy: Mapping[str, Any] = field(default_factory=dict)
    epochs_flag: str = "max_epochs"

    def to_saved(self) -> dict[str, Any]:
        """The flat mapping a checkpoint keeps (every argument)."""
        return {**self.free, **self.settings, **self.fixed}

    def saved_like(self, saved: Mapping[str, Any]) -> ResumeRecord:
        """The record of a checkpoint's flat mapping ``saved``, split as this one; a setting the
        checkpoint lacks (a flag added since) is left out, a fixed one takes its ``legacy`` value."""
        epochs = saved.get(self.epochs_flag)
        return ResumeRecord({k: saved[k] for k in self.settings if k in saved},
                            {k: saved.get(k, self.legacy.get(k)) for k in self.fixed},
                            {k: saved[k] for k in self.free if k in saved},
                            epochs if isinstance(epochs, int) else None, self.legacy, self.epochs_flag)

    def check_resume(self, saved: ResumeRecord, done: int, path: Path) -> list[str]:
        """Refuse (``ValueError``, one line naming ``path``) a resume that changes a fixed value
        or plans fewer epochs than the checkpoint ``saved`` has ``done``; return the changed
        settings as ``--flag old -> new``."""
        for key, now in self.fixed.items():
            if saved.fixed[key] != now:
                before = saved.fixed[key]
                raise ValueError(f"--resume: {path} was trained with --{key} {before}, not {now} (its state cannot "
                                 f"be carried over); pass --{key} {before}, or start afresh with --overwrite")
        if self.epochs is not None and done > self.epochs:
            raise ValueError(f"--resume: {path} has already trained {done} epochs, more than --{self.epochs_flag} "
                             f"{self.epochs}; pass --{self.epochs_flag} {saved.epochs or done} (the run's) or more")
        return [f"--{k} {saved.settings[k]!r} -> {v!r}" for k, v in sorted(self.settings.items())
                if k in saved.settings and saved.settings[k] != v]


def save_model(path: Path, model: nn.Module, network: str, **meta: Any) -> None:
    """Save the weights with what is needed to check them on load (atomic)."""
    model = unwrap(model)
    payload = {"format": CHECKPOINT_FORMAT, "network": network,
               "in_channels": getattr(model, "in_channels", None),
               "num_classes": getattr(model, "num_classes", None),
               "state_dict": model.state_dict(), **meta}
    save_torch(payload, path)


def checkpoint_file(path: str | os.PathLike) -> Path:
    """``path`` as a checkpoint file; a folder (a run folder given for its checkpoint) or a
    missing file is a one-line error."""
    return existing_file(path, "checkpoint",
                         folder_hint="; pass a checkpoint file, e.g. <run folder>/<network>/models/CP_best.pth")


def load_model_weights(model: nn.Module, path: Path | str, network: str,
                       map_location: Any = "cpu", flag: str = "--network", remedy: str | None = None) -> dict[str, Any]:
    """Load weights saved by :func:`save_model`, a bare state dict, or a checkpoint released with
    the published PA-Seg code (detected by its keys, converted by
    :mod:`networks.published`) into ``model``.

    Keys with a wrapper's prefix (``module.`` of ``DistributedDataParallel``, ``_orig_mod.`` of
    ``torch.compile``) are loaded without it.

    Returns the checkpoint's metadata. Raises a one-line error for a missing file, a file that
    is not a checkpoint (:func:`utilities.data.io.load_torch` says what it is), a checkpoint of
    another network (``flag``: the option that names the network, for the message; ``remedy``:
    what to do instead of passing that flag, when the network did not come from it) or of
    another class or input channel count.
    """
    path = checkpoint_file(path)
    payload = load_torch(path, map_location)
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        if payload["network"] != network:
            raise ValueError(f"checkpoint {path} holds {with_article(payload['network'])} network, not {network}; "
                             + (remedy or f"pass {flag} {payload['network']} or another checkpoint"))
        state = strip_wrapper_prefix(payload["state_dict"])
        meta = {k: v for k, v in payload.items() if k != "state_dict"}
    elif isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        published = detect_published_network(payload)
        if published is None:
            state, meta = strip_wrapper_prefix(payload), {}
        elif published != network:
            raise ValueError(f"checkpoint {path} is a published {published} checkpoint, not {network}; "
                             + (remedy or f"pass {flag} {published} or another checkpoint"))
        else:  # the authors' released layout: renamed to ours, same tensors
            state, meta = published_to_ours(payload, network), {"format": "published"}
    elif isinstance(payload, dict) and {"epoch", "rng", "args"} <= set(payload):
        raise ValueError(f"{path} is the resumable training state (for --resume), not a model checkpoint; point to "
                         "CP_best*.pth or CP_final*.pth (inference: --epoch_inf best or final)")
    else:
        raise ValueError(f"{path} is not a model checkpoint (no weights found); {STATE_DICT_ACCEPTED}")
    net = unwrap(model)
    _check_fits(path, state, net.state_dict(), network, flag, remedy)
    net.load_state_dict(state)
    return meta


def load_state_dict(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a state dict saved with ``torch.save`` (CUDA tensors are moved to ``map_location``).

    A checkpoint written by this project's training scripts (``{"format": ..., "state_dict":
    ..., ...}``) gives its ``state_dict``.

    Raises:
        FileNotFoundError, ValueError: one line naming the file and what it is
            (:func:`utilities.data.io.load_torch`).
    """
    path = existing_file(path, "checkpoint file")
    obj = load_torch(path, map_location)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"checkpoint {path} does not hold a state dict (a mapping of names to tensors); "
                         f"{STATE_DICT_ACCEPTED}")
    return dict(obj)


def convert_checkpoint(input_path: str | os.PathLike, output_path: str | os.PathLike, network: str,
                       to: str) -> Path:
    """Read ``input_path`` on the CPU, convert it ``to`` ``"ours"`` or ``"published"``, write
    ``output_path`` atomically (a bare state dict, as the published code saves)."""
    if network not in NETWORKS:
        raise ValueError(f"--network must be one of {sorted(NETWORKS)}, got {network!r}")
    if to not in ("ours", "published"):
        raise ValueError(f"--to must be 'ours' or 'published', got {to!r}")
    state = load_state_dict(input_path, "cpu")
    try:
        converted = published_to_ours(state, network) if to == "ours" else ours_to_published(state, network)
    except ValueError as e:   # the conversion's message names no file
        raise ValueError(f"--input {input_path}: {e}") from None
    save_torch(converted, output_path)
    return Path(output_path)


#: (key, axis, what, verb, meaning): the tensors whose size says the class and input channel counts.
_COUNTS = (("head.weight", 0, "output classes", "have", "(background and lesion)"),
           ("encoders.0.0.weight", 1, "input channel(s)", "take", "(one image)"))


def _check_fits(path: Path, state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], network: str,
                flag: str, remedy: str | None = None) -> None:
    """One line naming what differs when ``state`` does not fit ``own`` (the network's state
    dict): another network, another class or input channel count, other shapes."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        found = detect_our_network(state)
        if found is not None and found != network:
            raise ValueError(f"checkpoint {path} does not fit network {network}: it holds {with_article(found)} "
                             "state dict; " + (remedy or f"pass {flag} {found} or another checkpoint"))
        raise ValueError(f"checkpoint {path} does not fit network {network} ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected parameter(s)); "
                         + (remedy or f"was it trained with another {flag}?"))
    for key, axis, what, verb, meaning in _COUNTS:
        if key in own and state[key].ndim == own[key].ndim and state[key].shape[axis] != own[key].shape[axis]:
            theirs, ours = int(state[key].shape[axis]), int(own[key].shape[axis])
            raise ValueError(f"checkpoint {path} holds {with_article(network)} with {theirs} {what}; this project's "
                             f"networks {verb} {ours} {meaning}: pass a checkpoint trained with {ours}"
                             + (" classes" if key == "head.weight" else ""))
    shapes = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if shapes:
        k = shapes[0]
        raise ValueError(f"checkpoint {path} does not fit network {network}: {len(shapes)} parameter(s) of other "
                         f"shapes (e.g. {k} {list(state[k].shape)}, expected {list(own[k].shape)}); was it trained "
                         f"with another {flag}?")


def load_resume_state(path: Path, record: ResumeRecord, networks: Mapping[str, str],
                      map_location: Any = "cpu") -> dict[str, Any]:
    """Load a ``CP_latest*.pth`` written by a training script, for ``--resume``.

    ``record``: this run's :class:`ResumeRecord`; ``networks`` maps the checkpoint's network
    keys to the names this run expects (e.g. ``{"network": "U_Net2D5"}``). Changed settings are
    logged as a warning: the run then no longer matches an uninterrupted one.

    Raises:
        ValueError: one line naming the file, if it is not a resumable checkpoint of this run.
    """
    state = load_torch(path, map_location, advice="start afresh with --overwrite")
    needed = {"epoch", "rng", "args", "scaler", *networks}
    if not isinstance(state, dict):
        missing = "state"
    else:  # "args" must be the arguments' mapping
        missing = str(sorted(needed - set(state) | ({"args"} if not isinstance(state.get("args"), Mapping) else set())))
    if missing != "[]":
        raise ValueError(f"--resume: {path} is not a resumable checkpoint of this script (no {missing}); "
                         "start afresh with --overwrite")
    for key, name in networks.items():
        if state[key] != name:
            raise ValueError(f"--resume: {path} holds a run of {key} {state[key]}, not {name}; "
                             f"pass --{key} {state[key]} or choose another --model_dir")
    changed = record.check_resume(record.saved_like(state["args"]), int(state["epoch"]), path)
    if changed:
        logger.warning("--resume with changed argument(s): %s; the result will differ from an "
                       "uninterrupted run", ", ".join(changed))
    return state


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random state a run depends on (for exact resume)."""
    # the legacy tuple form (the default): ("MT19937", keys, pos, has_gauss, cached_gaussian)
    np_state = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: Mapping[str, Any], generator: torch.Generator | None = None) -> None:
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy(), *np_state[2:]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


@dataclass
class BestTracker:
    """The best value of one validation column so far, and its epoch (1-based; -1: none yet);
    ``below``: that epoch is below its own seeds (:mod:`utilities.method.health`)."""

    value: float = -1.0
    epoch: int = -1
    below: bool = False

    def update(self, value: float, epoch: int, below: bool = False, guarded: bool = False) -> bool:
        """Record ``value`` if it beats the best (NaN never does); returns whether it did.
        ``below``: the epoch is below its seeds (recorded with it). ``guarded`` (selection by
        ``seed_dice``): an epoch below its seeds never replaces one that is not, and one that is
        not replaces one that is whatever their values; the first is taken only while every
        epoch so far is below its seeds, so that a run always has a best checkpoint."""
        if guarded and below and not self.below and self.epoch > 0:
            return False
        if value > self.value or (guarded and self.below and not below and not math.isnan(value)):
            self.value, self.epoch, self.below = float(value), int(epoch), bool(below)
            return True
        return False


@dataclass
class TrainingState:
    """Everything a run needs to continue exactly where it stopped.

    ``models``, ``optimizers`` and ``extras`` are saved under their names (``model``,
    ``optimizer``; SCM: ``model1``, ``optimizer1``, ``teacher1``, ...); ``networks`` maps
    network keys (``network`` or ``network1``/``network2``) to architecture names, checked on
    resume. ``epoch`` counts finished epochs.
    """

    models: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    amp: Amp
    networks: dict[str, str]
    record: ResumeRecord
    extras: dict[str, nn.Module] = field(default_factory=dict)
    trackers: dict[str, BestTracker] = field(default_factory=dict)
    epoch: int = 0
    #: ``--on_collapse recover``: one ``{"epoch", "dominant"}`` record per recovery so far.
    recoveries: list[dict[str, Any]] = field(default_factory=list)

    def save(self, path: Path, rng: Sequence[Mapping[str, Any]]) -> None:
        """Write ``CP_latest*.pth`` atomically; ``rng`` holds every rank's :func:`rng_state`."""
        payload: dict[str, Any] = {"epoch": self.epoch, "scaler": self.amp.scaler.state_dict(), "rng": list(rng),
                                   "args": self.record.to_saved(), **self.networks,
                                   "trackers": {k: (t.value, t.epoch, t.below) for k, t in self.trackers.items()},
                                   "recoveries": [dict(r) for r in self.recoveries]}
        payload |= {k: unwrap(m).state_dict() for k, m in self.models.items()}
        payload |= {k: m.state_dict() for k, m in self.extras.items()}
        payload |= {k: o.state_dict() for k, o in self.optimizers.items()}
        save_torch(payload, path)

    def load(self, path: Path, map_location: Any, generator: torch.Generator | None = None, rank: int = 0) -> None:
        """Restore from ``path`` (checked by :func:`load_resume_state` against ``record`` and
        ``networks``), including the RNG state of this ``rank``."""
        state = load_resume_state(path, self.record, self.networks, map_location=map_location)
        for name, module in {**self.models, **self.extras}.items():
            unwrap(module).load_state_dict(state[name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state[name])
        self.amp.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        for name, saved in state.get("trackers", {}).items():   # (value, epoch[, below])
            self.trackers[name] = BestTracker(*saved)
        self.recoveries = [dict(r) for r in state.get("recoveries", [])]
        set_rng_state(state["rng"][min(rank, len(state["rng"]) - 1)], generator)
        logger.info("resumed from %s at epoch %d", path, self.epoch)
