"""Exit codes and error messages shared by the commands."""

from __future__ import annotations

import sys
from pathlib import Path

from graph.documents import ConversionFailed
from graph.errors import Issue, RequestError

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130
_NOT_ABOUT_THE_FILE = frozenset({"invalid_override", "unreadable_file"})


def read_bytes(path: Path) -> bytes:
    """A workflow file's bytes; a RequestError naming the file when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise RequestError(Issue(type="unreadable_file", message=f"cannot read {path}: {exc.strerror or exc}")) \
            from None


def fail(exc: RequestError, path: Path) -> int:
    """Print why a document was refused on stderr (naming the file) and return the error exit code."""
    if isinstance(exc, ConversionFailed):
        lines = "\n  ".join(exc.conversion.messages())
        print(f"error: {path}: cannot convert the editor workflow:\n  {lines}", file=sys.stderr)
    elif exc.issue.type in _NOT_ABOUT_THE_FILE:
        print(f"error: {exc.issue.message}", file=sys.stderr)
    else:
        print(f"error: {path}: {exc.issue.message}", file=sys.stderr)
    return EXIT_ERROR
