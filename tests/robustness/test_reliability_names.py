"""A subject name is a file-name part (issue 22 class): names that would read or write outside
their folder, or that a split cannot keep, are refused in one line; a name long enough that a
temporary file name would pass 255 bytes still works when the final name is legal.

Names are data, not sentinels (issue 30 class): a subject named ``mean``, ``std``, ``NA``,
``nan``, ``None``, ``1e3``, ``007`` or ``a|b`` survives every table written and read back; a
repeated CSV column or JSON key is refused in one line; a name in a Markdown cell cannot split
its row."""
from __future__ import annotations

import html
import json
import logging
import os
import re

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from helpers import a_model, load_script, one_line
from scipy.stats import wilcoxon
from synth import make_vs_dataset

import inference
from utilities import scores
from utilities.data.grid import check_subject_name, find_subject_file, subject_path
from utilities.data.io import save_csv, save_text
from utilities.data.layout import RunLayout
from utilities.data.splits import read_split, subjects_of
from utilities.evaluation.scoring import read_scores, with_summary
from utilities.training.runs import CsvLog
from utilities.workflow import stage0

make_split = load_script("splits/make_split.py")
EXPORT = load_script("data/export_nnunet.py")
ablate = load_script("experiments/ablate.py")
ENSEMBLE = load_script("experiments/ensemble.py")
FAMILY = load_script("experiments/family.py")
P2A = load_script("data/points_to_annotation.py")
DEMO = load_script("data/demo/run_demo.py")


@pytest.mark.parametrize("name, message", [
    ("../evil", r"subject name '../evil' holds '/', which cannot be part of a file name \(a path separator would "
                r"read or write outside the folder\); rename the subject"),
    ("a\\b", r"holds '\\\\', which cannot be part"),
    ("..", r"subject name '..' cannot be part of a file name; rename the subject"),
    (" s1", r"subject name ' s1' has a leading or trailing space, which split files cannot keep"),
    ("s1\n", r"holds '\\n'"),
])
def test_unsafe_names_refused_by_every_path_builder(tmp_path, name, message):
    for build in (lambda: check_subject_name(name), lambda: subject_path(tmp_path, name, "T2"),
                  lambda: find_subject_file(tmp_path, name, "T2")):
        with pytest.raises(ValueError, match=message) as err:
            build()
        one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_long_name_written_atomically(tmp_path):
    name = "s" * 230 + "_T2_seg.nii.gz"  # 244 bytes: legal; its temporary name would have been 270
    save_text("x", tmp_path / name)
    assert os.listdir(tmp_path) == [name]
    with pytest.raises(ValueError, match=r"is 256 bytes long, more than the 255 a file system allows"):
        save_text("x", tmp_path / ("s" * 249 + ".nii.gz"))


def test_inference_and_export_with_230_character_subjects(tmp_path):
    p = make_vs_dataset(tmp_path, 1, 1, 1)
    long = "v" * 230
    for folder, postfix in (("image_crop", "T2"), ("label_crop", "Label"), ("geodesic_label", "GeodesicLabel")):
        (p[folder] / f"vs_gk_3_{postfix}.nii.gz").rename(p[folder] / f"{long}_{postfix}.nii.gz")
    p["split"].write_text(f"vs_gk_1,training\nvs_gk_2,validation\n{long},inference\n")
    a_model(tmp_path / "m")
    written = inference.main(["--model_dir", str(tmp_path / "m"), "--dataset_split", str(p["split"]),
                              "--path_images", str(p["image_crop"]), "--spatial_shape", "32", "32", "16",
                              "--device", "cpu"])
    assert [w.name for w in written] == [f"{long}_T2_seg.nii.gz"] and written[0].is_file()
    root = EXPORT.main(["--dataset_split", str(p["split"]), "--path_images", str(p["image_crop"]),
                        "--path_geodesic_labels", str(p["geodesic_label"]), "--output_dir", str(tmp_path / "raw"),
                        "--dataset_id", "3", "--dataset_name", "Long"])
    assert (root / "imagesTs" / f"{long}_0000.nii.gz").is_file()


