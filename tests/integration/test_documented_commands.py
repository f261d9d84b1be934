"""Every command the documentation shows runs: at a smoke size, on CPU, in this process.

Where the commands come from (:func:`documented_commands`): the fenced ``bash``/``sh`` blocks of
every Markdown file of the repository (README.md, docs/**, BENCHMARKS.md, experiments/configs/...),
the indented command blocks (``Example::``) of the scripts' module docstrings and of the shell
scripts' header comments, the command lines of every script's ``--help``, and, at the end, the
commands ``plan.py`` prints (the ``commands`` of the plan its ``main`` returns, formatted by its own
``commands()``). A block is read as a shell reads it: backslash continuations, comments, ``for ...
do ... done`` (unrolled), ``VAR=value`` and ``export``, ``$VAR``, ``cd``, environment prefixes.

How one runs: a command is known by its script and the set of its flags. :data:`SMOKE` gives per
script the smoke flags (one epoch, a 32x32x16 patch, one repeat, ``--quick``, ``--dry_run``), the
paths it writes (removed before it runs, so it sees what a first-time user sees, and checked
after) and what it reads from outside the repository (nnU-Net's predictions, a finished
ablation); :data:`FLAG_SETS` lists every documented flag set, so a new documented command fails,
with the line to add, until someone has looked at what it costs, and a flag set no document
shows any more fails too. The data are tiny synthetic volumes written once, in a session
fixture, in the documented layout (``./data/VS/image_crop/`` ..., the layouts of the VS DICOM and
BraTS downloads, the user's own data, one real stage-1 and one real SCM run of one epoch,
random-weight models, packages and plans where commands read them); each command runs in its own
copy of that folder (big files hard-linked) through its script's ``main(argv)``. Commands that
differ only in data paths and file postfixes run once (:func:`test_deduplicated_commands_are_listed`
names the others). The progress plot each training draws (1.6 s a run) is replaced by a no-op
(``tests/utilities/training/test_progress.py`` tests it).

What is not run in full, each a skip with its reason in ``pytest -rs``. The budget is ~60-90 s
on 2 cores (measured: ~65 s of CPU), and one interpreter start costs ~5 s, so the commands that
start a subprocess per training run in their no-work mode here, where tests on tiny data already
run them for real:

* ``experiments/ablate.py`` runs with ``--dry_run``: the config, the variants, the baseline and
  every run's command line are checked by the scripts' own parsers; nothing is trained
  (``tests/experiments/test_ablate.py``, ``tests/experiments/test_nnunet_baseline.py`` run real ablations).
  ``experiments/family.py`` makes its first member at 32x32x16 and hands its ablation to
  ``ablate.py --dry_run``;
* ``bash benchmarks/gpu_check.sh ARGS`` runs ``bench_gpu.py ARGS`` here; the whole script runs end
  to end (``GPU_CHECK_SMOKE=1``) in ``tests/benchmarks/test_benchmarks.py``, which also runs bench_gpu's SCM
  and compiled rows; here ``bench_gpu.py`` runs its stage-1 current row at batch 1 and the projection;
* not run, their arguments checked: ``make demo`` (``run_demo.py --quick`` is ``tests/integration/test_demo.py``),
  ``make test`` (this suite), ``make install`` and the ``pip``/``venv`` lines (network; the pins
  are compared with requirements.txt), ``experiments/nnunet_baseline.py`` and nnU-Net's own
  ``nnUNetv2_*`` lines (nnU-Net's planning, worker processes and training take minutes;
  ``tests/experiments/test_nnunet_baseline.py``, ``tests/experiments/test_nnunet_trainer_paseg.py``; the ``-tr`` trainer
  must exist), ``experiments/collapse_analysis.py`` (a fixed grid of measurements, minutes;
  ``tests/experiments/test_collapse_analysis.py``) and ``torchrun`` lines written as templates (``...``).
"""
from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import ROOT, load_script
from synth import blob_case, seeds_from_label, seven_points, write

# ----------------------------------------------------------------------------- reading the documentation

#: Words a command line may start with (after ``VAR=value`` prefixes).
LAUNCHERS = ("python", "python3", ".venv/bin/python", "bash", "make", "torchrun", "pip", ".venv/bin/pip")
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_VAR = re.compile(r"\$(?:\{([A-Za-z_]\w*)\}|([A-Za-z_]\w*))")
_FLAG = re.compile(r"^--?[A-Za-z]")
#: An elided command: ``...`` or a ``<placeholder with words>``.
_TEMPLATE = re.compile(r"(?:^|\s)\.\.\.(?:\s|$)|<[^<>\n]*\s[^<>\n]*>")


@dataclass(frozen=True)
class DocCommand:
    """One command line as a user would type it from the documentation."""

    source: str                                  # where it is shown, e.g. "README.md:147"
    text: str                                    # the line (continuations joined, variables expanded)
    argv: tuple[str, ...]                        # program and arguments
    env: tuple[tuple[str, str], ...] = ()
    cwd: str = "."                               # relative to where the block starts (``cd``)
    template: bool = False                       # elided (``...``, ``<host>``): not runnable as written

    @property
    def script(self) -> str:
        return split_program(self.argv)[0]

    @property
    def args(self) -> list[str]:
        return split_program(self.argv)[1]


def split_program(argv: Sequence[str]) -> tuple[str, list[str]]:
    """``("python", "x.py", "--a")`` -> ``("x.py", ["--a"])``; ``make``/``pip``/``torchrun``/``-m``
    lines -> ``("make demo", [])``, ``("pip", [...])``, ``("torchrun x.py", [...])``, ``("-m venv", [...])``."""
    prog, rest = Path(argv[0]).name, list(argv[1:])
    if prog.startswith("python"):
        if rest[:1] == ["-m"]:
            return f"-m {rest[1]}", rest[2:]
        return rest[0].removeprefix("./"), rest[1:]
    if prog == "bash":
        return rest[0].removeprefix("./"), rest[1:]
    if prog == "make":
        return f"make {rest[0] if rest else ''}".strip(), rest[1:]
    if prog == "pip":
        return "pip", rest
    if prog == "torchrun":
        at = next((i for i, t in enumerate(rest) if t.endswith(".py")), len(rest))
        return f"torchrun {rest[at] if at < len(rest) else '?'}", rest[:at] + rest[at + 1:]
    return prog, rest


def flags_of(args: Sequence[str]) -> tuple[str, ...]:
    """The flags of an argument list, sorted (values such as ``-1`` are not flags)."""
    return tuple(sorted({a.split("=", 1)[0] for a in args if _FLAG.match(a)}))


def _statements(block: str) -> list[tuple[list[str], bool]]:
    """``(tokens, template)`` of each simple statement: continuations joined, comments dropped,
    split at newlines, ``;`` and ``&&``."""
    out: list[tuple[list[str], bool]] = []
    for line in block.replace("\\\n", " ").splitlines():
        template = bool(_TEMPLATE.search(line.split("#", 1)[0]))
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split, lexer.commenters = True, "#"
        tokens, current = list(lexer), []
        if any(t in ("|", "||", "&") for t in tokens):
            raise ValueError(f"pipes and background jobs are not read: {line.strip()!r}")
        for token in tokens + [";"]:
            if token in (";", "&&"):
                if current:
                    out.append((current, template))
                current = []
            else:
                current.append(token)
    return out


