"""The model manager: loads model files once, hands out MODEL/CLIP/VAE handles, places weights on devices.

Loaded modules live on the CPU (the "offload device"). `use(*modules)` moves them to the compute
device for the duration of a call, keeping at most `vram_budget_bytes` of weights there and moving
the least recently used ones back when room is needed; modules stay on the device between calls
until then, so a second prompt pays no transfer. On a CPU-only machine `use` moves nothing.
`use` also gives back the file pages of the models it does not use (weights loaded from a file are
views of its pages): the U-Net leaves the process while the VAE decodes and faults back in, unchanged,
from the page cache when next sampled with; weights written in place are never given back.

Loads are cached by (kind of load, resolved path, size, mtime, options): a file replaced under the
same name is loaded again, a deleted one fails with an error naming it, and a load that fails leaves
nothing behind in the cache.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from nodes.base.errors import ModelLoadError
from nodes.base.handles import SD_LATENT_RGB, SDXL_LATENT_RGB, ClipHandle, LatentFormat, ModelHandle, VaeHandle
from nodes.base.model_sampling import ModelSampling

from .checkpoint import load_checkpoint, load_text_encoder, load_unet, load_vae
from .detect import SD_VAE_SCALE, CheckpointInfo, TextEncoderSpec
from .device_stats import device_stats
from .host_memory import trim_heap
from .prefetch import LoadRecord, prefetching, record_load, run_prefetch
from .speed import SpeedSettings, apply_process_settings, channels_last, move_module
from .tokenizer import PadStyle, load_clip_tokenizer
from .weights_file import release_clean_pages

log = logging.getLogger("sumie.models")

CPU = torch.device("cpu")
CLIP_TYPES = ("stable_diffusion",)  # CLIPLoader: one file; the family is read from the file
DUAL_CLIP_TYPES = ("sdxl",)  # DualCLIPLoader: CLIP-L + OpenCLIP-G
_DEVICE_RESERVE = 2 * 1024**3  # left free on a GPU for activations when no budget is given


@dataclass(frozen=True, kw_only=True)
class _Entry:
    stamp: tuple[Any, ...]  # (size, mtime) of the file(s) when loaded
    value: Any
    modules: tuple[torch.nn.Module, ...]


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers (what moving it to a device costs)."""
    total = sum(p.numel() * p.element_size() for p in module.parameters())
    return total + sum(b.numel() * b.element_size() for b in module.buffers())


def file_stamp(path: Path) -> tuple[Any, ...]:
    """(size, mtime_ns) of a file; for a diffusers folder, of every file in it."""
    try:
        if path.is_dir():
            parts = []
            for root, _dirs, files in os.walk(path):
                for name in sorted(files):
                    st = os.stat(os.path.join(root, name))
                    parts.append((os.path.relpath(os.path.join(root, name), path), st.st_size, st.st_mtime_ns))
            return tuple(sorted(parts))
        st = path.stat()
    except OSError as exc:
        raise ModelLoadError(path, f"cannot read file: {exc.strerror or exc}") from None
    return (st.st_size, st.st_mtime_ns)


def _device_of(module: torch.nn.Module) -> torch.device | None:
    param = next(module.parameters(), None)
    return None if param is None else param.device


