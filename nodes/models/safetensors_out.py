"""Write `.safetensors` files one tensor at a time, to any binary stream.

`safetensors.torch.save` builds the whole file in memory; a checkpoint of several GB should not
need that. Here the header is written from shapes and dtypes first, then each tensor's bytes, so at
most one tensor is converted at a time. A `LazyTensor` is computed only when its turn comes (a
merged weight, built from two models as it is written), and meta tensors (shapes only) are drawn by a
`make` callback just before they are written (random full-size checkpoints for benchmarks). The files are plain
safetensors: any reader (ComfyUI, the safetensors library) opens them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

import torch

ST_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
             torch.bool: "BOOL"}


@dataclass(frozen=True, kw_only=True, eq=False)
class LazyTensor:
    """A tensor known by its shape and dtype, computed by `produce` only when it is written."""

    shape: torch.Size
    dtype: torch.dtype
    produce: Callable[[], torch.Tensor]

    @property
    def is_meta(self) -> bool:
        return False

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def numel(self) -> int:
        return self.shape.numel()


def write_safetensors(handle: BinaryIO, tensors: Mapping[str, torch.Tensor | LazyTensor], *,
                      metadata: Mapping[str, str] | None = None, dtype: torch.dtype | None = None,
                      make: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> None:
    """Write `tensors` (in order) with `metadata` in the header; `dtype` casts floating tensors."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    out_dtypes: dict[str, torch.dtype] = {}
    for name, tensor in tensors.items():
        out = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
        if out not in ST_DTYPES:
            raise ValueError(f"cannot store tensor {name!r} of dtype {out} in a .safetensors file")
        out_dtypes[name] = out
        size = tensor.numel() * torch.empty((), dtype=out).element_size()
        header[name] = {"dtype": ST_DTYPES[out], "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    handle.write(struct.pack("<Q", len(raw)))
    handle.write(raw)
    for name, tensor in tensors.items():
        if isinstance(tensor, LazyTensor):
            declared = tensor.shape
            tensor = tensor.produce()
            if tensor.shape != declared:
                raise ValueError(f"tensor {name!r} was declared {tuple(declared)} but came out {tuple(tensor.shape)}")
        if tensor.is_meta:
            if make is None:
                raise ValueError(f"tensor {name!r} has no data (meta device) and no values were given for it")
            tensor = make(name, tensor)
        value = tensor.detach().to("cpu", out_dtypes[name]).contiguous().reshape(-1)
        del tensor  # a computed tensor is freed before the next one is made
        if value.numel():
            handle.write(value.view(torch.uint8).numpy().data)
        del value


__all__ = ["ST_DTYPES", "LazyTensor", "write_safetensors"]
