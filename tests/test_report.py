"""scores.py --report: report.html with the CSV's numbers (worst Dice first) and three slices
through each lesion as a PNG per case, opened from disk."""
from __future__ import annotations

import math
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from helpers import one_line
from PIL import Image
from scipy import ndimage
from synth import make_vs_dataset

from utilities import scores
from utilities.report import ReportCase, case_picture


class _Page(HTMLParser):
    """The metric rows (cells' text and data-value) and the images of a report."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[tuple[str, str | None]]] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self._cell: list | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and attrs.get("class") in ("case-row", "summary"):
            self.rows.append([])
        elif tag == "td" and self.rows:
            self._cell = ["", attrs.get("data-value")]
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1].append(tuple(self._cell))
            self._cell = None


@pytest.fixture
def scored(tmp_path):
    """Four inference cases with predictions of known quality: exact, eroded, shifted, empty."""
    p = make_vs_dataset(tmp_path / "data", 0, 0, 4)
    preds = tmp_path / "pred"
    preds.mkdir()
    for k, subject in enumerate(["vs_gk_1", "vs_gk_2", "vs_gk_3", "vs_gk_4"]):
        label = sitk.ReadImage(str(p["label_crop"] / f"{subject}_Label.nii.gz"))
        array = sitk.GetArrayFromImage(label)
        array = [array, ndimage.binary_erosion(array, iterations=1), np.roll(array, 3, axis=2),
                 np.zeros_like(array)][k].astype(np.uint8)
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(label)
        sitk.WriteImage(out, str(preds / f"{subject}_pred.nii.gz"))
    argv = ["--prediction_dir", str(preds), "--prediction_postfix", "_pred", "--dataset_split", str(p["split"]),
            "--path_labels", str(p["label_crop"])]
    return p, preds, argv


def test_report_matches_the_csv(scored):
    p, preds, argv = scored
    csv = scores.main([*argv, "--report", "--path_images", str(p["image_crop"])])
    page = preds / "report_inference" / "report.html"
    parser = _Page()
    parser.feed(page.read_text(encoding="utf-8"))
    table = pd.read_csv(csv)
    per_case = table.iloc[:4]
    expected_order = per_case.sort_values("dice", kind="stable")["subject"].tolist()
    assert expected_order[0] == "vs_gk_4" and expected_order[-1] == "vs_gk_1"  # empty first, exact last
    subjects = [row[0][0] for row in parser.rows[:4]]
    assert subjects == expected_order
    assert [row[0][0] for row in parser.rows[4:]] == ["mean", "std"]
    # the CSV's last column tells the case rows from the summary rows; the page shows the others
    assert table["row"].tolist() == ["case"] * 4 + ["summary"] * 2 and table.columns[-1] == "row"
    columns = list(table.columns[:-1])
    for row in parser.rows:
        csv_row = table[table["subject"] == row[0][0]].iloc[0]
        assert len(row) == len(columns)
        for (text, value), column in zip(row[1:], columns[1:]):
            if row[0][0] in ("mean", "std") and column in ("pred_voxels", "label_voxels"):
                assert (text, value) == ("", None)
                continue
            expected = float(csv_row[column])
            if math.isnan(expected):
                assert text == "NaN" and math.isnan(float(value))
            else:
                assert float(value) == expected  # the CSV's number, in full
                assert text == (f"{expected:.4f}" if column not in ("pred_voxels", "label_voxels")
                                else str(int(expected)))
    # every case has its picture, linked from its row, and the pictures open as PNG
    assert len(parser.images) == 4 and len(set(parser.images)) == 4
    for index, subject in enumerate(per_case["subject"]):
        name = next(i for i in parser.images if i.startswith(f"case{index:03d}_"))
        assert name == f"case{index:03d}_{subject}.png"
        with Image.open(page.parent / name) as image:
            assert image.format == "PNG" and image.size[0] > 600
    assert sorted(parser.links) == [f"#case{i}" for i in range(4)]
    assert "http" not in page.read_text(encoding="utf-8")  # nothing to fetch: opens from disk


def test_slices_go_through_the_lesion(scored, tmp_path):
    p, preds, _ = scored
    case = ReportCase("vs_gk_2", p["image_crop"] / "vs_gk_2_T2.nii.gz", p["label_crop"] / "vs_gk_2_Label.nii.gz",
                      preds / "vs_gk_2_pred.nii.gz")
    z, y, x = case_picture(case, tmp_path / "c.png")
    label = sitk.GetArrayFromImage(sitk.DICOMOrient(sitk.ReadImage(str(case.label)), "LPS"))
    assert label[z].sum() == label.sum(axis=(1, 2)).max()
    assert label[:, y].sum() == label.sum(axis=(0, 2)).max()
    assert label[:, :, x].sum() == label.sum(axis=(0, 1)).max()
    assert (tmp_path / "c.png").is_file()


def test_report_needs_the_images(scored):
    p, preds, argv = scored
    with pytest.raises(ValueError) as err:
        scores.main([*argv, "--report"])
    assert one_line(err) == "--report needs --path_images, the folder of the images the predictions were made from"
    with pytest.raises(FileNotFoundError) as err:
        scores.main([*argv, "--report", "--path_images", str(preds)])
    # every missing image listed, as every missing-files message does (utilities.grid.listed)
    assert re.fullmatch(r"--report: 4 image\(s\) missing: [^;]*vs_gk_1_T2\.nii\.gz(; [^;]+){3}; check "
                        r"--path_images/--image_postfix", one_line(err))
    assert not (preds / "report_inference").exists() and not (preds / "results_inference.csv").exists()
