"""scores.py --report: report.html with the CSV's numbers (worst Dice first) and three slices
through each lesion as a PNG per case, opened from disk; slices named in the file's own voxel
index; a folder of scans named with or without a postfix."""
from __future__ import annotations

import math
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
from utilities.evaluation.report import ReportCase, ViewSlice, case_picture


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


def test_a_report_that_fails_midway_leaves_the_previous_one(scored, monkeypatch):
    """The pictures and the page are one output: a failure on the third picture leaves the earlier
    report's page and pictures as they were (no picture with the new scores beside the old page)
    and no staging folder."""
    from utilities.evaluation import report
    p, preds, argv = scored
    argv = [*argv, "--report", "--path_images", str(p["image_crop"])]
    scores.main(argv)
    folder = preds / "report_inference"
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    assert "report.html" in before and len(before) == 5
    drawn = []
    real = report.case_picture

    def third_fails(case, out, title=""):
        drawn.append(case.subject)
        if len(drawn) == 3:
            raise OSError(28, "No space left on device")
        return real(case, out, "changed " + title)

    monkeypatch.setattr(report, "case_picture", third_fails)
    with pytest.raises(OSError, match="No space left"):
        scores.main(argv)
    assert len(drawn) == 3 and {f.name: f.read_bytes() for f in folder.iterdir()} == before


def test_slices_go_through_the_lesion(scored, tmp_path):
    p, preds, _ = scored
    case = ReportCase("vs_gk_2", p["image_crop"] / "vs_gk_2_T2.nii.gz", p["label_crop"] / "vs_gk_2_Label.nii.gz",
                      preds / "vs_gk_2_pred.nii.gz")
    z, y, x = (s.display_index for s in case_picture(case, tmp_path / "c.png"))
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
    # every missing image listed, as every missing-files message does (utilities.data.grid.listed); never the
    # prediction itself, though it is the only file of the subject in that folder
    assert one_line(err) == (f"--report: 4 image(s) missing in --path_images {preds}: vs_gk_1_T2 or vs_gk_1; "
                             "vs_gk_2_T2 or vs_gk_2; vs_gk_3_T2 or vs_gk_3; vs_gk_4_T2 or vs_gk_4 (any of .nii.gz, "
                             ".nii, .nrrd, .nhdr, .mha, .mhd); check --path_images/--image_postfix")
    assert not (preds / "report_inference").exists() and not (preds / "results_inference.csv").exists()


