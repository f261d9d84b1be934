"""Every script that reads a case reads it in every image format: each one runs on a tiny dataset
stored as .nii.gz and as .nrrd (images, labels, annotations, expanded seeds alike).

The list of scripts is checked against the tree: a new script (a file with a ``__main__`` block)
must be added to :data:`READERS` with its run, or to :data:`NOT_READERS` with the reason it
reads no case, so that no reader escapes this test."""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from helpers import (
    ROOT,
    SHAPE,
    a_model,
    inference_args,
    load_script,
    pretrained,
    project_sources,
    scm_args,
    stage1_args,
)
from synth import blob_case, seeds_from_label, seven_points, write

from utilities.data.grid import Grid
from utilities.data.layout import RunLayout

FORMATS = (".nii.gz", ".nrrd")
FOLDERS = {"image": "T2", "label": "Label", "annotation_7points": "7points", "geodesic_label": "GeodesicLabel"}
SUBJECTS = {"vs_gk_1": "training", "vs_gk_2": "training", "vs_gk_3": "validation", "vs_gk_4": "inference"}


@pytest.fixture(scope="module", params=FORMATS)
def data(request, tmp_path_factory) -> dict[str, Path | str]:
    """4 cases of 32x32x16 voxels (2 training, 1 validation, 1 inference), every file in one format."""
    ext = request.param
    root = tmp_path_factory.mktemp("formats")
    for i, subject in enumerate(SUBJECTS):
        image, label = blob_case((16, 32, 32), seed=i)
        anno = seven_points(label)
        arrays = {"image": image, "label": label, "annotation_7points": anno,
                  "geodesic_label": seeds_from_label(label, anno)}
        for folder, postfix in FOLDERS.items():
            write(arrays[folder], root / folder / f"{subject}_{postfix}{ext}")
    (root / "split.csv").write_text("".join(f"{s},{phase}\n" for s, phase in SUBJECTS.items()))
    return {"root": root, "ext": ext, "split": root / "split.csv", "image_crop": root / "image",
            "label_crop": root / "label", "annotation_7points": root / "annotation_7points",
            "geodesic_label": root / "geodesic_label"}


def _out(data, name: str) -> Path:
    return Path(data["root"]) / "out" / name


def _same_grid(a: Path, b: Path) -> None:
    assert Grid.read(a) == Grid.read(b), (a, b)


# ------------------------------------------------------------------------------ one run per script


def run_plan(data) -> None:
    plan = load_script("plan.py").main([
        "--dataset_split", str(data["split"]), "--path_images", str(data["image_crop"]), "--path_anno_7points",
        str(data["annotation_7points"]), "--path_geodesic_labels", str(data["geodesic_label"]),
        "--output", str(_out(data, "plan.json")), "--overwrite", "--min_cases_for_validation", "0"])
    assert plan["fingerprint"]["image_format"] == data["ext"] and plan["fingerprint"]["training_cases"] == 2


def _stage0(script: str) -> Callable:
    def run(data) -> None:
        out = load_script(script).main([
            "--dataset_split", str(data["split"]), "--path_images", str(data["image_crop"]), "--image_postfix", "T2",
            "--path_labels", str(data["label_crop"]), "--label_postfix", "Label", "--path_anno_7points",
            str(data["annotation_7points"]), "--path_geodesic", str(_out(data, script.split("/")[1])),
            "--num_workers", "1", "--phase", "training"])
        for subject in ("vs_gk_1", "vs_gk_2"):
            _same_grid(out / "geodesic_label" / f"{subject}_GeodesicLabel.nii.gz",
                       Path(data["image_crop"]) / f"{subject}_T2{data['ext']}")
        assert len(pd.read_csv(out / "results_training.csv")) == 4   # 2 cases scored against their labels + mean, std
    return run


def run_stage1(data) -> None:
    run = load_script("train_gatedcrfloss3d22d_multiview_varianceloss.py").main(
        stage1_args(data, _out(data, "stage1"), "--max_epochs", "1", "--overwrite"))
    assert (run / "models" / "CP_best.pth").is_file()


def run_scm(data) -> None:
    pre = pretrained(_out(data, "pre"))
    out = load_script("train_SCM.py").main(scm_args(data, pre, _out(data, "scm"), "--max_epochs", "1", "--overwrite"))
    assert (out / "U_Net2D5" / "models" / "CP_best_model1.pth").is_file()


def run_inference(data) -> None:
    a_model(_out(data, "model"))
    inference = load_script("inference.py")
    written = inference.main(inference_args(data, _out(data, "model")))
    assert [p.name for p in written] == ["vs_gk_4_T2_seg.nii.gz"]
    _same_grid(written[0], Path(data["image_crop"]) / f"vs_gk_4_T2{data['ext']}")
    fmt = data["ext"].lstrip(".")
    folder = inference.main(["--model_dir", str(_out(data, "model")), "--input_folder", str(data["image_crop"]),
                             "--output_folder", str(_out(data, "folder")), "--output_format", fmt, "--device", "cpu",
                             *SHAPE])   # the window of the volumes (the default 128x128x48 pads each 24-fold)
    assert sorted(p.name for p in folder) == [f"vs_gk_{i}_T2{data['ext']}" for i in range(1, 5)]


