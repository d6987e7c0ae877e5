"""Tables a person reads: numbers formatted for print, markdown tables, CSV files, JSON results; and the one way
they are written into a folder we were handed: under names we checked, never through a symbolic link."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sepdense.errors import UserError

# Characters a file name we make may keep; anything else (a path separator, "..", a space) is replaced.
SAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._,=+-]")
MAX_NAME = 80


class UnsafePathError(UserError):
    """A write would leave the folder it was meant for (through a symbolic link or a crafted name)."""


def safe_name(text: str, max_length: int = MAX_NAME) -> str:
    """A file name made from ``text`` that cannot leave its folder: safe characters only, no leading dot, at most
    ``max_length`` characters; a name that had to change ends in a short hash of ``text``, so two texts stay two
    names."""
    name = SAFE_CHARACTERS.sub("_", str(text)).lstrip(".") or "_"
    if name == str(text) and len(name) <= max_length:
        return name
    digest = hashlib.sha1(str(text).encode()).hexdigest()[:8]
    return f"{name[: max_length - len(digest) - 1]}-{digest}"


def write_file(path: Path, data: str | bytes, inside: Path | None = None) -> None:
    """Write ``data`` to ``path`` in one step, replacing a symbolic link at ``path`` instead of writing through it.

    ``inside``: the folder the file must land in; a ``path`` whose folder resolves anywhere else (a crafted
    name, a linked subfolder) is refused with :class:`UnsafePathError`. The data go to a new temporary file
    beside ``path`` (created exclusively, so it follows no link) that then takes ``path``'s place.
    """
    path = Path(path)
    folder = path.parent.resolve()
    if inside is not None and not folder.is_relative_to(Path(inside).resolve()):
        raise UnsafePathError(f"Refusing to write {path}: it resolves to {folder / path.name}, outside {inside}.")
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name[:40]}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, folder / path.name)  # a link at the destination is replaced, not followed
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table of ``rows`` (one dict per row) over ``columns``."""
    if not rows:
        return "(no rows)\n"
    columns = list(columns or dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(format_value(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: Sequence[dict[str, Any]], inside: Path | None = None) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row)) or ["(empty)"]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_file(path, text.getvalue(), inside)


def write_json(path: Path, value: Any, sort_keys: bool = False, inside: Path | None = None) -> None:
    write_file(path, json.dumps(value, indent=2, sort_keys=sort_keys, default=str), inside)
