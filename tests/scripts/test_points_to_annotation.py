"""data/points_to_annotation.py: clicked points (Slicer .mrk.json / .fcsv, CSV) → 7-point annotation
volumes on an oblique, flipped image, and back; every check."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import load_script, one_line

from utilities.method.geodesic import expand_seeds
from utilities.workflow.cli import run_main

P2A = load_script("data/points_to_annotation.py")

SIZE = (24, 20, 14)  # (i, j, k) = SimpleITK (x, y, z)
SPACING = (0.8, 0.9, 1.7)
ORIGIN = (12.5, -30.25, 7.0)


def _direction() -> tuple[float, ...]:
    """Oblique (30° about z, then 20° about x) and flipped (det −1)."""
    a, b = np.deg2rad(30), np.deg2rad(20)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    d = rz @ rx @ np.diag([-1.0, 1.0, 1.0])
    assert np.linalg.det(d) < 0
    return tuple(d.ravel())


DIRECTION = _direction()

#: (label, voxel index (i, j, k)) of two lesions: 6 background points around each foreground point.
POINTS = [
    ("bg-1", (5, 9, 6)), ("bg-2", (15, 9, 6)), ("bg-3", (10, 4, 6)), ("bg-4", (10, 14, 6)),
    ("bg-5", (10, 9, 2)), ("bg-6", (10, 9, 10)), ("fg", (10, 9, 6)),
    ("bg2-1", (17, 15, 9)), ("bg2-2", (22, 15, 9)), ("bg2-3", (19, 12, 9)), ("bg2-4", (19, 18, 9)),
    ("bg2-5", (19, 15, 7)), ("bg2-6", (19, 15, 12)), ("fg2", (19, 15, 9)),
]


def expected_volume(points=POINTS) -> np.ndarray:
    """The annotation by hand: (z, y, x) array, 1/3 background, 2/4 foreground."""
    volume = np.zeros(SIZE[::-1], np.uint8)
    for label, (i, j, k) in points:
        lesion = 2 if "2" in label.split("-")[0] else 1
        volume[k, j, i] = 2 * lesion if label.startswith("fg") else 2 * lesion - 1
    return volume


def write_image(path: Path) -> sitk.Image:
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=SIZE[::-1]).astype(np.float32))
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return sitk.ReadImage(str(path))


def world(image: sitk.Image, points=POINTS, jitter: float = 0.3, seed: int = 1):
    """LPS positions: each voxel index moved by up to ``jitter`` voxels (still nearest to it),
    mapped by SimpleITK."""
    rng = np.random.default_rng(seed)
    out = []
    for label, index in points:
        continuous = np.asarray(index, float) + rng.uniform(-jitter, jitter, 3)
        out.append((label, image.TransformContinuousIndexToPhysicalPoint(continuous.tolist())))
    return out


def ras(xyz):
    return (-xyz[0], -xyz[1], xyz[2])


def mrk_json(path: Path, labelled, system="LPS", description_only=False):
    control = []
    for n, (label, xyz) in enumerate(labelled):
        position = xyz if system == "LPS" else ras(xyz)
        control.append({"id": str(n + 1), "label": f"F-{n + 1}" if description_only else label,
                        "description": label if description_only else "", "position": list(position),
                        "orientation": [-1, 0, 0, 0, -1, 0, 0, 0, 1], "selected": True, "locked": False,
                        "visibility": True, "positionStatus": "defined"})
    doc = {"@schema": "markups-schema-v1.0.3.json#",
           "markups": [{"type": "Fiducial", "coordinateSystem": system, "coordinateUnits": "mm",
                        "controlPoints": control}]}
    path.write_text(json.dumps(doc))
    return path


def fcsv(path: Path, labelled, system="LPS", newer=False):
    columns = "id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID"
    if newer:  # newer Slicer versions append two columns
        columns += ",level,presentation"
    lines = [f"# Markups fiducial file version = {'5.6' if newer else '4.11'}",
             f"# CoordinateSystem = {system}", f"# columns = {columns}"]
    for n, (label, xyz) in enumerate(labelled):
        x, y, z = xyz if system in ("LPS", "1") else ras(xyz)
        extra = ",0,\"{}\"" if newer else ""
        lines.append(f"vtkMRMLMarkupsFiducialNode_{n},{x!r},{y!r},{z!r},0,0,0,1,1,1,0,{label},,vtkMRMLScalarVolumeNode1{extra}")
    path.write_text("\n".join(lines) + "\n")
    return path


def csv_file(path: Path, rows, header="label,x,y,z"):
    path.write_text(header + "\n" + "".join(f"{label},{a!r},{b!r},{c!r}\n" for label, (a, b, c) in rows))
    return path


@pytest.fixture
def case(tmp_path):
    image = write_image(tmp_path / "img" / "s1_T2.nii.gz")
    return tmp_path, image


def run(root: Path, points: Path, *extra: str) -> Path:
    written = P2A.main(["--points", str(points), "--path_images", str(root / "img"), "--image_postfix", "T2",
                        "--path_anno_7points", str(root / "ann"), *extra])
    return written[0]


def read(path: Path):
    image = sitk.ReadImage(str(path))
    return image, sitk.GetArrayFromImage(image)


# ------------------------------------------------------------------------------ formats
def test_every_format_gives_the_same_volume_on_an_oblique_flipped_image(case):
    root, image = case
    lps = world(image)
    src = root / "points"
    src.mkdir()
    files = {
        "mrk_lps": (mrk_json(src / "a.mrk.json", lps, "LPS"), []),
        "mrk_ras": (mrk_json(src / "b.mrk.json", lps, "RAS"), []),
        "mrk_description": (mrk_json(src / "c.mrk.json", lps, "LPS", description_only=True), []),
        "fcsv_lps": (fcsv(src / "d.fcsv", lps, "LPS"), []),
        "fcsv_ras": (fcsv(src / "e.fcsv", lps, "RAS"), []),
        "fcsv_0_newer": (fcsv(src / "f.fcsv", lps, "0", newer=True), []),
        "csv_lps": (csv_file(src / "g.csv", lps), ["--csv_space", "LPS"]),
        "csv_ras": (csv_file(src / "h.csv", [(lab, ras(p)) for lab, p in lps]), ["--csv_space", "RAS"]),
        "csv_voxel": (csv_file(src / "i.csv", POINTS), ["--csv_space", "voxel"]),
    }
    expected = expected_volume()
    assert np.count_nonzero(expected) == 14
    for name, (path, extra) in files.items():
        out = run(root, path, "--subject", "s1", *extra)
        assert out == root / "ann" / "s1_7points.nii.gz"
        written, volume = read(out)
        assert volume.dtype == np.uint8, name
        np.testing.assert_array_equal(volume, expected, err_msg=name)
        assert written.GetSize() == image.GetSize()
        np.testing.assert_allclose(written.GetOrigin(), image.GetOrigin(), atol=1e-5)
        np.testing.assert_allclose(written.GetSpacing(), image.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(written.GetDirection(), image.GetDirection(), atol=1e-6)
        out.unlink()
    # stage 0 reads the result as two lesions
    label, _ = expand_seeds(sitk.GetArrayFromImage(image), expected, SPACING[::-1], 0.5, 0.2)
    assert set(np.unique(label)) == {0, 1, 2}


def test_nearest_voxel_centre_is_taken(case):
    root, image = case
    # 0.49 voxel from the centre still belongs to it; the result follows SimpleITK's transform
    lps = world(image, jitter=0.49, seed=7)
    out = run(root, mrk_json(root / "s1.mrk.json", lps))  # subject from the file name
    assert out.name == "s1_7points.nii.gz"
    np.testing.assert_array_equal(read(out)[1], expected_volume())


def test_unlabelled_points_foreground_is_the_one_inside(case):
    root, image = case
    one = POINTS[:7]
    unlabelled = [(f"F-{n + 1}", xyz) for n, (_, xyz) in enumerate(world(image, one))]
    unlabelled = unlabelled[3:] + unlabelled[:3]  # the foreground point is not last
    out = run(root, mrk_json(root / "s1.mrk.json", unlabelled))
    np.testing.assert_array_equal(read(out)[1], expected_volume(one))


def test_folder_matched_by_subject_with_split_and_postfix(tmp_path, capsys):
    image = write_image(tmp_path / "img" / "s1_T2.nii.gz")
    write_image(tmp_path / "img" / "s2_T2.nii.gz")
    folder = tmp_path / "clicks"
    folder.mkdir()
    mrk_json(folder / "s1_points.mrk.json", world(image))
    fcsv(folder / "s2_points.fcsv", world(image, POINTS[:7]))
    (folder / "notes_points.mrk.json").write_text("{}")  # matches no subject of the split
    (tmp_path / "split.csv").write_text("s1,training\ns2,validation\n")
    written = P2A.main(["--points", str(folder), "--dataset_split", str(tmp_path / "split.csv"),
                        "--points_postfix", "points", "--path_images", str(tmp_path / "img"),
                        "--image_postfix", "T2", "--path_anno_7points", str(tmp_path / "ann"),
                        "--anno_7points_postfix", "pts"])
    assert [p.name for p in written] == ["s1_pts.nii.gz", "s2_pts.nii.gz"]
    np.testing.assert_array_equal(read(written[0])[1], expected_volume())
    np.testing.assert_array_equal(read(written[1])[1], expected_volume(POINTS[:7]))
    assert "notes_points.mrk.json" in capsys.readouterr().out  # reported, not silently skipped
    written = P2A.main(["--points", str(folder), "--dataset_split", str(tmp_path / "split.csv"), "--phase",
                        "validation", "--points_postfix", "points", "--path_images", str(tmp_path / "img"),
                        "--path_anno_7points", str(tmp_path / "ann2")])
    assert [p.name for p in written] == ["s2_7points.nii.gz"]
    (tmp_path / "split.csv").write_text("s1,training\ns3,training\n")
    with pytest.raises(FileNotFoundError, match=r"1 subject\(s\) have no point file.*s3_points\.\*"):
        P2A.main(["--points", str(folder), "--dataset_split", str(tmp_path / "split.csv"),
                  "--points_postfix", "points", "--path_images", str(tmp_path / "img"),
                  "--path_anno_7points", str(tmp_path / "ann3")])
    assert not (tmp_path / "ann3").exists()


# ------------------------------------------------------------------------------ round trip
def test_round_trip_volume_markups_volume(case):
    root, image = case
    annotation = expected_volume()
    volume = sitk.GetImageFromArray(annotation)
    volume.CopyInformation(image)
    (root / "ann").mkdir()
    sitk.WriteImage(volume, str(root / "ann" / "s1_7points.nii.gz"))
    markups = P2A.main(["--to_markups", "--points", str(root / "check"), "--path_anno_7points", str(root / "ann")])
    assert markups == [root / "check" / "s1.mrk.json"]
    doc = json.loads(markups[0].read_text())
    labels = [p["label"] for p in doc["markups"][0]["controlPoints"]]
    assert labels == [f"bg-{n}" for n in range(1, 7)] + ["fg"] + [f"bg2-{n}" for n in range(1, 7)] + ["fg2"]
    assert doc["markups"][0]["coordinateSystem"] == "LPS"
    back = run(root, markups[0], "--path_anno_7points", str(root / "again"))
    np.testing.assert_array_equal(read(back)[1], annotation)
    # one named file
    single = P2A.main(["--to_markups", "--points", str(root / "one.mrk.json"), "--subject", "s1",
                       "--path_anno_7points", str(root / "ann")])
    assert single == [root / "one.mrk.json"] and json.loads(single[0].read_text()) == doc


# ------------------------------------------------------------------------------ checks
def moved(index, label, new):
    return [(lab, new if lab == label else idx) for lab, idx in index]


@pytest.mark.parametrize("points, message", [
    (moved(POINTS, "bg-2", (24, 9, 6)), r"s1: point 2 \('bg-2'\) at voxel index \[24, 9, 6\] lies outside the image"),
    (POINTS[1:], r"s1: lesion 1 has 5 background and 1 foreground point\(s\) \(point 1 \('bg-2'\).*"
                 r"expected exactly 6 and 1"),
    (POINTS + [("fg", (11, 9, 6))], r"s1: lesion 1 has 6 background and 2 foreground point\(s\)"),
    (moved(POINTS, "fg2", (16, 15, 9)), r"s1: the foreground point 14 \('fg2'\) of lesion 2 at voxel \[16, 15, 9\] "
                                        r"lies outside the box \[17, 12, 7\]..\[22, 18, 12\] of its background points"),
    (moved(POINTS, "bg2-1", (10, 9, 6)),
     r"s1: point 7 \('fg'\) and point 8 \('bg2-1'\) fall on the same voxel \[10, 9, 6\]"),
    ([(lab.replace("2", "3"), idx) for lab, idx in POINTS], r"s1: the points name lesions \[1, 3\]; number them"),
    (POINTS[:7] + [("F-8", (1, 1, 1))], r"s1: point 8 \('F-8'\) has no fg/bg label while others have"),
])
def test_errors_name_the_subject_and_the_point(case, points, message):
    root, _ = case
    with pytest.raises(ValueError, match=message):
        run(root, csv_file(root / "s1.csv", points), "--csv_space", "voxel")
    assert not (root / "ann").exists()  # nothing written


def test_same_voxel_from_world_positions(case):
    root, image = case
    lps = world(image, jitter=0.0)
    # a second click 0.2 voxel from the first background point: the same voxel
    near = image.TransformContinuousIndexToPhysicalPoint([5.2, 9.0, 6.1])
    same = r"point 1 \('bg-1'\) and point 15 \('bg'\) fall on the same voxel \[5, 9, 6\]"
    with pytest.raises(ValueError, match=same):
        run(root, mrk_json(root / "s1.mrk.json", lps + [("bg", near)]))


def test_outside_in_world_coordinates_says_where(case):
    root, image = case
    lps = world(image, POINTS[:7], jitter=0.0)
    lps[0] = ("bg-1", image.TransformContinuousIndexToPhysicalPoint([-0.6, 9.0, 6.0]))
    outside = r"s1: point 1 \('bg-1'\) at LPS \[.*\] mm \(voxel \[-1, 9, 6\]\) lies outside"
    with pytest.raises(ValueError, match=outside):
        run(root, mrk_json(root / "s1.mrk.json", lps))
    # the same positions read as RAS land elsewhere: the flag/header matters
    good = world(image, POINTS[:7], jitter=0.0)
    with pytest.raises(ValueError, match="outside the image"):
        run(root, mrk_json(root / "s1.mrk.json", [(lab, ras(p)) for lab, p in good], "LPS"))


def test_overlapping_lesion_boxes_warn(case, capsys):
    root, _ = case
    shifted = [(lab, (i - 5, j - 3, k - 2) if lab.split("-")[0].endswith("2") else (i, j, k))
               for lab, (i, j, k) in POINTS]
    run(root, csv_file(root / "s1.csv", shifted), "--csv_space", "voxel")
    assert "s1: the boxes of lesions 1 and 2 overlap" in capsys.readouterr().out


def test_unlabelled_points_that_cannot_be_told_apart(case):
    root, _ = case
    flat = [(f"F-{n}", idx) for n, (_, idx) in enumerate(POINTS[:7])]
    with pytest.raises(ValueError, match=r"s1: the 6 points have no fg/bg labels; without labels a file must "
                                         r"hold exactly 7"):
        run(root, csv_file(root / "s1.csv", flat[:6]), "--csv_space", "voxel")
    ambiguous = flat[:6] + [("F-7", (10, 9, 6))]
    ambiguous[0] = ("F-0", (5, 9, 1))  # below the z-minimum point, which is now inside the others' box too
    with pytest.raises(ValueError, match=r"2 of them lie strictly inside the box of the other six"):
        run(root, csv_file(root / "s1.csv", ambiguous), "--csv_space", "voxel")


@pytest.mark.parametrize("make, extra, message", [
    (lambda p: csv_file(p / "s1.csv", POINTS), [], r"is a CSV: pass --csv_space"),
    (lambda p: csv_file(p / "s1.csv", POINTS, header="label,i,j,k"), ["--csv_space", "voxel"],
     r"needs a header row with columns x, y, z"),
    (lambda p: csv_file(p / "s1.csv", [("fg", (1.5, 2, 3))]), ["--csv_space", "voxel"],
     r"voxel indices must be integers \(if these are millimetres, pass --csv_space LPS or RAS\)"),
    (lambda p: (p / "s1.mrk.json").write_text(json.dumps({"markups": [{"type": "Fiducial", "controlPoints": []}]}))
     and p / "s1.mrk.json", [], r"has no 'coordinateSystem'"),
    (lambda p: (p / "s1.mrk.json").write_text(json.dumps({"markups": [{"type": "Curve", "coordinateSystem": "LPS"}]}))
     and p / "s1.mrk.json", [], r"is a 'Curve', expected a point list"),
    (lambda p: (p / "s1.mrk.json").write_text("{not json") and p / "s1.mrk.json", [], r"is not valid JSON"),
    (lambda p: (p / "s1.fcsv").write_text("# CoordinateSystem = XYZ\n# columns = id,x,y,z\nA,1,2,3\n")
     and p / "s1.fcsv",
     [], r"CoordinateSystem 'XYZ' is not LPS, RAS"),
    (lambda p: (p / "s1.fcsv").write_text("# Markups fiducial file version = 4.11\n# CoordinateSystem = LPS\n"
                                          "n0,1,abc,3,0,0,0,1,1,1,0,fg,,\n") and p / "s1.fcsv", [],
     r"row 1 \('fg'\) y is 'abc'"),
])
def test_bad_point_files(case, make, extra, message):
    root, _ = case
    path = make(root)
    with pytest.raises(ValueError, match=message):
        run(root, path, *extra)


def test_missing_inputs(case):
    root, image = case
    path = mrk_json(root / "s9.mrk.json", world(image))
    with pytest.raises(FileNotFoundError, match=r"image file not found: .*s9_T2.nii.gz"):
        run(root, path)
    with pytest.raises(FileNotFoundError, match=r"--points .*nothing does not exist"):
        run(root, root / "nothing")
    with pytest.raises(FileNotFoundError, match=r"annotation file\(s\) missing: .*s1_7points.nii.gz"):
        P2A.main(["--to_markups", "--points", str(root / "check"), "--subject", "s1",
                  "--path_anno_7points", str(root / "ann")])


def test_fcsv_without_coordinate_system_is_ras_with_a_warning(case, capsys):
    root, image = case
    path = fcsv(root / "s1.fcsv", world(image), "RAS")
    path.write_text("\n".join(line for line in path.read_text().splitlines() if "CoordinateSystem" not in line))
    out = run(root, path)
    np.testing.assert_array_equal(read(out)[1], expected_volume())
    assert "no '# CoordinateSystem' line: reading it as RAS" in capsys.readouterr().out


def test_parse_role_convention():
    assert P2A.parse_role("bg") == (1, False) and P2A.parse_role("fg") == (1, True)
    assert P2A.parse_role("bg-3") == (1, False)  # Slicer's counter, not lesion 3
    assert P2A.parse_role("bg2-3") == (2, False) and P2A.parse_role("FG2") == (2, True)
    assert P2A.parse_role("Background_2") == (2, False) and P2A.parse_role("fg 12") == (12, True)
    assert P2A.parse_role("F-1") is None and P2A.parse_role("fgx") is None and P2A.parse_role("") is None


# ------------------------------------------------------------------------------ malformed point files
def _mrk(points, **markup):
    return json.dumps({"markups": [{"type": "Fiducial", "coordinateSystem": "LPS", "controlPoints": points,
                                    **markup}]})


@pytest.mark.parametrize("text, message", [
    (_mrk(None), r"markup 0 has controlPoints null, expected a list of points"),
    (_mrk({"label": "fg"}), r"markup 0 has controlPoints an object, expected a list of points"),
    (json.dumps({"markups": [1]}), r"markup 0 is a number, expected an object with 'type'"),
    (json.dumps({"markups": [None]}), r"markup 0 is null, expected an object"),
    (_mrk([1, 2]), r"markup 0 control point 0 is a number, expected an object with 'label' and 'position'"),
    (_mrk(["fg"]), r"markup 0 control point 0 is a string, expected an object"),
    (_mrk([{"label": "fg", "position": "1,2,3"}]),
     r"control point 0 \('fg'\) has position \"1,2,3\"; expected a list of 3 numbers"),
    (_mrk([{"label": "fg", "position": [1, 2]}]), r"control point 0 \('fg'\) has position \[1, 2\]; expected a list"),
    (_mrk([{"label": "fg", "position": [True, 2, 3]}]), r"has position \[true, 2, 3\]; expected a list of 3 numbers"),
    (_mrk([{"label": "fg", "position": ["1", 2, 3]}]), r"has position \[\"1\", 2, 3\]; expected a list of 3 numbers"),
    (_mrk([{"label": "fg", "position": None}]), r"has position null; expected a list of 3 numbers"),
    (_mrk([{"label": "fg"}]), r"control point 0 \('fg'\) has no 'position'"),
    (_mrk([{"label": 5, "position": [1, 2, 3]}]), r"control point 0 label is a number, expected a string"),
    (_mrk([{"label": "fg", "description": ["x"], "position": [1, 2, 3]}]),
     r"control point 0 \('fg'\) description is a list, expected a string"),
    (_mrk([{"label": "fg", "position": [1, 2, 3], "positionStatus": None}]),
     r"has positionStatus null, not \"defined\""),
    (_mrk([], coordinateSystem=None), r"markup 0 has coordinateSystem null; expected \"LPS\" or \"RAS\""),
    (_mrk([], coordinateSystem=1), r"markup 0 has coordinateSystem 1; expected \"LPS\" or \"RAS\""),
    (_mrk([], coordinateUnits=["mm"]), r"markup 0 has coordinateUnits \[\"mm\"\]; expected \"mm\""),
    (_mrk([], type=None), r"markup 0 is a type null, expected a point list \('Fiducial'\)"),
])
def test_malformed_mrk_json_is_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "s1.mrk.json"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        P2A.read_points(path)
    assert type(err.value) is ValueError
    assert one_line(err).startswith(f"point file {path}")
    assert re.search(message, str(err.value)), str(err.value)


def test_malformed_mrk_json_through_the_entry_point(case, capsys):
    root, _ = case
    path = root / "s1.mrk.json"
    path.write_text(_mrk(None))
    code = run_main(P2A.main, ["--points", str(path), "--path_images", str(root / "img"), "--image_postfix", "T2",
                               "--path_anno_7points", str(root / "ann")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: point file {path}: markup 0 has controlPoints null, expected a list of "
                                 "points (an empty list [] for none)"]
    assert not (root / "ann").exists()


def test_rows_with_more_fields_than_the_header_are_refused(case):
    root, _ = case
    rows = csv_file(root / "s1.csv", POINTS)
    rows.write_text(rows.read_text().replace("bg-2,15,9,6\n", "bg-2,15,9,6,99\n"))
    with pytest.raises(ValueError) as err:
        run(root, rows, "--csv_space", "voxel")
    assert one_line(err) == (f"point file {rows}: row 2 ('bg-2') has 5 fields but the header has 4 (label, x, y, z); a "
                             "value would be dropped: fix the row (a comma inside a label or description needs double "
                             "quotes) or add the column to the header")
    # a quoted comma is one field
    rows.write_text('label,x,y,z,description\n' + "".join(f'{lab},{i},{j},{k},"a, b"\n' for lab, (i, j, k) in POINTS))
    out = run(root, rows, "--csv_space", "voxel")
    np.testing.assert_array_equal(read(out)[1], expected_volume())
    out.unlink()
    # a .fcsv row beyond its '# columns' line, and one that stops before the label column
    path = fcsv(root / "s1.fcsv", world(case[1]), "LPS")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3] + [lines[3] + ",extra"] + lines[4:]) + "\n")
    with pytest.raises(ValueError) as err:
        run(root, path)
    assert one_line(err).startswith(f"point file {path}: row 1 has 15 fields but its '# columns' line names 14; a "
                                    "value would be dropped")
    path.write_text("\n".join(lines[:3] + [",".join(lines[3].split(",")[:6])] + lines[4:]) + "\n")
    with pytest.raises(ValueError) as err:
        run(root, path)
    assert one_line(err) == f"point file {path}: row 1 has 6 fields; expected at least 13 (up to column 'desc')"
    assert list((root / "ann").iterdir()) == []


# ------------------------------------------------------------------------------ lesions stage 0 reads
def test_a_third_lesion_is_refused_at_conversion(case):
    root, _ = case
    third = [(lab.replace("2", "3"), (i, j - 8, k)) for lab, (i, j, k) in POINTS[7:]]
    with pytest.raises(ValueError) as err:
        run(root, csv_file(root / "s1.csv", POINTS + third), "--csv_space", "voxel")
    assert one_line(err) == (
        "s1: the points name 3 lesions, but stage 0 (generate_geodesic_labels.py) supports at most 2 per subject (bg, "
        "fg and bg2, fg2: values 1,2 and 3,4): keep the points of 2 lesions and remove those of lesion 3 (bg3, fg3); "
        f"a lesion without points is background for training [point file {root / 's1.csv'}]")
    assert not (root / "ann").exists()
    # bg1 ... bg6 still get the hint about numbered labels, not the lesion count
    numbered = [(f"bg{n}", idx) for n, (_, idx) in enumerate(POINTS[:6], start=1)] + [POINTS[6]]
    with pytest.raises(ValueError, match=r"'bg2', 'bg3', 'bg4', 'bg5', 'bg6' were read as lesions 2-6"):
        run(root, csv_file(root / "s1.csv", numbered), "--csv_space", "voxel")


# ------------------------------------------------------------------------------ an annotation in any format
def _annotation_file(path: Path, image: sitk.Image, value: int = 9) -> Path:
    """A hand-made annotation (one voxel of ``value``) in the format of ``path``'s extension."""
    array = np.zeros(SIZE[::-1], np.uint8)
    array[0, 0, 0] = value
    volume = sitk.GetImageFromArray(array)
    volume.CopyInformation(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(volume, str(path))
    return path


@pytest.mark.parametrize("ext", [".nii", ".nii.gz", ".mha", ".nrrd", ".mhd"])
def test_an_annotation_in_any_format_needs_overwrite_and_is_replaced_with_it(case, ext):
    root, image = case
    earlier = _annotation_file(root / "ann" / f"s1_7points{ext}", image)
    before = sorted(p.name for p in (root / "ann").iterdir())
    points = csv_file(root / "s1.csv", POINTS)
    with pytest.raises(FileExistsError) as err:
        run(root, points, "--csv_space", "voxel")
    assert one_line(err) == (f"1 annotation(s) exist already, e.g. {earlier}; pass --overwrite to replace them, or "
                             "choose another --path_anno_7points")
    assert sorted(p.name for p in (root / "ann").iterdir()) == before   # no second format beside it
    out = run(root, points, "--csv_space", "voxel", "--overwrite")
    assert out == root / "ann" / "s1_7points.nii.gz"
    assert sorted(p.name for p in (root / "ann").iterdir()) == ["s1_7points.nii.gz"]   # .mhd: its .raw gone too
    np.testing.assert_array_equal(read(out)[1], expected_volume())


def test_far_origin_mha_annotation_is_not_replaced_silently(tmp_path):
    """NIfTI cannot hold this grid: the annotation is .mha, and a second run needs --overwrite."""
    image = sitk.Image([24, 20, 14], sitk.sitkFloat32)
    image.SetOrigin((100000.123, -2000.77, 13.3))
    (tmp_path / "img").mkdir()
    sitk.WriteImage(image, str(tmp_path / "img" / "s1_T2.mha"))
    points = csv_file(tmp_path / "s1.csv", POINTS)
    first = run(tmp_path, points, "--csv_space", "voxel")
    assert first == tmp_path / "ann" / "s1_7points.mha"
    before = first.read_bytes()
    moved_fg = csv_file(tmp_path / "s1.csv", moved(POINTS, "fg", (11, 9, 6)))
    with pytest.raises(FileExistsError, match=r"1 annotation\(s\) exist already, e.g. .*s1_7points\.mha"):
        run(tmp_path, moved_fg, "--csv_space", "voxel")
    assert first.read_bytes() == before
    # a .nii.gz of the subject beside it: --overwrite leaves only the .mha
    _annotation_file(tmp_path / "ann" / "s1_7points.nii.gz", sitk.ReadImage(str(first)))
    assert run(tmp_path, moved_fg, "--csv_space", "voxel", "--overwrite") == first
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["s1_7points.mha"]
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(first)))[6, 9, 11] == 2


