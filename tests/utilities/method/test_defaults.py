"""The names and defaults of :mod:`utilities.method.defaults` are defined there once: the code of
the sequence holds no copy of the expanded seeds' postfix, the stage-1 script's file name, the
default patch or the recipe's values (docstrings and comments may show them; ``tests``,
``docs`` and ``benchmarks`` are not scanned), and every config that sets the recipe's flags
sets both, to :data:`~utilities.method.defaults.RECIPE`'s values. Each finder is also run on a
planted copy, so that none passes by finding nothing."""
from __future__ import annotations

import ast
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, load_script

from utilities.method.defaults import (
    DOWN_SIZE,
    KERNEL_RADIUS,
    LEARNING_RATE,
    PRIMARY_NETWORK,
    RECIPE,
    SCRIPTS,
    SEED_POSTFIX,
    SPATIAL_SHAPE,
    STAGE1_SCRIPT,
    Recipe,
)

DEFAULTS_FILE = ROOT / "utilities" / "method" / "defaults.py"
#: The code of the sequence: the scripts at the root and in these folders (not tests, docs, benchmarks).
CODE_FOLDERS = ("utilities", "data", "experiments", "networks", "splits")
RECIPE_FLAGS = {"--momentum": RECIPE.momentum, "--grad_clip": RECIPE.grad_clip}


def code_files() -> list[Path]:
    files = set(ROOT.glob("*.py"))
    for folder in CODE_FOLDERS:
        files |= set((ROOT / folder).rglob("*.py"))
    return sorted(f for f in files if f != DEFAULTS_FILE)


