"""The argparse parser every script builds its command line with: a mistyped flag or value is one
``error:`` line on stderr (exit 2), like every other user error of the project, instead of
argparse's whole usage block (40 lines for the training scripts) above its message; an unknown
flag close to a real one names it (``did you mean --batch_size?``).

It also keeps where the value of a flag the user did not type came from (a ``--plan`` or
``--dataset`` file, or the run a ``--resume`` continues: :func:`record_origins`), so that an
error naming such a flag says so (:func:`origin_note`, added by every script's entry point)
instead of naming, bare, a flag the user never passed."""
from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from utilities.core.logs import setup_logger

__all__ = ["ArgumentParser", "record_origins", "clear_origins", "origin_flags", "origin_note", "origins_summary",
           "typed_flags", "Inert", "warn_inert_flags"]

#: Option string -> where its value came from (``--plan plan.json``), for the flags of the
#: script running in this process that were not typed; see :func:`record_origins`.
_ORIGINS: dict[str, str] = {}
_FLAG = re.compile(r"--[A-Za-z0-9][A-Za-z0-9_-]*")


def record_origins(flags: Iterable[str], origin: str) -> None:
    """Note that the values of ``flags`` (option strings, not typed by the user) come from
    ``origin`` (e.g. ``--plan plan.json``)."""
    _ORIGINS.update(dict.fromkeys(flags, origin))


def clear_origins() -> None:
    """Forget every recorded origin (a script's entry point, before it parses)."""
    _ORIGINS.clear()


def origin_flags() -> set[str]:
    """The option strings whose values came from a file (:func:`record_origins`)."""
    return set(_ORIGINS)


def origins_summary() -> str:
    """``--a, --b from --plan p.json; --c from --dataset d.json`` for every recorded origin; empty
    when every value was typed or is a default."""
    by_origin: dict[str, list[str]] = {}
    for flag, origin in _ORIGINS.items():
        by_origin.setdefault(origin, []).append(flag)
    return "; ".join(f"{', '.join(flags)} from {origin}" for origin, flags in by_origin.items())


def origin_note(message: str) -> str:
    """`` (--a, --b: from --plan p.json, not typed; a flag given on the command line overrides
    it)`` for the flags ``message`` names whose values came from a file, one part per file; empty
    when it names none, or names the file itself already."""
    by_origin: dict[str, list[str]] = {}
    for flag in dict.fromkeys(_FLAG.findall(message)):
        origin = _ORIGINS.get(flag)
        if origin is not None and origin.split(" ", 1)[-1] not in message:
            by_origin.setdefault(origin, []).append(flag)
    if not by_origin:
        return ""
    parts = "; ".join(f"{', '.join(flags)}: from {origin}" for origin, flags in by_origin.items())
    return f" ({parts}, not typed; a flag given on the command line overrides it)"


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with one-line errors.

    ``error`` prints ``error: <argparse's message>; '<prog> --help' lists the flags`` and exits
    with status 2 (argparse's and :data:`utilities.workflow.cli.EXIT_USER_ERROR`). The message,
    without the hint, stays readable as :attr:`last_error` for a caller that parses flags on a
    user's behalf (the ablation runner checks a config's flags this way). Sub-parsers
    (``add_subparsers``) are of this class too, as argparse makes them of the parent's class.
    """

    last_error: str | None = None

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}{self._suggestion(extras)}")
        return parsed

    def _suggestion(self, extras: Sequence[str]) -> str:
        """`` (did you mean --x?)`` for the unknown flags in ``extras`` that are close to a flag of
        this parser; empty when none is."""
        known = [option for action in self._actions for option in action.option_strings if option.startswith("--")]
        flags = [extra.split("=", 1)[0] for extra in extras if extra.startswith("--")]
        hints = []
        for flag in flags:
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
            if close:
                hints.append(close[0] if len(flags) == 1 else f"{close[0]} for {flag}")
        return f" (did you mean {', '.join(hints)}?)" if hints else ""

    def error(self, message: str) -> NoReturn:
        self.last_error = message
        sys.stderr.write(f"error: {message}; '{self.prog} --help' lists the flags\n")
        sys.stderr.flush()
        self.exit(2)


def typed_flags(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
    """The ``dest`` of every flag typed in ``argv`` (whatever its value): ``argv`` parsed with
    every default suppressed and nothing required, the parser left as it was."""
    saved = [(action, action.default, action.required) for action in parser._actions]
    defaults = dict(parser._defaults)
    try:
        parser._defaults.clear()
        for action in parser._actions:
            action.default, action.required = argparse.SUPPRESS, False
        known, _ = parser.parse_known_args(argv)
    finally:
        for action, default, required in saved:
            action.default, action.required = default, required
        parser._defaults.update(defaults)
    return set(vars(known))


@dataclass(frozen=True)
class Inert:
    """Flags (``dests``) that have no effect when ``when(args)`` holds, ``because`` saying why
    (``"with --optimizer adam: only SGD has a momentum"``)."""

    dests: tuple[str, ...]
    when: Callable[[argparse.Namespace], bool]
    because: str


def warn_inert_flags(parser: argparse.ArgumentParser, argv: Sequence[str] | None, args: argparse.Namespace,
                     rules: Sequence[Inert]) -> list[str]:
    """Warn (one line each, on the console) about the flags typed in ``argv`` that ``rules`` say
    have no effect with the other values of ``args``; returns the lines. Only typed flags: a value
    from a ``--plan`` or a default is never a request the user made."""
    typed = typed_flags(parser, argv)
    lines = []
    for rule in rules:
        inert = [d for d in rule.dests if d in typed]
        if inert and rule.when(args):
            given = ", ".join(f"--{d}{_flag_value(getattr(args, d))}" for d in inert)
            lines.append(f"{given} {'has' if len(inert) == 1 else 'have'} no effect {rule.because}")
    for line in lines:
        setup_logger(None).warning(line)
    return lines


def _flag_value(value: Any) -> str:
    """`` <value>`` as typed (a list's values apart); nothing for a switch."""
    if isinstance(value, bool):
        return ""
    return " " + (" ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))
