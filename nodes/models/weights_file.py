"""Reading a weights file into a flat ``{name: tensor}`` dict, safely.

safetensors is read memory-mapped after checking its header ourselves (so a truncated file or a
header that claims gigabytes fails with a clear message, not a cryptic one or a huge allocation).
Pickle-based files are only ever opened with ``torch.load(weights_only=True)``, which refuses any
pickled object other than tensors and plain containers.
"""

from __future__ import annotations

import bisect
import json
import mmap
import os
import pickle
import struct
import threading
import weakref
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from nodes.base.errors import ModelLoadError

SAFETENSORS_SUFFIXES = frozenset({".safetensors", ".sft"})
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin"})
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own cap; real headers are well under 1 MB
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn,
                       "F8_E5M2": torch.float8_e5m2, "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64}
_PAGE = mmap.PAGESIZE
_mapped_lock = threading.Lock()
_mapped: dict[int, tuple[int, weakref.ref]] = {}  # start address of a file mapping -> (end, the mapping)


def safetensors_header(path: Path) -> tuple[dict, int]:
    """The parsed header and where the data section starts; raises on anything malformed."""
    size = path.stat().st_size
    if size < 8:
        raise ModelLoadError(path, f"file is {size} bytes; expected a safetensors header (at least 8 bytes)")
    with path.open("rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        if header_len > MAX_HEADER_BYTES or header_len > size - 8:
            raise ModelLoadError(path, f"safetensors header claims {header_len} bytes but the file has "
                                       f"{size - 8} after the length field; expected a complete safetensors file")
        raw = handle.read(header_len)
    try:
        header = json.loads(raw)
    except RecursionError:
        raise ModelLoadError(path, "safetensors header nests too deeply to be a tensor index; expected a "
                                   "safetensors file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            path, f"safetensors header is not valid JSON ({exc}); expected a safetensors file"
        ) from None
    if not isinstance(header, dict):
        raise ModelLoadError(path, "safetensors header is not a JSON object; expected a safetensors file")
    data_len = size - 8 - header_len
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in SAFETENSORS_DTYPES:
            raise ModelLoadError(path, f"tensor {name!r} has a malformed header entry; expected dtype/shape/offsets")
        offsets = entry.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise ModelLoadError(path, f"tensor {name!r} has no valid data_offsets")
        if offsets[1] > data_len:
            raise ModelLoadError(path, f"file is truncated: tensor {name!r} ends at byte {offsets[1]} of the data "
                                       f"section but only {data_len} bytes are present")
        shape = entry.get("shape")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise ModelLoadError(path, f"tensor {name!r} has no valid shape")
        count = 1
        for d in shape:
            count *= d
        if offsets[1] - offsets[0] != count * SAFETENSORS_DTYPES[entry["dtype"]].itemsize or offsets[0] < 0:
            raise ModelLoadError(path, f"tensor {name!r} claims {offsets[1] - offsets[0]} bytes for shape {shape}; "
                                       "expected a safetensors file")
    return header, 8 + header_len


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor as a view of one private (copy-on-write) memory map of the file: loading copies
    nothing, the weights are the file's pages, and a tensor written to (a LoRA merged in place) gets
    private copies of only the pages it changes."""
    header, start = safetensors_header(path)
    with path.open("rb") as handle:
        if path.stat().st_size == 0:
            raise ModelLoadError(path, "file is empty")
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    whole = torch.frombuffer(mapping, dtype=torch.uint8)
    base = whole.data_ptr()
    with _mapped_lock:
        _mapped[base] = (base + len(mapping), weakref.ref(mapping))
    weakref.finalize(mapping, _forget_mapping, base)
    out: dict[str, torch.Tensor] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES[entry["dtype"]]
        begin, end = entry["data_offsets"]
        raw = whole[start + begin:start + end]
        if (start + begin) % dtype.itemsize:  # unaligned (never written so by safetensors): copy it
            raw = raw.clone()
        out[name] = raw.view(dtype).reshape(entry["shape"])
    return out


def _forget_mapping(base: int) -> None:
    with _mapped_lock:
        _mapped.pop(base, None)


def release_file_pages(tensor: torch.Tensor) -> None:
    """Drop a file-mapped tensor's pages from memory once its contents were copied elsewhere (a cast
    to another dtype): without this the file's copy stays resident beside the cast one until the
    whole file is released. Safe because the pages are clean: touching them again reads the file.
    Tensors that are not views of a file mapping are left alone."""
    ptr = tensor.data_ptr()
    size = tensor.numel() * tensor.element_size()
    with _mapped_lock:
        owner = next((ref() for base, (end, ref) in _mapped.items() if base <= ptr and ptr + size <= end), None)
        if owner is None or owner.closed:
            return
        base = next(b for b, (_, ref) in _mapped.items() if ref() is owner)
    first = -(-(ptr - base) // _PAGE) * _PAGE  # whole pages inside the tensor only
    last = (ptr - base + size) // _PAGE * _PAGE
    if last > first and tensor.is_contiguous():
        owner.madvise(mmap.MADV_DONTNEED, first, last - first)


# /proc/self/pagemap: one 64-bit entry per virtual page (Documentation/admin-guide/mm/pagemap.rst).
# Bit 63: present (the sign bit of an int64); 62: swapped; 61: a file page (clear once written).
_PM_SWAPPED, _PM_FILE = 1 << 62, 1 << 61


def _mappings() -> list[tuple[int, int, mmap.mmap]]:
    """(start, end, mapping) of every live file mapping, by start address."""
    with _mapped_lock:
        live = [(base, end, ref()) for base, (end, ref) in _mapped.items()]
    return sorted((base, end, m) for base, end, m in live if m is not None and not m.closed)


def release_clean_pages(tensors: Iterable[torch.Tensor]) -> int:
    """Give back the resident pages of these tensors that are still the file's own bytes; returns bytes released.

    A weight loaded from a safetensors file is a view of a private file mapping: its pages belong
    to the page cache, so dropping them from this process loses nothing: the next read faults the
    same bytes back in from the page cache (or the file). The model manager does this for models a
    step does not use (the U-Net during the VAE decode), so a whole run never holds every model
    resident at once. A page that was written (a weight patched in place) is this process's private
    copy, and dropping it would silently restore the file's values: the kernel's page map tells the
    two apart, and written (or swapped) pages are never released. Where the page map cannot be read,
    nothing is released. Tensors that are not views of a file mapping are ignored. The caller makes
    sure nothing writes these tensors meanwhile (the manager releases only models not in use).
    """
    maps = _mappings()
    if not maps:
        return 0
    starts = [base for base, _, _ in maps]
    spans: dict[int, list[tuple[int, int]]] = {}  # mapping index -> page ranges [first, last)
    for tensor in tensors:
        if tensor.device.type != "cpu" or tensor.numel() == 0:
            continue
        ptr = tensor.data_ptr()  # its own bytes: the first to the last element it reaches
        size = (1 + sum((d - 1) * st for d, st in zip(tensor.shape, tensor.stride(), strict=True))) \
            * tensor.element_size()
        i = bisect.bisect_right(starts, ptr) - 1
        if i < 0 or ptr + size > maps[i][1]:
            continue
        base = maps[i][0]
        spans.setdefault(i, []).append(((ptr - base) // _PAGE, -(-(ptr - base + size) // _PAGE)))
    try:
        pagemap = os.open("/proc/self/pagemap", os.O_RDONLY)
    except OSError:
        return 0
    released = 0
    try:
        for i, ranges in spans.items():
            base, end, mapping = maps[i]
            for first, last in _merged(ranges, (end - base) // _PAGE):
                released += _release_run(pagemap, mapping, base, first, last)
    finally:
        os.close(pagemap)
    return released


def _merged(ranges: list[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for first, last in sorted(ranges):
        last = min(last, limit)
        if out and first <= out[-1][1]:
            out[-1][1] = max(out[-1][1], last)
        elif last > first:
            out.append([first, last])
    return [(a, b) for a, b in out]


def _release_run(pagemap: int, mapping: mmap.mmap, base: int, first: int, last: int) -> int:
    """madvise(DONTNEED) the pages [first, last) of one mapping that are resident and still file pages."""
    count = last - first
    raw = os.pread(pagemap, count * 8, (base // _PAGE + first) * 8)
    if len(raw) != count * 8:
        return 0
    entries = torch.frombuffer(bytearray(raw), dtype=torch.int64)
    present = entries < 0  # bit 63
    written = (present & ((entries & _PM_FILE) == 0)) | ((entries & _PM_SWAPPED) != 0)
    # runs of pages that may go (bounded by written pages and the ends) that hold a resident page
    free = torch.cat([torch.zeros(1, dtype=torch.int8), (~written).to(torch.int8), torch.zeros(1, dtype=torch.int8)])
    change = torch.diff(free)
    starts, stops = torch.nonzero(change == 1).flatten(), torch.nonzero(change == -1).flatten()
    resident_before = torch.cat([torch.zeros(1, dtype=torch.int64), present.cumsum(0)])
    counts = resident_before[stops] - resident_before[starts]
    released = 0
    for start, stop, resident in zip(starts.tolist(), stops.tolist(), counts.tolist(), strict=True):
        if resident:
            mapping.madvise(mmap.MADV_DONTNEED, (first + start) * _PAGE, (stop - start) * _PAGE)
            released += resident * _PAGE
    return released


def _read_pickle(path: Path, nested: bool = False) -> dict[str, torch.Tensor]:
    try:
        # Zip-format files (torch >= 1.6) can be memory-mapped; the legacy format cannot.
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        blocked = [line for line in lines if "GLOBAL" in line]
        if blocked:  # a class or function reference: the only way a pickle can run code
            raise ModelLoadError(path, f"refused: the pickle references code ({blocked[0]}); only weights-only "
                                       "checkpoints (tensors in plain containers) are loaded") from None
        detail = next((line for line in lines if line.startswith("Unsupported")), type(exc).__name__)
        raise ModelLoadError(path, f"cannot read checkpoint ({detail}); expected a torch-saved state dict") from None
    except Exception as exc:  # noqa: BLE001 (torch's legacy reader fails on foreign bytes in many ways)
        raise ModelLoadError(path, f"cannot read checkpoint ({_what(path, exc)}); "
                                   "expected a torch-saved state dict") from None
    # Lightning checkpoints wrap the weights in "state_dict"; some trainers use "model" or "module";
    # BasicSR (Real-ESRGAN and most upscale models) uses "params_ema" (averaged) or "params".
    for wrapper in ("state_dict", "model", "module", "params_ema", "params"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict):
        raise ModelLoadError(path, f"holds a {type(obj).__name__}; expected a dict of tensors")
    out = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if nested:  # files that group their parts in dicts (IP-Adapter .bin: image_proj / ip_adapter)
        for k, v in obj.items():
            if isinstance(k, str) and isinstance(v, dict):
                out.update({f"{k}.{sub}": t for sub, t in v.items()
                            if isinstance(sub, str) and isinstance(t, torch.Tensor)})
    return out


def _what(path: Path, exc: BaseException) -> str:
    """The reader's complaint, or what the file looks like when it is plainly not a weights file."""
    try:
        with path.open("rb") as handle:
            head = handle.read(64)
    except OSError:
        head = b""
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return f"it is a text file starting {head[:40].decode('ascii')!r}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def read_state_dict(path: str | Path, *, nested: bool = False) -> dict[str, torch.Tensor]:
    """All tensors in a weights file, on the CPU in the file's dtype; raises ``ModelLoadError``.

    ``nested``: a pickle's dicts of tensors are read too, their keys prefixed with the dict's name.

    Whatever goes wrong inside a reader, the error names the file: a broken download must never
    surface as a bare KeyError or RecursionError.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(path, "no such file")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        sd = _guarded(_read_safetensors, path)
    elif suffix in PICKLE_SUFFIXES:
        sd = _guarded(lambda p: _read_pickle(p, nested), path)
    else:
        raise ModelLoadError(path, f"unsupported file type {suffix or '(none)'!r}; expected .safetensors "
                                   "or a weights-only .ckpt/.pt/.pth/.bin")
    if not sd:
        raise ModelLoadError(path, "contains no tensors; expected model weights")
    return sd


def _guarded(reader: Callable[[Path], dict[str, torch.Tensor]], path: Path) -> dict[str, torch.Tensor]:
    try:
        return reader(path)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(path, f"cannot read the file ({_what(path, exc)}); expected model weights") from None
