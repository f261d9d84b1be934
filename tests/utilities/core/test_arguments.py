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
