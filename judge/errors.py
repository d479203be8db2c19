"""Errors the CLI turns into one printed line (a user's mistake, not a bug)."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: a file, a line, a flag. The message names where, so the user can fix it."""

    def __init__(self, message: str, *, path: object = None, line: int | None = None):
        where = f"{path}:{line}: " if path is not None and line is not None else f"{path}: " if path is not None else ""
        super().__init__(where + message)
        self.path, self.line = path, line
