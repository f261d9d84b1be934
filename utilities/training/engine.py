"""The training loop shared by stage 1 and SCM.

A trainer provides a :class:`~utilities.models.checkpoints.TrainingState` (its models, optimisers,
teachers, ...), a step function and a :class:`FitConfig`; :func:`fit` owns everything else:
epochs, the poly learning rate, the progress bar, loss sums and their mean over ranks, the
NaN guards, the gradient norms of each loss term with respect to the logits, validation of
every model, best/final/latest checkpoints, ``log.csv``, TensorBoard, the log lines, the
collapse detector and the seed rule (:mod:`utilities.method.health`: an epoch below its own seeds is
never preferred by a ``seed_dice`` selection, and a run that ends below them is warned about).
:class:`Callback` hooks let a trainer (or a test) act at the start of an epoch, after
validation (SCM reloads its teachers there) and at the end of an epoch.

The step function receives a batch and a :class:`StepInfo` and returns a :class:`StepOutput`:
the values to log (averaged per epoch) and, per optimiser, the weighted terms of its loss,
each with the logits it is computed from. The engine differentiates each term with respect
to its logits (the cheap part of the graph), logs the norms (``grad_<term>``), and runs one
backward pass through the network from the summed logit gradients: the telemetry costs no
second network backward.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from tqdm import tqdm

from utilities.core.distributed import DistContext, mean_over_ranks, unwrap
from utilities.core.errors import TrainingStopped
from utilities.method.defaults import SW_OVERLAP
from utilities.method.health import (
    FLOOD_OUTSIDE_SHARE,
    FLOOD_RATIO,
    SEED_MARGIN,
    CollapseWatch,
    judge_seeds,
    seed_columns,
    seeds_summary,
)
from utilities.method.optim import set_lr
from utilities.method.schedules import poly_lr
from utilities.models.checkpoints import BestTracker, TrainingState, rng_state, save_model
from utilities.training.progress import draw_progress
from utilities.training.runs import CsvLog, TensorBoard, check_finite, check_finite_weights, slice_grid
from utilities.training.validation import VALIDATION_METRICS, evaluate, mean_scores

__all__ = ["StepInfo", "LossPart", "StepOutput", "BestCheckpoint", "FitConfig", "Callback", "CollapseWatch",
           "CollapseError", "Trainer", "fit", "train_step", "README_COLLAPSE_SECTION",
           "PROGRESS_INTERVAL_S"]

logger = logging.getLogger("paseg")

README_COLLAPSE_SECTION = 'guide page docs/guide/collapse.md'
#: ``progress.png`` is redrawn after an epoch when this many seconds have passed since it was
#: last drawn, and always after the first and the last epoch, an epoch with a collapse warning
#: or a recovery, and when the run stops: a drawing costs about 0.6 s of CPU, a tenth of a
#: short CPU epoch if it were drawn after every one.
PROGRESS_INTERVAL_S = 30.0


@dataclass(frozen=True)
class StepInfo:
    """Where a step is: ``epoch`` and ``step`` (0-based), ``global_step`` over the run."""

    epoch: int
    step: int
    global_step: int
    steps_per_epoch: int


@dataclass
class LossPart:
    """One weighted term of an optimiser's loss and the logits it is a function of; its
    gradient norm with respect to ``logits`` is logged as ``grad_<name>``."""

    name: str
    value: torch.Tensor
    logits: torch.Tensor


@dataclass
class StepOutput:
    """``log``: per-step values averaged over the epoch (loss terms, ramp, fractions);
    ``parts``: per optimiser name, the weighted terms whose sum is its loss."""

    log: dict[str, float | torch.Tensor]
    parts: dict[str, list[LossPart]]


StepFn = Callable[[Mapping[str, Any], StepInfo], StepOutput]


@dataclass(frozen=True)
class BestCheckpoint:
    """Save ``model`` to ``path`` whenever the row column ``column`` beats its best so far.

    ``tracker``: the name of the :class:`BestTracker` in the training state; ``metric``: the
    metric name written into the checkpoint; ``log_as``: row columns for the best value and
    its epoch (``None``: not logged).
    """

    tracker: str
    model: str
    column: str
    metric: str
    path: Path
    log_as: tuple[str, str] | None = None


@dataclass(frozen=True)
class FitConfig:
    """What :func:`fit` needs beyond the state: schedule, validation, files."""

    max_epochs: int
    learning_rate: float
    roi_size: tuple[int, ...]
    models_dir: Path
    latest: Path
    csv: Path
    tensorboard: Path
    healthy: Path                      # CP_healthy.pth: the state after the last epoch with no model collapsed
    final: Mapping[str, Path]
    best: Sequence[BestCheckpoint]
    validate: Mapping[str, str] = field(default_factory=lambda: {"": "model"})
    collapse: Sequence[CollapseWatch] = ()
    sw_batch_size: int = 1
    sw_overlap: float = SW_OVERLAP
    grad_clip: float | None = None
    collapse_patience: int = 3
    stop_on_collapse: bool = False
    on_collapse: str = "warn"          # "warn", "stop" or "recover"
    max_recoveries: int = 2
    desc: str = "epoch"
    summary: Sequence[str] = ("loss",)


class Callback:
    """Hooks into :func:`fit`; every method is optional."""

    def on_epoch_start(self, epoch: int, state: TrainingState) -> None:
        """Before the first step of ``epoch`` (0-based)."""

    def on_validated(self, epoch: int, row: dict[str, Any], state: TrainingState) -> dict[str, Any]:
        """After validation and the best checkpoints (every rank, after a barrier); returns
        extra row columns."""
        return {}

    def on_epoch_end(self, epoch: int, row: Mapping[str, Any], state: TrainingState) -> None:
        """After the row is logged and the latest checkpoint written (main process only)."""

    def on_recover(self, epoch: int, dominant: str, state: TrainingState, kind: str = "empty") -> str | None:
        """``--on_collapse recover``: the weights of the last healthy epoch are back; change
        what the collapse (``kind``: ``empty``, ``full`` or ``flooded``) and its dominant term
        (``seg``, ``crf``, ``vm``, ...) call for. Called on every rank, also when a resumed run
        replays its recoveries; returns a description for the log."""
        return None


class CollapseError(TrainingStopped):
    """``--stop_on_collapse``: the predictions stayed empty; the checkpoints are intact."""


class _CollapseDetector:
    def __init__(self, watches: Sequence[CollapseWatch], patience: int) -> None:
        self.watches = list(watches)
        self.patience = patience
        self.streak = {w.model: 0 for w in self.watches}
        self.rows: list[Mapping[str, Any]] = []
        self.dominant: str | None = None   # the dominant term of the last warning
        self.kind: str | None = None       # the collapse of the last warning: empty, full or flooded

    def reset(self) -> None:
        """Forget the streaks (after a recovery)."""
        self.streak = {w.model: 0 for w in self.watches}
        self.rows = []

    def __call__(self, epoch: int, row: dict[str, Any]) -> str | None:
        """Update with the epoch's row (``epoch`` 0-based; each watch adds its
        :attr:`CollapseWatch.log_column` to it); returns the warning when one fires.

        The dominant term is the one with the largest gradient norm summed over the collapsed
        epochs and the epoch before them (once collapsed, the term that caused it may have no
        gradient left)."""
        self.rows = [*self.rows[-self.patience:], row]
        messages = []
        for w in self.watches:
            kind = w.state(row)
            row[w.log_column] = int(kind is not None)   # read back by the ablation runner's health summary
            self.streak[w.model] = self.streak[w.model] + 1 if kind else 0
            if self.streak[w.model] != self.patience:
                continue
            what = {"empty": "no foreground (every validation volume empty or under a tenth of the seeds' "
                             "foreground in the training patches)",
                    "full": "foreground almost everywhere",
                    "flooded": _flood_text(w, row)}[str(kind)]
            self.kind = kind
            grads = {c.removeprefix("grad_"): sum(float(r.get(c, 0.0)) for r in self.rows)
                     for c in w.grad_columns if c in row}
            dominant = max(grads, key=grads.__getitem__) if grads else "?"
            self.dominant = dominant
            shown = ", ".join(f"{k} {v / len(self.rows):.3g}" for k, v in grads.items())
            messages.append(f"collapse: {w.model} has predicted {what} for {self.patience} epoch(s) "
                            f"(epochs {epoch + 2 - self.patience}-{epoch + 1}) while its reference has "
                            f"{float(row[w.reference_column]):.2%} foreground in the training patches; the "
                            f"dominant loss gradient w.r.t. the logits is {dominant} (mean norms over epochs "
                            f"{epoch + 2 - len(self.rows)}-{epoch + 1}: {shown}); see the "
                            f"{README_COLLAPSE_SECTION} for remedies")
        return " | ".join(messages) or None


def _flood_text(watch: CollapseWatch, row: Mapping[str, Any]) -> str:
    """The warning's words for a flood: judged by the foreground outside the points' boxes, or
    (a row without it) by the ratio to the reference's foreground."""
    share = f"{float(row[watch.train_column]):.2%} of the training patches"
    outside = watch.outside_share(row)
    if math.isnan(outside):
        return (f"more than {FLOOD_RATIO:g} times its reference's foreground with the mCRF/VM at full weight "
                f"({share}; over-segmentation)")
    return (f"more than {FLOOD_OUTSIDE_SHARE:.0%} of its foreground outside the points' boxes (certain background) "
            f"with the mCRF/VM at full weight ({share}, {outside:.1%} of it outside the boxes; over-segmentation)")


