"""Patching a MODEL without copying it: behaviour patches that apply only while the model is in use.

A MODEL handle (nodes/sd/handles.py) carries a tuple `patches`. A patch node returns a new handle
sharing the same U-Net with one more entry; nothing is copied or changed until a sampler uses it.
Two kinds of entry:

- `WeightPatch` (LoRA, attention multipliers): weight deltas, swapped in by nodes/models/patching.py.
- `ModelPatch` (this module): a frozen value with its settings as `key` and an `install(active)`
  method that registers what it needs on the `ActivePatches` of one use:

  - `attention(kind, block=, input=, replace=, output=, when=)`: an attention layer's q/k/v inputs, the
    attention itself, its output. `kind` is "attn1" (self) or "attn2" (cross); `block` is
    ("input"|"middle"|"output", n) in the original U-Net's block numbering (PAG, SAG, hypernetworks);
  - `input_block(n, fn, after_skip=)`: the hidden state after input block n, before or after it is kept
    as a skip connection (Deep Shrink);
  - `output_block(fn)`: `(h, skip) -> (h, skip)` just before each join in the up path (FreeU, Deep Shrink);
  - `module_hook(name, pre=, post=)`: any submodule's inputs / outputs, as torch forward hooks;
  - `unet_wrapper(fn)`: around each U-Net call, `fn(forward, args, kwargs, info)` (TorchCompileModel);
  - `cfg_function(fn)` / `post_cfg(fn)`: the CFG formula / the guided result, with ComfyUI's argument
    dicts (RescaleCFG, PerpNeg / PAG, SAG).

`applied(model)` installs everything for the duration of a `with` block and removes it after, even on
an error, so the base U-Net computes exactly as before (same processor objects, hooks removed). Patches
run in the order they were added (stacking). A patch's settings are its `key`, so `fingerprint(model)`
(and the graph cache key of the node that made it) changes with them. Model-sampling overrides are not
patches: they replace the handle's `sampling` value (nodes/sampling/model_sampling.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .patching import patched

Info = dict[str, Any]
Block = tuple[str, int]


class ModelPatch:
    """Base of behaviour patches. Subclasses are frozen dataclasses; `key` is what makes them differ."""

    @property
    def key(self) -> tuple[Any, ...]:
        fields = getattr(self, "__dataclass_fields__", {})
        return (type(self).__name__, *(_plain(getattr(self, f)) for f in fields if not f.startswith("_")))

    def install(self, active: ActivePatches) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not install anything")


def _plain(value: Any) -> Any:
    if isinstance(value, int | float | str | bool | type(None)):
        return value
    if isinstance(value, tuple | list):
        return tuple(_plain(v) for v in value)
    return f"{type(value).__name__}@{id(value):x}"


def fingerprint(model: Any) -> tuple[Any, ...]:
    """What identifies a MODEL's behaviour: its weights' source, its sampling, every patch's settings and
    its options (per-model settings that are not hooks, such as DifferentialDiffusion's mask function)."""
    keys: list[Any] = []
    for p in model.patches:
        if isinstance(p, ModelPatch):
            keys.append(p.key)
        else:  # WeightPatch: a LoRA or a multiplier
            keys.append(("weights", getattr(p, "name", "?"), getattr(p, "strength", None), getattr(p, "component", "")))
    s = model.sampling
    sampling = (type(s).__name__, s.prediction, s.sigma_data, len(s.sigmas), float(s.sigmas[0]), float(s.sigmas[-1]))
    options = tuple(sorted((k, _option(v)) for k, v in getattr(model, "options", {}).items()))
    return (str(model.source), model.kind, sampling, tuple(keys), options)


def _option(value: Any) -> Any:
    """A model option (e.g. DifferentialDiffusion's denoise-mask function) by what defines it."""
    func = getattr(value, "func", None)  # functools.partial: the function and its settings
    if func is not None:
        return (getattr(func, "__qualname__", repr(func)), _plain(tuple(getattr(value, "args", ()))),
                tuple(sorted((k, _plain(v)) for k, v in getattr(value, "keywords", {}).items())))
    return getattr(value, "__qualname__", None) or _plain(value)


@dataclass(frozen=True, kw_only=True)
class AttentionPatch:
    """What to change in matching attention layers; any of the three callables may be None.

    input(q_in, k_in, v_in, info) -> (q_in, k_in, v_in): the inputs of to_q / to_k / to_v.
    replace(q, k, v, info) -> out or None: the attention of projected [B, tokens, heads*dim] tensors
        (`info["heads"]`); None lets the next replace or the default run.
    output(out, info) -> out: after to_out.
    when(info) -> bool: whether the patch acts on this call (default: always).
    """

    kind: str  # "attn1" (self-attention) or "attn2" (cross-attention)
    block: Block | None = None
    transformer: int | None = None
    input: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
    replace: Callable[..., torch.Tensor | None] | None = None
    output: Callable[[torch.Tensor, Info], torch.Tensor] | None = None
    when: Callable[[Info], bool] | None = None


class ActivePatches:
    """The patches of one use of a model, and the state of the U-Net call in progress (`call`)."""

    def __init__(self, unet: Any = None) -> None:
        self.unet = unet
        self.attention_patches: list[AttentionPatch] = []
        self.input_hooks: list[tuple[int, Callable[[torch.Tensor, Info], torch.Tensor], bool]] = []
        self.output_hooks: list[Callable[[torch.Tensor, torch.Tensor, Info], tuple[torch.Tensor, torch.Tensor]]] = []
        self.module_hooks: list[tuple[str, Callable | None, Callable | None]] = []
        self.unet_wrappers: list[Callable[..., Any]] = []
        self.cfg_fn: Callable[[dict[str, Any]], torch.Tensor] | None = None
        self.post_cfg_fns: list[Callable[[dict[str, Any]], torch.Tensor]] = []
        self.disable_cfg1_optimization = False
        self.flags: set[str] = set()  # switches a guidance function turns on for one extra U-Net call
        self.call: Info = {}  # sigma, cond_or_uncond of the U-Net call in progress

    # -- registration (from ModelPatch.install) ---------------------------------------------------
    def attention(self, kind: str, **kwargs: Any) -> None:
        if kind not in ("attn1", "attn2"):
            raise ValueError(f"attention kind must be 'attn1' or 'attn2', got {kind!r}")
        self.attention_patches.append(AttentionPatch(kind=kind, **kwargs))

    def input_block(self, number: int, fn: Callable[[torch.Tensor, Info], torch.Tensor], *,
                    after_skip: bool = False) -> None:
        self.input_hooks.append((number, fn, after_skip))

    def output_block(self, fn: Callable[[torch.Tensor, torch.Tensor, Info], tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.output_hooks.append(fn)

    def module_hook(self, name: str, *, pre: Callable | None = None, post: Callable | None = None) -> None:
        self.module_hooks.append((name, pre, post))

    def unet_wrapper(self, fn: Callable[..., Any]) -> None:
        self.unet_wrappers.append(fn)

    def cfg_function(self, fn: Callable[[dict[str, Any]], torch.Tensor]) -> None:
        self.cfg_fn = fn  # as in ComfyUI, a later CFG function replaces an earlier one

    def post_cfg(self, fn: Callable[[dict[str, Any]], torch.Tensor], *,
                 disable_cfg1_optimization: bool = False) -> None:
        self.post_cfg_fns.append(fn)
        self.disable_cfg1_optimization |= disable_cfg1_optimization

    # -- use ----------------------------------------------------------------------------------------
    @contextmanager
    def flag(self, name: str) -> Iterator[None]:
        """Turn a switch on for the calls made inside the block (PAG's perturbed pass)."""
        self.flags.add(name)
        try:
            yield
        finally:
            self.flags.discard(name)

    def unet_caller(self, unet: Any, **info: Any) -> Callable[..., Any]:
        """`unet` itself when nothing needs the call's state, else a function recording it as `call`."""
        if not (self.attention_patches or self.input_hooks or self.output_hooks or self.unet_wrappers
                or self.module_hooks):
            return unet

        def call(*args: Any, **kwargs: Any) -> Any:
            previous, self.call = self.call, info
            try:
                forward: Callable[..., Any] = unet
                for wrapper in self.unet_wrappers:
                    forward = _bind(wrapper, forward, info)
                return forward(*args, **kwargs)
            finally:
                self.call = previous

        return call

    def combine(self, guider: Any, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor,
                uncond: torch.Tensor | None) -> torch.Tensor:
        """Classifier-free guidance of the two x0 estimates (uncond None: cfg 1), then the post-CFG functions."""
        if uncond is None:
            result, uncond = cond, cond
        elif self.cfg_fn is not None:
            result = x - self.cfg_fn(self.args(guider, x, sigma, cond, uncond))
        else:
            result = uncond + (cond - uncond) * guider.cfg
        return self.after_cfg(guider, x, sigma, result, cond, uncond)

    def after_cfg(self, guider: Any, x: torch.Tensor, sigma: torch.Tensor, result: torch.Tensor,
                  cond: torch.Tensor, uncond: torch.Tensor, **extra: Any) -> torch.Tensor:
        for fn in self.post_cfg_fns:
            result = fn({**self.args(guider, x, sigma, cond, uncond), "denoised": result, **extra})
        return result

    def args(self, guider: Any, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor,
             uncond: torch.Tensor) -> dict[str, Any]:
        """ComfyUI's argument names: "cond"/"uncond" are x minus the estimates, "*_denoised" the estimates."""
        return {"cond": x - cond, "uncond": x - uncond, "cond_denoised": cond, "uncond_denoised": uncond,
                "cond_scale": guider.cfg, "sigma": sigma.reshape(-1), "timestep": sigma.reshape(-1), "input": x,
                "guider": guider, "patches": self}


def _bind(wrapper: Callable[..., Any], forward: Callable[..., Any], info: Info) -> Callable[..., Any]:
    return lambda *args, **kwargs: wrapper(forward, args, kwargs, info)


NO_PATCHES = ActivePatches()  # the guider of a model used outside `applied`: plain CFG, no hooks


@contextmanager
def applied(model: Any, extra: Sequence[ModelPatch] = ()) -> Iterator[ActivePatches]:
    """Within the block the model's U-Net computes with all its patches; afterwards exactly as before.

    `extra`: patches that come with the conditioning rather than the model (GLIGEN), for this use only."""
    unet = model.unet
    active = ActivePatches(unet)
    for patch in (*model.patches, *extra):
        if isinstance(patch, ModelPatch):
            patch.install(active)
    with patched(unet, model.patches, "unet"), ExitStack() as stack:
        _attach_attention(unet, active, stack)
        _attach_blocks(unet, active, stack)
        for name, pre, post in active.module_hooks:
            module = unet.get_submodule(name)
            if pre is not None:
                stack.callback(module.register_forward_pre_hook(pre, with_kwargs=True).remove)
            if post is not None:
                stack.callback(module.register_forward_hook(post, with_kwargs=True).remove)
        yield active


# ---------------------------------------------------------------------------------- where things are

def _counts(unet: Any) -> tuple[list[int], list[int]]:
    """Per down block, how many input blocks it makes (resnets + downsampler); per up block, its resnets."""
    down = [len(b.resnets) + (1 if getattr(b, "downsamplers", None) else 0) for b in unet.down_blocks]
    return down, [len(b.resnets) for b in unet.up_blocks]


def block_of(unet: Any, name: str) -> tuple[Block, int]:
    """(("input"|"middle"|"output", index), transformer index) of an attention layer, in LDM numbering."""
    parts = name.split(".")
    transformer = int(parts[parts.index("transformer_blocks") + 1]) if "transformer_blocks" in parts else 0
    down, up = _counts(unet)
    if parts[0] == "mid_block":
        return ("middle", 0), transformer
    index, layer = int(parts[1]), int(parts[3])
    if parts[0] == "down_blocks":
        return ("input", 1 + sum(down[:index]) + layer), transformer
    return ("output", sum(up[:index]) + layer), transformer


def input_block_modules(unet: Any, number: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the module whose output is LDM input block `number`, the module that takes it next)."""
    units: list[tuple[torch.nn.Module, torch.nn.Module]] = [(unet.conv_in, unet.conv_in)]
    for block in unet.down_blocks:
        attentions = getattr(block, "attentions", None)
        for j, resnet in enumerate(block.resnets):
            units.append((attentions[j] if attentions else resnet, resnet))
        if getattr(block, "downsamplers", None):
            units.append((block.downsamplers[0], block.downsamplers[0]))
    if not 0 <= number < len(units):
        raise ValueError(f"this U-Net has input blocks 0..{len(units) - 1}, not {number}")
    following = units[number + 1][1] if number + 1 < len(units) else unet.mid_block
    return units[number][0], following


# ---------------------------------------------------------------------------------- attention

def _attach_attention(unet: Any, active: ActivePatches, stack: ExitStack) -> None:
    if not active.attention_patches:
        return
    original = dict(unet.attn_processors)
    replaced = dict(original)
    for name, processor in original.items():
        kind = name.split(".")[-2]
        block, transformer = block_of(unet, name)
        mine = [p for p in active.attention_patches if p.kind == kind and p.block in (None, block)
                and p.transformer in (None, transformer)]
        if mine:
            replaced[name] = PatchedAttention(processor, active, mine, {"block": block, "transformer": transformer,
                                                                        "kind": kind, "name": name})
    if replaced != original:  # set_attn_processor empties the dict it is given: hand it copies
        unet.set_attn_processor(dict(replaced))
        stack.callback(lambda: unet.set_attn_processor(dict(original)))


class PatchedAttention:
    """A diffusers attention processor that applies patches and otherwise defers to the original one."""

    def __init__(self, original: Any, active: ActivePatches, patches: Sequence[AttentionPatch], place: Info) -> None:
        self.original, self.active, self.patches, self.place = original, active, list(patches), place

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        info = {**self.active.call, **self.place, "heads": attn.heads, "tokens": hidden_states.shape[1],
                "context_width": context.shape[-1]}
        acting = [p for p in self.patches if p.when is None or p.when(info)]
        if not any(p.input or p.replace for p in acting):
            out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        else:
            out = self._attention(attn, hidden_states, encoder_hidden_states, attention_mask, acting, info)
        for p in acting:
            if p.output is not None:
                out = p.output(out, info)
        return out

    @staticmethod
    def _attention(attn: Any, x: torch.Tensor, context: torch.Tensor | None, mask: torch.Tensor | None,
                   acting: list[AttentionPatch], info: Info) -> torch.Tensor:
        if x.ndim != 3 or attn.group_norm is not None or attn.spatial_norm is not None:
            raise ValueError(f"attention patches apply to transformer attention layers, not {info['name']}")
        residual = x
        if context is None:
            context = x
        elif attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        q_in, k_in, v_in = x, context, context
        for p in acting:
            if p.input is not None:
                q_in, k_in, v_in = p.input(q_in, k_in, v_in, info)
        q, k, v = attn.to_q(q_in), attn.to_k(k_in), attn.to_v(v_in)
        out = None
        for p in acting:
            if p.replace is not None and out is None:
                out = p.replace(q, k, v, info)
        if out is None:
            out = attention(q, k, v, attn.heads, mask=_mask(attn, mask, k, x.shape[0]),
                            norms=(getattr(attn, "norm_q", None), getattr(attn, "norm_k", None)))
        out = attn.to_out[1](attn.to_out[0](out.to(q.dtype)))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _mask(attn: Any, mask: torch.Tensor | None, k: torch.Tensor, batch: int) -> torch.Tensor | None:
    if mask is None:
        return None
    mask = attn.prepare_attention_mask(mask, k.shape[1], batch)
    return mask.view(batch, attn.heads, -1, mask.shape[-1])


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, *, mask: torch.Tensor | None = None,
              norms: tuple[Any, Any] = (None, None)) -> torch.Tensor:
    """Multi-head scaled dot-product attention of [B, tokens, heads*dim] tensors (diffusers' default math)."""
    b = q.shape[0]
    q, k, v = (t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
    if norms[0] is not None:
        q = norms[0](q)
    if norms[1] is not None:
        k = norms[1](k)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, -1, heads * v.shape[-1])


def attention_with_probs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention computed explicitly, also returning the probabilities [B*heads, q tokens, k tokens]."""
    b, _, width = q.shape
    d = width // heads
    q, k, v = (t.reshape(b, -1, heads, d).permute(0, 2, 1, 3).reshape(b * heads, -1, d) for t in (q, k, v))
    probs = (torch.bmm(q.float(), k.float().transpose(1, 2)) * d**-0.5).softmax(dim=-1)
    out = torch.bmm(probs.to(v.dtype), v)
    return out.reshape(b, heads, -1, d).permute(0, 2, 1, 3).reshape(b, -1, heads * d), probs


# ---------------------------------------------------------------------------------- block hooks

def _attach_blocks(unet: Any, active: ActivePatches, stack: ExitStack) -> None:
    for number, fn, after_skip in active.input_hooks:
        produced, following = input_block_modules(unet, number)
        block_info = {"block": ("input", number)}

        if after_skip:  # the skip keeps the block's output; only the path onwards sees the change
            def pre(module: Any, args: tuple, kwargs: dict, fn: Callable = fn, bi: Info = block_info) -> Any:
                if args:
                    return (fn(args[0], {**active.call, **bi}), *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"], {**active.call, **bi})}
            stack.callback(following.register_forward_pre_hook(pre, with_kwargs=True).remove)
        else:
            def post(module: Any, args: tuple, kwargs: dict, out: Any, fn: Callable = fn, bi: Info = block_info) -> Any:
                if isinstance(out, tuple):
                    return (fn(out[0], {**active.call, **bi}), *out[1:])
                if hasattr(out, "sample"):  # Transformer2DModel returns an output object when asked
                    out.sample = fn(out.sample, {**active.call, **bi})
                    return out
                return fn(out, {**active.call, **bi})
            stack.callback(produced.register_forward_hook(post, with_kwargs=True).remove)
    if active.output_hooks:
        _attach_output_hooks(unet, active, stack)


class _SkipJoin:
    """Set as an up block's FreeU attributes: diffusers then hands us (h, skip) before each join."""

    def __init__(self, active: ActivePatches, first_index: int, per_block: int) -> None:
        self.active, self.first_index, self.per_block, self.count = active, first_index, per_block, 0

    def __bool__(self) -> bool:
        return True

    def __call__(self, h: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        info = {**self.active.call, "block": ("output", self.first_index + self.count % self.per_block)}
        self.count += 1
        for fn in self.active.output_hooks:
            h, skip = fn(h, skip, info)
        return h, skip


_FREEU_ATTRS = ("s1", "s2", "b1", "b2")


def _attach_output_hooks(unet: Any, active: ActivePatches, stack: ExitStack) -> None:
    """Up blocks call `apply_freeu(idx, h, skip, s1=..)` before every join when their s1..b2 are set;
    routing that call to our hooks gives the one place where both tensors are at hand."""
    _install_join_seam()
    _, up = _counts(unet)
    for i, block in enumerate(unet.up_blocks):
        saved = {a: block.__dict__[a] for a in _FREEU_ATTRS if a in block.__dict__}
        if saved and not isinstance(saved.get("s1"), _SkipJoin):
            raise ValueError("this U-Net has diffusers' own FreeU enabled; disable it to use output-block patches")
        join = _SkipJoin(active, sum(up[:i]), up[i])
        for a in _FREEU_ATTRS:
            setattr(block, a, join)
        stack.callback(_restore_attrs, block, saved)


def _restore_attrs(block: Any, saved: dict[str, Any]) -> None:
    for a in _FREEU_ATTRS:
        if a in saved:
            setattr(block, a, saved[a])
        else:
            delattr(block, a)


def _install_join_seam() -> None:
    from diffusers.models.unets import unet_2d_blocks

    original = unet_2d_blocks.apply_freeu
    if getattr(original, "routes_skip_joins", False):
        return

    def apply_freeu(resolution_idx: int, hidden_states: torch.Tensor, res_hidden_states: torch.Tensor,
                    **freeu_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        join = freeu_kwargs.get("s1")
        if isinstance(join, _SkipJoin):
            return join(hidden_states, res_hidden_states)
        return original(resolution_idx, hidden_states, res_hidden_states, **freeu_kwargs)

    apply_freeu.routes_skip_joins = True  # type: ignore[attr-defined]
    unet_2d_blocks.apply_freeu = apply_freeu


__all__ = ["NO_PATCHES", "ActivePatches", "AttentionPatch", "ModelPatch", "PatchedAttention", "applied",
           "attention", "attention_with_probs", "block_of", "fingerprint", "input_block_modules"]
