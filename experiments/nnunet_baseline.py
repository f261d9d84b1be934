"""nnU-Net v2 on a split: the expanded seeds with its ignore label (or the full labels), one run.

The baseline reviewers ask for: nnU-Net v2 trained with a partial loss on PA-Seg's expanded seeds
(0 background, 1 foreground, 2 unknown = nnU-Net's ignore label), or with ``--labels full`` on
the full labels (the fully supervised reference). One command does the whole run, each step
skipped when it is already done:

1. export the split (``data/export_nnunet.py``): training + validation cases to ``imagesTr``,
   inference cases to ``imagesTs``;
2. nnU-Net's fingerprint, plans and preprocessing of ``--configuration``, and our split as its
   ``splits_final.json``;
3. training of ``--fold`` with ``--trainer`` (``experiments/nnunet_trainers``): ``Budget``
   (``nnUNetTrainerBudget``, nnU-Net's own trainer) or ``PASeg`` (``nnUNetTrainerPASeg``, the same
   with PA-Seg's mCRF and VM added, set by stage 1's flags ``--weight_gatedcrf`` ...), with
   ``--epochs`` × ``--iterations_per_epoch`` steps;
4. prediction of the inference cases with ``checkpoint_final.pth`` (nnU-Net's sliding window
   and mirroring), written as ``<case>.nii.gz`` on the image's grid.

Checkpoints are read only from the run folder and only weights-only (:func:`load_checkpoint`:
tensors, numbers and numpy scalars; a file holding other pickled objects is refused and nothing in
it runs), the latest one too before nnU-Net resumes from it.

Fold ``0`` (the default) is the split's own division: nnU-Net trains on the training cases and
validates on the validation cases, the cases PA-Seg's stage 1 learns from and selects on. Fold
``all`` trains on training and validation cases together (nnU-Net's usual final model).

Everything lives in the run folder, ``<model_dir>/nnUNet/``::

    nnUNet_raw/ nnUNet_preprocessed/ nnUNet_results/   nnU-Net's three folders (its environment
                                                        variables point here, for this run only)
    output_pred/<case>.nii.gz                           the predictions (scores.py --prediction_dir)
    budget.json                                         epochs, iterations, batch and patch size,
                                                        optimisation steps, training seconds
    nnunet_run.json                                     the run's arguments and finished steps

While nnU-Net runs, SIGTERM ends the process at once (``_default_sigterm``: nnU-Net's forked
pool workers must die on it); Ctrl-C as usual. A folder that holds a run is refused unless
``--resume`` (continue it: the arguments must be the same, paths that moved with the run folder
aside; training continues from nnU-Net's ``checkpoint_latest.pth``) or ``--overwrite`` (start
again). Data augmentation runs in the training process (``nnUNet_n_proc_DA=0``), so a run uses
the threads it is given (``OMP_NUM_THREADS``) and no worker processes; with one thread (the
ablation runner's default) nnU-Net's fingerprint, dataset check and preprocessing run in this
process too.

Example (after stage 0)::

    python experiments/nnunet_baseline.py --dataset_split ./splits/split_VS.csv \\
        --path_images ./data/VS/image_crop/ --image_postfix T2 \\
        --path_geodesic_labels ./data/VS/geodesic/weight0.5_threshold0.2/geodesic_label/ \\
        --model_dir ./models/nnunet_seeds --epochs 100 --iterations_per_epoch 250
    python utilities/scores.py --dataset_split ./splits/split_VS.csv --path_labels ./data/VS/label_crop/ \\
        --prediction_dir ./models/nnunet_seeds/nnUNet/output_pred
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from utilities.core.arguments import ArgumentParser

ROOT = Path(__file__).resolve().parents[1]

from data.export_nnunet import add_data_arguments, dataset_folder, export_nnunet, parse_data_arguments  # noqa: E402
from utilities.core.logs import LOGGER_NAME, setup_logger  # noqa: E402
from utilities.core.textdata import loads_json  # noqa: E402
from utilities.data.grid import listed, missing_paths  # noqa: E402
from utilities.data.io import load_torch, save_text  # noqa: E402
from utilities.data.layout import OUTPUT_PRED, below  # noqa: E402
from utilities.data.splits import read_split, subjects_of  # noqa: E402

__all__ = ["NETWORK", "TRAINERS", "TRAINERS_DIR", "STATE_NAME", "BUDGET_NAME", "run_folder", "load_checkpoint",
           "trained_model_folder", "build_parser", "main"]

logger = logging.getLogger(LOGGER_NAME)

#: The sub-folder of ``--model_dir`` that holds the nnU-Net run (the "network" of the ablation's tables).
NETWORK = "nnUNet"
#: ``--trainer`` -> the trainer class, in ``experiments/nnunet_trainers/<class>.py``.
TRAINERS = {"Budget": "nnUNetTrainerBudget", "PASeg": "nnUNetTrainerPASeg"}
TRAINERS_DIR = Path(__file__).resolve().parent / "nnunet_trainers"
PLANS = "nnUNetPlans"
STATE_NAME = "nnunet_run.json"
BUDGET_NAME = "budget.json"
_STEPS = ("exported", "preprocessed", "trained", "predicted")
#: Arguments that do not change what a run computes (not compared on --resume).
_FREE = {"resume", "overwrite", "device"}


def run_folder(model_dir: str | os.PathLike) -> Path:
    """``<model_dir>/nnUNet``: the folder of one nnU-Net run."""
    return Path(model_dir) / NETWORK


def _check_installed() -> None:
    try:
        import nnunetv2.training.nnUNetTrainer.nnUNetTrainer  # noqa: F401
    except ImportError as e:
        raise ValueError(f"nnU-Net v2 cannot train here ({e}); `make install` installs it with what its training "
                         "needs (requirements-nnunet.txt)") from None


def _set_environment(folder: Path, threads: int) -> dict[str, Path]:
    """nnU-Net's folders and settings for this run only (this process and its children)."""
    dirs = {name: folder / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for name, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(path)
    os.environ["nnUNet_extTrainer"] = str(TRAINERS_DIR)
    os.environ["PASEG_NNUNET_TRAINERS"] = str(TRAINERS_DIR)   # the installed lookup module then uses these trainers
    os.environ["nnUNet_def_n_proc"] = str(threads)
    os.environ["nnUNet_compile"] = "false"
    return dirs


@contextlib.contextmanager
def _default_sigterm() -> Iterator[None]:
    """SIGTERM's default action (the process ends) while nnU-Net runs, at the OS level, so that
    the processes it forks inherit it. nnU-Net forks pools from this process (e.g. a pool of 12
    to list its files) and ends them with ``Pool.terminate`` (SIGTERM); a forked worker that
    deadlocks before Python runs in it (a fork of a process with threads) ignores a Python-level
    handler such as ``run_main``'s, and the run then waits forever (seen twice on the demo data).
    Killed, a run continues with ``--resume``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _read_state(folder: Path) -> dict[str, Any] | None:
    """The run's record; ``None`` when missing or unreadable (a key repeated in it is a one-line
    error naming it)."""
    try:
        return loads_json((folder / STATE_NAME).read_text(encoding="utf-8"), f"run record {folder / STATE_NAME}")
    except (OSError, json.JSONDecodeError):
        return None


def _read_json(path: Path) -> Any:
    """A JSON file of the run folder (nnU-Net's plans and dataset description, which users edit,
    and ``budget.json``), through :func:`utilities.core.textdata.loads_json` (a repeated key refused);
    one-line errors naming it."""
    try:
        return loads_json(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: the run folder is incomplete; continue it with --resume or "
                                "start again with --overwrite") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore it, or start again with --overwrite") from None


def _checkpoint_globals() -> list[Any]:
    """What nnU-Net's ``checkpoint_*.pth`` holds besides tensors, containers, numbers and
    ``torch.device`` (which torch allows): numpy scalars (its logged losses and Dice) and their
    dtypes. Loaded with ``weights_only=True`` and only these allowed, a file cannot run code."""
    import numpy as np
    from numpy._core.multiarray import scalar

    kinds = [type(np.dtype(t)) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                         np.uint32, np.uint64, np.float16, np.float32, np.float64)]
    # a checkpoint written under numpy 1 names the scalar by its old module
    return [np.dtype, scalar, (scalar, "numpy.core.multiarray.scalar"), *kinds]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """An nnU-Net checkpoint read with ``weights_only=True`` (:func:`utilities.data.io.load_torch`, with
    the numpy types nnU-Net's logs need allowed): one that holds any other pickled object is a
    one-line error naming the file and the object, and nothing in it runs."""
    import torch

    with torch.serialization.safe_globals(_checkpoint_globals()):
        checkpoint = load_torch(path, advice="an nnU-Net checkpoint holds tensors, numbers and numpy scalars only: "
                                             "train the run again (--overwrite)")
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise ValueError(f"{path} is not an nnU-Net checkpoint (no network_weights); train the run again "
                         "(--overwrite)")
    return checkpoint


def trained_model_folder(folder: Path, budget: dict[str, Any]) -> Path:
    """The trained model's folder ``budget.json`` names, refused unless it lies inside the run
    folder: the run predicts with the model it trained, never with a file elsewhere on the disk."""
    value = budget.get("model_folder") if isinstance(budget, dict) else None
    where = folder / BUDGET_NAME
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: model_folder must be a folder name, got {value!r}; train the run again "
                         "(--overwrite)")
    path = (folder / value).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise ValueError(f"{where}: model_folder {value!r} lies outside the run folder {folder}; the run predicts "
                         "only with the model it trained there (restore budget.json, or train again with "
                         "--overwrite)")
    return path


def _save_state(folder: Path, state: dict[str, Any]) -> None:
    save_text(json.dumps(state, indent=1) + "\n", folder / STATE_NAME)


def _prepare_folder(args: argparse.Namespace, record: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The run's state: fresh, resumed (same arguments; one a run's record lacks had its
    ``defaults`` value; a run folder moved with the tree around it, :func:`_same`) or started
    again; refuses the rest. A record with no step done (a start refused on its inputs, e.g. a
    mistyped folder) is no run: it is replaced."""
    folder = run_folder(args.model_dir)
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite exclude each other: pass one")
    held = folder.is_dir() and any(folder.iterdir())
    state = _read_state(folder) if held else None
    nothing_done = state is not None and not state.get("done")   # a start refused on its inputs: no run
    if held and (args.overwrite or nothing_done):
        shutil.rmtree(folder)
        held, state = False, None
        if nothing_done and args.resume:
            logger.info("--resume: %s holds a run that never finished a step; starting it", folder)
    if held and not args.resume:
        raise FileExistsError(f"--model_dir {args.model_dir}: {folder} holds an nnU-Net run; pass --resume to "
                              "continue it or --overwrite to start again")
    if args.resume and not held and not nothing_done:
        raise FileNotFoundError(f"--resume: {folder} holds no nnU-Net run to continue; drop --resume")
    if state is not None:
        old = {**defaults, **state.get("arguments", {})}
        moved = _moved_roots(old.get("model_dir"), record.get("model_dir"))
        changed = [f"--{k} {old.get(k)!r} -> {v!r}" for k, v in record.items() if not _same(v, old.get(k), moved)]
        if changed:
            raise ValueError(f"--resume: {folder} was started with other arguments ({', '.join(changed)}); "
                             "pass them as they were, or --overwrite to start again")
        if moved is not None:   # the record names where the run lies now
            logger.info("--resume: the run folder moved from %s; its record now names %s", old.get("model_dir"),
                        record.get("model_dir"))
            state["arguments"] = {**state.get("arguments", {}), **record}
        return state
    return {"arguments": record, "done": []}


def _moved_roots(recorded: Any, now: Any) -> tuple[str, str] | None:
    """Where a moved run folder's tree was and is: ``recorded`` and ``now`` (its ``--model_dir``
    then and now) less the trailing folders they share (``/a/abl/f1/runs/x/seed0`` and
    ``/b/abl2/f1/runs/x/seed0``: ``/a/abl`` and ``/b/abl2``); ``None`` when it did not move."""
    if not isinstance(recorded, str) or not isinstance(now, str):
        return None
    then_parts, now_parts = Path(os.path.normpath(recorded)).parts, Path(os.path.normpath(now)).parts
    if then_parts == now_parts:
        return None
    shared = 0
    while (shared < min(len(then_parts), len(now_parts)) - 1
           and then_parts[len(then_parts) - 1 - shared] == now_parts[len(now_parts) - 1 - shared]):
        shared += 1
    return (str(Path(*then_parts[:len(then_parts) - shared])), str(Path(*now_parts[:len(now_parts) - shared])))


def _same(value: Any, recorded: Any, moved: tuple[str, str] | None) -> bool:
    """Whether a resumed run's argument is the one it recorded: the same value, or, for a path
    inside the tree its run folder moved with (:func:`_moved_roots`), that path where it lies now.
    A resumed run may name its inputs either way: moved with the folder (an ablation folder moved
    whole) or where they were."""
    if value == recorded:
        return True
    if moved is None or not isinstance(value, str) or not isinstance(recorded, str):
        return False
    then, now = moved
    rest = below(os.path.normpath(recorded), then)
    return rest is not None and os.path.normpath(value) == os.path.normpath(now.rstrip("/") + rest)


def _mark(folder: Path, state: dict[str, Any], step: str) -> None:
    state["done"] = [s for s in _STEPS if s in state["done"] or s == step]
    _save_state(folder, state)


class _SerialPool:
    """The part of ``multiprocessing.Pool`` that nnU-Net's fingerprint, dataset check and
    preprocessing use, run in this process: with one thread a spawned worker only adds its start
    (it imports torch and nnU-Net again, 3-4 CPU-seconds, three times per run)."""

    class _Done:
        def __init__(self, value: Any) -> None:
            self.value = value

        def ready(self) -> bool:
            return True

        def get(self, timeout: float | None = None) -> Any:
            return self.value

    class _Alive:
        def is_alive(self) -> bool:
            return True

    def __init__(self, processes: int | None = None) -> None:
        self._pool = [self._Alive()]

    def __enter__(self) -> _SerialPool:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def starmap(self, func: Any, iterable: Any) -> list[Any]:
        return [func(*args) for args in iterable]

    def starmap_async(self, func: Any, iterable: Any) -> _SerialPool._Done:
        return self._Done(self.starmap(func, iterable))


@contextlib.contextmanager
def _pools_in_process(enabled: bool) -> Iterator[None]:
    """While ``enabled``: the ``spawn`` pools of nnU-Net's planning modules run in this process
    (:class:`_SerialPool`); its other pools are untouched."""
    if not enabled:
        yield
        return
    import multiprocessing
    import types

    from nnunetv2.experiment_planning import verify_dataset_integrity
    from nnunetv2.experiment_planning.dataset_fingerprint import fingerprint_extractor
    from nnunetv2.preprocessing.preprocessors import default_preprocessor

    def get_context(method: str | None = None) -> Any:
        return types.SimpleNamespace(Pool=_SerialPool) if method == "spawn" else multiprocessing.get_context(method)

    shim = types.SimpleNamespace(get_context=get_context)
    modules = (verify_dataset_integrity, fingerprint_extractor, default_preprocessor)
    saved = [m.multiprocessing for m in modules]   # type: ignore[attr-defined]
    for m in modules:
        m.multiprocessing = shim   # type: ignore[attr-defined]
    try:
        yield
    finally:
        for m, original in zip(modules, saved):
            m.multiprocessing = original   # type: ignore[attr-defined]


def _preprocess(dataset_id: int, configuration: str, threads: int, raw: Path, preprocessed: Path) -> None:
    """nnU-Net's fingerprint, plans and preprocessing, with ``threads`` worker processes (none,
    in this process, for one thread)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name

    os.environ["nnUNet_n_proc_DA"] = str(threads)   # the planner sets torch's threads from it (0 is refused)
    with _pools_in_process(threads == 1):
        extract_fingerprints([dataset_id], num_processes=threads, check_dataset_integrity=True, clean=True,
                             verbose=False, show_progress_bar=False)
        plan_experiments([dataset_id])
        preprocess([dataset_id], PLANS, configurations=(configuration,), num_processes=(threads,), verbose=False,
                   show_progress_bar=False)
    name = convert_id_to_dataset_name(dataset_id)
    shutil.copyfile(raw / name / "splits_final.json", preprocessed / name / "splits_final.json")


def _trainers_module(name: str) -> Any:
    """A module of ``experiments/nnunet_trainers`` by its name, as nnU-Net imports it (that folder
    on ``sys.path``). nnU-Net's own lookup by name imports every trainer module nnU-Net ships, some
    of which need timm and torchvision; this does not."""
    if str(TRAINERS_DIR) not in sys.path:
        sys.path.insert(0, str(TRAINERS_DIR))
    return importlib.import_module(name)


def _trainer_class(trainer: str) -> Any:
    """The class of ``--trainer``."""
    return getattr(_trainers_module(TRAINERS[trainer]), TRAINERS[trainer])


def _trainer(folder: Path, name: str, args: argparse.Namespace, device: Any) -> Any:
    """nnU-Net's trainer as its ``nnUNetv2_train`` builds it (``--c`` when a latest checkpoint exists)."""
    base = folder / "nnUNet_preprocessed" / name
    output = (folder / "nnUNet_results" / name / f"{TRAINERS[args.trainer]}__{PLANS}__{args.configuration}"
              / f"fold_{args.fold}")
    plans = _read_json(base / f"{PLANS}.json")
    plans["continue_training"] = (output / "checkpoint_latest.pth").is_file()
    return _trainer_class(args.trainer)(plans=plans, configuration=args.configuration, fold=args.fold,
                                        dataset_json=_read_json(base / "dataset.json"), device=device)


def _regularisers(args: argparse.Namespace) -> Any:
    """``--trainer PASeg``: the regulariser settings of its flags (stage 1's defaults for those not
    given); ``None`` for ``Budget``, which refuses them."""
    variables = _trainers_module("paseg_nnunet_settings").REGULARISER_VARIABLES
    given = {v: getattr(args, v.flag[2:]) for v in variables}
    if args.trainer != "PASeg":
        for v, value in given.items():
            if value is not None:
                raise ValueError(f"{v.flag} {value}: PA-Seg's regularisers need --trainer PASeg")
        return None
    values = {v.field: v.default if value is None else v.parse(str(value), v.flag) for v, value in given.items()}
    return _trainers_module("paseg_nnunet_settings").RegulariserSettings(**values)


def _train(args: argparse.Namespace, device: Any, folder: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    from utilities.core.runtime import seed_everything

    os.environ["nnUNet_n_proc_DA"] = "0"   # augmentation in this process: no worker processes
    os.environ["PASEG_NNUNET_EPOCHS"] = str(args.epochs)
    os.environ["PASEG_NNUNET_ITERATIONS"] = str(args.iterations_per_epoch)
    os.environ["PASEG_NNUNET_VAL_ITERATIONS"] = str(args.val_iterations)
    regularisers = _regularisers(args)
    if regularisers is not None:
        os.environ.update(regularisers.environment())
    seed_everything(args.seed)
    name = dataset_folder(".", args.dataset_id, args.dataset_name).name
    trainer = _trainer(folder, name, args, device)
    final = Path(trainer.output_folder) / "checkpoint_final.pth"
    latest = Path(trainer.output_folder) / "checkpoint_latest.pth"
    t0 = time.time()
    if not final.is_file():
        if latest.is_file():
            logger.info("nnU-Net: continuing from %s", latest)
            load_checkpoint(latest)   # refused here unless weights-only (nnU-Net reads it with pickle)
            trainer.load_checkpoint(str(latest))
        trainer.run_training()
    if not trainer.was_initialized:
        trainer.initialize()
    cm = trainer.configuration_manager
    budget = {"epochs": int(trainer.num_epochs), "iterations_per_epoch": int(trainer.num_iterations_per_epoch),
              "val_iterations_per_epoch": int(trainer.num_val_iterations_per_epoch),
              "steps": int(trainer.num_epochs * trainer.num_iterations_per_epoch),
              "batch_size": int(cm.batch_size), "patch_size": [int(s) for s in cm.patch_size],
              "spacing": [float(s) for s in np.asarray(cm.spacing)], "configuration": args.configuration,
              "fold": str(args.fold), "labels": args.labels, "trainer": TRAINERS[args.trainer],
              "training_seconds": round(time.time() - t0, 1), "threads": torch.get_num_threads(),
              "model_folder": str(Path(trainer.output_folder_base).relative_to(folder))}
    if regularisers is not None:
        budget["regularisers"] = regularisers.as_dict()
    return budget


def _predictor(args: argparse.Namespace, device: Any, model_folder: Path) -> Any:
    """nnU-Net's predictor for ``checkpoint_final.pth`` of the fold (what its
    ``initialize_from_trained_model_folder`` does, with our trainer class given, not looked up)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    checkpoint = load_checkpoint(model_folder / f"fold_{args.fold}" / "checkpoint_final.pth")
    plans = PlansManager(_read_json(model_folder / "plans.json"))
    dataset_json = _read_json(model_folder / "dataset.json")
    configuration = plans.get_configuration(checkpoint["init_args"]["configuration"])
    network = _trainer_class(args.trainer).build_network_architecture(
        plans, configuration, determine_num_input_channels(plans, configuration, dataset_json),
        plans.get_label_manager(dataset_json).num_segmentation_heads, enable_deep_supervision=False)
    network.load_state_dict(checkpoint["network_weights"])
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=not args.disable_tta,
                                perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(network, plans, configuration, [checkpoint["network_weights"]], dataset_json,
                                    checkpoint["trainer_name"], checkpoint.get("inference_allowed_mirroring_axes"))
    return predictor


def _predict(args: argparse.Namespace, device: Any, folder: Path, model_folder: Path) -> int:
    raw = folder / "nnUNet_raw" / dataset_folder(".", args.dataset_id, args.dataset_name).name / "imagesTs"
    cases = subjects_of(read_split(args.dataset_split), "inference")
    predictor = _predictor(args, device, model_folder)
    out, tmp = folder / OUTPUT_PRED, folder / f".{OUTPUT_PRED}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    predictor.predict_from_files_sequential([[str(raw / f"{c}_0000.nii.gz")] for c in cases],
                                            [str(tmp / c) for c in cases], save_probabilities=False, overwrite=True)
    missing = missing_paths(tmp / f"{c}.nii.gz" for c in cases)
    if missing:
        raise RuntimeError(f"nnU-Net wrote no prediction for {len(missing)} case(s): {listed(missing)}")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)   # the folder appears whole or not at all
    return len(cases)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_arguments(p)   # the export's flags: split, images, seeds or full labels
    p.add_argument("--model_dir", default="./models/nnunet/",
                   help="run folder; nnU-Net's files go to <model_dir>/nnUNet/")
    p.add_argument("--dataset_id", type=int, default=501, help="nnU-Net dataset ID (1..999), in this run's folders")
    p.add_argument("--dataset_name", default="PASeg", help="nnU-Net dataset name (Dataset<ID>_<name>)")
    p.add_argument("--configuration", default="3d_fullres", choices=["3d_fullres", "2d"],
                   help="nnU-Net configuration to plan, train and predict")
    p.add_argument("--fold", default="0", choices=["0", "all"],
                   help="0: train on the split's training cases, validate on its validation cases; all: train on both")
    p.add_argument("--trainer", default="Budget", choices=sorted(TRAINERS),
                   help="Budget: nnU-Net's trainer (nnUNetTrainerBudget); PASeg: the same with PA-Seg's mCRF and VM "
                        "on its output (nnUNetTrainerPASeg, set by the flags below)")
    p.add_argument("--epochs", type=int, default=1000, help="training epochs (nnU-Net: 1000)")
    p.add_argument("--iterations_per_epoch", type=int, default=250, help="training iterations per epoch (nnU-Net: 250)")
    p.add_argument("--val_iterations", type=int, default=50, help="validation iterations per epoch (nnU-Net: 50)")
    p.add_argument("--disable_tta", action="store_true", help="predict without nnU-Net's mirroring")
    p.add_argument("--seed", type=int, default=0, help="seeds Python, NumPy and torch before training")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:k]")
    _add_regulariser_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --model_dir (same arguments)")
    p.add_argument("--overwrite", action="store_true", help="delete the run in --model_dir and start again")
    return p


def _add_regulariser_arguments(p: argparse.ArgumentParser) -> None:
    """Stage 1's flags of the regularisers, for ``--trainer PASeg`` (``paseg_nnunet_settings.py``)."""
    group = p.add_argument_group("PA-Seg's regularisers (--trainer PASeg; not given: stage 1's default)")
    for v in _trainers_module("paseg_nnunet_settings").REGULARISER_VARIABLES:
        group.add_argument(v.flag, type=v.kind, default=None, choices=v.choices or None,
                           help=f"{v.help} (not given: {v.default})%(default).0s")   # (.0s: no "default: None")


def main(argv: Sequence[str] | None = None) -> Path:
    """Run every step not yet done; returns the predictions' folder."""
    parser = build_parser()
    args = parse_data_arguments(parser, argv)
    for flag in ("epochs", "iterations_per_epoch", "val_iterations"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    args.fold = 0 if args.fold == "0" else "all"
    if args.resume and not args.overwrite:   # the flags not typed again continue as the run recorded them
        from utilities.workflow.cli import take_recorded

        recorded = (_read_state(run_folder(args.model_dir)) or {}).get("arguments")
        if isinstance(recorded, dict):
            take_recorded(parser, argv, args, recorded, f"--resume {run_folder(args.model_dir) / STATE_NAME}", _FREE)
    setup_logger(None)
    _check_installed()
    from utilities.core.runtime import resolve_device

    device = resolve_device(args.device)
    threads = max(1, int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or os.cpu_count() or 1)
    record = {k: v for k, v in vars(args).items() if k not in _FREE}
    _regularisers(args)   # refuse a bad setting before anything runs
    state = _prepare_folder(args, record, {k: parser.get_default(k) for k in record})
    folder = run_folder(args.model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    _save_state(folder, state)
    dirs = _set_environment(folder, threads)
    import torch

    torch.set_num_threads(threads)
    with _default_sigterm():
        _run_steps(args, state, folder, dirs, device, threads)
    return folder / OUTPUT_PRED


def _run_steps(args: argparse.Namespace, state: dict[str, Any], folder: Path, dirs: dict[str, Path], device: Any,
               threads: int) -> None:
    """Every step not yet done: export, plan and preprocess, train, predict."""
    name = dataset_folder(".", args.dataset_id, args.dataset_name).name
    if "exported" not in state["done"]:
        export_nnunet(args.dataset_split, args.path_images, args.image_postfix, dirs["nnUNet_raw"], args.dataset_id,
                      args.dataset_name, args.labels, args.path_geodesic_labels, args.geodesic_label_postfix,
                      args.path_labels, args.label_postfix, overwrite=(dirs["nnUNet_raw"] / name).exists())
        _mark(folder, state, "exported")
    if "preprocessed" not in state["done"]:
        logger.info("nnU-Net: fingerprint, plans and preprocessing (%s)", args.configuration)
        _preprocess(args.dataset_id, args.configuration, threads, dirs["nnUNet_raw"], dirs["nnUNet_preprocessed"])
        _mark(folder, state, "preprocessed")
    if "trained" not in state["done"]:
        logger.info("nnU-Net: training fold %s, %d epochs x %d iterations", args.fold, args.epochs,
                    args.iterations_per_epoch)
        budget = _train(args, device, folder)
        save_text(json.dumps(budget, indent=1) + "\n", folder / BUDGET_NAME)
        _mark(folder, state, "trained")
    budget = _read_json(folder / BUDGET_NAME)
    if "predicted" not in state["done"]:
        n = _predict(args, device, folder, trained_model_folder(folder, budget))
        _mark(folder, state, "predicted")
        logger.info("nnU-Net: %d prediction(s) in %s", n, folder / OUTPUT_PRED)


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
