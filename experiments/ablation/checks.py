"""Checks before anything runs: every command's flags parsed by its script's own parser, and
every ``epoch_inf`` a checkpoint its training writes (a typo in a config would otherwise surface
after hours of training). A refusal is one line naming the config, the variant and the flag."""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .commands import Run, inference_commands
from .config import Config
from .scripts import PARSERS, SCM_SCRIPT, STAGE1_SCRIPT, planned_args, script_parser

__all__ = ["check_flags", "check_runs", "written_checkpoints", "check_epoch_inf"]


def _refusal(command: Sequence[str]) -> str | None:
    """What the parser of the script ``command[1]`` says against the command's flags (``None``:
    it accepts them). Flags must be spelled out: an abbreviation that argparse would expand
    (``--max_epoch``) escapes the runner's own checks (the base/variant merge and the flags it
    sets itself), so it is refused."""
    import contextlib
    import io

    parser = script_parser(Path(command[1]).name)
    parser.allow_abbrev = False
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(list(command[2:]))
    except SystemExit as e:
        if e.code:
            return getattr(parser, "last_error", None) or f"exit status {e.code}"
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
        if key in seen or Path(command[1]).name not in PARSERS:
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
        for command in ([run.train] if run.variant.kind != "seeds" else []) + inference_commands(cfg, run, device,
                                                                                                  python):
            script = Path(command[1]).name
            if tuple(command[1:]) in seen or script not in PARSERS:
                continue
            seen.add(tuple(command[1:]))
            _refuse_false_values(cfg, run, script)
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



def _refuse_false_values(cfg: Config, run: Run, script: str) -> None:
    """``false`` on a flag that takes a value leaves the flag out, so the script's default applies
    (``"--weight_gatedcrf": false`` would train with the mCRF at full weight): refused, naming
    where the config sets it. On a switch, ``false`` is the switch off, as meant."""
    actions = {option: action for action in script_parser(script)._actions for option in action.option_strings}
    for where, flags in _flag_origins(cfg, run, script):
        for flag, value in flags.items():
            action = actions.get(flag)
            if value is False and action is not None and action.nargs != 0:
                raise ValueError(f"config {cfg.path}: variant {run.variant.name!r}: {flag} false from {where}: "
                                 f"{flag} takes a value, and false leaves it out (the script's default then "
                                 "applies); give the value (e.g. 0), or null to leave it out on purpose")


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


