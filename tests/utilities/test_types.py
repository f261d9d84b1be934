"""mypy over ``networks`` and ``utilities`` with the settings of ``[tool.mypy]`` in pyproject.toml,
as ``make lint`` runs it: inside the suite, so that on two cores it checks beside the other tests
instead of before them (about 40 s on a fresh clone, one core)."""
from __future__ import annotations

import pytest
from helpers import ROOT


@pytest.mark.slow
def test_mypy_finds_no_issue(monkeypatch):
    from mypy import api

    monkeypatch.chdir(ROOT)   # mypy reads pyproject.toml from the working directory
    out, err, status = api.run(["--cache-dir", str(ROOT / ".mypy_cache")])
    assert status == 0, out + err
    assert out.startswith("Success: no issues found in ")