def _backward(state: TrainingState, parts: Mapping[str, Sequence[LossPart]]) -> dict[str, float]:
    """Gradient of each weighted term w.r.t. its logits (norms returned, unscaled), then one
    backward pass per logits tensor from the summed gradients."""
    scale = state.amp.loss_scale
    norms: dict[str, float] = {}
    for name in state.optimizers:
        sums: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for part in parts[name]:
            if not part.value.requires_grad:
                norms[f"grad_{part.name}"] = 0.0
                continue
            (grad,) = torch.autograd.grad(state.amp.scale(part.value), part.logits, retain_graph=True)
            norms[f"grad_{part.name}"] = float(grad.float().norm()) / scale
            key = id(part.logits)
            sums[key] = (part.logits, grad if key not in sums else sums[key][1] + grad)
        for logits, grad in sums.values():
            logits.backward(grad)
    return norms


def train_step(state: TrainingState, step_fn: StepFn, batch: Mapping[str, Any], info: StepInfo,
               grad_clip: float | None = None, where: Path | None = None) -> dict[str, float]:
    """One optimisation step of every optimiser in ``state``: zero the gradients, run
    ``step_fn``, stop on a non-finite logged value (before any weight changes; ``where``: the
    checkpoint folder named in the message), differentiate (:func:`_backward`) and step.

    Returns the step's logged values plus the ``grad_<term>`` norms.
    """
    optimizers = list(state.optimizers.values())
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    out = step_fn(batch, info)
    values = {k: float(v) for k, v in out.log.items()}
    check_finite(values, info.epoch + 1, info.step + 1, where if where is not None else Path("."))
    values |= _backward(state, out.parts)
    state.amp.step(optimizers, grad_clip)
    return values


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


