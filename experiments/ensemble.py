"""Does averaging an SCM run's two networks beat its model 1? Measured on the finished SCM runs of
an ablation (``experiments/ablate.py``), per training seed, on the split's inference cases.

For each seed k of ``--variant`` (an SCM variant of the config): ``inference.py --model_dir
<run> --ensemble`` (the mean of model 1's and model 2's class probabilities) into
``<ablation_dir>/ensemble/<variant>/seed<k>/`` (this script's own folder: a rerun replaces its
masks), scored with ``scores.py --prediction_dir``; model
1 alone is the run's own ``results_inference.csv`` (``CP_best_model1``, what the ablation table
reports). Writes ``<ablation_dir>/ensemble/<variant>/ensemble.md``/``ensemble.csv`` (mean ± std
over seeds of the per-seed mean Dice and ASSD, and the two-sided paired Wilcoxon signed-rank
p-value on the per-case Dice averaged over seeds, as the ablation runner pairs them) and
``ensemble_per_case.csv``: one set per SCM variant, so that ensembling a second variant of the
same ablation keeps the first's.

Example::

    python experiments/ablate.py --config experiments/configs/demo.json --output_dir ./ablation/demo_scm \\
        --variants scm_recipe --baseline stage1_recipe --seeds 0,1,2 --jobs 2
    python experiments/ensemble.py --config experiments/configs/demo.json --ablation_dir ./ablation/demo_scm \\
        --variant scm_recipe --seeds 0 1 2
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from utilities.core.arguments import ArgumentParser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ablate  # noqa: E402

import inference  # noqa: E402
from experiments.ablation.config import SeedsAction  # noqa: E402
from experiments.ablation.markers import finished  # noqa: E402
from utilities import scores  # noqa: E402
from utilities.core.textdata import md_cell  # noqa: E402
from utilities.data.io import save_together  # noqa: E402
from utilities.data.layout import RunLayout  # noqa: E402
from utilities.evaluation.scoring import read_scores  # noqa: E402


def _cases(path: Path) -> pd.DataFrame:
    """The case rows of a scores CSV (every subject, whatever its name), indexed by subject."""
    return read_scores(path)[0].set_index("subject")[["dice", "assd"]]


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the ablation's JSON config")
    p.add_argument("--ablation_dir", required=True, help="its --output_dir (finished SCM runs)")
    p.add_argument("--variant", default="scm_recipe", help="the SCM variant")
    p.add_argument("--seeds", nargs="+", action=SeedsAction, default=None,
                   help="its training seeds, e.g. 0 1 2 (or 0,1,2; default: the config's)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    args = p.parse_args(argv)
    cfg = ablate.load_config(args.config)
    if cfg.variants.get(args.variant) is None or cfg.variants[args.variant].kind != "scm":
        raise ValueError(f"--variant {args.variant!r} is not an SCM variant of {args.config}")
    d = cfg.dataset
    root = Path(args.ablation_dir)
    seeds = list(cfg.seeds if args.seeds is None else args.seeds)
    rows = []
    planned = {r.seed: r for r in ablate.plan_runs(cfg, root, seeds, [args.variant], args.device, sys.executable)
               if r.variant.name == args.variant}
    for seed in seeds:   # every seed's run checked before any inference
        run, layout = planned[seed].folder, RunLayout(planned[seed].folder, planned[seed].network)
        marked = (run / ablate.DONE_NAME).is_file()   # the runner's: it must be the config's run (else an error)
        if not (finished(planned[seed]) if marked else layout.results("inference").is_file()):
            raise FileNotFoundError(f"{layout.results('inference')} not found or its run not finished as {args.config} "
                                    f"gives it: run the ablation's {args.variant} seed {seed} first")
        best = layout.checkpoint("best_model1")
        if not best.is_file():
            raise FileNotFoundError(f"the SCM run {run} is finished but keeps no {best.name} (a run restored from a "
                                    "record keeps no checkpoint); the ensemble infers again from both networks: "
                                    f"delete that folder and run the ablation's {args.variant} seed {seed} again")
    for seed in seeds:
        run, layout = planned[seed].folder, RunLayout(planned[seed].folder, planned[seed].network)
        model1 = layout.results("inference")
        out = root / "ensemble" / args.variant / f"seed{seed}"
        # this folder is the runner's own (under --ablation_dir): a rerun replaces its masks
        inference.main(["--model_dir", str(run), "--ensemble", "--dataset_split", str(d["split_file"]),
                        "--path_images", str(d["images"]), "--image_postfix", d["image_postfix"],
                        "--phase", "inference", "--output_folder", str(out), "--overwrite", "--device", args.device])
        scored = scores.main(["--prediction_dir", str(out), "--prediction_postfix", f"_{d['image_postfix']}",
                              "--dataset_split", str(d["split_file"]), "--path_labels", str(d["labels"]),
                              "--label_postfix", d["label_postfix"], "--phase", "inference"])
        for method, path in (("model1", model1), ("ensemble", scored)):
            for subject, r in _cases(Path(path)).iterrows():
                rows.append({"method": method, "seed": seed, "subject": subject, "dice": r["dice"],
                             "assd": r["assd"]})
    per_case = pd.DataFrame(rows)
    by_seed = per_case.groupby(["method", "seed"])[["dice", "assd"]].mean()
    case_mean = per_case.groupby(["method", "subject"])["dice"].mean()
    pval = ablate.wilcoxon_p(case_mean.loc["ensemble"].to_numpy(),
                             case_mean.loc["model1"].reindex(case_mean.loc["ensemble"].index).to_numpy())
    table = pd.DataFrame([{"method": m, "seeds": len(by_seed.loc[m]), "dice_mean": by_seed.loc[m, "dice"].mean(),
                           "dice_std": by_seed.loc[m, "dice"].std(ddof=1), "assd_mean": by_seed.loc[m, "assd"].mean(),
                           "assd_std": by_seed.loc[m, "assd"].std(ddof=1),
                           "per_seed": " / ".join(f"{v:.3f}" for v in by_seed.loc[m, "dice"])}
                          for m in ("model1", "ensemble")])
    lines = [f"# SCM ensemble vs model 1 ({args.variant}, {md_cell(cfg.title)})", "",
             f"Inference cases of `{md_cell(Path(d['split_file']).name)}`, training seeds {seeds}; mean ± std "
             "over seeds of the per-seed mean; p: two-sided paired Wilcoxon on the per-case Dice averaged over "
             "seeds.", "",
             "| Prediction | Seeds | Dice | per seed | ASSD (mm) |", "|---|---|---|---|---|"]
    for r in table.itertuples():
        name = "model 1 (`CP_best_model1`)" if r.method == "model1" else "ensemble of model 1 and 2 (`--ensemble`)"
        spread = r.seeds > 1   # one seed has no standard deviation: the mean alone, as the ablation table
        dice = f"{r.dice_mean:.3f}" + (f" ± {r.dice_std:.3f}" if spread else "")
        assd = f"{r.assd_mean:.2f}" + (f" ± {r.assd_std:.2f}" if spread else "")
        lines.append(f"| {name} | {r.seeds} | {dice} | {r.per_seed} | {assd} |")
    lines += ["", f"p (ensemble vs model 1) = {pval:.3g}" if not np.isnan(pval) else "p undefined (no difference)"]
    tables = root / "ensemble" / args.variant   # beside the variant's masks
    save_together({tables / "ensemble.csv": table, tables / "ensemble_per_case.csv": per_case,
                   tables / "ensemble.md": "\n".join(lines) + "\n"})
    print("\n".join(lines) + f"\nwritten {tables / 'ensemble.md'}, ensemble.csv, ensemble_per_case.csv")
    return table


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