def run_scores(data) -> None:
    """A run's prediction (.nii.gz, as inference.py writes it: the label of the inference case)
    against the labels in the data's format, with the report (which reads the images); then a
    flat folder of predictions in the data's format."""
    label = Path(data["label_crop"]) / f"vs_gk_4_Label{data['ext']}"
    run = _out(data, "scored")
    prediction = RunLayout(run, "U_Net2D5").prediction("vs_gk_4", "T2")
    prediction.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.ReadImage(str(label)), str(prediction))
    load_script("utilities/scores.py").main([
        "--model_dir", str(run), "--dataset_split", str(data["split"]), "--path_labels", str(data["label_crop"]),
        "--report", "--path_images", str(data["image_crop"])])
    table = pd.read_csv(RunLayout(run, "U_Net2D5").results("inference"), keep_default_na=False)
    assert float(table.loc[table.iloc[:, 0] == "vs_gk_4", "dice"].iloc[0]) == 1.0
    known_step(data, "utilities/scores.py --prediction_dir", lambda: _score_folder(data))


def _score_folder(data) -> None:
    """Score the inference case (its label as the prediction, in the data's format) from a flat
    folder, with the report (which reads the image)."""
    predictions = _out(data, "predictions")
    predictions.mkdir(parents=True, exist_ok=True)
    label = Path(data["label_crop"]) / f"vs_gk_4_Label{data['ext']}"
    sitk.WriteImage(sitk.ReadImage(str(label)), str(predictions / f"vs_gk_4{data['ext']}"))
    load_script("utilities/scores.py").main([
        "--prediction_dir", str(predictions), "--dataset_split", str(data["split"]), "--path_labels",
        str(data["label_crop"]), "--report", "--path_images", str(data["image_crop"])])
    table = pd.read_csv(predictions / "results_inference.csv", keep_default_na=False)
    assert float(table.loc[table.iloc[:, 0] == "vs_gk_4", "dice"].iloc[0]) == 1.0


def run_points_to_annotation(data) -> None:
    """Voxel points of the first case onto its image, then back to a markups file."""
    points = _out(data, "points")
    points.mkdir(parents=True, exist_ok=True)
    source = Path(data["annotation_7points"]) / f"vs_gk_1_7points{data['ext']}"
    anno = sitk.GetArrayFromImage(sitk.ReadImage(str(source)))
    rows = [("fg" if anno[tuple(zyx)] == 2 else f"bg-{k}", zyx[::-1]) for k, zyx in enumerate(np.argwhere(anno > 0))]
    (points / "vs_gk_1.csv").write_text("label,x,y,z\n" + "".join(f"{lab},{x},{y},{z}\n" for lab, (x, y, z) in rows))
    p2a = load_script("data/points_to_annotation.py")
    written = p2a.main(["--points", str(points / "vs_gk_1.csv"), "--path_images", str(data["image_crop"]),
                        "--path_anno_7points", str(_out(data, "anno")), "--csv_space", "voxel", "--overwrite"])
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(written[0]))), anno)

    def back() -> None:
        markups = p2a.main(["--to_markups", "--points", str(_out(data, "markups")), "--path_anno_7points",
                            str(data["annotation_7points"]), "--overwrite"])
        assert len(markups) == 4
    known_step(data, "data/points_to_annotation.py --to_markups", back)


def run_export_nnunet(data) -> None:
    root = load_script("data/export_nnunet.py").main([
        "--dataset_split", str(data["split"]), "--path_images", str(data["image_crop"]), "--path_geodesic_labels",
        str(data["geodesic_label"]), "--output_dir", str(_out(data, "nnunet")), "--overwrite"])
    assert len(list((root / "labelsTr").glob("*.nii.gz"))) == 3 and len(list((root / "imagesTs").iterdir())) == 1


def run_export_model(data) -> None:
    if not (_out(data, "stage1") / "U_Net2D5" / "models" / "CP_final.pth").is_file():
        run_stage1(data)    # the stage-1 run of this format's data, trained here when its test did not run
    manifest = load_script("export_model.py").main(["--model_dir", str(_out(data, "stage1")), "--output",
                                                    str(_out(data, "model.zip")), "--overwrite"])
    assert manifest["card"]["training_data"]["cases_read"] == 2


def run_make_split(data) -> None:
    split = load_script("splits/make_split.py").main([
        "--images_dir", str(data["image_crop"]), "--image_postfix", "T2", "--output", str(_out(data, "split.csv")),
        "--overwrite"])
    assert sorted(split["subject"]) == list(SUBJECTS)


def run_crf_strength(data) -> None:
    rows = load_script("experiments/crf_strength.py").main([
        "--dataset_split", str(data["split"]), "--path_images", str(data["image_crop"]), "--path_labels",
        str(data["label_crop"]), "--patch", "32", "32", "16", "--down_size", "16", "16", "16", "--kernel_radius", "2",
        "--crf_sigma_xy", "3", "--cases", "1"])
    assert [r[:2] for r in rows] == [("vs_gk_1", 0)] and rows[0][2] > 1


