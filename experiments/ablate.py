"""Multi-seed ablation runner: stage 0 once, then every (variant, training seed) through the real scripts.

A JSON config names the dataset, a base set of flags and named variants (flag overrides); this
runs the geodesic expansion once, then for each variant and training seed the stage-1 or SCM
training script, ``inference.py`` on the split's inference cases and ``utilities/scores.py``, each
as a subprocess (``python <script> <flags>``, so any flag the scripts accept can be ablated), and
writes ``table.md``, ``table.csv``, ``per_case.csv`` and ``boxplot.png`` under ``--output_dir``.

Finished runs are skipped (``<run>/ablate_done.json``, written atomically after scoring); a killed
run is resumed (``--resume`` when its folder holds ``CP_latest*.pth``, ``--overwrite`` when it
holds checkpoints but no latest one). Config schema: see ``experiments/configs/README.md``.

This file is the command line; the runner lives in the package ``experiments/ablation/`` (config
and schema, commands, checks, markers, execution, summary).

Example::

    python experiments/ablate.py --config experiments/configs/demo.json --output_dir ./ablation/demo --jobs 2
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from utilities.core.arguments import ArgumentParser
from utilities.data.io import check_writable_dir

# the repository root: the packages above come from it (not from another checkout's `make install`), and
# ROOT locates the training scripts the runner starts
ROOT = Path(__file__).resolve().parents[1]

from experiments.ablation.checks import check_epoch_inf, check_flags, written_checkpoints  # noqa: E402
from experiments.ablation.commands import Run, all_commands, plan_runs  # noqa: E402
from experiments.ablation.config import KINDS, Config, SeedsAction, Variant, load_config  # noqa: E402
from experiments.ablation.execution import run_ablation  # noqa: E402
from experiments.ablation.markers import DONE_NAME, LOG_NAME, TRAINED_NAME, train_mode  # noqa: E402
from experiments.ablation.scripts import planned_args, script_parser  # noqa: E402
from experiments.ablation.summary import (  # noqa: E402
    budget_text,
    health_table,
    run_budget,
    run_health,
    summarize,
    table_markdown,
    wilcoxon_p,
)
from utilities.core.jobs import stop_all  # noqa: E402

# the runner's API, as the scripts and tests that import this file read it (its modules: experiments/ablation/)
__all__ = ["KINDS", "Config", "Variant", "Run", "load_config", "plan_runs", "run_ablation", "summarize",
           "wilcoxon_p", "main", "run", "build_parser", "ROOT", "check_flags", "check_epoch_inf", "written_checkpoints",
           "planned_args", "budget_text", "run_budget", "run_health", "health_table", "table_markdown", "train_mode",
           "DONE_NAME", "TRAINED_NAME", "LOG_NAME", "script_parser", "all_commands"]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="JSON config (see experiments/configs/README.md)")
    p.add_argument("--output_dir", default=None, help="where runs and tables go (default ./ablation/<config name>)")
    p.add_argument("--seeds", nargs="+", action=SeedsAction, default=None,
                   help="training seeds overriding the config's, e.g. 0,1,2 (or 0 1 2)")
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
    try:   # before anything runs (a dataset.prepare, stage 0)
        check_writable_dir(output_dir)
    except OSError as e:
        raise ValueError(f"--output_dir: {e}") from None
    return run_ablation(cfg, output_dir, args.seeds, args.variants, args.device, args.threads, args.jobs,
                        args.dry_run, finished_only=args.finished_only)


def run(argv: list[str] | None = None) -> int:
    """The command line: ``main`` with one ``error:`` line (exit 2) for a user error; Ctrl-C
    (exit 130) and SIGTERM (a scheduler's time limit, exit 143) stop the running trainings
    (SIGTERM: they save and exit as on their own SIGTERM) and say how to resume."""
    import signal

    from utilities.core.errors import USER_ERRORS
    from utilities.core.runtime import Terminated, raise_terminated
    from utilities.workflow.cli import EXIT_INTERRUPTED, EXIT_TERMINATED

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        main(argv)
        return 0
    except (*USER_ERRORS, RuntimeError) as error:   # the project's user errors (a write that fails included)
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