def _resolved(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelLoadError(path, "no such file")
    return path.resolve()


class ModelManager:
    """Owns every loaded weight: caching by file identity, dtype choice and device placement."""

    def __init__(
        self,
        *,
        force_cpu: bool = False,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        vae_dtype: torch.dtype | None = None,
        vram_budget_bytes: int | None = None,
        speed: SpeedSettings | None = None,
        release_idle_pages: bool = True,
    ) -> None:
        self.speed = speed = speed or SpeedSettings()
        explicit = dtype  # an explicit dtype is the VAE's too (unless given); --unet-dtype leaves the VAE alone
        dtype = dtype or speed.dtype(speed.unet_dtype)
        vae_dtype = vae_dtype or speed.dtype(speed.vae_dtype)
        if vram_budget_bytes is None and speed.vram_budget_gb is not None:
            vram_budget_bytes = int(speed.vram_budget_gb * 1024**3)
        if device is None:
            device = "cuda" if torch.cuda.is_available() and not force_cpu else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.offload_device = CPU
        on_gpu = self.device.type != "cpu"
        self.dtype = dtype or (torch.float16 if on_gpu else torch.float32)
        # fp16 VAEs overflow (SDXL's notably): bf16 where the GPU has it, else fp32.
        if vae_dtype is None:
            bf16 = on_gpu and self.device.type == "cuda" and torch.cuda.is_bf16_supported()
            vae_dtype = torch.bfloat16 if bf16 else (self.dtype if explicit is not None else torch.float32)
        self.vae_dtype = vae_dtype
        if vram_budget_bytes is None and self.device.type == "cuda":
            total = torch.cuda.get_device_properties(self.device).total_memory
            vram_budget_bytes = max(total // 2, total - _DEVICE_RESERVE)
        self.vram_budget_bytes = vram_budget_bytes
        self.channels_last = speed.channels_last_on(self.device)
        apply_process_settings(speed, self.device)
        self._lock = threading.RLock()
        self._cache: dict[tuple[Any, ...], _Entry] = {}
        self._resident: OrderedDict[int, torch.nn.Module] = OrderedDict()  # on the compute device, LRU first
        self._in_use: dict[int, int] = {}
        self._cpu_only: set[int] = set()
        self._tokenizers: dict[PadStyle, Any] = {}
        self._loading: dict[tuple[Any, ...], threading.Event] = {}  # keys being loaded now, by any thread
        self.loads: deque[LoadRecord] = deque(maxlen=256)  # recent file loads, newest last
        # Models not in use give their weights' clean file pages back to the page cache (`use`).
        self.release_idle_pages = release_idle_pages
        self._released: set[int] = set()  # modules whose pages were given back and not used since

    def __repr__(self) -> str:
        return f"ModelManager(device={self.device}, dtype={self.dtype}, loaded={len(self._cache)})"

    # -- loading -------------------------------------------------------------------------------------
    def _cached(self, op: str, paths: Sequence[Path], options: tuple[Any, ...], load: Any) -> Any:
        """Return the cached value for (op, paths, options) if the files are unchanged, else load it.

        The load runs outside the manager's lock, so a background load (a prefetch) never holds up
        `use` or another file's load; two threads asking for the same key share one load (the second
        waits for it, and loads itself only if that load failed)."""
        key = (op, tuple(str(p) for p in paths), options)
        while True:
            with self._lock:
                stamp = tuple(file_stamp(p) for p in paths)
                entry = self._cache.get(key)
                if entry is not None and entry.stamp == stamp:
                    return entry.value
                loading = self._loading.get(key)
                if loading is None:
                    if entry is not None:
                        log.info("%s changed on disk; loading it again", ", ".join(map(str, paths)))
                        self._drop(key)
                    loading = self._loading[key] = threading.Event()
                    break
            loading.wait()  # the same file is being loaded on another thread: take its result
        try:
            return self._load_entry(key, paths, stamp, load)
        finally:
            with self._lock:
                self._loading.pop(key, None)
            loading.set()

    def _load_entry(self, key: tuple[Any, ...], paths: Sequence[Path], stamp: tuple[Any, ...], load: Any) -> Any:
        started = time.monotonic()
        value, modules = load()  # raises before anything is stored: no half-cached entry
        if tuple(file_stamp(p) for p in paths) != stamp:
            raise ModelLoadError(paths[0], "the file changed while it was being loaded; try again")
        for module in modules:
            if self.channels_last and any(p.dim() == 4 for p in module.parameters()):
                channels_last(module)
        with self._lock:
            self._cache[key] = _Entry(stamp=stamp, value=value, modules=tuple(modules))
            for module in modules:
                if self.device != self.offload_device and _device_of(module) == self.device:
                    self._resident[id(module)] = module  # loaded straight onto the device
            self.loads.append(record_load(key[0], key[1], started))
        return value

    def _drop(self, key: tuple[Any, ...]) -> None:
        entry = self._cache.pop(key, None)
        if entry is None:
            return
        for module in entry.modules:
            self._in_use.pop(id(module), None)
            self._cpu_only.discard(id(module))
            self._released.discard(id(module))
            if self._resident.pop(id(module), None) is not None:
                self._move(module, self.offload_device)

    def _load_device(self, paths: Sequence[Path]) -> torch.device:
        """Where a load puts its weights: straight onto the GPU when they fit the budget beside what is
        there (one transfer, no host copy in between), else the offload device."""
        if self.device.type != "cuda" or not self.speed.load_to_device or prefetching():
            return self.offload_device  # a prefetch never takes device memory from the running job
        needed = sum(p.stat().st_size for p in paths if p.is_file())
        if self.vram_budget_bytes is not None:
            with self._lock:
                self._make_room(needed, quiet=True)
                if self.resident_bytes() + needed > self.vram_budget_bytes:
                    return self.offload_device
        return self.device

    def _latent_format(self, info: CheckpointInfo) -> LatentFormat:
        rgb = SDXL_LATENT_RGB if info.is_sdxl else SD_LATENT_RGB
        return LatentFormat(scale_factor=info.vae_scaling_factor, rgb_factors=rgb)

    def _model_handle(self, unet: Any, info: CheckpointInfo, path: Path) -> ModelHandle:
        return ModelHandle(unet=unet, kind=info.kind, sampling=ModelSampling.discrete(prediction=info.prediction_type),
                           latent_format=self._latent_format(info), source=path, manager=self)

    def load_checkpoint(
        self, path: str | Path, *, prediction_type: str | None = None
    ) -> tuple[ModelHandle, ClipHandle, VaeHandle]:
        """MODEL, CLIP and VAE handles of a full checkpoint (single file or diffusers folder)."""
        path = _resolved(path)

        def load() -> tuple[Any, list[torch.nn.Module]]:
            ckpt = load_checkpoint(path, device=self._load_device([path]), dtype=self.dtype,
                                   prediction_type=prediction_type, vae_dtype=self.vae_dtype)
            assert ckpt.unet is not None and ckpt.vae is not None
            vae = ckpt.vae
            info = ckpt.info
            model = self._model_handle(ckpt.unet, info, path)
            clip = ClipHandle(encoders=tuple(ckpt.text_encoders), specs=tuple(info.text_encoders), kind=info.kind,
                              source=path, manager=self)
            vae_handle = VaeHandle(vae=vae, scale_factor=info.vae_scaling_factor, source=path, manager=self)
            return (model, clip, vae_handle), [ckpt.unet, vae, *ckpt.text_encoders]

        return self._cached("checkpoint", [path], (prediction_type,), load)

    def load_vae(self, path: str | Path, *, scaling_factor: float | None = None) -> VaeHandle:
        """A VAE handle from a standalone VAE file (or the VAE inside a checkpoint)."""
        path = _resolved(path)

        def load() -> tuple[Any, list[torch.nn.Module]]:
            vae = load_vae(path, device=self.offload_device, dtype=self.vae_dtype, scaling_factor=scaling_factor)
            scale = float(vae.config.scaling_factor or SD_VAE_SCALE)
            return VaeHandle(vae=vae, scale_factor=scale, source=path, manager=self), [vae]

        return self._cached("vae", [path], (scaling_factor,), load)

    def load_unet(self, path: str | Path, *, prediction_type: str | None = None) -> ModelHandle:
        """A MODEL handle from a bare UNet file (or the UNet inside a checkpoint)."""
        path = _resolved(path)

        def load() -> tuple[Any, list[torch.nn.Module]]:
            ckpt = load_unet(path, device=self._load_device([path]), dtype=self.dtype, prediction_type=prediction_type)
            assert ckpt.unet is not None
            return self._model_handle(ckpt.unet, ckpt.info, path), [ckpt.unet]

        return self._cached("unet", [path], (prediction_type,), load)

    def load_clip(self, paths: Sequence[str | Path], kind: str = "stable_diffusion") -> ClipHandle:
        """A CLIP handle from text-encoder files: one file ("stable_diffusion": SD1 CLIP-L, SD2
        OpenCLIP-H or a lone OpenCLIP-G as the SDXL refiner uses) or two ("sdxl": CLIP-L + OpenCLIP-G,
        in either order)."""
        resolved = [_resolved(p) for p in paths]
        if kind in CLIP_TYPES:
            if len(resolved) != 1:
                raise ValueError(f"clip type {kind!r} takes one file, got {len(resolved)}")
        elif kind in DUAL_CLIP_TYPES:
            if len(resolved) != 2:
                raise ValueError(f"clip type {kind!r} takes two files (CLIP-L and OpenCLIP-G), got {len(resolved)}")
        else:
            raise ValueError(f"unknown clip type {kind!r}; expected one of {CLIP_TYPES + DUAL_CLIP_TYPES}")

        def load() -> tuple[Any, list[torch.nn.Module]]:
            loaded = [load_text_encoder(p, device=self.offload_device, dtype=self.dtype) for p in resolved]
            if kind == "sdxl":
                by_name = {t.spec.name: t for t in loaded}
                if set(by_name) != {"clip_l", "clip_g"}:
                    found = ", ".join(f"{t.path.name}={t.spec.name}" for t in loaded)
                    raise ModelLoadError(resolved[0], f"sdxl needs a CLIP-L and an OpenCLIP-G file, got {found}")
                parts = [by_name["clip_l"], by_name["clip_g"]]
                specs = tuple(replace(t.spec, default_layer=-2) for t in parts)
                clip_kind = "sdxl"
            else:
                parts = loaded
                spec: TextEncoderSpec = parts[0].spec
                clip_kind = {"clip_l": "sd1", "clip_h": "sd2", "clip_g": "sdxl_refiner"}[spec.name]
                specs = (spec,)
            encoders = tuple(t.model for t in parts)
            handle = ClipHandle(encoders=encoders, specs=specs, kind=clip_kind, source=resolved[0], manager=self)
            return handle, list(encoders)

        return self._cached(f"clip:{kind}", resolved, (), load)

    def load_file(self, op: str, path: str | Path,
                  load: Callable[[Path], tuple[Any, Sequence[torch.nn.Module]]]) -> Any:
        """Any other file-backed model (upscale models, ...): `load(path)` returns (value, its modules);
        cached by the file's identity like the built-in loads, with the modules placed by `use`."""
        path = _resolved(path)
        return self._cached(op, [path], (), lambda: load(path))

    def load_controlnet(self, path: str | Path, *, model: ModelHandle | None = None) -> Any:
        """A CONTROL_NET (ControlNet, T2I-Adapter or control-LoRA) in the U-Net dtype; `model` is needed
        only by "diff" ControlNets, whose weights are differences to that model's U-Net."""
        from .controlnet import load_controlnet

        path = _resolved(path)
        base = None if model is None else model.unet

        def load() -> tuple[Any, list[torch.nn.Module]]:
            handle = load_controlnet(path, dtype=self.dtype, device=self.offload_device, base_unet=base)
            handle = replace(handle, manager=self)
            return handle, [handle.model] if handle.model is not None else []

        return self._cached("controlnet", [path], (id(base),), load)

    def tokenizer(self, pad: PadStyle) -> Any:
        """The CLIP tokenizer for a padding style, built once from the shipped vocabulary."""
        with self._lock:
            tok = self._tokenizers.get(pad)
            if tok is None:
                tok = self._tokenizers[pad] = load_clip_tokenizer(pad)
            return tok

    # -- prefetching ---------------------------------------------------------------------------------
    def prefetch(self, paths: Sequence[str | Path], load: Callable[[], Any]) -> str:
        """Run `load` (one of this manager's load calls, the very call the job will make) ahead of the job
        that needs it, on the caller's thread: onto the offload device only, only when the files fit the
        free RAM, never raising. Returns what happened ("loaded", "cached", "skipped: ...", "failed: ...")."""
        return run_prefetch(self, [Path(p) for p in paths], load)

    # -- device placement ----------------------------------------------------------------------------
    def keep_on_cpu(self, module: torch.nn.Module) -> None:
        """Never move this module to the compute device (CLIPLoader's device="cpu")."""
        with self._lock:
            self._cpu_only.add(id(module))

    def device_for(self, module: torch.nn.Module) -> torch.device:
        return self.offload_device if id(module) in self._cpu_only else self.device

    @contextmanager
    def use(self, *modules: torch.nn.Module) -> Iterator[torch.device]:
        """Run with `modules` on the compute device; yields that device (the CPU on CPU-only machines).

        Every other loaded model not in use gives back its weights' file pages first (see
        `release_idle_pages`): a step holds the weights it computes with, not every model of the run.
        """
        with self._lock:
            used = list(modules)
            for module in used:
                self._in_use[id(module)] = self._in_use.get(id(module), 0) + 1
                self._released.discard(id(module))
            try:
                if self.release_idle_pages:
                    self._release_idle_pages()
                    trim_heap()  # what the previous step freed goes back before this one allocates
                if self.device != self.offload_device:
                    for module in used:
                        if id(module) not in self._cpu_only:
                            self._load_to_device(module)
            except BaseException:
                self._release(used)
                raise
        try:
            yield self.device
        finally:
            with self._lock:
                self._release(used)

    def _release_idle_pages(self) -> None:
        """Drop from this process the file pages of every loaded model that is not in use (and was
        not dropped already). They stay in the page cache and fault back in, unchanged, when the
        model is next used; pages written in place are never dropped (`release_clean_pages`)."""
        for entry in self._cache.values():
            for module in entry.modules:
                if id(module) in self._in_use or id(module) in self._released:
                    continue
                self._released.add(id(module))
                release_clean_pages([*module.parameters(), *module.buffers()])

    def _release(self, modules: Sequence[torch.nn.Module]) -> None:
        for module in modules:
            count = self._in_use.get(id(module), 0) - 1
            if count > 0:
                self._in_use[id(module)] = count
            else:
                self._in_use.pop(id(module), None)

    def _move(self, module: torch.nn.Module, device: torch.device) -> None:
        move_module(module, device, pinned=self.speed.pinned_offload)

    def _load_to_device(self, module: torch.nn.Module) -> None:
        key = id(module)
        if key in self._resident:
            self._resident.move_to_end(key)
            return
        needed = module_bytes(module)
        if self.vram_budget_bytes is not None:
            self._make_room(needed)
        self._move(module, self.device)
        self._resident[key] = module

    def _make_room(self, needed: int, *, quiet: bool = False) -> None:
        budget = self.vram_budget_bytes or 0
        used = sum(module_bytes(m) for m in self._resident.values())
        for key in list(self._resident):
            if used + needed <= budget:
                break
            if self._in_use.get(key):
                continue
            module = self._resident.pop(key)
            used -= module_bytes(module)
            self._move(module, self.offload_device)
        if used + needed > budget and not quiet:
            log.warning("model of %.1f MiB does not fit the %.1f MiB device budget next to the %.1f MiB in use; "
                        "loading it anyway", needed / 2**20, budget / 2**20, used / 2**20)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def offload(self, *modules: torch.nn.Module) -> None:
        """Move these modules back to the offload device now, unless in use (models used once per call)."""
        with self._lock:
            for module in modules:
                if self._in_use.get(id(module)):
                    continue
                if self._resident.pop(id(module), None) is not None:
                    self._move(module, self.offload_device)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def resident_bytes(self) -> int:
        """Bytes of weights now on the compute device."""
        with self._lock:
            return sum(module_bytes(m) for m in self._resident.values())

    # -- freeing -------------------------------------------------------------------------------------
    def free_memory(self) -> None:
        """Move every idle module back to the CPU and return cached device memory (keeps the loads)."""
        with self._lock:
            for key in list(self._resident):
                if self._in_use.get(key):
                    continue
                self._move(self._resident.pop(key), self.offload_device)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def unload_all(self) -> None:
        """Forget every loaded model (the next load reads the file again)."""
        with self._lock:
            for key in list(self._cache):
                self._drop(key)
            self._resident.clear()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        """The server's POST /free."""
        if unload_models:
            self.unload_all()
        elif free_memory:
            self.free_memory()

    def loaded_count(self) -> int:
        with self._lock:
            return len(self._cache)

    def loaded_files(self) -> list[str]:
        """Paths of the files loaded and held now (a cluster worker reports its warm checkpoints from them)."""
        with self._lock:
            return sorted({path for _, paths, _ in self._cache for path in paths})

    def unload_file(self, name: str) -> int:
        """Forget every load of a file with this name (a cluster worker keeping only N checkpoints warm)."""
        with self._lock:
            keys = [k for k in self._cache if any(Path(p).name == Path(name).name for p in k[1])]
            for key in keys:
                self._drop(key)
            if keys and self.device.type == "cuda":
                torch.cuda.empty_cache()
            return len(keys)

    # -- /system_stats -------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """`pytorch_version` and the `devices` list of ComfyUI's /system_stats."""
        return {"pytorch_version": torch.__version__, "devices": [device_stats(self.device)]}


__all__ = ["CLIP_TYPES", "DUAL_CLIP_TYPES", "ModelManager", "file_stamp", "module_bytes"]