def _write(array, path, like=None, direction=None):
    image = sitk.GetImageFromArray(array)
    if like is not None:
        image.CopyInformation(like)
    elif direction is not None:
        image.SetDirection(direction)
        image.SetSpacing((1.0, 0.8, 1.5))
        image.SetOrigin((10.0, -20.0, 30.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return image


#: A file stored with permuted, flipped axes: i runs inferior->superior, j left->right, k
#: posterior->anterior (direction columns (0,0,1), (-1,0,0), (0,-1,0)).
PERMUTED = (0.0, -1.0, 0.0, 0.0, 0.0, -1.0, 1.0, 0.0, 0.0)


def _ball(size_ijk, centre_ijk, radius=3):
    """A ball in file voxel indices, as a (k, j, i) array; its centre slice is the unique fullest."""
    k, j, i = np.ogrid[:size_ijk[2], :size_ijk[1], :size_ijk[0]]
    ci, cj, ck = centre_ijk
    return ((i - ci) ** 2 + (j - cj) ** 2 + (k - ck) ** 2 <= radius ** 2).astype(np.uint8)


def test_slices_are_named_in_the_file_index(tmp_path):
    """An image stored with permuted, flipped axes (size i, j, k = 20, 24, 28): the lesion's centre
    is file voxel (7, 16, 10). The report names the slices by the file's own index (axial cuts
    file axis i at 7, coronal k at 10, sagittal j at 16), where the reoriented display frame has
    (z, y, x) = (7, 17, 7)."""
    size, centre = (20, 24, 28), (7, 16, 10)
    rng = np.random.default_rng(0)
    image = _write(rng.normal(100, 10, size[::-1]).astype(np.float32), tmp_path / "images" / "brain1.nrrd",
                   direction=PERMUTED)
    lesion = _ball(size, centre)
    _write(lesion, tmp_path / "labels" / "brain1_Label.nii.gz", like=image)
    _write(lesion, tmp_path / "preds" / "brain1.nrrd", like=image)
    case = ReportCase("brain1", tmp_path / "images" / "brain1.nrrd", tmp_path / "labels" / "brain1_Label.nii.gz",
                      tmp_path / "preds" / "brain1.nrrd")
    slices = case_picture(case, tmp_path / "c.png")
    assert slices == (ViewSlice("axial", 7, "i", 7), ViewSlice("coronal", 17, "k", 10),
                      ViewSlice("sagittal", 7, "j", 16))
    assert [str(s) for s in slices] == ["axial: slice i=7", "coronal: slice k=10", "sagittal: slice j=16"]
    # the page says the same, with what the numbers are
    scores.main(["--path_predictions", str(tmp_path / "preds"), "--path_labels", str(tmp_path / "labels"),
                 "--report", "--path_images", str(tmp_path / "images")])
    page = (tmp_path / "preds" / "report_all" / "report.html").read_text(encoding="utf-8")
    assert '<p class="slices">axial: slice i=7, coronal: slice k=10, sagittal: slice j=16</p>' in page
    assert "the file&#x27;s own voxel indices, counted from 0 along its stored axes i, j, k" in page


@pytest.mark.parametrize("image_names, prediction_names, flags", [
    # scans named without a postfix, as inference.py --input_folder accepts them; masks named after them
    (["brain1.nrrd", "brain2.nrrd"], ["brain1.nii.gz", "brain2.nii.gz"], []),
    # scans with a postfix: found by the prediction's own name (inference.py names a mask after its image) ...
    (["brain1_T2.nrrd", "brain2_T2.mha"], ["brain1_T2.nii.gz", "brain2_T2.nrrd"], []),
    # ... or by --image_postfix, the predictions named <subject>
    (["brain1_T2.nrrd", "brain2_T2.nrrd"], ["brain1.nii.gz", "brain2.nii.gz"], ["--image_postfix", "T2"]),
], ids=["no postfix", "prediction name", "image_postfix"])
def test_report_from_a_folder(tmp_path, image_names, prediction_names, flags):
    size = (16, 18, 20)
    for k, (image_name, prediction_name) in enumerate(zip(image_names, prediction_names)):
        image = _write(np.full(size[::-1], 50.0 + k, np.float32), tmp_path / "images" / image_name,
                       direction=PERMUTED)
        lesion = _ball(size, (8, 9, 10))
        _write(lesion, tmp_path / "labels" / f"brain{k + 1}_Label.nii.gz", like=image)
        _write(lesion if k == 0 else np.zeros_like(lesion), tmp_path / "preds" / prediction_name, like=image)
    csv = scores.main(["--path_predictions", str(tmp_path / "preds"), "--path_labels", str(tmp_path / "labels"),
                       "--report", "--path_images", str(tmp_path / "images"), *flags])
    page = tmp_path / "preds" / "report_all" / "report.html"
    parser = _Page()
    parser.feed(page.read_text(encoding="utf-8"))
    assert [row[0][0] for row in parser.rows] == ["brain2", "brain1", "mean", "std"]   # worst Dice first
    assert pd.read_csv(csv)["dice"].tolist()[:2] == [1.0, 0.0]
    assert sorted(parser.images) == ["case000_brain1.png", "case001_brain2.png"]
    for name in parser.images:
        with Image.open(page.parent / name) as picture:
            assert picture.format == "PNG"


def test_a_rescore_without_report_names_the_earlier_report(scored, capsys):
    """The report of an earlier scoring stays beside a table it does not show: said so."""
    p, preds, argv = scored
    scores.main([*argv, "--report", "--path_images", str(p["image_crop"])])
    capsys.readouterr()
    scores.main(argv)
    page = preds / "report_inference" / "report.html"
    assert capsys.readouterr().err == (f"warning: {page} is an earlier scoring's report, not of the table just "
                                       "written; pass --report (with --path_images) to write it again, or delete "
                                       f"{page.parent}\n")
    scores.main([*argv, "--report", "--path_images", str(p["image_crop"])])
    assert capsys.readouterr().err == ""