def _expand(token: str, variables: Mapping[str, str]) -> str:
    def value(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in variables:
            raise ValueError(f"${name} is not set in the block")
        return variables[name]

    return _VAR.sub(value, token)


def shell_commands(block: str, source: str) -> list[DocCommand]:
    """The commands a shell would run for ``block``."""
    out: list[DocCommand] = []
    _interpret(_statements(block), {}, {}, ".", source, out)
    return out


def _loop(statements: list[tuple[list[str], bool]], i: int) -> tuple[str, list[str], list, int]:
    """The variable, values and body of the ``for`` loop at ``i``, and the index after its ``done``."""
    tokens = statements[i][0]
    if len(tokens) < 3 or tokens[2] != "in" or i + 1 >= len(statements) or statements[i + 1][0][0] != "do":
        raise ValueError(f"unsupported loop {shlex.join(tokens)!r}: use 'for X in a b; do ... done'")
    do_rest = statements[i + 1][0][1:]
    rest = ([(do_rest, statements[i + 1][1])] if do_rest else []) + statements[i + 2:]
    depth, body = 0, []
    for j, (st, template) in enumerate(rest):
        if st[0] == "done" and depth == 0:
            return tokens[1], tokens[3:], body, i + 2 + j + (0 if do_rest else 1)
        depth += (st[0] == "for") - (st[0] == "done")
        body.append((st, template))
    raise ValueError(f"for loop without done: {shlex.join(tokens)!r}")


def _interpret(statements: list[tuple[list[str], bool]], variables: dict[str, str], env: dict[str, str],
               cwd: str, source: str, out: list[DocCommand]) -> str:
    """Append the commands of ``statements`` to ``out``; returns the working folder after them."""
    i = 0
    while i < len(statements):
        if statements[i][0][0] == "for":
            name, values, body, i = _loop(statements, i)
            for value in values:
                cwd = _interpret(body, {**variables, name: _expand(value, variables)}, env, cwd, source, out)
            continue
        raw, template = statements[i]
        tokens = [_expand(t, variables) for t in raw]
        i += 1
        if tokens[0] == "export":
            env.update(t.split("=", 1) for t in tokens[1:])
        elif all(_ASSIGN.match(t) for t in tokens):
            variables.update(t.split("=", 1) for t in tokens)
        elif tokens[0] == "cd":
            cwd = os.path.normpath(os.path.join(cwd, tokens[1])) if len(tokens) > 1 else "."
        else:
            n = next(k for k, t in enumerate(tokens) if not _ASSIGN.match(t))
            prefix = dict(t.split("=", 1) for t in tokens[:n])
            out.append(DocCommand(source, shlex.join(tokens), tuple(tokens[n:]), tuple({**env, **prefix}.items()),
                                  cwd, template))
    return cwd


def markdown_blocks(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of each fenced ``bash``/``sh``/``shell`` block of a Markdown file (an
    indented fence, inside a list, is dedented by its indentation)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        if lang in ("bash", "sh", "shell"):
            body = [line[len(indent):] if line.startswith(indent) else line.lstrip() for line in lines[i + 1:j]]
            blocks.append((i + 1, "\n".join(body)))
        i = j + 1
    return blocks


def _is_command(line: str) -> bool:
    words = [w for w in line.split() if not _ASSIGN.match(w)]
    return bool(words) and words[0] in LAUNCHERS


def indented_command_blocks(text: str) -> list[str]:
    """The runs of indented lines of ``text`` (a docstring, a help text, a header comment) whose
    first line that is not a comment starts with a launcher (``python``, ``bash``, ``VAR=1 python``)."""
    blocks, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith((" ", "\t")) and line.strip():
            current.append(line)
            continue
        if current:
            block = textwrap.dedent("\n".join(current))
            first = next((s.strip() for s in block.splitlines() if not s.lstrip().startswith("#")), "")
            if _is_command(first):
                blocks.append(block)
        current = []
    return blocks


def _header_comment(path: Path) -> str:
    """The leading comment of a shell script, without the ``#``."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        if not line.startswith("#"):
            break
        lines.append(line[1:])
    return "\n".join(lines)


def repository_files(pattern: str) -> list[Path]:
    """Files git tracks or would track (what ``.gitignore`` leaves out is not documentation)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", pattern],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return sorted(ROOT / name for name in out.split("\0") if name and (ROOT / name).is_file())


def _sources() -> list[tuple[str, str]]:
    """``(source, block)`` of every documented command block, in a stable order."""
    found: list[tuple[str, str]] = []
    for md in repository_files("*.md"):
        rel = md.relative_to(ROOT).as_posix()
        found += [(f"{rel}:{line}", block) for line, block in markdown_blocks(md)]
    for py in repository_files("*.py"):
        rel = py.relative_to(ROOT).as_posix()
        if not rel.startswith("tests/"):
            doc = ast.get_docstring(ast.parse(py.read_text(encoding="utf-8"))) or ""
            found += [(f"{rel} docstring", block) for block in indented_command_blocks(doc)]
    for sh in repository_files("*.sh"):
        rel = sh.relative_to(ROOT).as_posix()
        found += [(f"{rel} header", block) for block in indented_command_blocks(_header_comment(sh))]
    return found


def documented_commands() -> tuple[list[DocCommand], list[tuple[str, str]]]:
    """Every documented command, and ``(source, error)`` of the blocks that could not be read."""
    commands, errors = [], []
    for source, block in _sources():
        try:
            commands += shell_commands(block, source)
        except ValueError as e:
            errors.append((source, str(e)))
    return commands, errors


# ----------------------------------------------------------------------------- the smoke table

PATCH = ("32", "32", "16")
STAGE1 = "train_gatedcrfloss3d22d_multiview_varianceloss.py"
#: As a value in :attr:`Smoke.set`: keep only the first documented value (one member, one seed).
FIRST = ("<first>",)


@dataclass(frozen=True)
class Smoke:
    """How the documented commands of one script run here.

    ``set``: flags given these values (the documented values replaced; ``()`` a switch; ``FIRST``
    the first documented value only); ``replace``: the same, only where the command has the flag;
    ``outputs``: what the command writes, ``"{--flag}/sub"`` (or a function of the flags), removed
    before it runs and checked after; ``prepare``: writes what it reads from a tool outside this
    repository or from a long run (predictions, an ablation's runs), where missing; ``run``:
    ``main`` (the script's ``main(argv)`` here), ``dry`` (its no-work mode, reported as a skip),
    ``part`` (a part of it, reported), ``skip`` (not run: ``check`` looks at it, ``why`` says
    why); ``module``: the script run instead (``part``); ``patch``: what the test changes around it."""

    set: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    replace: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    outputs: tuple[str, ...] | Callable[[Mapping[str, list[str]]], list[str]] = ()
    run: str = "main"
    why: str = ""
    module: str | None = None
    patch: Callable[[pytest.MonkeyPatch, ModuleType], None] | None = None
    check: Callable[[DocCommand], None] | None = None
    prepare: Callable[[Mapping[str, list[str]], list[str]], None] | None = None


def _tiny_member(module: Any) -> Callable[[int], Any]:
    draw = module.draw_member
    return lambda seed: replace(draw(seed), size=(32, 32, 16), counts=(2, 1, 1))


def _patch_member(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> None:
    """A dataset-family member at 32x32x16 with 2/1/1 cases (its own draw otherwise)."""
    monkeypatch.setattr(module, "draw_member", _tiny_member(module))


def _patch_family(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> None:
    """Tiny members; each member's ablation as ``ablate.py --dry_run`` (no table, so no summary)."""
    _patch_member(monkeypatch, module)
    ablate_main = module.ablate.main
    monkeypatch.setattr(module.ablate, "main", lambda argv: ablate_main([*argv, "--dry_run"]))
    summarize, markdown = module.summarize_family, module._markdown
    monkeypatch.setattr(module, "summarize_family", lambda tables: summarize(tables) if tables else (None, ""))
    monkeypatch.setattr(module, "_markdown", lambda df, *a: markdown(df, *a) if df is not None else "")


def _points_outputs(flags: Mapping[str, list[str]]) -> list[str]:
    return flags.get("--points", [])[:1] if "--to_markups" in flags else flags.get("--path_anno_7points", [])[:1]


def _check_make(cmd: DocCommand) -> None:
    target = cmd.script.split()[1]
    done = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"make -n {target}: {done.stderr.strip()}"


def _check_pins(cmd: DocCommand) -> None:
    """A pinned package of a pip line has the pin of requirements.txt; ``-r FILE`` exists."""
    pins = dict(line.split("==", 1) for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
                if "==" in line and not line.startswith("#"))
    for arg in cmd.args:
        name, _, version = arg.partition("==")
        if version:
            assert pins.get(name) == version, f"{cmd.text}: requirements.txt pins {name}=={pins.get(name)}"
    for flag, files in _groups(cmd.args)[1].items():
        if flag == "-r":
            assert all((ROOT / f).is_file() for f in files), f"{cmd.text}: {files} not found"


def _check_parser(cmd: DocCommand) -> None:
    """The script's own parser accepts the documented flags."""
    _module(cmd.script).build_parser().parse_args(cmd.args)


def _check_nnunet_trainer(cmd: DocCommand) -> None:
    """The ``-tr`` trainer of an nnU-Net command is one of experiments/nnunet_trainers/."""
    trainer = _first(_groups(cmd.args)[1], "-tr")
    if trainer is not None:
        folder = ROOT / "experiments" / "nnunet_trainers"
        defined = "\n".join(p.read_text(encoding="utf-8") for p in folder.glob("*.py"))
        assert f"class {trainer}(" in defined, f"{cmd.text}: no class {trainer} in experiments/nnunet_trainers/"


def _check_template(cmd: DocCommand) -> None:
    script = cmd.script.split()[1]
    assert (ROOT / script).is_file(), f"{cmd.text}: {script} does not exist"


def _first(flags: Mapping[str, list[str]], flag: str, default: str | None = None) -> str | None:
    return flags[flag][0] if flags.get(flag) else default


def _prepare_scores(flags: Mapping[str, list[str]], argv: list[str]) -> None:
    """The predictions scores.py reads, where nothing here wrote them: copies of the labels (an
    nnU-Net folder, or what a documented inference command before it would write)."""
    from utilities.data.layout import RunLayout

    split, labels = _first(flags, "--dataset_split"), _first(flags, "--path_labels")
    folder = _first(flags, "--path_predictions")
    if folder is not None and labels is not None and not Path(folder).exists():
        postfix = f"_{_first(flags, '--label_postfix', 'Label')}.nii.gz"
        Path(folder).mkdir(parents=True)
        for label in Path(labels).glob(f"*{postfix}"):
            shutil.copy(label, Path(folder) / label.name.replace(postfix, ".nii.gz"))
    if split is None or labels is None or not ({"--prediction_dir", "--model_dir"} & set(flags)):
        return
    phase = _first(flags, "--phase")
    rows = [row.split(",") for row in Path(split).read_text(encoding="utf-8").splitlines() if row.strip()]
    for subject in [r[0] for r in rows if phase in (None, r[1].strip())]:
        if "--prediction_dir" in flags:
            target = Path(flags["--prediction_dir"][0]) / f"{subject}{_first(flags, '--prediction_postfix', '')}.nii.gz"
        else:
            run = RunLayout(flags["--model_dir"][0], _first(flags, "--network", "U_Net2D5"))
            target = run.prediction(subject, _first(flags, "--image_postfix", "T2"))
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(labels) / f"{subject}_{_first(flags, '--label_postfix', 'Label')}.nii.gz", target)


def _prepare_ensemble(flags: Mapping[str, list[str]], argv: list[str]) -> None:
    """The finished SCM runs of the ablation ensemble.py reads: the workspace's SCM run, scored."""
    dataset = json.loads(Path(flags["--config"][0]).read_text(encoding="utf-8"))["dataset"]
    for seed in flags.get("--seeds", ["0"]):
        run = Path(flags["--ablation_dir"][0]) / "runs" / flags.get("--variant", ["scm_recipe"])[0] / f"seed{seed}"
        if not run.exists():
            _copy_tree(Path(SCM_RUN), run)
        score = ["--model_dir", str(run), "--network", "U_Net2D5", "--dataset_split", dataset["split_file"],
                 "--image_postfix", dataset["image_postfix"], "--path_labels", dataset["labels"],
                 "--label_postfix", dataset["label_postfix"], "--phase", "inference"]
        _prepare_scores(_groups(score)[1], score)
        _module("utilities/scores.py").main(score)


def _prepare_records(flags: Mapping[str, list[str]], argv: list[str]) -> None:
    """What records.py reads: a finished run under ``--ablation_dir`` (``save``), or its record
    under ``--records`` (``restore``): the runner's done marker, a training log and the scores."""
    saving = "save" in argv
    root = Path(flags["--ablation_dir" if saving else "--records"][0])
    prefix = str(root.resolve()) if saving else _module("experiments/records.py").ABLATION_TOKEN
    run = root / "runs" / "stage1" / "seed0"
    (run / "U_Net2D5").mkdir(parents=True, exist_ok=True)
    (run / "U_Net2D5" / "log.csv").write_text("epoch,loss,time_s\n1,0.5,2.0\n", encoding="utf-8")
    (run / "U_Net2D5" / "results_inference.csv").write_text("subject,dice,row\ncase1,0.8,case\n", encoding="utf-8")
    (run / "ablate_done.json").write_text(json.dumps(
        {"variant": "stage1", "seed": 0, "network": "U_Net2D5",
         "command": [str(ROOT / STAGE1), "--model_dir", f"{prefix}/runs/stage1/seed0"]}), encoding="utf-8")


def _prepare_replay(flags: Mapping[str, list[str]], argv: list[str]) -> None:
    """The committed table folders and per-case CSVs replay_seed_rule.py reads, copied from the
    repository into the command's workspace."""
    for pair in flags["--runs"]:
        for part in pair.split("="):
            source, target = ROOT / part, Path(part)
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                shutil.copy(source, target)


def _prepare_crf_strength(flags: Mapping[str, list[str]], argv: list[str]) -> None:
    """Two training cases of a sphere lesion in the split, ``--path_images`` and ``--path_labels``,
    where missing (the documented folders are a family member's, written by a development run)."""
    import nibabel as nib

    split, images, labels = (Path(flags[f][0]) for f in ("--dataset_split", "--path_images", "--path_labels"))
    if split.is_file():
        return
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    postfix = {f: flags[f][0] for f in ("--image_postfix", "--label_postfix")}
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in (32, 32, 16)], indexing="ij"))
    for k in range(2):
        lesion = np.sqrt((grid[0] - 15 - k) ** 2 + (grid[1] - 16) ** 2 + (grid[2] - 8) ** 2) < 5
        image = lesion + np.random.default_rng(k).normal(0, 0.2, lesion.shape)
        nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)),
                 images / f"case{k}_{postfix['--image_postfix']}.nii.gz")
        nib.save(nib.Nifti1Image(lesion.astype(np.uint8), np.eye(4)),
                 labels / f"case{k}_{postfix['--label_postfix']}.nii.gz")
    split.write_text("case0,training\ncase1,training\n")


