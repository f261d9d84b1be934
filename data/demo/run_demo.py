"""The whole PA-Seg sequence at demo scale on the synthetic VS-like dataset, through the real
scripts and flags, ending with the paper's results table and overlay pictures.

Steps: generate data → 7 points (simulated) → geodesic expansion → five trainings (stage 1 of the
primary U_Net2D5 and of an auxiliary U_Net2D5 from another seed, SCM from those two, the
seeds-only baseline: stage 1 without mCRF and VM, and full supervision: stage 1 on the full
labels), run as subprocesses of the real scripts, ``--jobs`` side by side → inference and scores
of every row. Writes ``<output_dir>/results.md``, ``results.csv``, ``selection.csv``,
``overlay_<case>.png`` and the trainings' logs in ``<output_dir>/logs/``. The results, runs, data
and split of an earlier demo are replaced only with ``--overwrite``.

The training schedule was chosen on the validation cases, the dataset's size so that full
supervision converges (see docs/results/demo.md).
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import matplotlib

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages first

from utilities.core.arguments import ArgumentParser

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch

import inference
from utilities import scores
from utilities.core.jobs import Job, run_jobs, thread_env
from utilities.core.textdata import md_cell
from utilities.data.grid import Grid, check_same_grid, subject_path
from utilities.data.io import atomic_path, check_overwrite, read_image, save_together, write_like
from utilities.data.layout import RunLayout
from utilities.data.splits import read_split, subjects_of
from utilities.evaluation.scoring import read_scores
from utilities.method.defaults import (
    ANNOTATION_POSTFIX,
    GEODESIC_THRESHOLD,
    GEODESIC_WEIGHT,
    IMAGE_POSTFIX,
    KD_TEMPERATURE,
    KERNEL_RADIUS,
    LABEL_POSTFIX,
    PRIMARY_NETWORK,
    RECIPE,
    SEED_FOLDER,
    SEED_POSTFIX,
    WEIGHT_KD,
)
from utilities.method.sequence import Launcher, command, seed_args, teacher_args
from utilities.workflow.cli import positive_int
from utilities.workflow.stage0 import generate_geodesic_labels, output_folder

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
#: The training scripts run as subprocesses: this Python, the scripts of this checkout.
LAUNCHER = Launcher(sys.executable, ROOT)


def _sibling(name: str) -> ModuleType:
    """Import ``<this folder>/<name>.py`` (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location(f"paseg_demo_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


make_demo_data = _sibling("make_demo_data")

PRIMARY, AUXILIARY = PRIMARY_NETWORK, PRIMARY_NETWORK


@dataclass(frozen=True)
class Method:
    """One row of the results table: where its predictions live."""

    row: str
    model_dir: Path
    network: str
    epoch_inf: str | None  # None: predictions written directly (expanded seeds)


@dataclass(frozen=True)
class Scale:
    """Demo size: full (the numbers of docs/results/demo.md) or quick (the test)."""

    epochs_stage1: int
    rampup_epochs: int
    epochs_scm: int
    iterative_epochs: int
    spatial_shape: tuple[int, int, int]
    down_size: tuple[int, int, int]
    data_flags: tuple[str, ...]


#: The demo's dataset: 48 training, 8 validation and 12 inference cases of 32 x 32 x 32 voxels at
#: 1 x 1 x 1.5 mm (the generator's default field of view and lesions, at the in-plane resolution the
#: paper's mCRF sees after halving); with the generator's 16 training cases of 64 x 64 x 32 voxels
#: full supervision did not generalise (docs/results/demo.md).
DEMO_DATA = ("--size", "32", "32", "32", "--spacing", "1", "1", "1.5", "--num_training", "48",
             "--num_validation", "8", "--num_inference", "12")
FULL = Scale(epochs_stage1=12, rampup_epochs=4, epochs_scm=6, iterative_epochs=3, spatial_shape=(32, 32, 32),
             down_size=(32, 32, 32), data_flags=DEMO_DATA)  # the mCRF at 1 mm in plane, as the paper's halving
QUICK = Scale(epochs_stage1=1, rampup_epochs=1, epochs_scm=1, iterative_epochs=1, spatial_shape=(32, 32, 16),
              down_size=(32, 32, 16), data_flags=("--quick",))


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output_dir", default="./demo_output/", help="models, results table and pictures")
    p.add_argument("--data_dir", default="./demo_output/data/", help="where the synthetic dataset is written")
    p.add_argument("--split_file", default="./demo_output/split_demo.csv", help="the demo split")
    p.add_argument("--quick", action="store_true", help="tiny data and 1-2 epochs: the sequence in well under a minute")
    p.add_argument("--epochs_stage1", type=positive_int, default=None, help="override the stage-1 epochs")
    p.add_argument("--epochs_scm", type=positive_int, default=None, help="override the SCM epochs")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--train_seed", type=int, default=0,
                   help="seed of every training run (the auxiliary network uses this + 1)")
    p.add_argument("--threads", type=positive_int, default=1, help="CPU threads of each training run")
    p.add_argument("--jobs", type=positive_int, default=2,
                   help="training runs side by side (two single-threaded runs use 2 cores best)")
    p.add_argument("--overlays", type=positive_int, default=3, help="inference cases drawn as overlay PNGs")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the split, the dataset, the runs and the results of an earlier demo in these folders")
    return p


#: What the demo writes into ``--output_dir`` (besides ``overlay_<case>.png``) and ``--data_dir``.
OUTPUTS = ("results.md", "results.csv", "selection.csv", "models", "logs")
DATA_FOLDERS = (*make_demo_data.PRESETS["vs"].folders, "geodesic")


def check_outputs(output_dir: Path, data_dir: Path, split_file: Path, overwrite: bool) -> None:
    """:func:`utilities.data.io.check_overwrite`'s rule, before the first step: the split, a data folder
    that holds files, a result, the runs or an overlay of an earlier demo are replaced only with
    ``overwrite`` (every training runs with ``--overwrite`` then)."""
    check_overwrite([split_file], "--split_file", overwrite)
    check_overwrite([data_dir / name for name in DATA_FOLDERS if any((data_dir / name).glob("*"))], "--data_dir",
                    overwrite, "demo data folder")
    check_overwrite([*(output_dir / name for name in OUTPUTS), *sorted(output_dir.glob("overlay_*.png"))],
                    "--output_dir", overwrite, "demo output")


class Timer:
    """Runs the steps, prints and records the time of each."""

    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []

    def run(self, name: str, fn: Callable[[], object]) -> object:
        print(f"\n=== {name} ===", flush=True)
        t0 = time.time()
        result = fn()
        self.times.append((name, time.time() - t0))
        print(f"=== {name}: {self.times[-1][1]:.1f} s ===", flush=True)
        return result


def run_demo(output_dir: Path, data_dir: Path, split_file: Path, scale: Scale, device: str, seed: int,
             train_seed: int, n_overlays: int, jobs_at_once: int = 2, threads: int = 1) -> pd.DataFrame:
    """The demo; returns the results table. The five trainings run as subprocesses of the real
    scripts, ``jobs_at_once`` side by side with ``threads`` CPU threads each (logs in
    ``<output_dir>/logs/``); inference and scoring run in this process."""
    timer = Timer()
    t_start = time.time()
    timer.run("generate the synthetic dataset (7 points simulated)", lambda: make_demo_data.main(
        ["--output_dir", str(data_dir), "--split_file", str(split_file), "--seed", str(seed), "--no_report",
         "--overwrite", *scale.data_flags]))
    images, labels = data_dir / "image_crop", data_dir / "label_crop"
    geodesic_root = data_dir / "geodesic"
    timer.run("geodesic expansion of the seeds", lambda: generate_geodesic_labels(
        split_file, images, IMAGE_POSTFIX, labels, LABEL_POSTFIX, data_dir / "annotation_7points", ANNOTATION_POSTFIX,
        geodesic_root, GEODESIC_WEIGHT, GEODESIC_THRESHOLD, num_workers=2))
    seeds_dir = output_folder(geodesic_root, GEODESIC_WEIGHT, GEODESIC_THRESHOLD) / SEED_FOLDER

    models = output_dir / "models"
    pa_seg = models / "gatedcrfloss3d22d_multiview_varianceloss"
    jobs = _training_jobs(output_dir, split_file, images, labels, seeds_dir, scale, device, train_seed)
    timer.run(f"training: {len(jobs)} runs, {jobs_at_once} side by side ({threads} CPU thread(s) each)",
              lambda: run_jobs(jobs, jobs_at_once, thread_env(threads), report=lambda line: print(line, flush=True)))
    timer.times += [(f"  {j.name}", j.seconds) for j in jobs]  # nested under the training step

    methods = [
        Method("Expanded seeds (geodesic)", models / "expanded_seeds", "seeds", None),
        Method("Seeds only (partial DiceCE)", models / "seeds_only", PRIMARY, "best"),
        Method("PA-Seg stage 1 (+ mCRF + VM)", pa_seg, PRIMARY, "best"),
        Method("PA-Seg stage 2 (SCM)", models / "SCM", PRIMARY, "best_model1"),
        Method("Full supervision", models / "full_supervision", PRIMARY, "best"),
    ]
    cases = subjects_of(read_split(split_file), "inference")
    write_seed_predictions(cases, seeds_dir, methods[0])
    results = pd.DataFrame([_score(method, split_file, images, labels, scale, device, timer, len(cases))
                            for method in methods])
    selection = compare_selection(pa_seg, models / "selection_seed_dice", results.iloc[2], split_file, images,
                                  labels, scale, device, timer)
    markdown = results_markdown(results, timer.times, time.time() - t_start, selection)
    save_together({output_dir / "results.csv": results, output_dir / "selection.csv": selection,
                   output_dir / "results.md": markdown})
    for case in cases[:n_overlays]:
        draw_overlay(case, images, labels, methods, output_dir / f"overlay_{case}.png")
    print("\n" + markdown)
    return results


def _training_jobs(output_dir: Path, split_file: Path, images: Path, labels: Path, seeds_dir: Path, scale: Scale,
                   device: str, train_seed: int) -> list[Job]:
    """The demo's five trainings, in start order: the two SCM teachers, SCM (the longest), the rest."""
    models = output_dir / "models"
    common = ["--dataset_split", str(split_file), "--path_images", str(images), "--image_postfix", IMAGE_POSTFIX,
              "--path_labels", str(labels), "--label_postfix", LABEL_POSTFIX, "--spatial_shape",
              *map(str, scale.spatial_shape), "--device", device, "--seed", str(train_seed), "--overwrite",
              *RECIPE.args()]  # the recommended recipe against the early collapse, for every training run
    stage1_common = [*common, "--max_epochs", str(scale.epochs_stage1), "--rampup_epochs", str(scale.rampup_epochs),
                     "--down_size", *map(str, scale.down_size), "--kernel_radius", *map(str, KERNEL_RADIUS)]
    seeds_flags = seed_args(seeds_dir)
    pa_seg = models / "gatedcrfloss3d22d_multiview_varianceloss"
    # the auxiliary network: a second U_Net2D5 from another seed (AttU_Net collapsed to all-background
    # on the earlier demo data's validation cases, see docs/results/demo.md)
    pa_seg_aux = models / "gatedcrfloss3d22d_multiview_varianceloss_aux"
    logs = output_dir / "logs"

    def job(name: str, step: str, folder: Path, flags: list[str], needs: tuple[str, ...] = ()) -> Job:
        return Job(name, command(step, ["--model_dir", str(folder)], flags, launcher=LAUNCHER),
                   logs / f"{folder.name}.log", needs)

    primary = f"stage 1 (mCRF + VM): primary {PRIMARY}"
    auxiliary = f"stage 1 (mCRF + VM): auxiliary {AUXILIARY}"
    # list order = start order when a slot frees: the two SCM teachers, then SCM (the longest), then the rest
    jobs = [
        job(primary, "stage1", pa_seg, ["--network", PRIMARY, *stage1_common, *seeds_flags]),
        job(auxiliary, "stage1", pa_seg_aux,
            ["--network", AUXILIARY, *stage1_common, *seeds_flags, "--seed", str(train_seed + 1)]),
        job("stage 2 (SCM)", "scm", models / "SCM",
            [*teacher_args(pa_seg, pa_seg_aux, PRIMARY, AUXILIARY), *common, "--max_epochs", str(scale.epochs_scm),
             "--iterative_epochs", str(scale.iterative_epochs), "--weight_kd", str(WEIGHT_KD), "--T",
             str(KD_TEMPERATURE)],
            needs=(primary, auxiliary)),
        job("baseline: seeds only (partial DiceCE)", "stage1", models / "seeds_only",
            ["--network", PRIMARY, *stage1_common, *seeds_flags, "--weight_gatedcrf", "0", "--weight_variance", "0"]),
        job("reference: full supervision", "stage1", models / "full_supervision",
            ["--network", PRIMARY, *stage1_common, *seed_args(labels, LABEL_POSTFIX), "--weight_gatedcrf", "0",
             "--weight_variance", "0"]),
    ]
    return jobs


def _score(method: Method, split_file: Path, images: Path, labels: Path, scale: Scale, device: str, timer: Timer,
           n_cases: int) -> dict[str, Any]:
    """Inference (unless the method's predictions are written already) and scores: one results row."""
    if method.epoch_inf is not None:
        timer.run(f"inference: {method.row}", lambda m=method: inference.main(
            ["--model_dir", str(m.model_dir), "--network", m.network, "--epoch_inf", m.epoch_inf,
             "--dataset_split", str(split_file), "--path_images", str(images), "--image_postfix", IMAGE_POSTFIX,
             "--phase", "inference", "--spatial_shape", *map(str, scale.spatial_shape), "--device", device]))
    csv = scores.main(["--model_dir", str(method.model_dir), "--network", method.network, "--dataset_split",
                       str(split_file), "--image_postfix", IMAGE_POSTFIX, "--phase", "inference", "--path_labels",
                       str(labels), "--label_postfix", LABEL_POSTFIX])
    cases, summary = read_scores(csv)
    return {"method": method.row, "dice_mean": summary.loc["mean", "dice"], "dice_std": summary.loc["std", "dice"],
            "assd_mean": summary.loc["mean", "assd"], "assd_std": summary.loc["std", "assd"], "cases": n_cases,
            "assd_cases": int(cases["assd"].notna().sum())}


def compare_selection(stage1_dir: Path, copy_dir: Path, dice_row: pd.Series, split_file: Path, images: Path,
                      labels: Path, scale: Scale, device: str, timer: Timer) -> pd.DataFrame:
    """Inference Dice of the stage-1 checkpoint chosen by validation Dice (the paper) and of the
    one chosen label-free by ``seed_dice`` (``CP_best_seed_dice.pth``, copied to its own run
    folder so its predictions do not overwrite the others)."""
    source = RunLayout(stage1_dir, PRIMARY).checkpoint("best_seed_dice")
    target = RunLayout(copy_dir, PRIMARY).checkpoint("best")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    timer.run("inference: stage 1, checkpoint chosen by seed_dice", lambda: inference.main(
        ["--model_dir", str(copy_dir), "--network", PRIMARY, "--epoch_inf", "best", "--dataset_split",
         str(split_file), "--path_images", str(images), "--image_postfix", IMAGE_POSTFIX, "--phase", "inference",
         "--spatial_shape", *map(str, scale.spatial_shape), "--device", device]))
    csv = scores.main(["--model_dir", str(copy_dir), "--network", PRIMARY, "--dataset_split", str(split_file),
                       "--image_postfix", IMAGE_POSTFIX, "--phase", "inference", "--path_labels", str(labels),
                       "--label_postfix", LABEL_POSTFIX])
    summary = read_scores(csv)[1]
    epochs = {m: int(torch.load(p, weights_only=True)["epoch"]) for m, p in
              (("dice", RunLayout(stage1_dir, PRIMARY).checkpoint("best")), ("seed_dice", source))}
    return pd.DataFrame([
        {"selected_by": "dice (full labels)", "epoch": epochs["dice"], "dice_mean": dice_row["dice_mean"],
         "dice_std": dice_row["dice_std"]},
        {"selected_by": "seed_dice (points only)", "epoch": epochs["seed_dice"],
         "dice_mean": summary.loc["mean", "dice"], "dice_std": summary.loc["std", "dice"]},
    ])


def write_seed_predictions(cases: list[str], seeds_dir: Path, method: Method) -> None:
    """The expanded foreground (label 1) as a prediction file, so it is scored like the networks."""
    for case in cases:
        ref = read_image(subject_path(seeds_dir, case, SEED_POSTFIX), "expanded-seed label")
        fg = (sitk.GetArrayFromImage(ref) == 1).astype(np.uint8)
        write_like(fg, ref, RunLayout(method.model_dir, method.network).prediction(case, IMAGE_POSTFIX))


def results_markdown(results: pd.DataFrame, times: list[tuple[str, float]], total: float,
                     selection: pd.DataFrame) -> str:
    lines = ["| Method | Dice (mean ± std) | ASSD in mm (mean ± std) |", "|---|---|---|"]
    for r in results.itertuples():
        assd = f"{r.assd_mean:.2f} ± {r.assd_std:.2f}"
        if r.assd_cases < r.cases:
            assd += f" (over {r.assd_cases} of {r.cases} cases)"
        lines.append(f"| {md_cell(r.method)} | {r.dice_mean:.3f} ± {r.dice_std:.3f} | {assd} |")
    lines += ["", f"{results['cases'].iloc[0]} inference cases.", "",
              "Stage-1 checkpoint selection (PA-Seg stage 1, primary network):", "",
              "| Selected by | Epoch | Inference Dice (mean ± std) |", "|---|---|---|"]
    lines += [f"| {md_cell(r.selected_by)} | {r.epoch} | {r.dice_mean:.3f} ± {r.dice_std:.3f} |"
              for r in selection.itertuples()]
    lines += ["", "Step times:", ""]
    lines += [f"{'  ' if name.startswith('  ') else ''}- {name.strip()}: {seconds:.0f} s" for name, seconds in times]
    lines.append(f"- total: {total:.0f} s")
    return "\n".join(lines) + "\n"


def _on_grid(image: sitk.Image, image_path: Path, path: Path, what: str) -> np.ndarray:
    """The voxels (z, y, x) of ``path``, checked to lie on the grid of ``image`` (the one grid check)."""
    other = read_image(path, what)
    check_same_grid(Grid.of(image), image_path, "image", Grid.of(other), path, what,
                    "the overlay draws it over the image voxel by voxel")
    return sitk.GetArrayFromImage(other)


def draw_overlay(case: str, images: Path, labels: Path, methods: list[Method], out: Path) -> None:
    """Rows = methods, columns = axial, coronal, sagittal slices through the lesion centre;
    label contour in green, prediction contour in red."""
    image_path = subject_path(images, case, IMAGE_POSTFIX)
    image_sitk = read_image(image_path)
    image = sitk.GetArrayFromImage(image_sitk)  # (z, y, x)
    label = _on_grid(image_sitk, image_path, subject_path(labels, case, LABEL_POSTFIX), "label") > 0
    sx, sy, sz = image_sitk.GetSpacing()
    centre = np.round(np.argwhere(label).mean(0)).astype(int) if label.any() else np.array(image.shape) // 2
    views = [("axial", lambda a: a[centre[0]], sy / sx), ("coronal", lambda a: a[:, centre[1]], sz / sx),
             ("sagittal", lambda a: a[:, :, centre[2]], sz / sy)]
    fig, axes = plt.subplots(len(methods), 3, figsize=(9, 3 * len(methods)), squeeze=False)
    for row, method in enumerate(methods):
        pred_path = RunLayout(method.model_dir, method.network).prediction(case, IMAGE_POSTFIX)
        pred = _on_grid(image_sitk, image_path, pred_path, "prediction") > 0
        for col, (name, cut, aspect) in enumerate(views):
            ax = axes[row, col]
            ax.imshow(cut(image), cmap="gray", origin="lower", aspect=aspect)
            for mask, colour in ((label, "lime"), (pred, "red")):
                if cut(mask).any():
                    ax.contour(cut(mask).astype(float), levels=[0.5], colors=colour, linewidths=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name)
            if col == 0:
                ax.set_ylabel(method.row, fontsize=8)
    fig.suptitle(f"{case}: label (green), prediction (red)")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = build_parser().parse_args(argv)
    scale = QUICK if args.quick else FULL
    if args.epochs_stage1 is not None or args.epochs_scm is not None:
        scale = Scale(**{**scale.__dict__, "epochs_stage1": args.epochs_stage1 or scale.epochs_stage1,
                         "epochs_scm": args.epochs_scm or scale.epochs_scm})
    check_outputs(Path(args.output_dir), Path(args.data_dir), Path(args.split_file), args.overwrite)
    torch.set_num_threads(args.threads * args.jobs)  # inference and scoring here, after the trainings
    return run_demo(Path(args.output_dir), Path(args.data_dir), Path(args.split_file), scale, args.device,
                    args.seed, args.train_seed, args.overlays, args.jobs, args.threads)


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
