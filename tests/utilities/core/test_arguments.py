"""The project's argparse parser: a mistyped flag or value is one ``error:`` line (exit 2), an
unknown flag close to a real one is named, and every script builds its command line with it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from utilities.core.arguments import ArgumentParser

ROOT = Path(__file__).resolve().parents[3]


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="train.py")
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--model_dir", required=True)
    p.add_argument("--network", choices=["U_Net", "U_Net2D5"], default="U_Net")
    return p


def refused(argv: list[str], capsys) -> tuple[str, str | None]:
    p = parser()
    with pytest.raises(SystemExit) as err:
        p.parse_args(argv)
    assert err.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err, p.last_error


@pytest.mark.parametrize("argv, message", [
    (["--model_dir", "m", "--bach_size", "4"], "unrecognized arguments: --bach_size 4 (did you mean --batch_size?)"),
    (["--model_dir", "m", "--bach_size=4"], "unrecognized arguments: --bach_size=4 (did you mean --batch_size?)"),
    (["--model_dir", "m", "--bach_size", "4", "--netwrk", "U_Net"],
     "unrecognized arguments: --bach_size 4 --netwrk U_Net (did you mean --batch_size for --bach_size, "
     "--network for --netwrk?)"),
    (["--model_dir", "m", "--learning_rate", "0.1"], "unrecognized arguments: --learning_rate 0.1"),
    (["--model_dir", "m", "extra"], "unrecognized arguments: extra"),
    (["--model_dir", "m", "--network", "UNet"],
     "argument --network: invalid choice: 'UNet' (choose from 'U_Net', 'U_Net2D5')"),
    (["--model_dir", "m", "--batch_size", "two"], "argument --batch_size: invalid int value: 'two'"),
    ([], "the following arguments are required: --model_dir"),
])
def test_a_mistake_is_one_error_line(argv, message, capsys):
    err, last = refused(argv, capsys)
    assert err == f"error: {message}; 'train.py --help' lists the flags\n"
    assert last == message


def test_accepted_flags_parse_as_argparse_does():
    args = parser().parse_args(["--model_dir", "m", "--batch_size", "4"])
    assert (args.model_dir, args.batch_size, args.network) == ("m", 4, "U_Net")
    known, extras = parser().parse_known_args(["--model_dir", "m", "--bach_size", "4"])
    assert known.model_dir == "m" and extras == ["--bach_size", "4"]


def test_sub_parsers_are_of_the_class(capsys):
    p = ArgumentParser(prog="records.py")
    sub = p.add_subparsers(dest="action", required=True)
    save = sub.add_parser("save")
    save.add_argument("--output_dir", required=True)
    assert isinstance(save, ArgumentParser)
    with pytest.raises(SystemExit):
        p.parse_args(["save", "--output_dri", "x"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")


def test_every_script_builds_its_command_line_with_it():
    """No script builds a plain ``argparse.ArgumentParser`` (whose error prints the whole usage)."""
    plain = re.compile(r"\bargparse\.ArgumentParser\(")
    offenders = [str(path.relative_to(ROOT)) for path in sorted(ROOT.rglob("*.py"))
                 if not {".venv", "tests", "ablation", "demo_output"} & set(path.relative_to(ROOT).parts)
                 and plain.search(path.read_text(encoding="utf-8"))]
    assert offenders == []


def test_a_script_run_from_the_shell_says_one_line():
    done = subprocess.run([sys.executable, "splits/make_split.py", "--no_such_flag"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert done.stderr.endswith("; 'make_split.py --help' lists the flags\n")


def test_origin_note_names_the_file_that_set_a_flag():
    from utilities.core.arguments import clear_origins, origin_note, record_origins

    clear_origins()
    assert origin_note("--spatial_shape [16, 16, 16] does not fit U_Net2D5") == ""
    record_origins(["--spatial_shape", "--down_size"], "--plan p.json")
    record_origins(["--path_images", "--image_postfix"], "--dataset d/dataset.json")
    assert origin_note("--down_size [64, 16, 16] must not exceed --spatial_shape [32, 32, 16]") == (
        " (--down_size, --spatial_shape: from --plan p.json, not typed; a flag given on the command line overrides it)")
    missing = "2 file(s) missing: image a/x_T2.nii.gz; check --path_images/--image_postfix, or --spatial_shape"
    assert origin_note(missing) == (" (--path_images, --image_postfix: from --dataset d/dataset.json; "
                                    "--spatial_shape: from --plan p.json, not typed; a flag given on the command "
                                    "line overrides it)")
    assert origin_note("--plan p.json: --spatial_shape takes 3 values") == ""   # the message names the file itself
    assert origin_note("--max_epochs must be positive") == ""
    clear_origins()
    assert origin_note("--down_size [64, 16, 16] is too large") == ""


# ------------------------------------------------------------------------ flags without effect
@pytest.mark.parametrize(("script", "argv", "lines"), [
    ("stage1", ["--optimizer", "adam", "--momentum", "0.5"],
     ["--momentum 0.5 has no effect with --optimizer adam: only SGD has a momentum"]),
    ("stage1", ["--weight_gatedcrf", "0", "--crf_sigma_xy", "3", "--down_size", "8", "8", "8"],
     ["--down_size 8 8 8, --crf_sigma_xy 3.0 have no effect with --weight_gatedcrf 0: the mCRF is off"]),
    ("stage1", ["--weight_gatedcrf", "0", "--weight_variance", "0", "--warmup_epochs", "1"],
     ["--warmup_epochs 1 has no effect with --weight_gatedcrf 0 and --weight_variance 0: nothing is ramped up"]),
    ("stage1", ["--rampup_epochs", "0", "--rampup_unit", "step"],
     ["--rampup_unit step has no effect with --rampup_epochs 0: the mCRF and VM start at full weight"]),
    ("stage1", ["--max_recoveries", "5", "--compile_backend", "eager"],
     ["--max_recoveries 5 has no effect without --on_collapse recover: nothing is recovered",
      "--compile_backend eager has no effect without --compile: nothing is compiled"]),
    ("stage1", ["--stop_on_collapse", "--on_collapse", "warn"],
     ["--on_collapse warn has no effect with --stop_on_collapse, which stops the run at a collapse "
      "(--on_collapse stop)"]),
    ("stage1", ["--resume", "--init_checkpoint", "a.pth"],
     ["--init_checkpoint a.pth has no effect with --resume: the run continues from its latest state"]),
    ("scm", ["--weight_kd", "0", "--T", "10"], ["--T 10.0 has no effect with --weight_kd 0: nothing is distilled"]),
    ("inference", ["--model", "a.pth", "--epoch_inf", "final", "--seed", "3"],
     ["--epoch_inf final has no effect with checkpoint files (.pth): each file is the model",
      "--seed 3 has no effect in inference, which draws nothing at random"]),
    ("inference", ["--model_dir", "run", "--overwrite"],
     ["--overwrite has no effect without --output_folder: the run's own output_pred/ is always replaced"]),
    # the same flags where they act, and values only a default gave: no warning
    ("stage1", ["--optimizer", "sgd", "--momentum", "0.5", "--on_collapse", "recover", "--max_recoveries", "5"], []),
    ("stage1", ["--weight_gatedcrf", "0"], []),
    ("inference", ["--model", "a.zip", "--epoch_inf", "final"], []),
    ("inference", ["--model_dir", "run", "--ensemble", "b.pth", "--epoch_inf", "final"], []),
])
def test_flags_without_effect_are_named(script, argv, lines, capsys):
    import inference
    import train_gatedcrfloss3d22d_multiview_varianceloss as stage1
    import train_SCM as scm
    from utilities.core.arguments import warn_inert_flags
    from utilities.workflow.cli import COMPILE_INERT, TRAINING_INERT

    rules = {"stage1": (*TRAINING_INERT, *COMPILE_INERT, *stage1.STAGE1_INERT),
             "scm": (*TRAINING_INERT, *COMPILE_INERT, *scm.SCM_INERT),
             "inference": inference.INFERENCE_INERT}[script]
    parser = {"stage1": stage1, "scm": scm, "inference": inference}[script].build_parser()
    args = parser.parse_args(argv)
    assert warn_inert_flags(parser, argv, args, rules) == lines
    shown = [line.split(" WARNING ", 1)[1] for line in capsys.readouterr().out.splitlines() if " WARNING " in line]
    assert shown == lines
