"""The one exception every model loader raises, so callers can report a bad file precisely."""

from __future__ import annotations

from pathlib import Path


class ModelLoadError(Exception):
    """A model file could not be loaded; the message always names the file and what was expected."""

    def __init__(self, path: str | Path | None, message: str) -> None:
        self.path = Path(path) if path is not None else None
        self.reason = message
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{message}")
