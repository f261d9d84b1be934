"""Plan a PA-Seg run from the data: read the training cases' fingerprint, write plan.json and
print the stage-1, SCM and inference command lines.

The rules are in :mod:`utilities.plan`; the trainers read the plan with ``--plan plan.json``
(flags given on their command line override it). Only the training cases of the split are read.

Example::

    python plan.py --dataset_split ./splits/split_BraTS.csv --path_images ./data/BraTS/image/ \\
        --image_postfix Flair --path_anno_7points ./data/BraTS/annotation_7points/ \\
        --path_geodesic_labels ./data/BraTS/geodesic/weight0.5_threshold0.2/geodesic_label/ --output plan.json
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from utilities.cli import nonnegative_int, positive_int
from utilities.plan import STAGE1_SCRIPT, PlanRules, fingerprint, flag_args, make_plan, write_plan

__all__ = ["build_parser", "commands", "main"]


def build_parser() -> argparse.ArgumentParser:
    rules = PlanRules()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset_split", required=True, help="CSV of 'subject,phase' rows (training cases are read)")
    p.add_argument("--path_images", required=True, help="image folder")
    p.add_argument("--image_postfix", default="T2", help="image file postfix")
    p.add_argument("--path_anno_7points", required=True, help="folder of the 7-point annotations")
    p.add_argument("--anno_7points_postfix", default="7points", help="annotation file postfix")
    p.add_argument("--path_geodesic_labels", default=None,
                   help="folder of the expanded seeds (stage 0), for the seeds' foreground share (optional)")
    p.add_argument("--geodesic_label_postfix", default="GeodesicLabel", help="expanded-seed label postfix")
    p.add_argument("--output", default="plan.json", help="where to write the plan")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--target_steps", type=positive_int, default=rules.target_steps,
                   help="optimisation steps of stage 1 (sets --max_epochs from the number of training cases)")
    p.add_argument("--min_epochs", type=positive_int, default=rules.min_epochs, help="at least this many epochs")
    p.add_argument("--max_patch_voxels", type=positive_int, default=rules.max_patch_voxels,
                   help="largest patch (voxels); lower it for a small GPU or a CPU")
    p.add_argument("--min_crf_voxels", type=nonnegative_int, default=int(rules.min_crf_voxels),
                   help="a typical lesion keeps at least this many voxels on the mCRF grid")
    return p


def commands(args: argparse.Namespace, plan_path: Path, plan: dict[str, Any]) -> dict[str, str]:
    """The command lines the plan is used with (data flags as given to plan.py)."""
    data = ["--dataset_split", args.dataset_split, "--path_images", args.path_images,
            "--image_postfix", args.image_postfix]
    seeds = (["--path_geodesic_labels", args.path_geodesic_labels, "--geodesic_label_postfix",
              args.geodesic_label_postfix] if args.path_geodesic_labels else [])
    inference = plan["inference"]
    plan = ["--plan", str(plan_path)]
    return {
        "stage1": shlex.join(["python", STAGE1_SCRIPT, *plan, *data, *seeds, "--model_dir", "./models/stage1_m1/"]),
        "stage1_aux": shlex.join(["python", STAGE1_SCRIPT, *plan, "--network", "AttU_Net", *data, *seeds,
                                  "--model_dir", "./models/stage1_m2/"]),
        "scm": shlex.join(["python", "train_SCM.py", *plan, *data, *seeds,
                           "--pretrained_model1_dir", "./models/stage1_m1/", "--pretrained_model2_dir",
                           "./models/stage1_m2/", "--model_dir", "./models/scm/"]),
        "inference": shlex.join(["python", "inference.py", *flag_args(inference), *data, "--model_dir", "./models/scm/",
                                 "--epoch_inf", "best_model1"]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise FileExistsError(f"--output {output} exists; pass --overwrite to replace it or choose another --output")
    rules = PlanRules(target_steps=args.target_steps, min_epochs=args.min_epochs,
                      max_patch_voxels=args.max_patch_voxels, min_crf_voxels=float(args.min_crf_voxels))
    fp = fingerprint(args.dataset_split, args.path_images, args.image_postfix, args.path_anno_7points,
                     args.anno_7points_postfix, args.path_geodesic_labels, args.geodesic_label_postfix)
    plan = make_plan(fp, rules)
    plan["commands"] = commands(args, output, plan)
    write_plan(plan, output)
    print("fingerprint (training cases):")
    for key, value in plan["fingerprint"].items():
        print(f"  {key}: {json.dumps(value)}")
    print("stage 1 flags:")
    for key, value in plan["stage1"].items():
        reason = plan["why"].get(key)
        print(f"  {shlex.join(flag_args({key: value}))}" + (f"    # {reason}" if reason else ""))
    print("commands:")
    for name, line in plan["commands"].items():
        print(f"  [{name}] {line}")
    print(f"written {output}")
    return plan


if __name__ == "__main__":
    from utilities.cli import run_main

    sys.exit(run_main(main))