def test_a_refused_run_with_overwrite_keeps_every_earlier_annotation(tmp_path):
    """Two subjects, one of whose point files is wrong: nothing written, nothing removed."""
    image = write_image(tmp_path / "img" / "s1_T2.nii.gz")
    write_image(tmp_path / "img" / "s2_T2.nii.gz")
    folder = tmp_path / "clicks"
    folder.mkdir()
    csv_file(folder / "s1.csv", POINTS)
    csv_file(folder / "s2.csv", POINTS[1:])   # lesion 1 has 5 background points
    earlier = [_annotation_file(tmp_path / "ann" / "s1_7points.nii", image),
               _annotation_file(tmp_path / "ann" / "s2_7points.mha", image)]
    with pytest.raises(ValueError, match=r"s2: lesion 1 has 5 background"):
        P2A.main(["--points", str(folder), "--path_images", str(tmp_path / "img"), "--image_postfix", "T2",
                  "--path_anno_7points", str(tmp_path / "ann"), "--csv_space", "voxel", "--overwrite"])
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == [p.name for p in earlier]
    csv_file(folder / "s2.csv", POINTS[:7])
    written = P2A.main(["--points", str(folder), "--path_images", str(tmp_path / "img"), "--image_postfix", "T2",
                        "--path_anno_7points", str(tmp_path / "ann"), "--csv_space", "voxel", "--overwrite"])
    assert [p.name for p in written] == ["s1_7points.nii.gz", "s2_7points.nii.gz"]
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["s1_7points.nii.gz", "s2_7points.nii.gz"]


