"""Errors a user can cause and fix; the entry points print them as one sentence, no traceback."""

from __future__ import annotations

import shutil
from pathlib import Path


class UserError(Exception):
    """A problem with the user's config, data or environment, with a message that says what to do."""


class ConfigError(UserError):
    """A config value is missing, of the wrong kind or out of range."""


class DataError(UserError):
    """The data is missing, unreadable or not what the config says it is."""


class DiskFullError(UserError):
    """A write failed because the disk is full."""

    @classmethod
    def for_path(cls, path: Path | str | None) -> DiskFullError:
        where = Path(path) if path else Path.cwd()
        existing = next((p for p in (where, *where.parents) if p.exists()), Path("/"))
        try:
            free = f"{shutil.disk_usage(existing).free / 1e6:,.0f} MB free"
        except OSError:
            free = "free space unknown"
        return cls(
            f"The disk holding {existing} is full ({free}) while writing {where}; the checkpoints already saved are "
            f"intact. Free some space, then continue with resume=true."
        )


class RunInterrupted(UserError):
    """A signal stopped the run after its progress was saved; ``exit_code`` is the shell's for that signal."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