class Trainer:
    """One training run: the state, the step, the loaders and the run's logs, with one method per
    part of an epoch (train, validate, best checkpoints, collapse, log). :func:`fit` builds one
    and calls :meth:`fit`; the trainers supply the models, the step, the best checkpoints and the
    collapse watches through :class:`FitConfig` and :class:`Callback`."""

    def __init__(self, state: TrainingState, step_fn: StepFn, train_loader: Iterable[Mapping[str, Any]],
                 val_loader: Iterable[Mapping[str, Any]], config: FitConfig, ctx: DistContext, device: torch.device,
                 generator: torch.Generator | None = None, sampler: Any = None,
                 callbacks: Sequence[Callback] = ()) -> None:
        self.state, self.step_fn, self.config, self.ctx, self.device = state, step_fn, config, ctx, device
        self.train_loader, self.val_loader = train_loader, val_loader
        self.generator, self.sampler, self.callbacks = generator, sampler, list(callbacks)
        self.detector = _CollapseDetector(config.collapse, config.collapse_patience)
        self.show_bar = ctx.is_main and sys.stderr.isatty()
        self.steps_per_epoch = len(cast(Sized, train_loader)) if hasattr(train_loader, "__len__") else 0
        self.csv_log: CsvLog | None = None
        self.tb: TensorBoard | None = None
        self.last_row: dict[str, Any] | None = None
        self.below: dict[tuple[str, int], str] = {}   # (model suffix, epoch) below its seeds: what the rule saw
        self.drawn_at = -math.inf   # time.monotonic() of the last progress.png; -inf: none since the start
        self.undrawn = False        # a row is logged that progress.png does not show yet

    def fit(self) -> None:
        """Train from ``state.epoch`` to ``config.max_epochs`` (see :func:`fit`)."""
        state, config, ctx = self.state, self.config, self.ctx
        self.csv_log = CsvLog(config.csv, state.epoch) if ctx.is_main else None
        self.tb = TensorBoard(config.tensorboard if ctx.is_main else None)
        if config.on_collapse == "recover":
            for record in state.recoveries:   # a resumed run: the changes of its earlier recoveries again
                for cb in self.callbacks:
                    cb.on_recover(int(record["epoch"]) - 1, str(record["dominant"]), state,
                                  kind=str(record.get("kind", "empty")))
            if state.epoch == 0 and ctx.is_main:
                state.save(config.healthy, [])   # the start: healthy until an epoch says otherwise
        try:
            for epoch in range(state.epoch, config.max_epochs):
                self.run_epoch(epoch)
            if ctx.is_main:
                self.save_final()
        finally:
            if ctx.is_main and self.undrawn:
                self.draw()   # a run that stops shows its last logged epoch
            self.tb.close()
        # a run that finished: the ranks leave together, once rank 0 has written the final checkpoints
        # and picture, so that no rank takes the process group down while another still works
        ctx.barrier()

    def run_epoch(self, epoch: int) -> None:
        """Train, validate, keep the best checkpoints, watch for a collapse, log; ``epoch`` is 0-based."""
        t0 = time.time()
        lr, means = self.train_epoch(epoch)
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, **means}
        grid = self.validate(row)
        self.judge_seeds(row, epoch)
        self.save_best(row, epoch)
        self.state.epoch = epoch + 1
        warning = self.detector(epoch, row)
        recovered = self.watch_collapse(row, warning, epoch)
        rng = self.ctx.gather(rng_state(self.generator))
        if self.ctx.is_main:
            row["time_s"] = round(time.time() - t0, 2)
            # CP_latest after the row: a run killed in between resumes from the previous epoch and redoes this one
            assert self.csv_log is not None
            self.csv_log.append(row)
            self.undrawn = True
            if (warning or recovered or epoch + 1 == self.config.max_epochs
                    or time.monotonic() - self.drawn_at >= PROGRESS_INTERVAL_S):
                self.draw()
            self.state.save(self.config.latest, rng)
            self.log_epoch(row, grid, epoch, time.time() - t0, warning, recovered)
        self.last_row = row
        self.ctx.barrier()
        if warning and (self.config.stop_on_collapse or self.config.on_collapse == "stop"):
            flag = "--stop_on_collapse" if self.config.stop_on_collapse else "--on_collapse stop"
            raise CollapseError(f"{warning}; stopped by {flag}, the checkpoints in {self.config.models_dir} "
                                "are intact")

    def draw(self) -> None:
        """``progress.png`` beside ``log.csv`` (:data:`PROGRESS_INTERVAL_S` says when); a failure
        only warns."""
        draw_progress(self.config.csv, self.config.collapse_patience)
        self.drawn_at, self.undrawn = time.monotonic(), False

    def train_epoch(self, epoch: int) -> tuple[float, dict[str, float]]:
        """The epoch's steps at its poly learning rate; returns the rate and the logged values'
        means over the steps and the ranks."""
        state, config = self.state, self.config
        for cb in self.callbacks:
            cb.on_epoch_start(epoch, state)
        lr = poly_lr(epoch, config.max_epochs, config.learning_rate)
        for optimizer in state.optimizers.values():
            set_lr(optimizer, lr)
        for model in state.models.values():
            model.train()
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        dataset: Any = getattr(self.train_loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):  # patches drawn from (seed, epoch, subject)
            dataset.set_epoch(epoch)
        sums: dict[str, float] = {}
        steps = 0
        bar = tqdm(self.train_loader, desc=f"{config.desc} {epoch + 1}/{config.max_epochs}", leave=False,
                   disable=not self.show_bar, dynamic_ncols=True)
        for step, batch in enumerate(bar):
            info = StepInfo(epoch, step, epoch * self.steps_per_epoch + step, self.steps_per_epoch)
            values = train_step(state, self.step_fn, batch, info, config.grad_clip, config.models_dir)
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value
            steps += 1
            bar.set_postfix({k: f"{values[k]:.4f}" for k in config.summary if k in values})
        return lr, mean_over_ranks(sums, steps, self.ctx)

    def validate(self, row: dict[str, Any]) -> dict[str, Any]:
        """Every model of ``config.validate`` on the validation volumes, into ``row``; returns the
        first volume's image, references and each model's prediction (for TensorBoard)."""
        grid: dict[str, Any] = {}
        for suffix, key in self.config.validate.items():
            def keep_grid(batch: Mapping[str, Any], logits: torch.Tensor, suffix: str = suffix) -> None:
                if suffix not in grid:
                    grid.setdefault("", [batch[k][0, 0] for k in ("image", "label", "seeds") if k in batch])
                    grid[suffix] = logits.argmax(1)[0]

            scores = mean_scores(evaluate(self.state.models[key], self.val_loader, self.config.roi_size, self.device,
                                          self.config.sw_batch_size, self.config.sw_overlap, self.state.amp, self.ctx,
                                          on_volume=keep_grid if self.ctx.is_main else None))
            row |= {f"val_{metric}{suffix}": scores[metric] for metric in VALIDATION_METRICS}
        return grid

    def judge_seeds(self, row: dict[str, Any], epoch: int) -> None:
        """Each validated model's seed rule (:func:`utilities.method.health.judge_seeds`) into ``row``:
        ``seed_ratio<k>`` and ``below_seeds<k>``; an epoch below its seeds is remembered for
        the run's closing warning."""
        for suffix in self.config.validate:
            row |= judge_seeds(row, suffix)
            if row[seed_columns(suffix)[1]]:
                self.below[(suffix, epoch + 1)] = seeds_summary(row, suffix)

    def save_best(self, row: dict[str, Any], epoch: int) -> None:
        """Update the best trackers (an epoch below its seeds is never preferred by a
        ``seed_dice`` selection), write the improved best checkpoints, let the callbacks add
        their columns (after a barrier) and log the best values."""
        state, config = self.state, self.config
        improved = [b for b in config.best
                    if state.trackers.setdefault(b.tracker, BestTracker()).update(
                        row[b.column], epoch + 1, below=bool(row.get(seed_columns(_suffix(b.model))[1])),
                        guarded=b.metric == "seed_dice")]
        check_finite_weights(state.models, epoch + 1, config.models_dir)
        if self.ctx.is_main:
            for b in improved:
                save_model(b.path, state.models[b.model], state.networks[_network_key(state, b.model)],
                           epoch=epoch + 1, metric=b.metric, value=state.trackers[b.tracker].value)
        self.ctx.barrier()
        for cb in self.callbacks:
            row |= cb.on_validated(epoch, row, state)
        for b in config.best:
            if b.log_as:
                row |= {b.log_as[0]: state.trackers[b.tracker].value, b.log_as[1]: state.trackers[b.tracker].epoch}

    def watch_collapse(self, row: dict[str, Any], warning: str | None, epoch: int) -> str:
        """``--on_collapse recover``: recover on a warning (while recoveries are left), else keep
        a healthy epoch's state; returns the recovery's log line ('' when none)."""
        config = self.config
        if config.on_collapse != "recover":
            return ""
        row["recovered"] = 0
        if warning and len(self.state.recoveries) < config.max_recoveries:
            row["recovered"] = 1
            return _recover(self.state, config, self.callbacks, self.detector, epoch, self.device)
        if not any(row.get(w.log_column) for w in config.collapse) and self.ctx.is_main:
            self.state.save(config.healthy, [])   # the weights a later recovery goes back to
        return ""

    def log_epoch(self, row: dict[str, Any], grid: dict[str, Any], epoch: int, seconds: float, warning: str | None,
                  recovered: str) -> None:
        """TensorBoard, the epoch's log line, the warnings and the end-of-epoch callbacks (main process)."""
        state, config = self.state, self.config
        assert self.tb is not None
        self.tb.scalars({f"train/{k}": v for k, v in row.items()
                         if k not in ("epoch", "time_s") and not k.startswith("val_") and isinstance(v, (int, float))}
                        | {f"val/{k.removeprefix('val_')}": v for k, v in row.items() if k.startswith("val_")},
                        epoch + 1)
        if len(grid) == len(config.validate) + 1:
            self.tb.image("val/image_references_predictions",
                          slice_grid(grid[""] + [grid[s] for s in config.validate]), epoch + 1)
        train_text = " ".join(f"{k} {row[k]:.4f}" for k in config.summary if k in row)
        val_text = " ".join(f"{k.removeprefix('val_')} {_fmt(row[k])}" for k in row if k.startswith("val_"))
        best_text = " ".join(f"{b.column.removeprefix('val_')} {state.trackers[b.tracker].value:.4f} "
                             f"@{state.trackers[b.tracker].epoch}" for b in config.best if b.log_as)
        logger.info("%s %d/%d lr %.2e %s | val %s | best %s (%.1f s)", config.desc, epoch + 1, config.max_epochs,
                    row["lr"], train_text, val_text, best_text, seconds)
        if warning:
            logger.warning(warning)
        if recovered:
            logger.warning(recovered)
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, row, state)

    def save_final(self) -> None:
        """The final checkpoints and the closing log line (main process)."""
        state, config = self.state, self.config
        for key, path in config.final.items():
            save_model(path, state.models[key], state.networks[_network_key(state, key)], epoch=config.max_epochs)
        best = ", ".join(f"{b.log_as[0].removeprefix('best_')} {state.trackers[b.tracker].value:.4f} at epoch "
                         f"{state.trackers[b.tracker].epoch}" for b in config.best if b.log_as)
        logger.info("done: best %s; checkpoints in %s", best, config.models_dir)
        for suffix, key in config.validate.items():
            primary = next((state.trackers[b.tracker] for b in config.best if b.model == key and b.log_as), None)
            line = _below_seeds_line(key, self.last_row, suffix, primary, self.below)
            if line:
                logger.warning(line)


