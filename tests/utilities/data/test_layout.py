"""The run layout: every file of a run named by :class:`utilities.data.layout.RunLayout`, and no
script or library module joining those names by hand."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import ROOT

from utilities.data.layout import RunLayout, below
from utilities.training.progress import progress_path


def test_the_paths_of_a_run(tmp_path):
    layout = RunLayout(tmp_path / "runs", "U_Net2D5")
    run = tmp_path / "runs" / "U_Net2D5"
    assert layout.folder == run
    assert layout.models == run / "models"
    assert layout.checkpoint("best") == run / "models" / "CP_best.pth"
    assert layout.checkpoint("best_seed_dice") == run / "models" / "CP_best_seed_dice.pth"
    assert layout.checkpoint("final_model2") == run / "models" / "CP_final_model2.pth"
    assert layout.latest() == run / "models" / "CP_latest.pth"
    assert layout.latest(scm=True) == run / "models" / "CP_latest_SCM.pth"
    assert layout.healthy == run / "models" / "CP_healthy.pth"
    assert layout.log_name() == "log" and layout.log_name(scm=True) == "log_SCM"
    assert layout.log_csv() == run / "log.csv"
    assert layout.log_csv(scm=True) == run / "log_SCM.csv"
    assert layout.progress() == run / "progress.png" == progress_path(layout.log_csv())
    assert layout.progress(scm=True) == run / "progress_SCM.png" == progress_path(layout.log_csv(scm=True))
    assert layout.tensorboard() == run / "tensorboard"
    assert layout.tensorboard(scm=True) == run / "tensorboard_SCM"
    assert layout.output_pred == run / "output_pred"
    assert layout.prediction("vs_gk_1", "T2") == run / "output_pred" / "vs_gk_1_T2" / "vs_gk_1_T2_seg.nii.gz"
    assert layout.results("inference") == run / "results_inference.csv"
    assert RunLayout.of_folder(run) == RunLayout(tmp_path / "runs", "U_Net2D5")


def test_checkpoint_kinds_and_the_parent_hint(tmp_path):
    layout = RunLayout(tmp_path / "runs", "AttU_Net")
    assert layout.checkpoint_kinds() == []
    for kind in ("final", "best", "latest"):
        layout.checkpoint(kind).parent.mkdir(parents=True, exist_ok=True)
        layout.checkpoint(kind).write_bytes(b"")
    (layout.models / ".CP_best.pth.tmp-abc.pth").write_bytes(b"")  # a killed write's temporary
    assert layout.checkpoint_kinds() == ["best", "final", "latest"]
    assert layout.checkpoint_kinds(models_only=True) == ["best", "final"]
    assert layout.parent_hint("--model_dir") is None
    given = str(layout.folder)  # the run folder itself, as training printed it
    wrong = RunLayout(given, "AttU_Net")
    assert wrong.parent_hint("--model_dir") == (f"{given} is the run folder of a network: pass its parent, "
                                                 f"--model_dir {tmp_path / 'runs'}")
    assert wrong.parent_hint("--pretrained_model1_dir", "final").endswith(
        f"pass its parent, --pretrained_model1_dir {tmp_path / 'runs'}")
    assert wrong.parent_hint("--model_dir", "best_model1") is None


#: The names of a run's files that only utilities/data/layout.py may put into a path.
RUN_NAMES = ("models", "output_pred", "tensorboard", "tensorboard_SCM", "log.csv", "log_SCM.csv", "progress.png",
             "progress_SCM.png")
#: (file, name): joins of these names that are no run's files.
ALLOWED = {
    ("data/demo/run_demo.py", "models"),  # <output_dir>/models: the demo's --model_dir, the parent of its runs
}


def _text(node: ast.AST) -> str | None:
    """The literal text of a string or the literal start of an f-string (``f"CP_{x}"`` -> ``CP_``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)
    return None


def _hand_joined(path: Path) -> list[tuple[int, str]]:
    """``(line, name)`` of each ``... / "<run name>"`` or ``... / "CP_..."`` join, and each
    ``glob("...models...")`` or ``glob("CP_...")`` pattern, in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        texts = []
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            texts = [_text(node.left), _text(node.right)]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("glob", "rglob"):
            texts = [_text(a) for a in node.args]
        for text in texts:
            if text is None:
                continue
            parts = text.replace("\\", "/").split("/")
            if any(p in RUN_NAMES or p.startswith("CP_") for p in parts):
                found.append((node.lineno, text))
    return found


def _sources() -> list[Path]:
    """The scripts at the root and every module of the project's source folders (not the tests)."""
    folders = ("networks", "utilities", "data", "experiments", "benchmarks", "splits")
    found = [*ROOT.glob("*.py"), *(p for folder in folders for p in (ROOT / folder).rglob("*.py"))]
    return sorted(p for p in found if p != ROOT / "utilities" / "data" / "layout.py")


def test_the_checker_sees_a_hand_joined_path(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('from pathlib import Path\nx = Path("a") / "models" / f"CP_{1}.pth"\n'
                   'y = Path("a").glob("*/models/*.pth")\nz = Path("a") / "b"\n')
    assert sorted(line for line, _ in _hand_joined(bad)) == [2, 2, 3]


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_run_path_joined_by_hand(path):
    rel = str(path.relative_to(ROOT))
    found = [(line, text) for line, text in _hand_joined(path) if (rel, text) not in ALLOWED]
    assert found == [], f"{rel} joins a run's file names by hand; ask utilities.data.layout.RunLayout"


def test_below_is_what_follows_the_root():
    assert below("/abl/runs/a/seed0", "/abl") == "/runs/a/seed0"
    assert below("/abl/runs/a", "/abl/") == "/runs/a"
    assert below("/abl", "/abl") == ""
    assert below("/able/runs", "/abl") is None      # a sibling whose name starts like the root
    assert below("/data/x", "/abl") is None
    assert below("/data/x", "/") == "/data/x"
    assert below("runs/a", "runs") == "/a"
