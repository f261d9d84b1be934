"""A path that must be a file: a folder in its place and a missing path are each one line naming it."""
from __future__ import annotations

import pytest

from utilities.core.files import existing_file


def test_an_existing_file_is_returned_as_a_path(tmp_path):
    (tmp_path / "split.csv").write_text("a,training\n")
    assert existing_file(str(tmp_path / "split.csv"), "split file") == tmp_path / "split.csv"


def test_a_folder_and_a_missing_path_are_named_with_their_hints(tmp_path):
    with pytest.raises(ValueError) as err:
        existing_file(tmp_path, "checkpoint", " (train first)", "; pass a .pth file")
    assert str(err.value) == f"checkpoint {tmp_path} is a folder, not a file; pass a .pth file"
    with pytest.raises(FileNotFoundError) as err:
        existing_file(tmp_path / "none.pth", "checkpoint", " (train first)", "; pass a .pth file")
    assert str(err.value) == f"checkpoint not found: {tmp_path / 'none.pth'} (train first)"
