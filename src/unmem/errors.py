"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""

from __future__ import annotations

from pathlib import Path


class UnmemError(Exception):
    """Bad input or a state the user can fix. The message is the whole story, on one line."""


class UnmemWarning(UserWarning):
    """Something the user should know that does not stop the run; the CLI prints it as one line."""


def input_error(
    path: str | Path, message: str, *, line: int | None = None, field: str | None = None
) -> UnmemError:
    """An error that names the file, and where known the line and field, in a fixed order."""
    where = str(path)
    if line is not None:
        where += f":{line}"
    if field is not None:
        where += f": field '{field}'"
    return UnmemError(f"{where}: {message}")
