"""The one rule for names a client may read back: what SaveImage may write is what /view may serve.

graph.paths.check_name keeps a name inside its folder; this adds what the server refuses to serve
(hidden files, which are half-written temporaries; Windows device names; parts starting with `~`), so a node
never produces a file whose result the editor then cannot show.
"""

from __future__ import annotations

from .errors import shown
from .paths import UnsafePathError, check_name, split_prefix

RESERVED = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))})
PREVIEW_CHARS = 80
MAX_NAME_BYTES = 255  # one file or folder name, on every common file system
_SAVED_SUFFIX = "_00001_.webp"  # what a saver appends to the prefix (counter and the longest extension)
__all__ = ["PREVIEW_CHARS", "RESERVED", "check_prefix", "check_servable", "shown"]


def check_servable(text: str, parts: list[str], *, what: str, last_is_prefix: bool = False) -> None:
    """UnsafePathError when `parts` (already split by check_name) name something /view would refuse.

    With `last_is_prefix` the last part is a file-name prefix (SaveImage's): a device name there is
    harmless ("con" becomes "con_00001_.png"), a leading dot is not.
    """
    if text.startswith("~"):
        raise UnsafePathError(f"{what} must be a relative path, got {shown(text)}")
    for i, part in enumerate(parts):
        if part.startswith("~"):  # "~x" reads as a home folder to shells; refused wherever it stands
            raise UnsafePathError(f"{what} must not have a part starting with '~' ({shown(part, 40)})")
        if part.startswith("."):
            raise UnsafePathError(f"{what} must not name a hidden file or folder ({shown(part, 40)})")
        # A prefix is judged as the file names it makes: "con" gives "con_00001_.png" (fine), "con." does not.
        name = f"{part}_" if last_is_prefix and i == len(parts) - 1 else part
        if name.split(".")[0].strip().lower() in RESERVED:
            raise UnsafePathError(f"{what} uses a reserved device name ({shown(part, 40)})")
        try:
            part.encode("utf-8")
        except UnicodeEncodeError:
            raise UnsafePathError(f"{what} is not valid text (a lone surrogate)") from None


def check_prefix(prefix: str) -> None:
    """UnsafePathError unless files saved under `prefix` (SaveImage's) stay in their folder and /view serves them."""
    _, base = split_prefix(prefix)
    if len(base.encode("utf-8", "surrogatepass")) + len(_SAVED_SUFFIX) > MAX_NAME_BYTES:
        raise UnsafePathError(f"filename_prefix {shown(base, 40)} is too long: the files saved under it "
                              f"('{{prefix}}{_SAVED_SUFFIX}') must fit in {MAX_NAME_BYTES} bytes")
    check_servable(prefix, check_name(prefix, what="filename_prefix"), what="filename_prefix",
                   last_is_prefix=not prefix.endswith("/"))
