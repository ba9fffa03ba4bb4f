"""`comfy_api.v0_0_1`: the same V3 protocol as `comfy_api.latest` (one implementation serves every version)."""

from ..latest import IO, UI, ComfyAPI, ComfyAPISync, ComfyExtension, Input, Types, io, ui

__all__ = ["IO", "UI", "ComfyAPI", "ComfyAPISync", "ComfyExtension", "Input", "Types", "io", "ui"]