# ------------------------------------------------------------------------------ --dataset, --phase
def test_dataset_file_split_selects_the_subjects(tmp_path, capsys):
    image = write_image(tmp_path / "img" / "s1_T2.nii.gz")
    write_image(tmp_path / "img" / "s2_T2.nii.gz")
    folder = tmp_path / "clicks"
    folder.mkdir()
    csv_file(folder / "s1.csv", POINTS)
    csv_file(folder / "s9.csv", POINTS)   # no subject of the split
    (tmp_path / "split.csv").write_text("s1,training\ns2,inference\n")
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps({"split": "split.csv", "images": "img", "image_postfix": "T2",
                                   "annotations": "ann"}))
    args = ["--dataset", str(dataset), "--points", str(folder), "--csv_space", "voxel"]
    with pytest.raises(FileNotFoundError) as err:
        P2A.main(args)
    assert one_line(err) == (f"1 subject(s) have no point file (.mrk.json, .fcsv, .csv): {folder / 's2'}.*; check "
                             "--points and --points_postfix")
    assert not (tmp_path / "ann").exists()
    assert P2A.main([*args, "--phase", "training"]) == [tmp_path / "ann" / "s1_7points.nii.gz"]
    assert "s9.csv" in capsys.readouterr().out   # named as matching no subject, not converted
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["s1_7points.nii.gz"]
    # one point file: the split does not apply (its subject is its own choice)
    one = csv_file(tmp_path / "s2.csv", POINTS[:7])
    assert P2A.main(["--dataset", str(dataset), "--points", str(one), "--csv_space", "voxel"]) == [
        tmp_path / "ann" / "s2_7points.nii.gz"]
    np.testing.assert_array_equal(read(tmp_path / "ann" / "s2_7points.nii.gz")[1], expected_volume(POINTS[:7]))
    assert image.GetSize() == SIZE