def _prepare_member_config(flags: Mapping[str, list[str]], argv: list[str]) -> None:
    """``<output>/f<seed>/ablation.json`` that experiments/family.py writes, where missing (on the
    workspace's plan)."""
    from utilities.workflow.plan import read_plan

    config = Path(flags["--config"][0])
    member = re.fullmatch(r"f(\d+)", config.parent.name)
    if config.exists() or member is None:
        return
    cfg = _module("experiments/family.py").member_config(int(member.group(1)), config.parent / "data",
                                                          read_plan(PLAN), [0, 1, 2])
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(cfg))


GEODESIC = Smoke(set={"--num_workers": ("1",)}, outputs=("{--path_geodesic}",))
_BENCH = {"--repeats": ("1",), "--warmup": ("0",), "--threads": ("1",)}
#: bench_gpu.py on CPU: its stage-1 current row at batch 1, one timed step, and the projection (the SCM,
#: compiled and channels-last rows run in tests/benchmarks/test_benchmarks.py: --only compile, gpu_check.sh's smoke).
_GPU = {"--device": ("cpu",), "--quick": (), "--batches": ("1",), "--repeats": ("1",), "--steps": ("stage-1",),
        "--only": ("current",)}
_NOT_RUN = {
    "nnunet": "nnU-Net's planning, preprocessing (worker processes) and training take minutes even for one "
              "iteration; tests/experiments/test_nnunet_baseline.py runs it at one iteration",
    "collapse": "measures a fixed grid (minutes, no smoke size); tests/experiments/test_collapse_analysis.py tests "
                "its parts",
    "make demo": "runs data/demo/run_demo.py, five trainings as subprocesses (minutes); its --quick run is "
                 "tests/integration/test_demo.py",
    "make test": "the test suite itself",
    "install": "installs packages from the network (the pins are checked against requirements.txt)",
    "nnunet cli": "nnU-Net's own command line on its prepared dataset (minutes); the trainer is tested in "
                  "tests/experiments/test_nnunet_trainer_paseg.py",
    "torchrun": "a template (flags elided: '...', '<host>'); launching is tested by "
                "tests/utilities/core/test_distributed.py",
}
SMOKE: dict[str, Smoke] = {
    "data/VS/convert.py": Smoke(outputs=("{--output}",)),
    "data/VS/image_crop.py": Smoke(set={"--crop_size": ("16", "32", "32")},
                                   outputs=("{--data_dir}/image_crop", "{--data_dir}/label_crop")),
    "data/simulate_7points.py": Smoke(outputs=("{--path_anno_7points}",)),
    "data/BraTS/merge_and_move.py": Smoke(set={"--expected_shape": PATCH},
                                          outputs=("{--destination_dir}/image", "{--destination_dir}/label")),
    "splits/make_split.py": Smoke(outputs=("{--output}",)),
    "data/VS/generate_geodesic_labels.py": GEODESIC,
    "data/BraTS/generate_geodesic_labels.py": GEODESIC,
    "data/generate_geodesic_labels.py": GEODESIC,
    "data/points_to_annotation.py": Smoke(outputs=_points_outputs),
    "data/export_nnunet.py": Smoke(outputs=("{--output_dir}",)),
    "data/demo/make_demo_data.py": Smoke(set={"--quick": (), "--no_report": ()},
                                         outputs=("{--output_dir}", "{--split_file}")),
    "data/family/make_family_data.py": Smoke(outputs=("{--output_dir}",), patch=_patch_member),
    "plan.py": Smoke(outputs=("{--output}", "{--work_dir}")),
    STAGE1: Smoke(set={"--max_epochs": ("1",), "--spatial_shape": PATCH, "--down_size": ("16", "16", "16"),
                       "--device": ("cpu",)}, outputs=("{--model_dir}",)),
    "train_SCM.py": Smoke(set={"--max_epochs": ("1",), "--iterative_epochs": ("1",), "--spatial_shape": PATCH,
                               "--device": ("cpu",)}, outputs=("{--model_dir}",)),
    "inference.py": Smoke(set={"--spatial_shape": PATCH, "--device": ("cpu",)}, outputs=("{--output_folder}",)),
    "utilities/scores.py": Smoke(prepare=_prepare_scores),
    "export_model.py": Smoke(replace={"--spatial_shape": PATCH}, outputs=("{--output}",)),
    "convert_checkpoint.py": Smoke(outputs=("{--output}",)),
    "experiments/ablate.py": Smoke(set={"--dry_run": ()}, run="dry", prepare=_prepare_member_config,
                                   why="ran with --dry_run: config, variants, baseline and every run's flags "
                                       "checked by the scripts' parsers, nothing trained (a real ablation starts a "
                                       "subprocess per training; tests/experiments/test_ablate.py runs one on tiny "
                                       "data)"),
    "experiments/family.py": Smoke(set={"--family_seeds": FIRST, "--seeds": FIRST}, run="dry", patch=_patch_family,
                                   why="ran for its first member at 32x32x16, its ablation with ablate.py "
                                       "--dry_run (nothing trained)"),
    "experiments/stage0_intensity.py": Smoke(set={"--family_seeds": FIRST}, outputs=("{--output_dir}",),
                                             patch=_patch_member),
    "experiments/ensemble.py": Smoke(set={"--seeds": FIRST, "--device": ("cpu",)}, prepare=_prepare_ensemble,
                                     outputs=("{--ablation_dir}/ensemble",)),
    "experiments/nnunet_baseline.py": Smoke(run="skip", why=_NOT_RUN["nnunet"], check=_check_parser),
    "experiments/collapse_analysis.py": Smoke(run="skip", why=_NOT_RUN["collapse"], check=_check_parser),
    "experiments/replay_seed_rule.py": Smoke(prepare=_prepare_replay, outputs=("{--output_dir}/replay.md",)),
    "experiments/crf_strength.py": Smoke(set={"--patch": PATCH, "--down_size": ("16", "16", "16"), "--cases": ("1",)},
                                         prepare=_prepare_crf_strength),
    "experiments/records.py": Smoke(prepare=_prepare_records, outputs=("{--records}", "{--ablation_dir}")),
    "benchmarks/bench_step.py": Smoke(set={"--size": PATCH, "--down_size": ("16", "16", "16"), **_BENCH,
                                           "--data_subjects": ("1",), "--data_repeats": ("1",)}),
    "benchmarks/bench_crf.py": Smoke(set={"--sizes": ("16x16x16",), "--full_sizes": ("16x16x16",), **_BENCH,
                                          "--in_process": ()}),
    "benchmarks/bench_inference.py": Smoke(set={"--size": PATCH, "--roi": PATCH, "--large": ("64", "32", "16"),
                                                "--large_repeats": ("1",), "--compile_backend": ("eager",),
                                                **_BENCH}),
    "benchmarks/bench_gpu.py": Smoke(set=_GPU),
    "benchmarks/gpu_check.sh": Smoke(set=_GPU, run="part", module="benchmarks/bench_gpu.py",
                                     why="its arguments ran through bench_gpu.py here; the whole script runs end to "
                                         "end with GPU_CHECK_SMOKE=1 in tests/benchmarks/test_benchmarks.py"),
    "make demo": Smoke(run="skip", why=_NOT_RUN["make demo"], check=_check_make),
    "make test": Smoke(run="skip", why=_NOT_RUN["make test"], check=_check_make),
    "make install": Smoke(run="skip", why=_NOT_RUN["install"], check=_check_make),
    "pip": Smoke(run="skip", why=_NOT_RUN["install"], check=_check_pins),
    "-m venv": Smoke(run="skip", why=_NOT_RUN["install"]),
    "nnUNetv2_train": Smoke(run="skip", why=_NOT_RUN["nnunet cli"], check=_check_nnunet_trainer),
    "nnUNetv2_predict": Smoke(run="skip", why=_NOT_RUN["nnunet cli"], check=_check_nnunet_trainer),
    f"torchrun {STAGE1}": Smoke(run="skip", why=_NOT_RUN["torchrun"], check=_check_template),
    "torchrun train_SCM.py": Smoke(run="skip", why=_NOT_RUN["torchrun"], check=_check_template),
}

