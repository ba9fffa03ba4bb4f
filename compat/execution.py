"""`execution` for ComfyUI packs: importable, but ComfyUI's executor itself is not provided.

Some packs `import execution` at load time without using it (or only in optional patches); they load.
Any attribute they read raises an AttributeError naming it.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(f"module 'execution' has no attribute {name!r}: ComfyUI's executor is not provided by "
                         "Sumie's compatibility layer")