def test_phase_without_a_split_is_refused(case):
    root, _ = case
    folder = root / "clicks"
    folder.mkdir()
    csv_file(folder / "s1.csv", POINTS)
    with pytest.raises(ValueError) as err:
        run(root, folder, "--csv_space", "voxel", "--phase", "training")
    assert one_line(err) == ("--phase training selects subjects of a split, but no split is given: pass "
                             "--dataset_split (or --dataset with a split), or drop --phase to convert every point "
                             "file of the folder")
    with pytest.raises(ValueError) as err:
        run(root, folder / "s1.csv", "--csv_space", "voxel", "--phase", "training")
    assert one_line(err) == (f"--phase training selects subjects of a split, but --points {folder / 's1.csv'} is one "
                             "file; drop --phase, or pass a folder of point files")
    assert not (root / "ann").exists()


# ------------------------------------------------------------------------------ --to_markups targets
def test_to_markups_target_names(case):
    root, image = case
    _annotation_file(root / "ann" / "s1_7points.nii.gz", image, 2)
    base = ["--to_markups", "--path_anno_7points", str(root / "ann"), "--subject", "s1"]
    for name, suggested in (("s1.json", "s1.mrk.json"), ("s1.fcsv", "s1.mrk.json"), ("x.CSV", "x.mrk.json")):
        with pytest.raises(ValueError) as err:
            P2A.main([*base, "--points", str(root / "out" / name)])
        assert one_line(err) == (f"--points {root / 'out' / name}: --to_markups writes Slicer .mrk.json files, into a "
                                 "folder or to one file named *.mrk.json (with --subject): name it "
                                 f"{root / 'out' / suggested}")
    assert not (root / "out").exists()
    (root / "notes").write_text("mine")
    with pytest.raises(ValueError) as err:
        P2A.main([*base, "--points", str(root / "notes")])
    assert one_line(err) == (f"--points {root / 'notes'} is a file; --to_markups writes .mrk.json files into a folder, "
                             "or to one file named *.mrk.json (with --subject)")
    # a point file of the subject in another format in the folder: two point files of s1 would follow
    (root / "clicks").mkdir()
    (root / "clicks" / "s1.fcsv").write_text("mine")
    for target in (root / "clicks", root / "clicks" / "s1.mrk.json"):
        with pytest.raises(ValueError) as err:
            P2A.main([*base, "--points", str(target), "--overwrite"])
        assert one_line(err) == (f"--points {root / 'clicks'} holds 1 point file(s) of the subject(s) in another "
                                 "format: s1.fcsv; with a .mrk.json beside them a subject would have two point files: "
                                 "write the markups into another folder (e.g. ./clicks_check/)")
    assert sorted(p.name for p in (root / "clicks").iterdir()) == ["s1.fcsv"]
    with pytest.raises(ValueError) as err:
        P2A.main([*base, "--points", str(root / "one.mrk.json"), "--phase", "training"])
    assert one_line(err).startswith("--phase training selects the subjects of a folder of markups, but --points")
    written = P2A.main([*base, "--points", str(root / "check")])
    assert written == [root / "check" / "s1.mrk.json"]
    labels = [p["label"] for p in json.loads(written[0].read_text())["markups"][0]["controlPoints"]]
    assert labels == ["fg"]