#: Every documented flag set of each script (sorted flags), checked against SMOKE's smoke flags.
FLAG_SETS: dict[str, set[str]] = {
    "-m venv": {
        "",
    },
    "benchmarks/bench_crf.py": {
        "--repeats --threads --warmup",
    },
    "benchmarks/bench_gpu.py": {
        "",
        "--compile_backend --device --quick",
    },
    "benchmarks/bench_inference.py": {
        "--compile --no_large --repeats --threads --warmup",
        "--large_repeats --repeats --threads --warmup",
        "--repeats --threads --warmup",
    },
    "benchmarks/bench_step.py": {
        "--data --repeats --threads --variants --warmup",
        "--data --repeats --threads --warmup",
        "--no_losses --repeats --threads --variants --warmup",
        "--repeats --threads --variants --warmup",
    },
    "benchmarks/gpu_check.sh": {
        "",
        "--only",
    },
    "data/BraTS/generate_geodesic_labels.py": {
        "--anno_7points_postfix --dataset_split --geodesic_threshold --geodesic_weight --image_postfix "
        "--label_postfix --path_anno_7points --path_geodesic --path_images --path_labels",
    },
    "data/BraTS/merge_and_move.py": {
        "--destination_dir --original_dir",
    },
    "data/VS/convert.py": {
        "--input --output",
    },
    "data/VS/generate_geodesic_labels.py": {
        "--anno_7points_postfix --dataset_split --geodesic_threshold --geodesic_weight --image_postfix "
        "--label_postfix --path_anno_7points --path_geodesic --path_images --path_labels",
    },
    "data/VS/image_crop.py": {
        "--data_dir --dataset_split --image_postfix --label_postfix",
    },
    "data/demo/make_demo_data.py": {
        "--output_dir --preview --split_file",
        "--preset",
    },
    "data/export_nnunet.py": {
        "--dataset_id --dataset_name --dataset_split --geodesic_label_postfix --image_postfix --output_dir "
        "--path_geodesic_labels --path_images",
        "--dataset_id --dataset_name --dataset_split --image_postfix --output_dir --path_geodesic_labels "
        "--path_images",
    },
    "data/family/make_family_data.py": {
        "--describe",
        "--family_seed --output_dir",
    },
    "data/generate_geodesic_labels.py": {
        "--anno_7points_postfix --dataset_split --geodesic_threshold --geodesic_weight --image_postfix "
        "--path_anno_7points --path_geodesic --path_images",
        "--dataset --path_geodesic",
        "--dataset_split --image_postfix --path_anno_7points --path_geodesic --path_images",
    },
    "data/points_to_annotation.py": {
        "--anno_7points_postfix --dataset_split --image_postfix --path_anno_7points --path_images --points",
        "--anno_7points_postfix --image_postfix --path_anno_7points --path_images --points",
        "--anno_7points_postfix --path_anno_7points --points --to_markups",
    },
    "data/simulate_7points.py": {
        "--anno_7points_postfix --dataset_split --label_postfix --path_anno_7points --path_labels",
    },
    "experiments/ablate.py": {
        "--baseline --config --device --jobs --output_dir --seeds --variants",
        "--baseline --config --jobs --output_dir --seeds --variants",
        "--baseline --config --jobs --output_dir --variants",
        "--baseline --config --jobs --seeds --variants",
        "--config",
        "--config --dry_run",
        "--config --jobs --output_dir",
        "--config --jobs --output_dir --seeds --variants",
        "--config --jobs --output_dir --variants",
    },
    "experiments/collapse_analysis.py": {
        "--output_dir",
    },
    "experiments/replay_seed_rule.py": {
        "--output_dir --runs",
    },
    "experiments/records.py": {
        "--ablation_dir --records",
    },
    "experiments/ensemble.py": {
        "--ablation_dir --config --seeds --variant",
    },
    "experiments/family.py": {
        "--baseline --family_seeds --jobs --output_dir --seeds --target_steps --variants",
        "--family_seeds --jobs --output_dir",
        "--family_seeds --jobs --output_dir --seeds --target_steps --variants",
        "--family_seeds --jobs --output_dir --seeds --variants",
        "--family_seeds --jobs --output_dir --variants",
    },
    "experiments/nnunet_baseline.py": {
        "--dataset_split --epochs --image_postfix --iterations_per_epoch --model_dir --path_geodesic_labels "
        "--path_images",
        "--dataset_split --epochs --image_postfix --iterations_per_epoch --model_dir --path_geodesic_labels "
        "--path_images --rampup_epochs --trainer",
    },
    "experiments/crf_strength.py": {
        "--cases --crf_sigma_xy --dataset_split --down_size --erode --image_postfix --kernel_radius --label_postfix "
        "--patch --path_images --path_labels",
    },
    "experiments/stage0_intensity.py": {
        "--candidates --family_seeds --output_dir --work_dir",
        "--family_seeds --output_dir --work_dir",
    },
    "export_model.py": {
        "--checkpoint --output --spatial_shape",
        "--model_dir --network --output",
        "--model_dir --output",
    },
    "inference.py": {
        "--dataset --epoch_inf --input_folder --model_dir --network --output_folder --output_format --spatial_shape",
        "--dataset_split --ensemble --image_postfix --model_dir --output_folder --path_images --phase",
        "--dataset_split --epoch_inf --image_postfix --model_dir --network --path_images --phase --spatial_shape",
        "--ensemble --input_folder --model --output_folder",
        "--ensemble --input_folder --output_folder",
        "--input_folder --model --output_folder",
        "--input_folder --model_dir --network --output_folder --save_probabilities",
        "--input_folder --model_dir --output_folder",
    },
    "make demo": {
        "",
    },
    "make install": {
        "",
    },
    "make test": {
        "",
    },
    "convert_checkpoint.py": {
        "--input --network --output --to",
    },
    "nnUNetv2_predict": {
        "-c -d -f -i -o -tr",
    },
    "nnUNetv2_train": {
        "-tr",
    },
    "pip": {
        "",
        "--no-build-isolation",
        "--no-build-isolation --no-deps -e",
        "-r",
    },
    "plan.py": {
        "--dataset --output --work_dir",
        "--dataset_split --image_postfix --output --path_anno_7points --path_geodesic_labels --path_images",
        "--dataset_split --image_postfix --output --path_anno_7points --path_images --work_dir",
    },
    "splits/make_split.py": {
        "--complete --image_postfix --images_dir --output --phase",
        "--image_postfix --images_dir --output --ratios",
        "--image_postfix --images_dir --output --ratios --seed",
    },
    "torchrun train_SCM.py": {
        "--nnodes --node_rank --nproc_per_node --rdzv_backend --rdzv_endpoint",
    },
    "torchrun train_gatedcrfloss3d22d_multiview_varianceloss.py": {
        "--network --nproc_per_node --standalone",
    },
    "train_SCM.py": {
        "--T --batch_size --dataset_split --image_postfix --iterative_epochs --label_postfix --learning_rate "
        "--max_epochs --model_dir --network1 --network2 --path_images --path_labels --pretrained_model1_dir "
        "--pretrained_model2_dir --spatial_shape --weight_kd",
        "--dataset --model_dir --plan --pretrained_model1_dir --pretrained_model2_dir --val_metric",
    },
    STAGE1: {
        "--batch_size --dataset_split --down_size --geodesic_label_postfix --image_postfix --kernel_radius "
        "--label_postfix --learning_rate --max_epochs --model_dir --network --path_geodesic_labels "
        "--path_images --path_labels --rampup_epochs --spatial_shape --weight_gatedcrf --weight_variance",
        "--dataset --model_dir --network --plan --val_metric",
        "--dataset --model_dir --plan --val_metric",
        "--dataset_split --image_postfix --model_dir --path_geodesic_labels --path_images --plan",
        "--dataset_split --image_postfix --model_dir --path_geodesic_labels --path_images --plan --val_metric",
    },
    "utilities/scores.py": {
        "--dataset_split --image_postfix --label_postfix --model_dir --network --path_images --path_labels "
        "--phase --report",
        "--dataset_split --image_postfix --label_postfix --model_dir --network --path_labels --phase",
        "--dataset_split --image_postfix --label_postfix --path_labels --phase --prediction_dir",
        "--dataset_split --label_postfix --path_labels --phase --prediction_dir --prediction_postfix",
        "--dataset_split --path_labels --phase --prediction_dir",
        "--dataset_split --path_labels --phase --prediction_dir --prediction_postfix",
        "--dataset_split --path_labels --prediction_dir",
        "--label_postfix --path_labels --path_predictions",
    },
}