def run_simulate_7points(data) -> None:
    load_script("data/simulate_7points.py").main([
        "--dataset_split", str(data["split"]), "--path_labels", str(data["label_crop"]), "--path_anno_7points",
        str(_out(data, "simulated")), "--phase", "training"])
    assert sorted(p.name for p in _out(data, "simulated").iterdir()) == ["vs_gk_1_7points.nii.gz",
                                                                          "vs_gk_2_7points.nii.gz"]


def run_image_crop(data) -> None:
    load_script("data/VS/image_crop.py").main(["--data_dir", str(data["root"]), "--dataset_split", str(data["split"]),
                                               "--crop_size", "16", "32", "32", "--overwrite"])
    assert len(list((Path(data["root"]) / "image_crop").iterdir())) == 4


#: Every script that reads a case, and how it is run here.
READERS: dict[str, Callable] = {
    "plan.py": run_plan,
    "data/VS/generate_geodesic_labels.py": _stage0("data/VS/generate_geodesic_labels.py"),
    "data/BraTS/generate_geodesic_labels.py": _stage0("data/BraTS/generate_geodesic_labels.py"),
    "data/generate_geodesic_labels.py": _stage0("data/generate_geodesic_labels.py"),
    "train_gatedcrfloss3d22d_multiview_varianceloss.py": run_stage1,
    "train_SCM.py": run_scm,
    "inference.py": run_inference,
    "utilities/scores.py": run_scores,
    "data/points_to_annotation.py": run_points_to_annotation,
    "data/export_nnunet.py": run_export_nnunet,
    "export_model.py": run_export_model,
    "splits/make_split.py": run_make_split,
    "experiments/crf_strength.py": run_crf_strength,
    "data/simulate_7points.py": run_simulate_7points,
    "data/VS/image_crop.py": run_image_crop,
}

#: Scripts that read no case of a user's dataset, and why.
NOT_READERS = {
    "data/VS/convert.py": "reads the VS download's DICOM series",
    "data/BraTS/merge_and_move.py": "reads the BraTS 2019 download's own files by their published names",
    "data/demo/make_demo_data.py": "writes synthetic data",
    "data/family/make_family_data.py": "writes synthetic data",
    "data/demo/run_demo.py": "runs the scripts above on the demo data it writes",
    "experiments/ablate.py": "runs the scripts above on a config's data",
    "experiments/family.py": "writes synthetic data and runs the ablation on it",
    "experiments/ensemble.py": "runs inference.py and scores.py on an ablation's runs",
    "experiments/nnunet_baseline.py": "runs data/export_nnunet.py, then nnU-Net on its .nii.gz export",
    "experiments/collapse_analysis.py": "reads training logs",
    "experiments/replay_seed_rule.py": "reads training logs and per-case scores",
    "experiments/records.py": "copies the text files of finished runs (markers, logs, scores)",
    "experiments/stage0_intensity.py": "writes synthetic family members and runs stage 0 on them",
    "experiments/nnunet_trainers/install_paseg_trainers.py": "installs trainer files into nnU-Net",
    "convert_checkpoint.py": "reads checkpoints",
    "benchmarks/bench_crf.py": "synthetic tensors",
    "benchmarks/bench_gpu.py": "synthetic tensors",
    "benchmarks/bench_inference.py": "synthetic tensors",
    "benchmarks/bench_step.py": "writes its own synthetic volumes",
}

#: Known failures, in files of other owners: (step, format) -> what fails. A step listed here that
#: works fails the test, so that it is taken off the list.
KNOWN: dict[tuple[str, str], str] = {}


def known_step(data, step: str, run: Callable[[], None]) -> None:
    """Run one step; a step of :data:`KNOWN` for this format must fail (then the test is an
    expected failure naming what fails) and fails the test once it works."""
    known = KNOWN.get((step, data["ext"]))
    if known is None:
        run()
        return
    try:
        run()
    except Exception as error:   # the known failure, whatever its type
        pytest.xfail(f"{known}: {type(error).__name__}: {str(error)[:200]}")
    pytest.fail(f"{step} now reads {data['ext']}: take it off KNOWN")


def test_every_script_is_listed():
    """Every file with a ``__main__`` block is a reader run here or named as no reader."""
    scripts = {p.relative_to(ROOT).as_posix() for p in project_sources()
               if re.search(r"^if __name__ == .__main__.:", p.read_text(encoding="utf-8"), re.M)
               and not p.relative_to(ROOT).as_posix().startswith("tests/")}
    assert scripts == set(READERS) | set(NOT_READERS)
    assert not set(READERS) & set(NOT_READERS)


#: The stage-1 script first: export_model.py's run then packages the run it trained.
ORDER = sorted(READERS, key=lambda script: (script != "train_gatedcrfloss3d22d_multiview_varianceloss.py", script))


@pytest.mark.parametrize("script", ORDER)
def test_script_reads_every_format(data, script):
    READERS[script](data)


def test_known_failures_name_listed_scripts():
    assert all(step.split()[0] in READERS and ext in FORMATS for step, ext in KNOWN)
