"""Runs an entry point so that mistakes a user can fix end in one clear sentence, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from sepdense.errors import UserError

T = TypeVar("T")


def find_user_error(error: BaseException | None) -> UserError | None:
    """The UserError behind ``error``, looking through wrappers (Hydra's InstantiationException, Lightning's)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def run_reporting_user_errors(fn: Callable[..., T], *args: object) -> T:
    """Call ``fn``; on a UserError print ``error: <message>`` to stderr and exit with status 1."""
    try:
        return fn(*args)
    except Exception as error:
        user_error = find_user_error(error)
        if user_error is None:
            raise
        print(f"error: {user_error}", file=sys.stderr)
        raise SystemExit(1) from None