def _nodes_of(source: str) -> list[ast.AST]:
    """The nodes of ``source`` less its docstrings and other bare strings (documentation)."""
    tree = ast.parse(source)
    docs = {id(n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}
    return [node for node in ast.walk(tree) if id(node) not in docs]


def string_copies(source: str, text: str) -> list[int]:
    """Lines of ``source`` where a string in the code (not a docstring) holds ``text``."""
    return sorted(n.lineno for n in _nodes_of(source)
                  if isinstance(n, ast.Constant) and isinstance(n.value, str) and text in n.value)


def _number(node: ast.AST) -> float | None:
    """The number a constant (or a negated one) spells, also as text (``"12"``)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _number(node.operand)
        return None if inner is None else -inner
    if not isinstance(node, ast.Constant) or isinstance(node.value, bool):
        return None
    try:
        return float(node.value)
    except (TypeError, ValueError):
        return None


def shape_copies(source: str, shape: tuple[int, ...] = SPATIAL_SHAPE) -> list[int]:
    """Lines where ``shape`` is written out: a list or tuple of its numbers, or their product."""
    lines = []
    for n in _nodes_of(source):
        if isinstance(n, (ast.List, ast.Tuple)) and [_number(e) for e in n.elts] == [float(v) for v in shape]:
            lines.append(n.lineno)
        elif isinstance(n, ast.BinOp) and ast.unparse(n) == " * ".join(map(str, shape)):
            lines.append(n.lineno)
        elif isinstance(n, ast.Constant) and n.value == " ".join(map(str, shape)):
            lines.append(n.lineno)
    return sorted(set(lines))


def recipe_copies(source: str) -> list[int]:
    """Lines where a recipe flag is given the recipe's value by hand: ``{"--momentum": 0.9}``,
    ``["--grad_clip", "12"]`` or ``momentum=0.9``."""
    lines = []
    for n in _nodes_of(source):
        pairs: list[tuple[Any, ast.AST]] = []
        if isinstance(n, ast.Dict):
            pairs = [(k.value, v) for k, v in zip(n.keys, n.values) if isinstance(k, ast.Constant)]
        elif isinstance(n, (ast.List, ast.Tuple)):
            pairs = [(k.value, v) for k, v in zip(n.elts, n.elts[1:]) if isinstance(k, ast.Constant)]
        elif isinstance(n, ast.Call):
            pairs = [(f"--{k.arg}", k.value) for k in n.keywords if k.arg]
        lines += [n.lineno for flag, value in pairs
                  if flag in RECIPE_FLAGS and _number(value) is not None
                  and math.isclose(_number(value), RECIPE_FLAGS[flag])]
    return sorted(set(lines))


def _flag_dicts(value: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object of ``value`` that holds flags (keys starting with ``--``)."""
    if isinstance(value, dict):
        if any(isinstance(k, str) and k.startswith("--") for k in value):
            yield value
        for item in value.values():
            yield from _flag_dicts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _flag_dicts(item)


def config_recipe_problems(config: Any) -> list[str]:
    """The flag sets of an ablation config that give one recipe flag without the other, or a
    value other than the recipe's (``null`` turns a flag off and is allowed)."""
    problems = []
    for flags in _flag_dicts(config):
        given = {f: flags[f] for f in RECIPE_FLAGS if f in flags and flags[f] is not None}
        if given and given != RECIPE.flags():
            problems.append(f"{given} is not RECIPE {RECIPE.flags()}")
    return problems


def _by_file(finder, *args) -> dict[str, list[int]]:
    found = {}
    for path in code_files():
        lines = finder(path.read_text(encoding="utf-8"), *args)
        if lines:
            found[str(path.relative_to(ROOT))] = lines
    return found


# ------------------------------------------------------------------------------ the finders find
PLANTED = '''"""A docstring may show GeodesicLabel, train_gatedcrfloss3d22d_multiview_varianceloss.py,
(128, 128, 48) and --momentum 0.9 --grad_clip 12."""
POSTFIX = "GeodesicLabel"
NAME = f"{x}_GeodesicLabel.nii.gz"
SCRIPT = ["python", "train_gatedcrfloss3d22d_multiview_varianceloss.py"]
SHAPE = [128, 128, 48]
VOXELS = 128 * 128 * 48
FLAGS = {"--momentum": 0.9, "--grad_clip": 12.0}
ARGS = ("--momentum", "0.9", "--grad_clip", "12")
OPT = make(momentum=0.9)
OTHER = {"--momentum": 0.99, "--spatial_shape": [64, 64, 48]}
'''


def test_finders_find_planted_copies_and_skip_docstrings():
    assert string_copies(PLANTED, SEED_POSTFIX) == [3, 4]
    assert string_copies(PLANTED, STAGE1_SCRIPT) == [5]
    assert shape_copies(PLANTED) == [6, 7]
    assert recipe_copies(PLANTED) == [8, 9, 10]


@pytest.mark.parametrize("config, problems", [
    ({"base": {"stage1": {"--momentum": 0.9, "--grad_clip": 12}}}, 0),
    ({"variants": {"a": {"flags": {"--momentum": 0.9, "--grad_clip": 12.0}}}}, 0),
    ({"variants": {"a": {"flags": {"--momentum": None, "--grad_clip": None}}}}, 0),
    ({"base": {"stage1": {"--momentum": 0.9}}}, 1),                      # half the recipe
    ({"variants": {"a": {"flags": {"--momentum": 0.9, "--grad_clip": 10}}}}, 1),
    ({"variants": {"a": {"flags": {"--grad_clip": 12}}, "b": {"flags": {"--momentum": 0.95}}}}, 2),
])
def test_config_check_finds_a_recipe_apart(config, problems):
    assert len(config_recipe_problems(config)) == problems


# ------------------------------------------------------------------------------ the tree holds no copy
def test_the_seed_postfix_is_spelled_once():
    assert _by_file(string_copies, SEED_POSTFIX) == {}


def test_the_stage1_script_is_named_once():
    assert _by_file(string_copies, STAGE1_SCRIPT) == {}


def test_the_default_patch_is_written_once():
    assert _by_file(shape_copies) == {}


def test_the_recipe_is_given_only_through_RECIPE():
    assert _by_file(recipe_copies) == {}


@pytest.mark.parametrize("config", sorted((ROOT / "experiments" / "configs").glob("*.json")), ids=lambda p: p.name)
def test_every_config_gives_the_recipe_whole(config):
    assert config_recipe_problems(json.loads(config.read_text(encoding="utf-8"))) == []


# ------------------------------------------------------------------------------ the names themselves
def test_recipe_flags_and_args():
    assert RECIPE.flags() == {"--momentum": 0.9, "--grad_clip": 12.0}
    assert RECIPE.args() == ["--momentum", "0.9", "--grad_clip", "12"]
    assert Recipe(momentum=0.95, grad_clip=1.5).args() == ["--momentum", "0.95", "--grad_clip", "1.5"]


def test_every_script_of_the_sequence_exists():
    assert list(SCRIPTS) == ["stage0", "stage1", "scm", "inference", "scores"]
    for script in SCRIPTS.values():
        assert (ROOT / script).is_file(), script


def test_the_scripts_defaults_are_the_names():
    stage1 = load_script(STAGE1_SCRIPT).build_parser().parse_args([])
    scm = load_script(SCRIPTS["scm"]).build_parser().parse_args([])
    for args in (stage1, scm):
        assert args.spatial_shape == list(SPATIAL_SHAPE)
        assert args.geodesic_label_postfix == SEED_POSTFIX
        assert args.learning_rate == LEARNING_RATE
    assert (stage1.network, scm.network1) == (PRIMARY_NETWORK, PRIMARY_NETWORK)
    assert (stage1.down_size, stage1.kernel_radius) == (list(DOWN_SIZE), list(KERNEL_RADIUS))


def test_the_guide_shows_the_recipe_as_RECIPE_gives_it():
    shown = f"`{' '.join(RECIPE.args())}`"
    assert any(shown in page.read_text(encoding="utf-8") for page in (ROOT / "docs").rglob("*.md"))