def test_a_point_on_either_face_of_the_image_is_on_its_edge_voxel():
    """The image spans continuous indices -0.5 .. size - 0.5: a world point exactly on the near or
    the far face lands on the edge voxel (rounding half up alone kept the near face only); a
    point past a face is outside, with the hint for lesions that touch the edge."""
    reference = sitk.Image([4, 5, 6], sitk.sitkUInt8)
    reference.SetSpacing((0.5, 1.0, 2.0))
    reference.SetOrigin((10.0, 0.0, -4.0))
    size = np.array(reference.GetSize())
    faces = [P2A.ControlPoint("bg", "", (10.0 - 0.25, 2.0, 0.0)), P2A.ControlPoint("bg", "", (10.0 + 1.75, 3.0, 0.0)),
             P2A.ControlPoint("bg", "", (10.5, -0.5, 2.0)), P2A.ControlPoint("bg", "", (10.5, 4.5, 2.0)),
             P2A.ControlPoint("bg", "", (11.0, 1.0, -5.0)), P2A.ControlPoint("bg", "", (11.0, 1.0, 7.0))]
    _, index = P2A._voxels(faces, "LPS", reference, size, "s1")
    assert index.tolist() == [[0, 2, 2], [3, 3, 2], [1, 0, 3], [1, 4, 3], [2, 1, 0], [2, 1, 5]]
    past = [P2A.ControlPoint("bg", "", (10.0 + 1.76, 3.0, 0.0))]
    with pytest.raises(ValueError, match=r"^s1: point 1 \('bg'\) at LPS \[11\.76, 3\.0, 0\.0\] mm \(voxel "
                                         r"\[4, 3, 2\]\) lies outside the image \(size \[4, 5, 6\]\); .* put the "
                                         r"point on the edge voxel\)$"):
        P2A._voxels(past, "LPS", reference, size, "s1")