def test_make_split_refuses_names_a_split_cannot_keep(tmp_path):
    images = tmp_path / "image"
    images.mkdir()
    for name in ("a", " b"):
        (images / f"{name}_Flair.nii.gz").write_bytes(b"")
    with pytest.raises(ValueError) as err:
        make_split.main(["--images_dir", str(images), "--output", str(tmp_path / "split.csv")])
    assert one_line(err) == (f"--images_dir {images}: subject name ' b' has a leading or trailing space, which split "
                             "files cannot keep; rename the subject (and its files)")
    assert not (tmp_path / "split.csv").exists()


# --------------------------------------------------------------------------------------------
# Names are data, not sentinels (issue 30, item 2): a subject named like a summary row or like a
# missing value survives every table a run writes and reads back; a repeated CSV column or JSON
# key is refused in one line; a name in a Markdown cell cannot split the row.
# --------------------------------------------------------------------------------------------
NAMES = ["mean", "std", "NA", "nan", "None", "1e3", "007", "a|b"]
#: Case k's prediction is the label's cube cut by j = k % 4 of its 6 columns: Dice 2(6 - j)/(12 - j).
DICE = [2 * (6 - k % 4) / (12 - k % 4) for k in range(len(NAMES))]


def _mask(shape, columns):
    mask = np.zeros(shape, np.uint8)
    mask[2:6, 2:8, 2:2 + columns] = 1
    return mask


def _write_volume(array, path):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 2.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


@pytest.fixture
def named(tmp_path):
    """Predictions, labels and images of the cases :data:`NAMES` (inference phase) and a split."""
    shape = (8, 12, 12)
    for k, name in enumerate(NAMES):
        _write_volume(_mask(shape, 6), tmp_path / "labels" / f"{name}_Label.nii.gz")
        _write_volume(_mask(shape, 6 - k % 4), RunLayout(tmp_path / "m", "U_Net").prediction(name, "T2"))
        _write_volume(np.arange(np.prod(shape), dtype=np.float32).reshape(shape),
                      tmp_path / "images" / f"{name}_T2.nii.gz")
    split = tmp_path / "split.csv"
    split.write_text("".join(f"{n},inference\n" for n in NAMES) + "t1,training\n", encoding="utf-8")
    return tmp_path, split


def test_names_survive_the_split_reader(named):
    _, split = named
    assert subjects_of(read_split(split), "inference") == NAMES


def test_a_subject_named_mean_is_a_case_of_the_scores_table_and_its_report(named):
    root, split = named
    out = scores.main(["--model_dir", str(root / "m"), "--network", "U_Net", "--dataset_split", str(split),
                       "--image_postfix", "T2", "--phase", "inference", "--path_labels", str(root / "labels"),
                       "--label_postfix", "Label", "--report", "--path_images", str(root / "images")])
    raw = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert raw["subject"].tolist() == [*NAMES, "mean", "std"]
    assert raw["row"].tolist() == ["case"] * 8 + ["summary"] * 2 and list(raw.columns)[-1] == "row"
    cases, summary = read_scores(out)
    assert cases["subject"].tolist() == NAMES
    assert cases["dice"].tolist() == pytest.approx(DICE)
    assert summary.loc["mean", "dice"] == pytest.approx(np.mean(DICE))      # over all 8 cases
    assert summary.loc["std", "dice"] == pytest.approx(np.std(DICE))
    page = (out.parent / "report_inference" / "report.html").read_text(encoding="utf-8")
    for name in NAMES:   # every case has its section (the report matched the CSV's names)
        assert f"<h3>{html.escape(name)}</h3>" in page


def _scores_csv(path, dice):
    per_case = pd.DataFrame({"subject": NAMES, "dice": dice, "assd": [0.5] * len(NAMES),
                             "pred_voxels": [10] * len(NAMES)})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_csv(with_summary(per_case, ["dice", "assd"]), path)


