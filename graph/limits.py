"""Resource limits enforced at validation time, so a bad request fails with a message, not an OOM."""

from __future__ import annotations

from dataclasses import dataclass

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1  # seeds use the full unsigned 64-bit range
MAX_RESOLUTION = 16384  # the largest width/height a size input accepts (ComfyUI's nodes.MAX_RESOLUTION)


@dataclass(frozen=True, kw_only=True)
class Limits:
    max_nodes: int = 100_000
    max_string_length: int = 1_000_000  # typed-in text and text a node produces
    max_ui_chars: int = 4_000_000  # a node's UI output as JSON (stored in the history, sent to clients)
    max_combo_preview: int = 50
    # Width x height x batch of any image-sized tensor a node may be asked to allocate.
    max_pixels: int = 64 * 1024 * 1024
    max_batch: int = 4096
