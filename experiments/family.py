"""The dataset family experiment: for each family seed, generate the member, plan it, and run
the ablation runner on it with the plan's flags; then one summary table over the members.

Per member (``<output_dir>/f<seed>/``): the data (``data/``), ``plan.json`` (plan.py's rules on
the training cases, with this experiment's compute budget), ``ablation.json`` (the config
handed to ``experiments/ablate.py``) and the ablation's outputs (``table.md``, ``health.csv``,
...). The variants, all with the plan's optimiser, class-balanced CE and schedule:

* ``seeds``: the expanded seeds scored as predictions;
* ``seeds_only_plan``: partial DiceCE alone (mCRF and VM off), the fair baseline;
* ``stage1_plan``: stage 1 with the plan's flags;
* ``stage1_recipe``: the earlier recommended recipe as a user applied it (the plan's patch, the
  mCRF grid halved in plane, ramp-up 10 % of the run per epoch, no class balance, no warm-up);
* ``full_plan``: full supervision with the plan's flags (mCRF and VM off);
* ``scm_plan``: SCM from two ``stage1_plan`` runs (seeds k and k + 1);
* ``nnunet_seeds``, ``nnunet_full``: nnU-Net v2 (``experiments/nnunet_baseline.py``) on the
  expanded seeds with its ignore label, or on the full labels, at stage 1's budget: the plan's
  epochs × one iteration per training case (stage 1: one case per step at batch 1), at nnU-Net's
  planned batch size;
* ``nnunet_paseg``: ``nnunet_seeds`` with PA-Seg's mCRF and VM (``nnUNetTrainerPASeg``), at the
  plan's regulariser settings: weights, ramp-up, warm-up, kernel radius (in plane) and width.

Summary (``summary.md``/``summary.csv``): per member and variant the mean Dice over training
seeds and the failed seeds (ablate's rule: all inference predictions empty, collapse warning,
or best checkpoint from before the ramp-up ended), and the issue's criteria over the members.

Run again with the same arguments, a family run resumes (``family_run.json`` records them; the
ablation runner skips the finished runs). An ``--output_dir`` that holds a summary, plan or config
of a family run with other arguments (or of none) is refused unless ``--overwrite``.

Example (the held-back report, CPU budget; see docs/results/family.md)::

    python experiments/family.py --family_seeds 100 101 102 103 104 105 106 107 \\
        --variants seeds seeds_only_plan stage1_plan --output_dir ./ablation/family_heldback --jobs 2
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from utilities.core.arguments import ArgumentParser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ablate  # noqa: E402

from data.family.make_family_data import (  # noqa: E402
    ANNOTATION_POSTFIX,
    FOLDERS,
    IMAGE_POSTFIX,
    LABEL_POSTFIX,
    draw_member,
    generate_member,
)
from experiments.ablation.config import SeedsAction  # noqa: E402
from utilities.core.textdata import loads_json, md_cell, read_csv_table  # noqa: E402
from utilities.data.io import check_overwrite, save_text, save_together  # noqa: E402
from utilities.method.defaults import CRF_SIGMA_XY, GEODESIC_THRESHOLD, GEODESIC_WEIGHT, KERNEL_RADIUS, RECIPE  # noqa: E402
from utilities.workflow.plan import PlanRules, fingerprint, make_plan, write_plan  # noqa: E402

__all__ = ["VARIANTS", "RECORD_NAME", "member_config", "summarize_family", "main"]

VARIANTS = ("seeds", "seeds_only_plan", "stage1_plan", "stage1_recipe", "full_plan", "scm_plan",
            "nnunet_seeds", "nnunet_paseg", "nnunet_full")
#: In ``--output_dir``: the arguments of the family run whose summary, plans and configs it holds.
RECORD_NAME = "family_run.json"
#: Arguments that do not change what the run writes (not compared when it is run again).
_FREE = ("jobs", "device", "overwrite")


#: Where ``nnUNetTrainerPASeg`` computes the mCRF (``--nnunet_crf_grid``): nnU-Net's patch, or
#: that downsampled in plane as stage 1's ``--down_size`` (:func:`stage1_downsample`).
CRF_GRIDS = ("patch", "stage1")
#: Stage 1's flags that ``nnUNetTrainerPASeg`` takes too (``experiments/nnunet_baseline.py --trainer PASeg``).
_PASEG_FLAGS = ("--weight_gatedcrf", "--weight_variance", "--rampup_epochs", "--warmup_epochs", "--rampup_unit",
                "--kernel_radius", "--crf_sigma_xy", "--crf_sigma_rgb")


def _plan_member(data: Path, rules: PlanRules, path: Path) -> dict[str, Any]:
    fp = fingerprint(data / "split.csv", data / FOLDERS[0], IMAGE_POSTFIX, data / FOLDERS[2], ANNOTATION_POSTFIX)
    plan = make_plan(fp, rules)
    write_plan(plan, path)
    return plan


def full_resolution_kernel(patch: Sequence[int], down_size: Sequence[int], kernel_radius: int,
                           sigma_xy: float, crf_downsample: int = 1) -> tuple[int, float]:
    """Stage 1's mCRF window radius and width, measured on its ``down_size`` grid of a ``patch``,
    in voxels of the full-resolution patch (``nnUNetTrainerPASeg``'s): times the in-plane factor;
    with ``crf_downsample`` (the trainer's ``--crf_downsample``), in voxels of the patch downsampled
    in plane by it (stage 1's in-plane halving and 2: stage 1's kernel as it is)."""
    scale = patch[0] / down_size[0] / crf_downsample
    return round(kernel_radius * scale), float(sigma_xy) * scale


def stage1_downsample(patch: Sequence[int], down_size: Sequence[int]) -> int:
    """``nnUNetTrainerPASeg``'s ``--crf_downsample`` for stage 1's mCRF grid: the in-plane factor
    of ``patch`` over ``down_size`` (the plan's 1 or 2); a ``ValueError`` for a grid the trainer
    cannot give (in-plane factors that differ or are not whole, or a through-plane axis resized)."""
    factor = patch[0] // down_size[0]
    if factor < 1 or any(p != d * factor for p, d in zip(patch[:2], down_size[:2])) or patch[2] != down_size[2]:
        raise ValueError(f"--nnunet_crf_grid stage1: the mCRF grid {list(down_size)} is not the patch "
                         f"{list(patch)} divided by one whole factor in plane")
    return factor


def _with_flags(flags: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``flags`` with ``over``'s values over them (``--stage1_flags``, ``--nnunet_paseg_flags``);
    a ``None`` value removes the flag."""
    return {k: v for k, v in {**flags, **over}.items() if v is not None}


def member_config(seed: int, data: Path, plan: dict[str, Any], seeds: Sequence[int],
                  paseg_flags: Mapping[str, Any] | None = None, crf_grid: str = "patch") -> dict[str, Any]:
    """The ablation config of one member (every flag written out, so that the runner's table
    and its checks see them); ``paseg_flags``: ``experiments/nnunet_baseline.py`` flags over the
    ``nnunet_paseg`` variant's (``None`` as a value removes one); ``crf_grid``: where
    ``nnUNetTrainerPASeg`` computes the mCRF (:data:`CRF_GRIDS`)."""
    s1 = dict(plan["stage1"])
    epochs = int(s1["--max_epochs"])
    patch = s1["--spatial_shape"]
    recipe = {k: v for k, v in s1.items() if k in ("--network", "--spatial_shape", "--max_epochs")}
    recipe |= {"--down_size": [max(16, patch[0] // 2), max(16, patch[1] // 2), patch[2]],
               "--kernel_radius": list(KERNEL_RADIUS), **RECIPE.flags(),
               "--rampup_epochs": max(1, round(0.1 * epochs))}
    regulariser_off = {"--weight_gatedcrf": 0, "--weight_variance": 0}
    # nnU-Net at stage 1's steps: stage 1 takes one training case per step (batch 1), over the
    # training cases the plan counted when it chose the epochs
    nnunet = {"--epochs": epochs, "--iterations_per_epoch": int(plan["fingerprint"]["training_cases"]),
              "--val_iterations": 2}
    # nnUNetTrainerPASeg: the plan's regulariser flags that the trainer takes, in its units: epochs
    # of `iterations_per_epoch` steps (the plan's epochs here); one kernel radius and width in voxels
    # of the trainer's mCRF grid (the full-resolution output, or that downsampled in plane by the
    # --crf_downsample of paseg_flags), where stage 1 measures them on its (in plane coarser) grid
    regularisers = {k: v for k, v in s1.items() if k in _PASEG_FLAGS}
    down_size = s1.get("--down_size", patch)
    if crf_grid == "stage1":
        regularisers["--crf_downsample"] = stage1_downsample(patch, down_size)
    downsample = _with_flags(regularisers, paseg_flags or {}).get("--crf_downsample", 1)   # the grid it runs on
    regularisers["--kernel_radius"], regularisers["--crf_sigma_xy"] = full_resolution_kernel(
        patch, down_size, s1.get("--kernel_radius", KERNEL_RADIUS)[0], s1.get("--crf_sigma_xy", CRF_SIGMA_XY),
        int(downsample))
    paseg = _with_flags(nnunet | {"--trainer": "PASeg"} | regularisers, paseg_flags or {})
    return {
        "title": f"Family member {seed} (plan.json: patch {patch}, mCRF grid {s1['--down_size']}, {epochs} epochs)",
        "dataset": {"split_file": str(data / "split.csv"), "images": str(data / FOLDERS[0]),
                    "image_postfix": IMAGE_POSTFIX, "labels": str(data / FOLDERS[1]), "label_postfix": LABEL_POSTFIX,
                    "annotations": str(data / FOLDERS[2]), "annotation_postfix": ANNOTATION_POSTFIX,
                    "geodesic_style": "BraTS", "geodesic_weight": GEODESIC_WEIGHT,
                    "geodesic_threshold": GEODESIC_THRESHOLD, "geodesic_workers": 1},
        "base": {"stage1": s1, "scm": {k: v for k, v in plan["scm"].items() if k not in ("--network1", "--network2",
                                                                                          "--spatial_shape")},
                 "inference": {}},
        "variants": {
            "seeds": {"kind": "seeds", "label": "Expanded seeds"},
            "seeds_only_plan": {"kind": "stage1", "label": "Seeds only, plan's optimiser and CE",
                                "flags": regulariser_off},
            "stage1_plan": {"kind": "stage1", "label": "Stage 1, plan"},
            "stage1_recipe": {"kind": "stage1", "label": "Stage 1, earlier recipe as a user applied it",
                              "flags": {k: None for k in s1 if k not in recipe} | recipe},
            "full_plan": {"kind": "full", "label": "Full supervision, plan's flags"},
            "scm_plan": {"kind": "scm", "label": "SCM on two plan stage-1 runs", "from": ["stage1_plan", "stage1_plan"],
                         "aux_seed_offset": 1},
            "nnunet_seeds": {"kind": "nnunet", "label": "nnU-Net v2, ignore label (expanded seeds)", "flags": nnunet},
            "nnunet_paseg": {"kind": "nnunet", "label": "nnU-Net v2, ignore label, PA-Seg's mCRF and VM "
                             "(nnUNetTrainerPASeg)", "flags": paseg},
            "nnunet_full": {"kind": "nnunet", "label": "nnU-Net v2, full labels",
                            "flags": {"--labels": "full"} | nnunet},
        },
        "seeds": list(seeds), "baseline": "seeds_only_plan"}


#: The columns of ``summary.csv`` / ``summary_finished.csv``: one row per (member, variant).
SUMMARY_COLUMNS = ("member", "variant", "seeds", "dice_mean", "dice_std", "failed", "collapsed_epochs", "budget",
                   "voxels", "train_s")
#: A member counts for the criteria where full supervision (``full_plan``) reaches this mean Dice:
#: below it the budget does not let the network learn the member even from full labels.
FULL_COUNTS = 0.5


def _against(wide: pd.DataFrame, variant: str, other: str, shown: str, other_shown: str,
             counted: Sequence[int] | None = None) -> list[str]:
    """The criterion line "<shown> >= <other_shown>" over the members where both ran (none when
    either variant is absent), and over the ``counted`` members among them when given."""
    if not {variant, other} <= set(wide.columns):
        return []
    both = wide[[variant, other]].dropna()
    wins = int((both[variant] >= both[other]).sum())
    line = (f"- {shown} >= {other_shown} in mean Dice on {wins} of {len(both)} members "
            f"(mean difference {float((both[variant] - both[other]).mean()):+.3f})")
    if counted is not None:
        sub = both[both.index.isin(counted)]
        behind = [str(m) for m in sub.index[sub[variant] < sub[other]]]
        line += (f"; on the members that count, {len(sub) - len(behind)} of {len(sub)}"
                 + (f" (not: {', '.join(behind)})" if behind else ""))
    return [line]


def _stage1_against(wide: pd.DataFrame, other: str, shown: str, counted: Sequence[int] | None = None) -> list[str]:
    """The criterion line "stage 1 (plan) >= <shown>" (:func:`_against`)."""
    return _against(wide, "stage1_plan", other, "stage 1 (plan)", shown, counted)


def _counted(wide: pd.DataFrame) -> tuple[list[int] | None, list[str]]:
    """The members that count for the criteria (full supervision reaches :data:`FULL_COUNTS`) and the
    line that says which do not and why; ``None`` when full supervision has not run."""
    if "full_plan" not in wide.columns:
        return None, []
    full = wide["full_plan"]
    counted = [int(m) for m in full.index[full >= FULL_COUNTS]]
    below = [str(m) for m in full.index[full < FULL_COUNTS]]
    unknown = [str(m) for m in full.index[full.isna()]]
    line = (f"- members that count (full supervision reaches {FULL_COUNTS}): {len(counted)} of {len(full)}"
            + (f"; below it: {', '.join(below)}" if below else "")
            + (f"; full supervision not run yet: {', '.join(unknown)}" if unknown else ""))
    return counted, [line]


def _with_earlier(df: pd.DataFrame, earlier: pd.DataFrame | None) -> pd.DataFrame:
    """``df`` with the rows of an earlier summary of the same round (runs whose folders are gone).
    A (member, variant) in both is kept once where both give the same seeds and Dice (the expanded
    seeds, regenerated), else refused: its runs would be counted from two places."""
    if earlier is None:
        return df
    key = ["member", "variant"]
    same = df.merge(earlier, on=key, suffixes=("", "_earlier"))
    same = same[(same["seeds"] == same["seeds_earlier"])
                & np.isclose(same["dice_mean"], same["dice_mean_earlier"], rtol=0, atol=1e-9)]
    earlier = earlier[~earlier.set_index(key).index.isin(same.set_index(key).index)]
    both = set(zip(df["member"], df["variant"])) & set(zip(earlier["member"], earlier["variant"]))
    if both:
        shown = ", ".join(f"{m} {v}" for m, v in sorted(both)[:4])
        raise ValueError(f"--earlier: {len(both)} (member, variant) row(s) are both in the earlier summary and "
                         f"among the finished runs (e.g. {shown}); keep each row in one place")
    return pd.concat([df, earlier.reindex(columns=df.columns)], ignore_index=True).sort_values(
        ["member"], kind="stable").reset_index(drop=True)


def summarize_family(tables: dict[int, pd.DataFrame],
                     earlier: pd.DataFrame | None = None) -> tuple[pd.DataFrame, str]:
    """One row per (member, variant) (with the rows of an ``earlier`` summary of the same round) and
    the criteria as text lines: each over the members where both variants ran and, once full
    supervision has run, over the members where it reaches :data:`FULL_COUNTS`."""
    rows = []
    for seed, table in tables.items():
        for r in table.itertuples():
            rows.append({"member": seed, "variant": r.variant, "seeds": r.seeds, "dice_mean": r.dice_mean,
                         "dice_std": r.dice_std, "failed": r.collapsed, "collapsed_epochs": r.collapsed_epochs,
                         "budget": getattr(r, "budget", "?"), "voxels": getattr(r, "voxels", np.nan),
                         "train_s": getattr(r, "train_s", np.nan)})
    df = _with_earlier(pd.DataFrame(rows), earlier)
    wide = df.pivot(index="member", columns="variant", values="dice_mean")
    counted, lines = _counted(wide)
    trained = df[df["variant"] != "seeds"]
    for variant, n in trained.groupby("variant")["failed"].sum().items():
        runs = int(df[df["variant"] == variant]["seeds"].sum())
        line = f"- `{variant}`: {int(n)} failed run(s) of {runs}"
        if counted is not None:
            mine = trained[(trained["variant"] == variant) & trained["member"].isin(counted)]
            line += f" ({int(mine['failed'].sum())} of {int(mine['seeds'].sum())} on the members that count)"
        lines.append(line)
    lines += _stage1_against(wide, "seeds", "the expanded seeds", counted)
    lines += _stage1_against(wide, "seeds_only_plan", "seeds-only (same optimiser)", counted)
    if {"stage1_plan", "full_plan"} <= set(wide.columns):
        ratio = (wide["stage1_plan"] / wide["full_plan"]).dropna()
        lines.append(f"- stage 1 / full supervision: median {float(ratio.median()):.3f} over {len(ratio)} members")
    if {"stage1_plan", "scm_plan"} <= set(wide.columns):
        both = wide[["stage1_plan", "scm_plan"]].dropna()
        lines.append(f"- SCM {float(both['scm_plan'].mean()):.3f} vs stage 1 {float(both['stage1_plan'].mean()):.3f} "
                     f"(mean over {len(both)} members)")
    for nnunet in ("nnunet_seeds", "nnunet_full"):
        lines += _stage1_against(wide, nnunet, f"`{nnunet}`", counted)
    lines += _against(wide, "nnunet_paseg", "nnunet_seeds", "`nnunet_paseg`", "`nnunet_seeds`", counted)
    return df, "\n".join(lines)


def _steps(rows: pd.DataFrame) -> str:
    """The distinct recorded budgets of one variant's rows, each with its members."""
    members: dict[str, list[str]] = {}
    for member, budget in rows[["member", "budget"]].itertuples(index=False):
        members.setdefault(str(budget), []).append(str(member))
    return "; ".join(f"{budget} (member{'s' if len(ms) > 1 else ''} {', '.join(ms)})" for budget, ms in members.items())


def _markdown(df: pd.DataFrame, criteria: str, title: str) -> str:
    order = {v: i for i, v in enumerate(VARIANTS)}
    variants = sorted(dict.fromkeys(df["variant"]), key=lambda v: order.get(v, len(order)))
    lines = [f"# {md_cell(title)}", "",
             "Mean Dice over training seeds on each member's inference cases (failed seeds in brackets, by "
             "the ablation runner's rule in each member's table.md: all predictions empty, a collapse warning "
             "not recovered, the best checkpoint from before the ramp-up ended, or a run below its own seeds).",
             "",
             "| member | " + " | ".join(f"`{md_cell(v)}`" for v in variants) + " |", "|---" * (len(variants) + 1) + "|"]
    for member, sub in df.groupby("member", sort=True):
        cells = []
        for v in variants:
            r = sub[sub["variant"] == v]
            if r.empty:
                cells.append("—")
                continue
            r = r.iloc[0]
            fail = f" ({int(r.failed)}/{int(r.seeds)})" if r.failed else ""
            cells.append(f"{r.dice_mean:.3f}{fail}")
        lines.append(f"| {member} | " + " | ".join(cells) + " |")
    means = df.groupby("variant")["dice_mean"].mean()
    lines.append("| mean | " + " | ".join(f"{means.get(v, np.nan):.3f}" for v in variants) + " |")
    lines += ["", "Training steps per run, as the runs recorded them (the ablation tables' *Steps*):", ""]
    lines += [f"- `{v}`: " + _steps(df[df["variant"] == v]) for v in variants if v != "seeds"]
    cost = df[df["variant"] != "seeds"].reindex(columns=["variant", "voxels", "train_s"]).groupby(
        "variant", sort=False).mean()
    if cost.notna().any().any():
        lines += ["", "Voxels seen (steps × batch × patch voxels) and training seconds per run, the mean over "
                      "members and seeds:", ""]
        lines += [f"- `{v}`: {r.voxels / 1e6:.3g} M voxels, {r.train_s:.0f} s" for v, r in cost.iterrows()]
    return "\n".join(lines) + "\n\n" + criteria + "\n"


def _outputs(out: Path, seeds: Sequence[int]) -> list[Path]:
    """What this script writes itself into ``--output_dir`` (the runs are the ablation runner's)."""
    members = [out / f"f{seed:03d}" / name for seed in seeds for name in ("plan.json", "ablation.json")]
    return [out / "summary.csv", out / "summary.md", *members]


def _check_output_dir(out: Path, args: argparse.Namespace) -> None:
    """The rule of :func:`utilities.data.io.check_overwrite`: a summary, plan or config already in
    ``out`` is replaced only with ``--overwrite``, unless ``out`` holds the same family run
    (its record, :data:`RECORD_NAME`, has these arguments): running it again resumes it, the
    finished runs skipped by the ablation runner. Then records these arguments."""
    record = {k: v for k, v in vars(args).items() if k not in _FREE}
    path = out / RECORD_NAME
    try:
        old = loads_json(path.read_text(encoding="utf-8"), f"family record {path}")
    except (OSError, json.JSONDecodeError):
        old = None
    if old != record:
        if isinstance(old, dict) and not args.overwrite:
            changed = [f"--{k} {old.get(k)!r} -> {v!r}" for k, v in record.items() if old.get(k) != v]
            print(f"{out} holds a family run with other arguments: {', '.join(changed)} (--overwrite replaces its "
                  "summary, plans and configs; the ablation runner keeps its finished runs)", flush=True)
        check_overwrite(_outputs(out, args.family_seeds) + [path], "--output_dir", args.overwrite, "family file")
    save_text(json.dumps(record, indent=1) + "\n", path)


def _flags_json(text: str) -> dict[str, Any]:
    try:
        flags = loads_json(text, "--stage1_flags")
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err.msg}): {text}") from None
    except ValueError as err:   # a repeated flag: only the second would count
        raise argparse.ArgumentTypeError(str(err).removeprefix("--stage1_flags: ")) from None
    if not isinstance(flags, dict) or not all(isinstance(k, str) and k.startswith("--") for k in flags):
        raise argparse.ArgumentTypeError(f'must be a JSON object of flags such as {{"--max_epochs": 10}}, got {text}')
    return flags


def build_parser() -> argparse.ArgumentParser:
    rules = PlanRules()
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family_seeds", type=int, nargs="+", required=True, help="the members to run")
    p.add_argument("--output_dir", required=True, help="one folder per member under it, and the summary")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, help="variants to run")
    p.add_argument("--seeds", nargs="+", action=SeedsAction, default=[0, 1, 2],
                   help="training seeds, e.g. 0 1 2 (or 0,1,2)")
    p.add_argument("--target_steps", type=int, default=250, help="plan.py --target_steps (CPU budget)")
    p.add_argument("--min_epochs", type=int, default=8, help="plan.py --min_epochs")
    p.add_argument("--max_patch_voxels", type=int, default=64 * 64 * 16, help="plan.py --max_patch_voxels")
    p.add_argument("--min_crf_voxels", type=float, default=rules.min_crf_voxels, help="plan.py --min_crf_voxels")
    p.add_argument("--stage1_flags", type=_flags_json, default={},
                   help='JSON object of stage-1 flags over the plan\'s, for development rounds, e.g. '
                        '\'{"--fg_patch_fraction": 0.33}\' (null removes a flag)')
    p.add_argument("--nnunet_paseg_flags", type=_flags_json, default={},
                   help='JSON object of experiments/nnunet_baseline.py flags over those of the nnunet_paseg variant, '
                        'for development rounds, e.g. \'{"--rampup_start": "foreground"}\' (null removes a flag)')
    p.add_argument("--nnunet_crf_grid", choices=CRF_GRIDS, default="patch",
                   help="where nnunet_paseg computes the mCRF: on nnU-Net's patch (patch, with stage 1's kernel "
                        "scaled to it) or on it downsampled in plane as stage 1's --down_size (stage1: "
                        "--crf_downsample, with stage 1's kernel as it is)")
    p.add_argument("--baseline", choices=VARIANTS, default=None,
                   help="the variant the p-values are against (default: seeds_only_plan when it runs, else seeds)")
    p.add_argument("--jobs", type=int, default=2, help="runs side by side (one thread each)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--title", default="Dataset family", help="heading of summary.md")
    p.add_argument("--finished_only", action="store_true",
                   help="run and write nothing but the interim summary (summary_finished.md/.csv) of the runs "
                        "finished so far, from each member's ablation.json (ablate.py --finished_only), the rows "
                        "added to it with ablate.py included")
    p.add_argument("--earlier", default=None, metavar="SUMMARY_CSV",
                   help="with --finished_only: add the rows of an earlier summary_finished.csv of the same round "
                        "whose run folders are gone (a (member, variant) in both must give the same seeds and Dice)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the summary, plans and configs of a family run with other arguments in "
                        "--output_dir (its finished runs are still skipped where their flags are unchanged)")
    return p


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = build_parser().parse_args(argv)
    out = Path(args.output_dir)
    if args.earlier is not None and not args.finished_only:
        raise ValueError("--earlier adds rows to the interim summary: pass it with --finished_only")
    if args.finished_only:
        return _finished_summary(out, args)
    _check_output_dir(out, args)
    rules = PlanRules(target_steps=args.target_steps, min_epochs=args.min_epochs,
                      max_patch_voxels=args.max_patch_voxels, min_crf_voxels=args.min_crf_voxels)
    tables: dict[int, pd.DataFrame] = {}
    for seed in args.family_seeds:
        folder = out / f"f{seed:03d}"
        data = folder / "data"
        if not (data / "member.json").is_file():
            generate_member(draw_member(seed), data)
        plan = _plan_member(data, rules, folder / "plan.json")
        plan["stage1"] = _with_flags(plan["stage1"], args.stage1_flags)
        cfg_path = folder / "ablation.json"
        config = member_config(seed, data, plan, args.seeds, args.nnunet_paseg_flags, args.nnunet_crf_grid)
        save_text(json.dumps(config, indent=1) + "\n", cfg_path)
        print(f"[family {seed}] {json.dumps(plan['stage1'])}", flush=True)
        baseline = args.baseline or ("seeds_only_plan" if "seeds_only_plan" in args.variants else "seeds")
        table = ablate.main(["--config", str(cfg_path), "--output_dir", str(folder), "--jobs", str(args.jobs),
                             "--device", args.device, "--variants", *args.variants, "--baseline", baseline])
        if table is not None:
            tables[seed] = table
            df, criteria = summarize_family(tables)
            save_together({out / "summary.csv": df, out / "summary.md": _markdown(df, criteria, args.title)})
    df, criteria = summarize_family(tables)
    print(_markdown(df, criteria, args.title))
    return df


def _read_earlier(path: str | None) -> pd.DataFrame | None:
    """``--earlier``: the rows of an earlier ``summary_finished.csv`` (one-line errors)."""
    if path is None:
        return None
    table = read_csv_table(Path(path), "--earlier summary", text_columns=("variant", "collapsed_epochs", "budget"))
    missing = [c for c in SUMMARY_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"--earlier {path} lacks the column(s) {missing} of a family summary_finished.csv")
    return table[list(SUMMARY_COLUMNS)]


def _finished_summary(out: Path, args: argparse.Namespace) -> pd.DataFrame:
    """``--finished_only``: each member's interim table (its ``ablation.json`` as the family run
    wrote it, every variant of ``--variants`` with a finished run), then
    ``summary_finished.md``/``.csv``; members not generated yet are named and left out."""
    tables: dict[int, pd.DataFrame] = {}
    for seed in args.family_seeds:
        folder = out / f"f{seed:03d}"
        cfg_path = folder / "ablation.json"
        if not cfg_path.is_file():
            print(f"[family {seed}] no {cfg_path} yet: not in the summary", flush=True)
            continue
        baseline = args.baseline or "seeds"
        table = ablate.main(["--config", str(cfg_path), "--output_dir", str(folder), "--variants", *args.variants,
                             "--baseline", baseline, "--device", args.device, "--finished_only"])
        if table is not None and len(table):
            tables[seed] = table
    if not tables:
        raise FileNotFoundError(f"no finished run of {args.variants} in {out}")
    df, criteria = summarize_family(tables, _read_earlier(args.earlier))
    text = _markdown(df, criteria, args.title)
    save_together({out / "summary_finished.csv": df, out / "summary_finished.md": text})
    print(text)
    return df


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