def _config(root, split, **variant_a):
    cfg = {"title": "t", "dataset": {"split_file": str(split), "images": str(root), "image_postfix": "T2",
                                     "labels": str(root), "label_postfix": "Label", "annotations": str(root),
                                     "annotation_postfix": "7points"},
           "base": {"stage1": {"--network": "U_Net2D5"}},
           "variants": {"seeds": {"kind": "seeds"}, "a": {"kind": "stage1", "label": "A", **variant_a}},
           "seeds": [0], "baseline": "seeds"}
    path = root / "cfg.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return ablate.load_config(path)


def test_the_ablation_table_pairs_every_case_whatever_its_name(named):
    root, split = named
    cfg = _config(root, split)
    runs = ablate.plan_runs(cfg, root / "out", (0,), ["seeds", "a"], "cpu", "python")
    _scores_csv(runs[0].results, [0.5] * len(NAMES))
    _scores_csv(runs[1].results, DICE)
    table, per_case = ablate.summarize(cfg, runs, ["seeds", "a"])
    assert per_case[per_case["variant"] == "a"]["subject"].tolist() == NAMES
    assert per_case[per_case["variant"] == "a"]["dice"].tolist() == pytest.approx(DICE)
    row = table.set_index("variant").loc["a"]
    assert row["cases"] == 8 and row["dice_mean"] == pytest.approx(np.mean(DICE))
    assert row["wilcoxon_p"] == pytest.approx(float(wilcoxon(DICE, [0.5] * 8).pvalue))   # 8 pairs
    assert ENSEMBLE._cases(runs[1].results).index.tolist() == NAMES


def test_the_geodesic_metrics_keep_a_subject_named_std(tmp_path):
    results = [stage0._Result("std", {"precision": 1.0, "recall": 0.5, "dice": 2 / 3, "jaccard": 0.5}),
               stage0._Result("007", {"precision": 1.0, "recall": 1.0, "dice": 1.0, "jaccard": 1.0})]
    stage0._write_metrics(results, {"std": "training", "007": "training"}, tmp_path, logging.getLogger("t"))
    cases, summary = read_scores(tmp_path / "results_training.csv")
    assert cases["subject"].tolist() == ["std", "007"] and cases["dice"].tolist() == pytest.approx([2 / 3, 1.0])
    assert summary.loc["mean", "recall"] == 0.75 and summary.loc["std", "recall"] == 0.25


def test_a_scores_table_written_before_the_row_column_is_read_by_position(tmp_path):
    path = tmp_path / "results_inference.csv"
    path.write_text("subject,dice\nmean,0.25\nNA,0.75\nmean,0.5\nstd,0.25\n", encoding="utf-8")
    cases, summary = read_scores(path)
    assert cases["subject"].tolist() == ["mean", "NA"] and cases["dice"].tolist() == [0.25, 0.75]
    assert summary.loc["mean", "dice"] == 0.5


@pytest.mark.parametrize("reader, what, text, column", [
    (lambda p: read_scores(p), "scores table", "subject,dice,dice,row\na,1,1,case\n", "dice"),
    (lambda p: CsvLog(p, start_epoch=1), "--resume: training log", "epoch,loss,loss\n1,0.5,0.5\n", "loss"),
    (lambda p: P2A.read_points(p, "LPS"), "point file", "label,x,y,z,x\nfg,1,2,3,4\n", "x"),
])
def test_a_csv_header_that_repeats_a_column_is_named(tmp_path, reader, what, text, column):
    path = tmp_path / "table.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as err:
        reader(path)
    assert one_line(err).startswith(f"{what} {path}: its header names column {column!r} twice; rename or delete one "
                                    "of them (only one of the two would be read)")


