"""Errors that reach the user as one clear line instead of a traceback."""

from __future__ import annotations

from pathlib import Path


class ApplianceError(Exception):
    """Base class: the CLI prints the message and exits with ``exit_code``."""

    exit_code = 2


class ModelError(ApplianceError):
    """A model (scoring bundle or pose model files) that is missing or must not be used."""

    exit_code = 3


class UpdateRefused(ModelError):
    """A bundle that was not installed (or a rollback not done); the active model is unchanged."""


class InputFormatError(ApplianceError):
    """Malformed input file; the message names the file and, where known, the line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")