def test_names_with_decomposed_accents_are_the_splits_subjects(tmp_path):
    """A split written with composed accents (NFC) and files named with decomposed ones (NFD, as
    macOS stores them): the same subjects, for the image reader and for the point files."""
    import unicodedata

    from utilities.data.grid import find_subject_file

    nfc = unicodedata.normalize("NFC", "cäse_ü3")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    (tmp_path / "img").mkdir()
    image = tmp_path / "img" / f"{nfd}_T2.nii.gz"
    image.write_bytes(b"")
    assert find_subject_file(tmp_path / "img", nfc, "T2") == image
    (tmp_path / "clicks").mkdir()
    clicks = tmp_path / "clicks" / f"{nfd}.mrk.json"
    clicks.write_text("{}")
    assert P2A._find_point_files(tmp_path / "clicks", [nfc], "") == {nfc: clicks}


def test_comment_lines_of_a_csv_are_skipped(case):
    """'#' lines (a note on who clicked, as in .fcsv files) before and between the rows."""
    root, _ = case
    plain = run(root, csv_file(root / "s1.csv", POINTS), "--csv_space", "voxel")
    expected = read(plain)[1]
    commented = root / "c" / "s1.csv"
    commented.parent.mkdir()
    rows = csv_file(root / "rows.csv", POINTS).read_text().splitlines(keepends=True)
    commented.write_text("# clicked by me, 2026-12-07\n" + rows[0] + "  # bg first\n" + "".join(rows[1:]))
    out = P2A.main(["--points", str(commented), "--path_images", str(root / "img"), "--image_postfix", "T2",
                    "--path_anno_7points", str(root / "ann2"), "--csv_space", "voxel"])[0]
    np.testing.assert_array_equal(read(out)[1], expected)