def test_a_split_header_that_repeats_a_column_is_named(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("subject,subject\na,training\n", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        read_split(path)
    assert one_line(err) == (f"split file {path}: its header names column 'subject' twice; rename or delete one of "
                             "them (only one of the two would be read)")


def test_a_repeated_json_key_is_named(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"title": "t", "seeds": [0], "seeds": [0, 1]}', encoding="utf-8")
    with pytest.raises(ValueError) as err:
        ablate.load_config(cfg)
    assert one_line(err) == (f"config {cfg}: key 'seeds' appears twice in one JSON object (the second would silently "
                             "replace the first); keep one")
    points = tmp_path / "p.mrk.json"
    points.write_text('{"markups": [{"type": "Fiducial", "coordinateSystem": "LPS", "coordinateSystem": "RAS", '
                      '"controlPoints": []}]}', encoding="utf-8")
    with pytest.raises(ValueError) as err:
        P2A.read_points(points)
    assert one_line(err) == (f"point file {points}: key 'coordinateSystem' appears twice in one JSON object (the "
                             "second would silently replace the first); keep one")
    with pytest.raises(SystemExit):
        FAMILY.build_parser().parse_args(["--family_seeds", "1", "--output_dir", str(tmp_path), "--stage1_flags",
                                          '{"--max_epochs": 3, "--max_epochs": 5}'])
    assert ("argument --stage1_flags: key '--max_epochs' appears twice in one JSON object (the second would "
            "silently replace the first); keep one") in capsys.readouterr().err


def _cells(line):
    """The cells of a Markdown table row: split at the pipes that are not escaped."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_a_name_in_a_markdown_table_cannot_split_its_row(named):
    root, split = named
    cfg = _config(root, split, label="A|B\nsecond line")
    runs = ablate.plan_runs(cfg, root / "out", (0,), ["seeds", "a"], "cpu", "python")
    for run in runs:
        _scores_csv(run.results, DICE)
    table, _ = ablate.summarize(cfg, runs, ["seeds", "a"])
    row = [line for line in ablate.table_markdown(cfg, table).splitlines() if line.startswith("| A")]
    assert len(row) == 1 and len(_cells(row[0])) == 10
    assert _cells(row[0])[0] == "A\\|B second line (`a`)"
    summary = pd.DataFrame([{"member": 1, "variant": "stage1_plan", "seeds": 1, "dice_mean": 0.5, "failed": 0,
                             "budget": "4 (1 × 4), batch 1"}])
    markdown = FAMILY._markdown(summary, "", "Family | round\n2")
    assert markdown.startswith("# Family \\| round 2\n")
    demo = DEMO.results_markdown(
        pd.DataFrame([{"method": "x|y", "dice_mean": 0.5, "dice_std": 0.1, "assd_mean": 1.0, "assd_std": 0.5,
                       "cases": 2, "assd_cases": 2}]), [], 1.0,
        pd.DataFrame([{"selected_by": "dice", "epoch": 3, "dice_mean": 0.5, "dice_std": 0.1}]))
    assert "| x\\|y | 0.500 ± 0.100 | 1.00 ± 0.50 |" in demo.splitlines()
    assert "| dice | 3 | 0.500 ± 0.100 |" in demo.splitlines()   # ordinary names as before


def test_a_plan_with_a_repeated_key_is_named(tmp_path):
    """plan.json is a file users edit by hand: read through utilities.core.textdata.loads_json, a flag
    written twice in a section is one line naming the plan and the flag, not the second value."""
    from utilities.workflow.plan import PLAN_VERSION, read_plan

    plan = tmp_path / "plan.json"
    head = f'{{"version": {PLAN_VERSION}, "scm": {{}}, "inference": {{}}, '
    plan.write_text(head + '"stage1": {"--max_epochs": 10, "--max_epochs": 300}}', encoding="utf-8")
    with pytest.raises(ValueError) as err:
        read_plan(plan)
    assert one_line(err) == (f"--plan {plan}: key '--max_epochs' appears twice in one JSON object (the second would "
                             "silently replace the first); keep one")
    plan.write_text(head + '"stage1": {"--max_epochs": 300}}', encoding="utf-8")
    assert read_plan(plan)["stage1"] == {"--max_epochs": 300}
