"""utilities/core/errors.py: which errors carry a message for the user. Each of the project's own
is a ``UserError`` and caught by ``except USER_ERRORS`` (how every entry point prints one
``error:`` line), and keeps the built-in base its callers catch it by."""
from __future__ import annotations

import pytest

from utilities.core.errors import (
    USER_ERRORS,
    DeviceError,
    NonFiniteLossError,
    OutputError,
    RunInUseError,
    TrainingStopped,
    UserError,
)


@pytest.mark.parametrize("cls, base", [
    (OutputError, OSError),          # callers catch a failed write as OSError
    (DeviceError, RuntimeError),
    (RunInUseError, RuntimeError),
    (TrainingStopped, RuntimeError),
    (NonFiniteLossError, TrainingStopped),   # a NaN loss is one way training stops on purpose
])
def test_each_error_is_a_user_error_and_keeps_its_base(cls, base):
    assert issubclass(cls, UserError) and issubclass(cls, base)
    with pytest.raises(USER_ERRORS):
        raise cls("message for the user")


@pytest.mark.parametrize("error", [ValueError("bad flag"), FileNotFoundError("no file"), FileExistsError("exists"),
                                   PermissionError("denied"), NotADirectoryError("a file")])
def test_the_built_in_user_errors(error):
    assert isinstance(error, USER_ERRORS)


@pytest.mark.parametrize("error", [RuntimeError("a bug"), KeyError("k"), TypeError("t"), OSError("disk")])
def test_bugs_are_not_user_errors(error):
    """A bare RuntimeError or OSError keeps its traceback: only the subclasses above are for the user."""
    assert not isinstance(error, USER_ERRORS)