def fit(state: TrainingState, step_fn: StepFn, train_loader: Iterable[Mapping[str, Any]],
        val_loader: Iterable[Mapping[str, Any]], config: FitConfig, ctx: DistContext, device: torch.device,
        generator: torch.Generator | None = None, sampler: Any = None,
        callbacks: Sequence[Callback] = ()) -> None:
    """Train from ``state.epoch`` to ``config.max_epochs`` (see the module docstring and :class:`Trainer`).

    Raises:
        NonFiniteLossError: a loss term or a weight became NaN/Inf (the last good checkpoints kept).
        CollapseError: with ``stop_on_collapse``, when the collapse warning fires (after the
            epoch's checkpoints are written).
    """
    Trainer(state, step_fn, train_loader, val_loader, config, ctx, device, generator, sampler, callbacks).fit()


def _restore_weights(state: TrainingState, path: Path, device: torch.device) -> None:
    """Load the models' and optimisers' states of ``path`` (a :meth:`TrainingState.save` file);
    the epoch, RNG and best trackers stay as they are."""
    payload = torch.load(path, map_location=device, weights_only=True)
    for name, module in state.models.items():
        unwrap(module).load_state_dict(payload[name])
    for name, optimizer in state.optimizers.items():
        optimizer.load_state_dict(payload[name])


