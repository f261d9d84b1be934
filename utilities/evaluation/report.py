"""An HTML report of scored predictions: the metrics table (worst case first) and, per case,
three orthogonal slices through the lesion with the label and the prediction outlined.

``report.html`` and one PNG per case are written into one folder; the page links the PNGs by
relative name, so it opens from disk in any browser (no server, no script). The table is built
from the scores CSV as written, so its numbers are the CSV's: each cell shows 4 decimals and
carries the CSV value in full in ``data-value``.
"""
from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from utilities.data.grid import Grid, check_same_grid
from utilities.data.io import atomic_path, read_image, save_text, staged_folders

__all__ = ["ReportCase", "ViewSlice", "FILE_AXES", "picture_name", "worst_first", "file_slices", "case_picture",
           "write_report"]

LABEL_COLOUR = "#00d000"
PREDICTION_COLOUR = "#ff2020"
#: Display orientation: array axes (z, y, x) = (inferior→superior, anterior→posterior, right→left).
_ORIENTATION = "LPS"
#: The names of a file's voxel index axes, in its stored order (3D Slicer's IJK).
FILE_AXES = ("i", "j", "k")
#: The views drawn, each with the display (LPS) axis it cuts: axial across S, coronal across P,
#: sagittal across L (SimpleITK index order x, y, z).
_VIEWS = (("axial", 2), ("coronal", 1), ("sagittal", 0))
_SLICE_NOTE = ("Slice numbers are the file's own voxel indices, counted from 0 along its stored axes i, j, k (the "
               "order of the file's dimensions, as 3D Slicer's IJK shows them); the picture itself is drawn "
               "reoriented to the usual radiological views.")


@dataclass(frozen=True)
class ViewSlice:
    """One drawn slice: the view, its index in the display frame (the image reoriented to LPS,
    array ``(z, y, x)``), and the file axis it cuts with the slice's index along it, the number
    a viewer shows for the file."""

    view: str
    display_index: int
    file_axis: str
    file_index: int

    def __str__(self) -> str:
        return f"{self.view}: slice {self.file_axis}={self.file_index}"


@dataclass(frozen=True)
class ReportCase:
    """The files of one scored case."""

    subject: str
    image: Path
    label: Path
    prediction: Path


def picture_name(index: int, subject: str) -> str:
    """The PNG file of case ``index`` (its position in the CSV): a safe, unique name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", subject)[:80]
    return f"case{index:03d}_{safe}.png"


def worst_first(per_case: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """The per-case rows ordered by ``metric`` ascending (NaN first, then ties in CSV order)."""
    return per_case.sort_values(metric, ascending=True, na_position="first", kind="stable")


def _oriented(image: sitk.Image) -> tuple[np.ndarray, sitk.Image]:
    """The voxels of an image reoriented to LPS (array (z, y, x)) and the reoriented image."""
    oriented = sitk.DICOMOrient(image, _ORIENTATION)
    return sitk.GetArrayFromImage(oriented), oriented


def _case_images(case: ReportCase) -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """The image, label and prediction of a case, the last two checked to lie on the image's
    voxel grid (:func:`utilities.data.grid.check_same_grid`: outlines drawn on another grid would
    sit beside the lesion)."""
    image = read_image(case.image, "image")
    ref = Grid.of(image)
    others = []
    for what, path in (("label", case.label), ("prediction", case.prediction)):
        other = read_image(path, what)
        check_same_grid(ref, case.image, "image", Grid.of(other), path, what,
                        "the report draws it over the image voxel by voxel: pass the --path_images it belongs to")
        others.append(other)
    return image, others[0], others[1]


def _centre(masks: Sequence[np.ndarray], shape: Sequence[int]) -> tuple[int, ...]:
    """Per axis, the slice holding the most lesion voxels (the label's, else the prediction's,
    else the middle)."""
    for mask in masks:
        if mask.any():
            return tuple(int(np.argmax(mask.sum(axis=tuple(a for a in range(3) if a != axis)))) for axis in range(3))
    return tuple(s // 2 for s in shape)


def file_slices(image: sitk.Image, oriented: sitk.Image, centre: tuple[int, int, int]) -> tuple[ViewSlice, ...]:
    """The axial, coronal and sagittal slices through ``centre`` (an index ``(z, y, x)`` of
    ``oriented``, ``image`` reoriented to LPS), each named in ``image``'s own voxel indices: the
    file axis whose direction is nearest the view's normal, and the centre's index along it."""
    z, y, x = centre
    point = oriented.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))
    index = image.TransformPhysicalPointToIndex(point)
    mine = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    shown = np.asarray(oriented.GetDirection(), dtype=float).reshape(3, 3)
    slices = []
    for view, axis in _VIEWS:
        file_axis = int(np.argmax(np.abs(mine.T @ shown[:, axis])))
        slices.append(ViewSlice(view, int(centre[2 - axis]), FILE_AXES[file_axis], int(index[file_axis])))
    return tuple(slices)


def case_picture(case: ReportCase, out: str | os.PathLike, title: str = "") -> tuple[ViewSlice, ...]:
    """Draw the axial, coronal and sagittal slices through the lesion of one case (image in grey,
    label outlined green, prediction red) to ``out``; returns the three slices
    (:func:`file_slices`), each titled in the file's own voxel index."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image_img, label_img, pred_img = _case_images(case)
    image, oriented = _oriented(image_img)
    label = _oriented(label_img)[0] > 0
    pred = _oriented(pred_img)[0] > 0
    sx, sy, sz = oriented.GetSpacing()
    z, y, x = _centre([label, pred], image.shape)
    slices = file_slices(image_img, oriented, (z, y, x))
    low, high = np.percentile(image, [0.5, 99.5])
    views = [  # (image slice, label slice, prediction slice, row spacing / column spacing)
        (image[z], label[z], pred[z], sy / sx),
        (image[::-1, y, :], label[::-1, y, :], pred[::-1, y, :], sz / sx),
        (image[::-1, :, x], label[::-1, :, x], pred[::-1, :, x], sz / sy),
    ]
    fig = Figure(figsize=(10, 3.8), dpi=80)
    FigureCanvasAgg(fig)
    for k, ((img, lab, prd, aspect), where) in enumerate(zip(views, slices)):
        ax = fig.add_subplot(1, 3, k + 1)
        ax.imshow(img, cmap="gray", vmin=low, vmax=high if high > low else low + 1, aspect=aspect,
                  interpolation="nearest")
        for mask, colour in ((lab, LABEL_COLOUR), (prd, PREDICTION_COLOUR)):
            if mask.any() and not mask.all():
                ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.2)
        ax.set_title(f"{where} (file voxel index)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{title}   label: green, prediction: red", fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.86, wspace=0.05)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return slices