def _groups(args: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The arguments before the first flag, and each flag's values (``--a=b`` read as ``--a b``)."""
    lead: list[str] = []
    flags: dict[str, list[str]] = {}
    current = None
    for arg in args:
        if _FLAG.match(arg):
            current, eq, value = arg.partition("=")
            flags.setdefault(current, [])
            if eq:
                flags[current].append(value)
        elif current is None:
            lead.append(arg)
        else:
            flags[current].append(arg)
    return lead, flags


def smoke_args(args: Sequence[str], smoke: Smoke) -> list[str]:
    """``args`` with ``smoke``'s flags applied."""
    lead, flags = _groups(args)
    for flag, values in smoke.set.items():
        if values != FIRST:
            flags[flag] = list(values)
        elif flag in flags:
            flags[flag] = flags[flag][:1]
    for flag, values in smoke.replace.items():
        if flag in flags:
            flags[flag] = list(values)
    return lead + [token for flag, values in flags.items() for token in (flag, *values)]


def output_paths(args: Sequence[str], smoke: Smoke) -> list[str]:
    """The paths ``smoke.outputs`` names for these arguments (those whose flags are given)."""
    flags = _groups(args)[1]
    if callable(smoke.outputs):
        return smoke.outputs(flags)
    found = []
    for template in smoke.outputs:
        names = re.findall(r"\{(--\w+)\}", template)
        if all(flags.get(n) for n in names):
            found.append(re.sub(r"\{(--\w+)\}", lambda m: flags[m.group(1)][0], template))
    return found


def flag_set(cmd: DocCommand) -> str:
    return " ".join(flags_of(cmd.args))


def dedupe_key(cmd: DocCommand) -> tuple:
    """What a command runs once its data paths and file postfixes are left out."""
    smoke = SMOKE.get(cmd.script, Smoke())
    lead, flags = _groups(smoke_args(cmd.args, smoke))

    def norm(flag: str, value: str) -> str:
        if flag.endswith("_postfix"):
            return "<postfix>"
        data = "/" in value or value.endswith((".csv", ".json", ".pth", ".zip", ".png"))
        return "<path>" if data else value

    normed = tuple(sorted((f, tuple(norm(f, v) for v in vs)) for f, vs in flags.items()))
    return (smoke.module or cmd.script, tuple(lead), normed, cmd.env, cmd.cwd, cmd.template)


def unmapped(cmd: DocCommand) -> str | None:
    """Why ``cmd`` has no smoke mapping yet (None: it has one)."""
    if cmd.script not in SMOKE:
        return (f"{cmd.source}: {cmd.text}\n  {cmd.script} has no entry in SMOKE "
                "(tests/integration/test_documented_commands.py): give its smoke flags and outputs there, and its "
                "flag set in FLAG_SETS")
    if flag_set(cmd) not in FLAG_SETS.get(cmd.script, set()):
        return (f"{cmd.source}: {cmd.text}\n  a new flag set of {cmd.script}; check that SMOKE's smoke flags "
                f"keep it small and add to FLAG_SETS[{cmd.script!r}]: {flag_set(cmd)!r}")
    return None


_MODULES: dict[str, ModuleType] = {}


def _module(script: str) -> ModuleType:
    if script not in _MODULES:
        _MODULES[script] = load_script(script)
    return _MODULES[script]


def _copy_tree(src: Path, dst: Path) -> None:
    """``src`` copied to ``dst``: files over 1 MB hard-linked (checkpoints are replaced, never
    written in place), links kept as links."""
    for folder, dirs, files in os.walk(src):
        rel = Path(folder).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in dirs + files:
            path = Path(folder) / name
            if path.is_symlink():
                os.symlink(os.readlink(path), dst / rel / name)
                if name in dirs:
                    dirs.remove(name)
            elif name in files:
                (os.link if path.stat().st_size > 2**20 else shutil.copy2)(path, dst / rel / name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def run_command(cmd: DocCommand, workspace: Path, where: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run ``cmd`` at its smoke size in a copy of ``workspace`` under ``where``; returns what to
    report (``""``: it ran in full). Fails on an unmapped command, skips a ``skip`` one."""
    problem = unmapped(cmd)
    if problem:
        pytest.fail(problem, pytrace=False)
    smoke = SMOKE[cmd.script]
    if smoke.run == "skip" or cmd.template:
        if smoke.check is not None:
            smoke.check(cmd)
        pytest.skip(f"not run: {cmd.text} ({cmd.source}): {smoke.why}")
    if not where.exists():
        _copy_tree(workspace, where)
    cwd = where / cmd.cwd
    argv = smoke_args(cmd.args, smoke)
    outputs = output_paths(argv, smoke)
    for out in outputs:
        _remove(cwd / out)
    monkeypatch.chdir(cwd)
    if smoke.prepare is not None:
        smoke.prepare(_groups(argv)[1], argv)
    for key, value in cmd.env:
        monkeypatch.setenv(key, value)
    _call(smoke.module or cmd.script, argv, smoke, monkeypatch)
    missing = [out for out in outputs if not (cwd / out).exists()]
    assert not missing, f"{cmd.text}: ran, but did not write {missing}"
    return "" if smoke.run == "main" else f"{cmd.text} ({cmd.source}): {smoke.why}"


def _call(script: str, argv: list[str], smoke: Smoke, monkeypatch: pytest.MonkeyPatch) -> None:
    import utilities.training.engine

    monkeypatch.setattr(utilities.training.engine, "draw_progress", lambda *a, **k: None)
    module = _module(script)
    if smoke.patch is not None:
        smoke.patch(monkeypatch, module)
    try:
        module.main(argv)
    except SystemExit as e:
        if e.code not in (0, None):
            pytest.fail(f"{script} {shlex.join(argv)}\n  exited with {e.code} (its message is in the captured "
                        "stderr)", pytrace=False)


# ----------------------------------------------------------------------------- the documented layout, tiny

SHAPE_ZYX = (16, 32, 32)
PHASES = ("training", "training", "validation", "inference", "inference")
VS_STAGE1 = "models/VS/gatedcrfloss3d22d_multiview_varianceloss"
BRATS_STAGE1 = "models/BraTS/gatedcrfloss3d22d_multiview_varianceloss"
GEODESIC_LABELS = "geodesic/weight0.5_threshold0.2/geodesic_label"
SCM_RUN = "models/VS/SCM"
#: The plan the workspace's ``--plan`` commands read (plan.py's on the MY data).
PLAN = "plan.json"
VS_NAMES = tuple(f"vs_gk_{i}" for i in range(1, 6))
BRATS_NAMES = tuple(f"BraTS19_TST_{i}" for i in range(1, 6))
MY_NAMES = tuple(f"my_{i:03d}" for i in range(1, 6))


def write_dataset(ws: Path, names: Sequence[str], split: str, folders: Mapping[str, tuple[str, str]],
                  seed: int = 0) -> None:
    """Blob cases (32x32x16) as ``folders[kind] = (folder, postfix)`` for kinds ``image``,
    ``label``, ``anno``, ``seeds`` (any subset), and the split ``<name>,<phase>``."""
    rows = []
    for i, name in enumerate(names):
        image, label = blob_case(SHAPE_ZYX, seed=seed + i)
        anno = seven_points(label)
        arrays = {"image": image, "label": label, "anno": anno, "seeds": seeds_from_label(label, anno)}
        for kind, (folder, postfix) in folders.items():
            write(arrays[kind], ws / folder / f"{name}_{postfix}.nii.gz")
        rows.append(f"{name},{PHASES[i % len(PHASES)]}")
    (ws / split).parent.mkdir(parents=True, exist_ok=True)
    (ws / split).write_text("\n".join(rows) + "\n")


def write_dicom_patient(folder: Path, number: int) -> None:
    """``VS-SEG-<n>/<study>/<series>/IM*.dcm``: one MR T2 series of a blob case (TCIA's layout)."""
    image = sitk.GetImageFromArray(np.round(blob_case(SHAPE_ZYX, seed=number)[0]).astype(np.int16))
    image.SetSpacing((0.5, 0.5, 1.5))
    series = folder / f"VS-SEG-{number:03d}" / "1.000000-NA-12345" / "2.000000-t2_ci3d_tra-222"
    series.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = f"1.2.826.0.1.3680043.2.1125.{number}.2"
    for i in range(image.GetDepth()):
        slice_ = image[:, :, i]
        tags = {"0008|0060": "MR", "0008|103e": "t2_ci3d_tra", "0020|000e": uid, "0008|0018": f"{uid}.{i + 1}",
                "0020|0037": "1\\0\\0\\0\\1\\0",
                "0020|0032": "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, i)))),
                "0028|0030": "0.5\\0.5", "0018|0050": "1.5", "0020|0013": str(i + 1)}
        for key, value in tags.items():
            slice_.SetMetaData(key, value)
        writer.SetFileName(str(series / f"IM{i:03d}.dcm"))
        writer.Execute(slice_)


def write_brats_originals(folder: Path, names: Sequence[str]) -> None:
    """``<HGG|LGG>/<case>/<case>_flair.nii.gz`` and ``_seg.nii.gz`` (the BraTS 2019 download's layout)."""
    for i, name in enumerate(names):
        image, label = blob_case(SHAPE_ZYX, seed=10 + i)
        for kind, array in (("flair", image), ("seg", label * 2)):
            write(array, folder / ("HGG" if i % 2 == 0 else "LGG") / name / f"{name}_{kind}.nii.gz")


def _folders(root: str, image: str, label: str, postfix: str) -> dict[str, tuple[str, str]]:
    return {"image": (f"{root}/{image}", postfix), "label": (f"{root}/{label}", "Label"),
            "anno": (f"{root}/annotation_7points", "7points"), "seeds": (f"{root}/{GEODESIC_LABELS}", "GeodesicLabel")}


def write_data(ws: Path) -> None:
    """The datasets in their documented places: VS (cropped and not), BraTS, the user's own (MY,
    with its dataset file), the ablation configs' demo data, the VS DICOM and BraTS downloads, a
    scans folder. Runs in ``ws``."""
    from utilities.data.dataset_file import write_dataset as write_dataset_file

    write_dataset(ws, VS_NAMES, "splits/split_VS.csv", _folders("data/VS", "image_crop", "label_crop", "T2"))
    write_dataset(ws, VS_NAMES, "splits/split_VS.csv", {"image": ("data/VS/image", "T2"),
                                                        "label": ("data/VS/label", "Label")})
    write_dataset(ws, BRATS_NAMES, "splits/split_BraTS.csv", _folders("data/BraTS", "image", "label", "Flair"), 10)
    write_dataset(ws, MY_NAMES, "splits/my_split.csv", _folders("data/MY", "image", "label", "T2"), 20)
    write_dataset_file(ws / "data/MY/dataset.json", {
        "split": "splits/my_split.csv", "images": "data/MY/image", "image_postfix": "T2",
        "annotations": "data/MY/annotation_7points", "labels": "data/MY/label", "modality": "MR"})
    for config in ("demo.json", "brats_small.json"):
        d = json.loads((ROOT / "experiments" / "configs" / config).read_text(encoding="utf-8"))["dataset"]
        write_dataset(ws, [f"case_{i}" for i in range(5)], d["split_file"], {
            "image": (d["images"], d["image_postfix"]), "label": (d["labels"], d["label_postfix"]),
            "anno": (d["annotations"], d["annotation_postfix"])}, 30)
    write_dicom_patient(ws / "data/manifest-T2/Vestibular-Schwannoma-SEG", 1)
    write_brats_originals(ws / "data/BraTS2019/MICCAI_BraTS_2019_Data_Training", BRATS_NAMES)
    (ws / "my_scans").mkdir()
    for name in VS_NAMES[:2]:
        shutil.copy(ws / "data/VS/image_crop" / f"{name}_T2.nii.gz", ws / "my_scans")
    (ws / "experiments").mkdir()
    (ws / "experiments" / "configs").symlink_to(ROOT / "experiments" / "configs")


def write_models(ws: Path) -> None:
    """One real stage-1 run (U_Net2D5, 1 epoch) and one real SCM run from it, in VS's folders;
    random-weight checkpoints for the other networks; packages, the authors' layout, plans."""
    from helpers import a_model

    from utilities.workflow.plan import PlanRules, fingerprint, make_plan, write_plan

    data = ["--dataset_split", "splits/split_VS.csv", "--path_images", "data/VS/image_crop", "--path_labels",
            "data/VS/label_crop", "--spatial_shape", *PATCH, "--max_epochs", "1", "--device", "cpu"]
    _module(STAGE1).main(["--model_dir", VS_STAGE1, "--path_geodesic_labels", f"data/VS/{GEODESIC_LABELS}",
                          "--down_size", "16", "16", "16", *data])
    a_model(ws / VS_STAGE1, "AttU_Net")
    _module("train_SCM.py").main(["--pretrained_model1_dir", VS_STAGE1, "--pretrained_model2_dir", VS_STAGE1,
                                  "--model_dir", SCM_RUN, "--iterative_epochs", "1", *data])
    for network in ("U_Net", "AttU_Net"):
        a_model(ws / BRATS_STAGE1, network)
    a_model(ws / "models/BraTS/SCM", "U_Net", "CP_best_model1.pth")
    a_model(ws / "models/BraTS/SCM", "AttU_Net", "CP_best_model2.pth")
    a_model(ws / "models/MY/stage1", "U_Net2D5")
    export = _module("export_model.py").main
    export(["--model_dir", VS_STAGE1, "--network", "U_Net2D5", "--output", "vs_stage1.zip", "--no_fingerprint"])
    shutil.copy("vs_stage1.zip", "a.zip")
    export(["--model_dir", SCM_RUN, "--output", "vs_scm.zip", "--no_fingerprint"])
    _module("convert_checkpoint.py").main([
        "--input", f"{VS_STAGE1}/U_Net2D5/models/CP_best.pth", "--output", "downloads/unet2d5_vs.pth",
        "--network", "U_Net2D5", "--to", "published"])
    shutil.copy("downloads/unet2d5_vs.pth", "CP_published.pth")
    fp = fingerprint("splits/my_split.csv", "data/MY/image", "T2", "data/MY/annotation_7points", "7points")
    write_plan(make_plan(fp, PlanRules()), PLAN)
    _module("data/points_to_annotation.py").main(["--to_markups", "--points", "clicks", "--path_anno_7points",
                                                  "data/VS/annotation_7points", "--dataset_split",
                                                  "splits/split_VS.csv"])
    _module("data/points_to_annotation.py").main(["--to_markups", "--points", "clicks", "--path_anno_7points",
                                                  "data/MY/annotation_7points", "--dataset_split",
                                                  "splits/my_split.csv"])


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documented layout with tiny data, written once (read-only for the tests: each command
    runs in its own copy)."""
    import utilities.training.engine

    ws = tmp_path_factory.mktemp("documented") / "ws"
    ws.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ws)
        mp.setattr(utilities.training.engine, "draw_progress", lambda *a, **k: None)
        write_data(ws)
        write_models(ws)
    return ws


# ----------------------------------------------------------------------------- the tests

COMMANDS, READ_ERRORS = documented_commands()


def _cases() -> list[list[DocCommand]]:
    """The documented commands grouped by what they run (the first of each group runs)."""
    groups: dict[tuple, list[DocCommand]] = {}
    for cmd in COMMANDS:
        key = ("unmapped", cmd.source, cmd.text) if unmapped(cmd) else dedupe_key(cmd)
        groups.setdefault(key, []).append(cmd)
    return list(groups.values())


CASES = _cases()


@pytest.mark.parametrize("group", CASES, ids=[f"{g[0].script}@{g[0].source}" for g in CASES])
@pytest.mark.slow
def test_documented_command_runs(group, workspace, tmp_path, monkeypatch):
    report = run_command(group[0], workspace, tmp_path / "ws", monkeypatch)
    if report:
        pytest.skip(f"in part: {report}")


def test_documentation_blocks_are_read():
    assert not READ_ERRORS, "\n".join(f"{source}: {error}" for source, error in READ_ERRORS)


def test_deduplicated_commands_are_listed():
    """The commands that ran as another one (they differ from it only in data paths or postfixes)."""
    lines = [f"{c.text} ({c.source}) ran as {g[0].source}" for g in CASES for c in g[1:]]
    if lines:
        pytest.skip(f"{len(lines)} documented commands ran once for several:\n" + "\n".join(lines))


def _plan_printed(workspace: Path, where: Path, monkeypatch: pytest.MonkeyPatch) -> list[DocCommand]:
    """The commands plan.py prints for the workspace's MY data: the documented plan.py command at
    smoke size, and the lines of the plan it returns (plan.py's own ``commands()``)."""
    documented = next((c for c in COMMANDS if c.script == "plan.py" and not unmapped(c)), None)
    assert documented is not None, "no documented plan.py command (its printed commands are run from its plan)"
    _copy_tree(workspace, where)
    monkeypatch.chdir(where / documented.cwd)
    argv = smoke_args(documented.args, SMOKE["plan.py"])
    for out in output_paths(argv, SMOKE["plan.py"]):
        _remove(Path(out))
    plan = _module("plan.py").main(argv)
    return [DocCommand(f"plan.py prints [{name}]", line, tuple(shlex.split(line)), cwd=documented.cwd)
            for name, line in plan["commands"].items()]


@pytest.mark.slow
def test_commands_plan_py_prints_run(workspace, tmp_path, monkeypatch):
    """Each command plan.py prints runs at smoke size, in order (stage 1, the auxiliary network,
    SCM from both, inference), in one folder: each reads what the one before wrote."""
    where = tmp_path / "ws"
    printed = _plan_printed(workspace, where, monkeypatch)
    assert printed, "plan.py printed no commands"
    problems = [p for p in map(unmapped, printed) if p]
    assert not problems, "\n".join(problems)
    for cmd in printed:
        assert run_command(cmd, workspace, where, monkeypatch) == "", cmd.text


@pytest.mark.slow
def test_flag_sets_table_has_no_stale_entries(workspace, tmp_path, monkeypatch):
    """FLAG_SETS lists only flag sets the documentation (or plan.py) shows."""
    shown = {(c.script, flag_set(c)) for c in COMMANDS + _plan_printed(workspace, tmp_path / "ws", monkeypatch)}
    stale = sorted((script, flags) for script, sets in FLAG_SETS.items() for flags in sets
                   if (script, flags) not in shown)
    assert not stale, "no documented command has these flag sets any more; remove them from FLAG_SETS:\n" + \
        "\n".join(f"{script}: {flags!r}" for script, flags in stale)


def _scripts() -> list[str]:
    """The repository's scripts (a ``main`` run under ``__main__``), tests left out."""
    found = []
    for path in repository_files("*.py"):
        rel, text = path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8")
        if not rel.startswith("tests/") and '__name__ == "__main__"' in text and "def main(" in text:
            found.append(rel)
    return found


def _help(script: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        _module(script).main(["--help"])
    return out.getvalue()


@pytest.mark.slow
def test_commands_in_help_texts_run(workspace, tmp_path, monkeypatch):
    """A command line a script's ``--help`` shows (description or epilog) runs like a documented one."""
    shown = []
    for script in _scripts():
        lines = [line.strip() for line in _help(script).splitlines() if _is_command(line.strip())]
        shown += [c for line in lines for c in shell_commands(line, f"{script} --help")]
    for i, cmd in enumerate(shown):
        run_command(cmd, workspace, tmp_path / f"ws{i}", monkeypatch)
    assert all(not unmapped(c) for c in shown)


@pytest.mark.parametrize("block, expected", [
    ("python a.py --x 1 \\\n    --y 2   # comment\n# a comment line\n",
     [(".", (), ["python", "a.py", "--x", "1", "--y", "2"])]),
    ("for N in U_Net AttU_Net; do\n  python t.py --network $N --dir ./m/${N}_x\ndone",
     [(".", (), ["python", "t.py", "--network", "U_Net", "--dir", "./m/U_Net_x"]),
      (".", (), ["python", "t.py", "--network", "AttU_Net", "--dir", "./m/AttU_Net_x"])]),
    ("OUT=./o\nexport T=1\ncd sub && OMP_NUM_THREADS=1 python b.py --out $OUT; make demo",
     [("sub", (("T", "1"), ("OMP_NUM_THREADS", "1")), ["python", "b.py", "--out", "./o"]),
      ("sub", (("T", "1"),), ["make", "demo"])]),
])
def test_blocks_are_read_as_a_shell_reads_them(block, expected):
    got = shell_commands(block, "x.md:1")
    assert [(c.cwd, c.env, list(c.argv)) for c in got] == expected
    assert not any(c.template for c in got)


def test_templates_and_unsupported_syntax():
    (cmd,) = shell_commands("torchrun --nproc_per_node 4 train_SCM.py --rdzv_endpoint <host of node 0>:29500 ...", "s")
    assert cmd.template and cmd.script == "torchrun train_SCM.py"
    with pytest.raises(ValueError, match="pipes and background jobs"):
        shell_commands("python a.py | tee log", "s")
    with pytest.raises(ValueError, match=r"\$NET is not set"):
        shell_commands("python a.py --network $NET", "s")


def test_smoke_flags_and_outputs():
    smoke = Smoke(set={"--seeds": FIRST, "--quick": (), "--epochs": ("1",), "--absent": FIRST},
                  replace={"--shape": PATCH, "--other": ("x",)}, outputs=("{--out}/sub", "{--missing}"))
    args = smoke_args(["pos", "--seeds", "3", "4", "--epochs", "300", "--shape", "1", "2", "3", "--out=o"], smoke)
    assert args == ["pos", "--seeds", "3", "--epochs", "1", "--shape", "32", "32", "16", "--out", "o", "--quick"]
    assert output_paths(args, smoke) == ["o/sub"]
    assert flags_of(["--kernel_radius", "5", "5", "-1", "-r", "x"]) == ("--kernel_radius", "-r")
