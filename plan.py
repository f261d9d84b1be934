"""Plan a PA-Seg run from the data: read the fingerprint of the cases that train, write plan.json
and print every command that follows, in the order they run, for the data it read: stage 0 (when
the expanded seeds are not there yet), both stage-1 networks, SCM, folder prediction and (with
labels) scoring.

The rules are in :mod:`utilities.workflow.plan`; the trainers read the plan with ``--plan plan.json``
(flags given on their command line override it; a switch it turns on is turned off with
``--no_<switch>``). The data flags may come from a dataset file (``--dataset``,
:mod:`utilities.data.dataset_file`; a flag given wins over it). The printed commands read the data from
a dataset file: the ``--dataset`` given when it names the data planned for, else ``dataset.json``
written beside ``--output`` (with the expanded seeds stage 0 writes; a plan, split or ``--dataset``
at that path is refused before anything is written); they run as printed and write under
``--work_dir`` (``geodesic/``, ``runs/stage1_m1``, ``runs/stage1_m2``, ``runs/scm``,
``predictions/``). Without ``--path_labels`` (points only) checkpoints are selected
by ``seed_dice``; with fewer than 5 training + validation cases every case trains.

Example::

    python plan.py --dataset_split ./splits/my_split.csv --path_images ./data/MY/image/ \\
        --image_postfix T2 --path_anno_7points ./data/MY/annotation_7points/ --work_dir ./my_run/ \\
        --output ./my_run/plan.json
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from utilities.core.arguments import ArgumentParser, Inert, warn_inert_flags
from utilities.data.dataset_file import (
    add_dataset_flag,
    check_distinct,
    dataset_text,
    names_same,
    parse_with_dataset,
    read_dataset,
    same_values,
)
from utilities.data.grid import missing_files
from utilities.data.io import save_text
from utilities.data.splits import Split
from utilities.method.defaults import ANNOTATION_POSTFIX, IMAGE_POSTFIX, LABEL_POSTFIX
from utilities.method.sequence import flag_args
from utilities.workflow.cli import nonnegative_int, positive_int, unit_float
from utilities.workflow.plan import (
    STAGE0_POSTFIX,
    DataPaths,
    PlanRules,
    Workspace,
    dataset_values,
    fingerprint,
    make_plan,
    pipeline_commands,
    stage0_phases,
    write_plan,
)

__all__ = ["build_parser", "main", "DATASET_NAME"]

#: The dataset file plan.py writes beside ``--output`` for the printed commands.
DATASET_NAME = "dataset.json"


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's help ends with its default, unless it has none (``None``): that help says
    what happens without the flag."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    rules = PlanRules()
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=_DefaultsHelp)
    p.add_argument("--dataset_split", required=True, help="CSV of 'subject,phase' rows (the cases that train are read)")
    p.add_argument("--path_images", required=True, help="image folder (.nii.gz .nii .nrrd .nhdr .mha .mhd)")
    p.add_argument("--image_postfix", default=IMAGE_POSTFIX, help="image file postfix")
    p.add_argument("--path_anno_7points", required=True, help="folder of the 7-point annotations")
    p.add_argument("--anno_7points_postfix", default=ANNOTATION_POSTFIX, help="annotation file postfix")
    p.add_argument("--path_labels", default=None,
                   help="folder of full labels, if any: checkpoints are then selected by Dice on the validation "
                        "cases and the predictions scored (default: points only)")
    p.add_argument("--label_postfix", default=LABEL_POSTFIX, help="full label file postfix")
    p.add_argument("--path_geodesic_labels", default=None,
                   help="folder of the expanded seeds (stage 0), if already made (default: the printed stage-0 "
                        "command writes them under --work_dir)")
    p.add_argument("--geodesic_label_postfix", default=STAGE0_POSTFIX, help="expanded-seed label postfix")
    p.add_argument("--work_dir", default=".",
                   help="folder the printed commands write into: geodesic/ (stage 0's expanded seeds, unless "
                        "--path_geodesic_labels is given), runs/stage1_m1/, runs/stage1_m2/ and runs/scm/ (the "
                        "networks), predictions/ (folder prediction, and the score table results_<phase>.csv)")
    p.add_argument("--output", default="plan.json",
                   help=f"where to write the plan; the dataset file the printed commands read is written beside it "
                        f"as {DATASET_NAME} (unless --dataset names the data planned for), so the plan needs another "
                        "name")
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace an existing --output (and a {DATASET_NAME} beside it that names other data)")
    p.add_argument("--target_steps", type=positive_int, default=rules.target_steps,
                   help="optimisation steps of stage 1 (sets --max_epochs from the number of training cases)")
    p.add_argument("--min_epochs", type=positive_int, default=rules.min_epochs, help="at least this many epochs")
    p.add_argument("--max_patch_voxels", type=positive_int, default=rules.max_patch_voxels,
                   help="largest patch (voxels); lower it for a small GPU or a CPU")
    p.add_argument("--min_crf_voxels", type=nonnegative_int, default=int(rules.min_crf_voxels),
                   help="a typical lesion keeps at least this many voxels on the mCRF grid")
    p.add_argument("--min_cases_for_validation", type=nonnegative_int, default=rules.min_cases_for_validation,
                   help="with fewer training + validation cases, every case trains (--train_on_all_cases)")
    p.add_argument("--min_fg_dice_lesion_share", type=unit_float, default=rules.min_fg_dice_lesion_share,
                   help="nnU-Net's Dice+CE (--seg_dice foreground) when the median case's lesions cover at least "
                        "this share of a patch, else the paper's Dice with --seg_class_balance")
    add_dataset_flag(p)
    return p


def _dataset_file(args: argparse.Namespace, paths: DataPaths, work: Workspace,
                  output: Path) -> tuple[Path, dict[str, str | None] | None]:
    """The dataset file the printed commands read: ``--dataset`` when it names the data planned
    for, else ``dataset.json`` beside ``--output``; and the values to write there (``None``:
    ``--dataset`` is read as it is)."""
    values = dataset_values(paths, work)
    if args.dataset is not None:
        given = read_dataset(args.dataset)
        values["modality"] = given.get("modality")
        if names_same(given, values):
            return Path(args.dataset), None
    return output.parent / DATASET_NAME, values


def _check_outputs(args: argparse.Namespace, output: Path, dataset: Path, written: bool) -> None:
    """Refuse, before anything is written, a plan (``--output``) or a dataset file written over
    another file of the run: each other, the split, or the ``--dataset`` read."""
    plan = ("--output (the plan written)", output)
    split = ("--dataset_split (the split read)", args.dataset_split)
    given = ("--dataset (the dataset file read)", args.dataset)
    if written:
        beside = (f"the dataset file the printed commands read ({DATASET_NAME}, written beside --output)", dataset)
        check_distinct([beside, plan], f"choose another --output, e.g. {output.parent / 'plan.json'}")
        check_distinct([beside, split], "choose another --output folder, or move the split")
        check_distinct([given, plan], "choose another --output")
    else:
        check_distinct([("--dataset (the dataset file the printed commands read)", dataset), plan],
                       "choose another --output")
    check_distinct([split, plan], "choose another --output")


def _seeds(split: Split, paths: DataPaths, work: Workspace) -> tuple[tuple[str, str] | None, list[str | None]]:
    """The expanded seeds the plan reads (``None``: not made yet) and the phases of the stage-0
    commands to print (none when the seeds are there)."""
    if paths.path_geodesic_labels is not None:
        return (paths.path_geodesic_labels, paths.geodesic_label_postfix), []
    phases = ("training", "validation")
    needed = split.subjects(phases[0]) + split.subjects(phases[1])
    if needed and not missing_files(needed, work.seeds(), STAGE0_POSTFIX, "expanded seeds"):
        return (str(work.seeds()), STAGE0_POSTFIX), []
    return None, stage0_phases(split, paths)


def _print(plan: dict[str, Any], output: Path, dataset: Path, written: bool) -> None:
    print("fingerprint (the cases that train):")
    for key, value in plan["fingerprint"].items():
        print(f"  {key}: {json.dumps(value)}")
    print("stage 1 flags:")
    for key, value in plan["stage1"].items():
        reason = plan["why"].get(key)
        print(f"  {shlex.join(flag_args({key: value}))}" + (f"    # {reason}" if reason else ""))
    for warning in plan["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print("commands, in the order they run:")
    for name, line in plan["commands"].items():
        print(f"  [{name}] {line}")
    if "score" not in plan["commands"]:
        print("  (no scoring command: no --path_labels given)")
    print(f"written {dataset} (the dataset file the commands read)" if written else
          f"the commands read the dataset file {dataset}")
    print(f"written {output}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parse_with_dataset(parser, argv)
    warn_inert_flags(parser, argv, args, [
        Inert(("label_postfix",), lambda a: a.path_labels is None, "without --path_labels: no full label is read"),
        Inert(("geodesic_label_postfix",), lambda a: a.path_geodesic_labels is None,
              "without --path_geodesic_labels: the plan writes its own expanded seeds")])
    output = Path(args.output)
    rules = PlanRules(target_steps=args.target_steps, min_epochs=args.min_epochs,
                      max_patch_voxels=args.max_patch_voxels, min_crf_voxels=float(args.min_crf_voxels),
                      min_cases_for_validation=args.min_cases_for_validation,
                      min_fg_dice_lesion_share=args.min_fg_dice_lesion_share)
    work = Workspace(Path(args.work_dir))
    own = args.path_geodesic_labels is not None and same_values({"seeds": args.path_geodesic_labels},
                                                                {"seeds": str(work.seeds())})
    paths = DataPaths(args.dataset_split, args.path_images, args.image_postfix, args.path_anno_7points,
                      args.anno_7points_postfix, args.path_labels, args.label_postfix,
                      None if own else args.path_geodesic_labels, args.geodesic_label_postfix)
    dataset, values = _dataset_file(args, paths, work, output)
    _check_outputs(args, output, dataset, values is not None)
    if output.exists() and not args.overwrite:
        raise FileExistsError(f"--output {output} exists; pass --overwrite to replace it or choose another --output")
    text = None if values is None else dataset_text(dataset, values, args.overwrite, "dataset file")
    split = Split.read(args.dataset_split)
    seeds, stage0 = _seeds(split, paths, work)
    fp = fingerprint(split, args.path_images, args.image_postfix, args.path_anno_7points, args.anno_7points_postfix,
                     *(seeds or (None,)), rules=rules)
    plan = make_plan(fp, rules)
    plan["commands"] = pipeline_commands(paths, work, output, dataset, plan, stage0)
    if text is not None:
        save_text(text, dataset)
    write_plan(plan, output)
    _print(plan, output, dataset, text is not None)
    return plan


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
