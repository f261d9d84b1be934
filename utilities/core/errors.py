"""The errors that carry a message for the user (a bad input, a busy run folder, a stop on
purpose), as opposed to bugs: every script's entry point (:func:`utilities.workflow.cli.run_main`)
prints them as one ``error:`` line. The base :class:`UserError` marks the project's own."""
from __future__ import annotations

__all__ = ["UserError", "USER_ERRORS", "OutputError", "DeviceError", "RunInUseError", "TrainingStopped",
           "NonFiniteLossError"]


class UserError(Exception):
    """An error whose message is for the user (the project's own; see :data:`USER_ERRORS`)."""


class OutputError(OSError, UserError):
    """An output cannot be written (disk full, permissions, a file where a folder should be)."""


class DeviceError(UserError, RuntimeError):
    """The requested device does not exist on this machine."""


class RunInUseError(UserError, RuntimeError):
    """Another running process holds the run folder."""


class TrainingStopped(UserError, RuntimeError):
    """Training stopped on purpose, with a message for the user; the checkpoints are intact."""


class NonFiniteLossError(TrainingStopped):
    """A loss became NaN or Inf; the last good checkpoints are kept."""


#: Exception types that carry a message for the user (a bad input, not a bug).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError, PermissionError,
                                                NotADirectoryError, UserError)
