"""Running an ablation: the dataset's preparation, stage 0 once, then every unfinished run
(training as a subprocess, inference and scores as subprocesses or in this process), ``jobs`` at
a time with the SCM runs after the stage-1 runs they start from, and the table at the end
(:func:`run_ablation`). What is done is recorded by :mod:`.markers`; a run that finished is skipped."""
from __future__ import annotations

import concurrent.futures as cf
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from utilities.core.jobs import run_logged, stop_all, thread_env
from utilities.core.logs import close_handlers
from utilities.data.layout import RunLayout
from utilities.method.defaults import SEED_POSTFIX

from .checks import check_epoch_inf, check_runs
from .commands import Run, geodesic_dir, inference_commands, plan_runs, stage0_command
from .config import Config
from .markers import (
    ABLATION_KEY,
    DONE_NAME,
    LOG_NAME,
    STARTED_NAME,
    TRAINED_NAME,
    check_split,
    finished,
    read_json,
    recorded_changes,
    recorded_folder,
    relocated,
    run_marker,
    same_run,
    split_digest,
    stale_evaluation,
    train_mode,
    write_json,
)
from .scripts import ROOT
from .summary import summarize, write_outputs

__all__ = ["run_ablation", "call_in_process", "write_seed_predictions"]


def _execute(command: list[str], log: Path, env: dict[str, str]) -> None:
    run_logged(command, log, env, cwd=ROOT)


def call_in_process(command: list[str], log: Path, threads: int) -> None:
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
            close_handlers()


def write_seed_predictions(cfg: Config, run: Run, seeds_dir: Path) -> None:
    """The expanded foreground (label 1) of each inference case as that case's prediction; every
    label is read by the one reader (:func:`utilities.data.io.read_image`) before the first is written."""
    import SimpleITK as sitk

    from utilities.data.grid import subject_path
    from utilities.data.io import read_image, write_like
    from utilities.data.splits import read_split, subjects_of

    cases = subjects_of(read_split(cfg.dataset["split_file"]), "inference")
    labels = {case: read_image(subject_path(seeds_dir, case, SEED_POSTFIX), "expanded-seed label")
              for case in cases}
    for case, ref in labels.items():
        fg = (sitk.GetArrayFromImage(ref) == 1).astype(np.uint8)
        write_like(fg, ref, RunLayout(run.folder, run.network).prediction(case, cfg.dataset["image_postfix"]))


def _check_sources(run: Run) -> None:
    """An SCM run starts from its stage-1 runs' ``CP_best.pth``: a finished stage-1 run without it
    (restored from a record, ``experiments/records.py``) is named before the SCM training starts."""
    for source in run.needs:
        best = RunLayout(source.folder, source.network).checkpoint("best")
        if finished(source) and not best.is_file():
            raise ValueError(f"the stage-1 run {source.folder} that {run.key} starts from is finished but has no "
                             f"{best.name} (a run restored from a record keeps no checkpoint); delete that folder "
                             "to train it again")


def _do_run(cfg: Config, run: Run, device: str, python: str, env: dict[str, str], seeds_dir: Path,
            in_process: int = 0) -> str:
    """Train (or resume), infer, score, then write the done marker; returns what was done."""
    log = run.folder / LOG_NAME
    t0 = time.time()
    done = []
    if run.variant.kind != "seeds":
        trained = read_json(run.folder / TRAINED_NAME)
        check_split(trained or read_json(run.folder / STARTED_NAME), run)
        if trained is None or not same_run(trained, run):
            mode = train_mode(run.folder)
            started = trained or read_json(run.folder / STARTED_NAME)
            if mode and started is not None and not same_run(started, run):
                changed = recorded_changes(started, run)
                raise ValueError(f"run folder {run.folder} holds a {'trained' if trained else 'killed'} run made with "
                                 f"other flags than the config now gives ({changed}); "
                                 "it cannot be resumed with them: delete that folder to train it again, or restore "
                                 "the config")
            if run.variant.kind == "scm":
                _check_sources(run)
            split = split_digest(run.split_file)   # as it was when the training started
            write_json(run_marker(run, split), run.folder / STARTED_NAME)
            _execute(run.train + ([mode] if mode else []), log, env)
            write_json(run_marker(run, split), run.folder / TRAINED_NAME)
            done.append("trained" + (f" ({mode})" if mode else ""))
    else:
        write_seed_predictions(cfg, run, seeds_dir)
    for command in inference_commands(cfg, run, device, python):
        if in_process:
            call_in_process(command, log, in_process)
        else:
            _execute(command, log, env)
    scores = run.results
    write_json(run_marker(run, split_digest(run.split_file), variant=run.variant.name, seed=run.seed,
                          network=run.network, scores=str(scores), seconds=round(time.time() - t0, 1),
                          evaluation=run.evaluation), run.folder / DONE_NAME)
    return ", ".join(done + ["inferred, scored"]) + f" in {time.time() - t0:.0f} s"


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
        _print_plan(cfg, runs, stage0, output_dir, seeds_dir, device, python)
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
    note = _selection_note(cfg, names, seeds)
    write_outputs(cfg, table, per_case, output_dir, note=note)
    if note:
        print(note, flush=True)
    return table


