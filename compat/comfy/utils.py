"""`comfy.utils` for ComfyUI packs: ProgressBar, image resizing helpers and safe weight loading."""

from __future__ import annotations

from typing import Any

from .. import _runtime

PROGRESS_BAR_ENABLED = True
_global_hook: Any = None


def set_progress_bar_enabled(enabled: bool) -> None:
    global PROGRESS_BAR_ENABLED
    PROGRESS_BAR_ENABLED = enabled


def set_progress_bar_global_hook(function: Any) -> None:
    global _global_hook
    _global_hook = function


class ProgressBar:
    """Reports through the running node's progress (the websocket `progress` event), which is also
    where an interrupt is honoured; outside a running node it only counts."""

    def __init__(self, total: int, node_id: str | None = None) -> None:
        self.total = total
        self.current = 0
        self.ctx = _runtime.context()
        self.node_id = node_id

    def update_absolute(self, value: float, total: float | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total) if self.total else value
        if self.ctx is not None:
            self.ctx.progress(self.current, self.total, _preview(preview))
        if _global_hook is not None:
            _global_hook(self.current, self.total, preview, node_id=self.node_id)

    def update(self, value: float) -> None:
        self.update_absolute(self.current + value)


def _preview(preview: Any) -> Any:
    """ComfyUI previews are ("JPEG", PIL image, max_size); the engine's relay takes (format, image)."""
    if isinstance(preview, tuple) and len(preview) >= 2:
        return preview[0], preview[1]
    return preview


def common_upscale(samples: Any, width: int, height: int, upscale_method: str, crop: str) -> Any:
    """Resize [B, C, H, W] to (height, width): nearest-exact, bilinear, area, bicubic, lanczos, bislerp."""
    from nodes.base.resize import resize_nchw

    return resize_nchw(samples, int(width), int(height), upscale_method, crop)


def repeat_to_batch_size(tensor: Any, batch_size: int, dim: int = 0) -> Any:
    if tensor.shape[dim] > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if tensor.shape[dim] < batch_size:
        reps = [1] * tensor.dim()
        reps[dim] = -(-batch_size // tensor.shape[dim])
        return tensor.repeat(*reps).narrow(dim, 0, batch_size)
    return tensor


def load_torch_file(ckpt: str, safe_load: bool = False, device: Any = None, return_metadata: bool = False) -> Any:
    """A flat {name: tensor} dict through the engine's safe reader (pickles only as weights-only)."""
    from nodes.models.weights_file import read_state_dict

    sd = read_state_dict(ckpt)
    if device is not None:
        sd = {k: v.to(device) for k, v in sd.items()}
    if return_metadata:
        metadata = None
        if str(ckpt).lower().endswith((".safetensors", ".sft")):
            from safetensors import safe_open

            with safe_open(str(ckpt), framework="pt") as handle:
                metadata = handle.metadata()
        return sd, metadata
    return sd


def state_dict_prefix_replace(state_dict: dict[str, Any], replace_prefix: dict[str, str],
                              filter_keys: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {} if filter_keys else state_dict
    for old, new in replace_prefix.items():
        for key in [k for k in state_dict if k.startswith(old)]:
            out[new + key[len(old):]] = state_dict.pop(key)
    return out


# -- more of ComfyUI's helpers packs use ---------------------------------------------------------------
def lanczos(samples: Any, width: int, height: int) -> Any:
    """[B, C, H, W] resized with Lanczos (what common_upscale's "lanczos" does)."""
    return common_upscale(samples, width, height, "lanczos", "disabled")


def get_tiled_scale_steps(width: int, height: int, tile_x: int, tile_y: int, overlap: int) -> int:
    """How many tiles a tiled pass over width x height takes (for progress bars)."""
    import math

    rows = 1 if height <= tile_y else math.ceil((height - overlap) / (tile_y - overlap))
    cols = 1 if width <= tile_x else math.ceil((width - overlap) / (tile_x - overlap))
    return rows * cols


def save_torch_file(sd: dict[str, Any], ckpt: str, metadata: dict[str, str] | None = None) -> None:
    """Write a state dict as .safetensors (the only format packs should write)."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(ckpt), metadata=metadata)


def get_attr(obj: Any, attr: str) -> Any:
    """`obj.a.b.c` for attr "a.b.c" (module weights by their state-dict names)."""
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj


def set_attr(obj: Any, attr: str, value: Any) -> Any:
    """Set `obj.a.b.c = value` for attr "a.b.c"; returns the value it replaced."""
    *path, last = attr.split(".")
    for name in path:
        obj = getattr(obj, name)
    previous = getattr(obj, last)
    setattr(obj, last, value)
    return previous


def __getattr__(name: str) -> Any:
    raise AttributeError(f"module 'comfy.utils' has no attribute {name!r}: Sumie's compatibility layer does not "
                         "provide it")