def _recover(state: TrainingState, config: FitConfig, callbacks: Sequence[Callback], detector: _CollapseDetector,
             epoch: int, device: torch.device) -> str:
    """``--on_collapse recover``: go back to the last healthy weights, let the trainer change
    what the dominant term calls for, forget the streak; returns the log line."""
    path = config.healthy
    dominant = detector.dominant or "?"
    kind = detector.kind or "empty"
    restored = path.is_file()
    if restored:
        _restore_weights(state, path, device)
    state.recoveries.append({"epoch": epoch + 1, "dominant": dominant, "kind": kind})
    changes = [c for c in (cb.on_recover(epoch, dominant, state, kind=kind) for cb in callbacks) if c]
    detector.reset()
    return (f"recover {len(state.recoveries)}/{config.max_recoveries} after epoch {epoch + 1}: "
            + (f"weights and optimiser of the last healthy epoch restored from {path}" if restored
               else "no healthy epoch yet, the weights kept")
            + f"; dominant term {dominant}" + ("; " + "; ".join(changes) if changes else ""))


def _below_seeds_line(model: str, last_row: Mapping[str, Any] | None, suffix: str, best: BestTracker | None,
                      below: Mapping[tuple[str, int], str]) -> str:
    """The closing warning of a model whose last epoch, or whose best checkpoint's epoch, is below
    its seeds ('' when neither): the epochs and what the seed rule saw in them."""
    if last_row is None:
        return ""
    last = int(last_row["epoch"])
    epochs = [(f"its last epoch ({last})", last)] if last_row.get(seed_columns(suffix)[1]) else []
    if best is not None and best.below and best.epoch != last:
        epochs.append((f"its best checkpoint's epoch ({best.epoch})", best.epoch))
    if not epochs:
        return ""
    seen = "; ".join(f"epoch {e}: {below.get((suffix, e), 'no numbers (before a resume)')}" for _, e in epochs)
    return (f"below its seeds: {model} ends worse than its own expanded seeds used as the prediction (on the "
            f"training patches a Dice ratio to the seeds under {SEED_MARGIN:g} if the seed core is lesion, or, there "
            f"or on most validation volumes, nothing predicted inside the points' boxes or more than "
            f"{FLOOD_OUTSIDE_SHARE:.0%} of the foreground outside them) in "
            f"{' and '.join(w for w, _ in epochs)}; {seen}; the run counts as failed; see the "
            f"{README_COLLAPSE_SECTION}")


def _suffix(model_key: str) -> str:
    """``""`` for ``model``, ``1`` for ``model1``."""
    return model_key.removeprefix("model")


def _network_key(state: TrainingState, model_key: str) -> str:
    """``network`` for ``model``, ``network1`` for ``model1``."""
    return model_key.replace("model", "network", 1)