def _selection_note(cfg: Config, names: Sequence[str], seeds: Sequence[int]) -> str:
    """A line for a table of fewer variants or other seeds than the config's (empty for the config's own)."""
    if set(names) == set(cfg.variants) and tuple(seeds) == tuple(cfg.seeds):
        return ""
    return (f"This table holds the variants {', '.join(names)} and the training seeds {', '.join(map(str, seeds))} "
            f"that its command selected (the config: {', '.join(cfg.variants)}; seeds "
            f"{', '.join(map(str, cfg.seeds))}); without --variants and --seeds the runner writes the whole ablation.")


def _finished_table(cfg: Config, runs: Sequence[Run], names: Sequence[str], output_dir: Path) -> pd.DataFrame:
    """``--finished_only``: the table of the finished runs, with the missing ones named."""
    wanted = [r for r in runs if r.in_table]
    done = [r for r in wanted if finished(r)]
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


def _print_plan(cfg: Config, runs: list[Run], stage0: list[str], output_dir: Path, seeds_dir: Path, device: str,
                python: str) -> None:
    """``--dry_run``: every command, in order, without running any."""
    if not cfg.dataset["split_file"].is_file() and cfg.dataset["prepare"]:
        print(f"[prepare] {shlex.join([python, *cfg.dataset['prepare']])}")
    if _stage0_done(stage0, output_dir):
        print("[stage 0] done, would be skipped")
    else:
        print(f"[stage 0] {shlex.join(stage0)}")
    for i, run in enumerate(runs, 1):
        try:
            done = finished(run)
        except ValueError as e:   # what the real run refuses
            print(f"[run {i}/{len(runs)}] {run.key}: would FAIL: {e}")
            continue
        if done:
            print(f"[run {i}/{len(runs)}] {run.key}: done, would be skipped")
            continue
        stale = stale_evaluation(run)
        print(f"[run {i}/{len(runs)}] {run.key}"
              + (f": finished with other inference or scoring settings ({stale}); would be inferred and scored again"
                 if stale else ""))
        if run.variant.kind == "seeds":
            print(f"  (expanded seeds of {seeds_dir} written as predictions)")
        elif not stale:   # a finished training is not run again
            mode = train_mode(run.folder)
            print("  " + shlex.join(run.train + ([mode] if mode else [])))
        for command in inference_commands(cfg, run, device, python):
            print("  " + shlex.join(command))


def _run_stage0(cfg: Config, stage0: list[str], output_dir: Path, env: dict[str, str]) -> None:
    """The geodesic expansion, unless the same command already finished in this folder."""
    if not _stage0_done(stage0, output_dir):
        print(f"[stage 0] geodesic expansion ({cfg.dataset['geodesic_style']} style)", flush=True)
        _execute(stage0, output_dir / "geodesic" / LOG_NAME, env)
        write_json({"command": stage0[1:], ABLATION_KEY: str(output_dir)}, _stage0_marker(output_dir))
    else:
        print("[stage 0] done, skipped", flush=True)


def _stage0_marker(output_dir: Path) -> Path:
    return output_dir / "geodesic" / DONE_NAME


def _stage0_done(stage0: list[str], output_dir: Path) -> bool:
    """Whether the same stage-0 command already finished in ``output_dir`` (the real run skips it)."""
    done = read_json(_stage0_marker(output_dir))
    if done is None or not isinstance(done.get("command"), list):
        return False
    return (relocated(done["command"], recorded_folder(done, str(output_dir)))
            == relocated(stage0[1:], str(output_dir)))


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
        if finished(run):
            print(f"[run {i}/{total}] {run.key}: done, skipped", flush=True)
            return
        stale = stale_evaluation(run)
        if stale is not None:
            print(f"[run {i}/{total}] {run.key}: finished with other inference or scoring settings ({stale}); "
                  "inferred and scored again", flush=True)
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
    # every subject's image, label and annotation (stage 0 expands every case; every phase is scored
    # or validated against its label), named by the config keys that set them
    from utilities.data.loading import ImageSource, check_files

    sources = [ImageSource(key, d[key], d[postfix], key != "images", what, f"dataset.{key}/dataset.{postfix}")
               for key, postfix, what in (("images", "image_postfix", "image"), ("labels", "label_postfix", "label"),
                                          ("annotations", "annotation_postfix", "7-point annotation"))]
    try:
        check_files(d["split_file"], [(None, sources)])
    except (FileNotFoundError, ValueError) as e:
        raise FileNotFoundError(f"config {cfg.path}: {e}") from None