#: Columns of voxel counts (read back as floats: the mean and std rows leave them empty).
_COUNTS = ("pred_voxels", "label_voxels")


def _cell(value: object, count: bool = False) -> str:
    if count and isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        shown = "NaN" if math.isnan(v) else f"{v:.4f}"
        return f'<td class="num" data-value="{v!r}">{shown}</td>'
    if isinstance(value, (int, np.integer)):
        return f'<td class="num" data-value="{int(value)}">{int(value)}</td>'
    return f"<td>{html.escape(str(value))}</td>"


_STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:0.9em}th,td{border:1px solid #bbb;padding:2px 8px}
td.num{text-align:right;font-family:monospace}tr.summary td{font-weight:bold;background:#eee}
.case{margin:1.5em 0}img{max-width:100%;border:1px solid #ccc}"""


def write_report(table: pd.DataFrame, cases: Sequence[ReportCase], folder: str | os.PathLike, title: str,
                 summary: Sequence[str] = ()) -> Path:
    """Write ``folder/report.html`` and a PNG per case (:func:`picture_name`), all or none: they
    are written into a staging folder and moved into ``folder`` when every one is written, so a
    failure midway leaves the previous report as it was (:func:`~utilities.data.io.staged_folders`).

    Args:
        table: the scores CSV as read back (per-case rows in ``cases`` order, then ``mean`` and
            ``std`` rows).
        cases: the files of each per-case row, in the CSV's order.
    Returns:
        the path of ``report.html``.
    """
    folder = Path(folder)
    per_case = table.iloc[:len(cases)].reset_index(drop=True)
    if [str(s) for s in per_case["subject"]] != [c.subject for c in cases]:
        raise RuntimeError("the report's cases do not match the scores table")
    names = [picture_name(i, c.subject) for i, c in enumerate(cases)]
    with staged_folders(folder) as (staging,):
        where = [case_picture(case, staging / names[i], f"{case.subject}: Dice {float(per_case.iloc[i]['dice']):.4f}")
                 for i, case in enumerate(cases)]
        save_text(_page(table, per_case, names, where, cases, title, summary), staging / "report.html")
    return folder / "report.html"


def _page(table: pd.DataFrame, per_case: pd.DataFrame, names: Sequence[str], where: Sequence[tuple[ViewSlice, ...]],
          cases: Sequence[ReportCase], title: str, summary: Sequence[str]) -> str:
    """The HTML of the report: the metrics table (worst Dice first, then the summary rows) and a
    section per case with its picture."""
    columns = list(table.columns)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = []
    for i in worst_first(per_case).index:
        cells = "".join(_cell(per_case.at[i, c], c in _COUNTS) if c != "subject" else
                        f'<td><a href="#case{i}">{html.escape(str(per_case.at[i, c]))}</a></td>' for c in columns)
        rows.append(f'<tr class="case-row">{cells}</tr>')
    for _, row in table.iloc[len(cases):].iterrows():
        cells = "".join("<td></td>" if c in _COUNTS else _cell(row[c]) for c in columns)
        rows.append(f'<tr class="summary">{cells}</tr>')
    sections = []
    for i in worst_first(per_case).index:
        subject = html.escape(cases[i].subject)
        slices = ", ".join(str(w) for w in where[i])
        sections.append(f'<div class="case" id="case{i}"><h3>{subject}</h3>'
                        f'<img src="{html.escape(names[i])}" alt="{subject}: {slices}">'
                        f'<p class="slices">{slices}</p></div>')
    notes = "".join(f"<li>{html.escape(line)}</li>" for line in summary)
    page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n<ul>{notes}</ul>\n"
            f'<h2>Metrics (worst Dice first)</h2>\n<table id="metrics"><thead><tr>{head}</tr></thead><tbody>\n'
            + "\n".join(rows) + "\n</tbody></table>\n<h2>Cases</h2>\n<p>Three orthogonal slices through the lesion "
            f'(the slices with the most label voxels). {html.escape(_SLICE_NOTE)} Label '
            f'<span style="color:{LABEL_COLOUR}">green</span>, '
            f'prediction <span style="color:{PREDICTION_COLOUR}">red</span>.</p>\n'
            + "\n".join(sections) + "\n</body></html>\n")
    return page
