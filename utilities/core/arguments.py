"""The argparse parser every script builds its command line with: a mistyped flag or value is one
``error:`` line on stderr (exit 2), like every other user error of the project, instead of
argparse's whole usage block (40 lines for the training scripts) above its message; an unknown
flag close to a real one names it (``did you mean --batch_size?``)."""
from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["ArgumentParser"]


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

