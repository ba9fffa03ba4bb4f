"""One device's entry in ComfyUI's /system_stats `devices` list (memory as the editor shows it)."""

from __future__ import annotations

from typing import Any

import torch

from graph.sizing import system_memory


def device_stats(device: torch.device) -> dict[str, Any]:
    """Total and free memory of a GPU (and its PyTorch pool), or of the host for the CPU."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        reserved = torch.cuda.memory_reserved(device)
        allocated = torch.cuda.memory_allocated(device)
        name = f"{device} {torch.cuda.get_device_name(device)}"
        return {"name": name, "type": "cuda", "index": device.index, "vram_total": total,
                "vram_free": free + reserved - allocated, "torch_vram_total": reserved,
                "torch_vram_free": reserved - allocated}
    total, free = (size or 0 for size in system_memory())  # 0 where the platform cannot tell
    return {"name": str(device), "type": device.type, "index": device.index,
            "vram_total": total, "vram_free": free, "torch_vram_total": total, "torch_vram_free": free}


__all__ = ["device_stats"]
