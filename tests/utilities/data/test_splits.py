"""utilities/data/splits.py: split files with and without a header, names read as written,
the published splits, one-line errors naming the file; ``Split`` read once."""
from __future__ import annotations

import re

import pandas as pd
import pytest

from utilities.data.splits import PHASES, Split, as_split, read_split, subjects_of


@pytest.mark.parametrize("text, match", [
    ("a,training\nb,testing\n", "unknown phase"),
    ("a,training\na,validation\n", "more than once"),
    ("a,training,x\n", "3 columns"),
    ("a,\n", "empty subject or phase"),
])
def test_read_split_errors(tmp_path, text, match):
    path = tmp_path / "s.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        read_split(path)
    assert str(path) in str(err.value)


def test_read_split_header_and_phases(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("subject,phase\na,training\nb, validation\nc,inference\nd,training\n")
    df = read_split(path)
    assert df["subject"].tolist() == ["a", "b", "c", "d"]
    assert subjects_of(df, "training") == ["a", "d"]
    assert subjects_of(df, "validation") == ["b"]
    with pytest.raises(FileNotFoundError, match="--dataset_split"):
        read_split(tmp_path / "nope.csv")


def test_published_splits():
    vs = read_split("splits/split_VS.csv")
    assert vs["phase"].value_counts().to_dict() == {"training": 176, "validation": 20, "inference": 46}
    brats = read_split("splits/split_BraTS.csv")
    assert brats["phase"].value_counts().to_dict() == {"training": 244, "validation": 27, "inference": 1}


def test_a_split_without_header_keeps_every_name_as_written(tmp_path):
    """The published form (no header): names that pandas would read as missing or as numbers stay
    strings, a byte-order mark and the spaces around a field are no part of a name."""
    path = tmp_path / "s.csv"
    path.write_bytes("\ufeffNA,training\nnan, training\n007,validation\n1e3 ,inference\nNone,training\n".encode())
    df = read_split(path)
    assert list(df.columns) == ["subject", "phase"]
    assert df["subject"].tolist() == ["NA", "nan", "007", "1e3", "None"]
    assert df["phase"].tolist() == ["training", "training", "validation", "inference", "training"]
    assert subjects_of(df, "training") == ["NA", "nan", "None"]
    assert subjects_of(df, None) == ["NA", "nan", "007", "1e3", "None"]
    assert subjects_of(path, "inference") == ["1e3"]   # a path is read on the spot


@pytest.mark.parametrize("text, message", [
    ("subject,subject\na,training\n", "its header names column 'subject' twice"),
    ("phase,subject\na,training\n", "its header is phase,subject; write 'subject,phase'"),
    ("", "cannot read split file"),
])
def test_a_header_that_cannot_be_read_as_subject_phase_is_refused(tmp_path, text, message):
    path = tmp_path / "s.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        read_split(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_phase_asked_for_is_refused():
    df = pd.DataFrame({"subject": ["a"], "phase": ["training"]})
    with pytest.raises(ValueError, match=re.escape(f"--phase must be one of {list(PHASES)}, got 'testing'")):
        subjects_of(df, "testing")


def test_a_split_read_once_is_passed_on_as_it_is(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("a,training\nb,validation\nc,training\n")
    split = Split.read(path)
    assert str(split) == str(path) and split.path == path
    assert split.subjects("training") == ["a", "c"] and split.subjects(None) == ["a", "b", "c"]
    assert as_split(split) is split
    again = as_split(str(path))
    assert again is not split and again.table.equals(split.table)
