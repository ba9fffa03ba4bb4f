"""LoRA files: parse the layouts people have and map every entry onto OUR modules' weights.

Layouts read (any mix in one file):
- kohya / A1111: `lora_unet_<module>` / `lora_te_` / `lora_te1_` / `lora_te2_<module>` with
  `.lora_up.weight`, `.lora_down.weight`, optional `.lora_mid.weight` (LoCon Tucker) and `.alpha`;
  `<module>` is the flattened name of either the diffusers U-Net (kohya's SD1/SD2 trainer) or the
  original LDM U-Net (its SDXL trainer, some extractors); LoCon adds the ResNet/sampler convolutions.
- diffusers / PEFT: `unet.<module>.lora_A.weight` / `lora_B.weight`, `.lora.down/up.weight`,
  `<attn>.processor.to_q_lora.down.weight`, `text_encoder.` / `text_encoder_2.` prefixes.
- full differences: `<module>.diff` (weight) and `.diff_b` (bias).

Names are resolved against a table built from the real modules (every Linear/Conv weight under its
diffusers name, its flattened kohya name and, for the U-Net, its LDM name as our own converter
writes it), so a name either lands on an existing weight of the right size or is reported.
Nothing is silently dropped: `LoraMapping.unmatched` lists what did not apply.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nodes.base.errors import ModelLoadError

from .weights_file import read_state_dict

# (regex on the end of a key, role). The module name is what precedes the match.
_SUFFIXES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), role) for p, role in (
    (r"\.lora_up\.weight$", "up"), (r"\.lora_down\.weight$", "down"), (r"\.lora_mid\.weight$", "mid"),
    (r"\.lora_B\.weight$", "up"), (r"\.lora_A\.weight$", "down"),
    (r"\.lora\.up\.weight$", "up"), (r"\.lora\.down\.weight$", "down"),
    (r"\.lora_linear_layer\.up\.weight$", "up"), (r"\.lora_linear_layer\.down\.weight$", "down"),
    (r"_lora\.up\.weight$", "up"), (r"_lora\.down\.weight$", "down"),
    (r"\.alpha$", "alpha"), (r"\.diff$", "diff"), (r"\.diff_b$", "diff_b"),
))
_IGNORED_PREFIXES = ("base_model.model.",)
UNSUPPORTED_MARKERS = ("hada_", "lokr_", "dora_scale", ".w_norm", ".b_norm", ".oft_", "bias_indices")


@dataclass(frozen=True, kw_only=True, eq=False)
class LowRank:
    """One layer's low-rank update: delta W = alpha / rank * up @ [mid] @ down (reshaped to W)."""

    up: torch.Tensor
    down: torch.Tensor
    mid: torch.Tensor | None = None
    alpha: float | None = None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def delta(self, shape: torch.Size, *, device: torch.device) -> torch.Tensor:
        """The float32 weight difference at strength 1, shaped like the target weight."""
        up = self.up.to(device, torch.float32).flatten(1)
        down = self.down.to(device, torch.float32)
        scale = 1.0 if self.alpha is None else self.alpha / self.rank
        if self.mid is not None:  # Tucker: up (1x1) . mid (k x k) . down (1x1)
            mid = self.mid.to(device, torch.float32)
            full = torch.einsum("ijkl,jr,pi->prkl", mid, down.flatten(1), up)
        else:  # linear, 1x1 conv, or LoCon kxk conv (down holds the kernel): reshape does the rest
            full = up @ down.flatten(1)
        return (full * scale).reshape(shape)


@dataclass(frozen=True, kw_only=True, eq=False)
class FullDiff:
    """A stored full difference (`.diff` / `.diff_b`)."""

    diff: torch.Tensor

    def delta(self, shape: torch.Size, *, device: torch.device) -> torch.Tensor:
        return self.diff.to(device, torch.float32).reshape(shape)


Delta = LowRank | FullDiff


@dataclass(frozen=True, kw_only=True, eq=False)
class LoraFile:
    """A parsed LoRA file: per module name (as spelt in the file) its weight and bias deltas."""

    path: Path | None
    weights: dict[str, Delta]  # module name -> delta of its weight
    biases: dict[str, Delta]  # module name -> delta of its bias
    unparsed: list[str]  # keys no layout explains (unsupported types, stray tensors)


@dataclass(frozen=True, kw_only=True, eq=False)
class WeightPatch:
    """What a MODEL/CLIP handle carries: one LoRA's deltas for one component, at a strength.

    `component` is "unet" or a text encoder name (clip_l, clip_h, clip_g); `deltas` maps parameter
    names of that module (e.g. "down_blocks.0.resnets.0.conv1.weight") to their delta.
    """

    name: str
    strength: float
    component: str
    deltas: Mapping[str, Delta]


@dataclass(kw_only=True)
class LoraMapping:
    """The result of mapping a LoraFile onto a model: patches per component, and what did not apply."""

    deltas: dict[str, dict[str, Delta]] = field(default_factory=dict)  # component -> param -> delta
    unmatched: list[str] = field(default_factory=list)  # file module names / keys that fit nothing
    skipped: dict[str, int] = field(default_factory=dict)  # component -> entries for a part not loaded


def _split_key(key: str) -> tuple[str, str] | None:
    for pattern, role in _SUFFIXES:
        m = pattern.search(key)
        if m:
            return key[: m.start()], role
    return None


def parse_lora(sd: Mapping[str, torch.Tensor], path: Path | None = None) -> LoraFile:
    """Group a LoRA state dict into per-module deltas; raises ModelLoadError for incomplete pairs."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    unparsed: list[str] = []
    for key, value in sd.items():
        clean = key
        for prefix in _IGNORED_PREFIXES:
            clean = clean.removeprefix(prefix)
        split = None if any(m in key for m in UNSUPPORTED_MARKERS) else _split_key(clean)
        if split is None:
            unparsed.append(key)
            continue
        name, role = split
        parts.setdefault(name, {})[role] = value
    weights: dict[str, Delta] = {}
    biases: dict[str, Delta] = {}
    for name, roles in parts.items():
        if "diff" in roles:
            weights[name] = FullDiff(diff=roles["diff"])
        if "diff_b" in roles:
            biases[name] = FullDiff(diff=roles["diff_b"])
        has_up, has_down = "up" in roles, "down" in roles
        if has_up and has_down:
            up, down = roles["up"], roles["down"]
            mid = roles.get("mid")
            inner = up.shape[1] if up.ndim >= 2 else -1
            if inner != down.shape[0] or (mid is not None and tuple(mid.shape[:2]) != (inner, inner)):
                raise ModelLoadError(path, f"LoRA layer {name!r}: up {tuple(up.shape)} and down "
                                           f"{tuple(down.shape)} do not share a rank; expected up [out, r], "
                                           "down [r, in]")
            alpha = roles.get("alpha")
            weights[name] = LowRank(up=up, down=down, mid=mid,
                                    alpha=None if alpha is None else float(alpha.float().reshape(-1)[0]))
        elif has_up or has_down:
            raise ModelLoadError(path, f"LoRA layer {name!r} has only its "
                                       f"{'up' if has_up else 'down'} matrix; the file is incomplete")
        elif not ({"diff", "diff_b"} & roles.keys()):
            unparsed.extend(f"{name}.{role}" for role in roles)  # an alpha with no matrices
    if not weights and not biases:
        shown = ", ".join(unparsed[:3])
        raise ModelLoadError(path, f"no LoRA weights found (keys such as {shown}); expected kohya "
                                   "(lora_up/lora_down) or diffusers/PEFT (lora_A/lora_B) layers")
    return LoraFile(path=path, weights=weights, biases=biases, unparsed=unparsed)


def load_lora(path: str | Path) -> LoraFile:
    """Read and parse a LoRA file (bad files raise the same ModelLoadError as checkpoints)."""
    path = Path(path)
    return parse_lora(read_state_dict(path), path)


# ------------------------------------------------------------------------------------ name tables


def _patchable(module: torch.nn.Module) -> Iterable[tuple[str, torch.nn.Module]]:
    for name, sub in module.named_modules():
        if name and isinstance(getattr(sub, "weight", None), torch.nn.Parameter) and sub.weight.ndim >= 2:
            yield name, sub


def _ldm_names(unet: torch.nn.Module) -> dict[str, str]:
    """diffusers module name -> original LDM module name, for every weight of the U-Net."""
    from .random_checkpoint import unet_to_ldm  # our own diffusers -> LDM key map (the loader's inverse)

    config = dict(unet.config)
    keys = {name + ".weight": torch.empty(0) for name, _ in _patchable(unet)}
    try:
        mapped = unet_to_ldm(keys, config)
    except KeyError:
        return {}
    names = list(keys)
    return {d.removesuffix(".weight"): ldm.removesuffix(".weight") for d, ldm in zip(names, mapped, strict=True)}


def _flat(name: str) -> str:
    return name.replace(".", "_")


def _unet_table(unet: torch.nn.Module) -> dict[str, str]:
    """Every spelling of a U-Net module name a LoRA file may use -> our module name."""
    table: dict[str, str] = {}
    ldm = _ldm_names(unet)
    for name, _ in _patchable(unet):
        spellings = {name}
        if name.endswith(".to_out.0"):
            spellings.add(name.removesuffix(".0"))  # old diffusers attention processors: to_out_lora
        if name in ldm:
            spellings.add(ldm[name])
        for s in spellings:
            table["lora_unet_" + _flat(s)] = name
            table["unet." + s] = name
            table["diffusion_model." + s] = name
            table["model.diffusion_model." + s] = name
        for s in list(spellings):
            if ".attn1." in s or ".attn2." in s:
                processor = s.replace(".attn1.", ".attn1.processor.").replace(".attn2.", ".attn2.processor.")
                table["unet." + processor] = name
    return table


_TE_ALIASES = (("self_attn.q_proj", "self_attn.to_q"), ("self_attn.k_proj", "self_attn.to_k"),
               ("self_attn.v_proj", "self_attn.to_v"), ("self_attn.out_proj", "self_attn.to_out"))


def _text_table(encoder: torch.nn.Module, kohya: Iterable[str], dotted: Iterable[str]) -> dict[str, str]:
    table: dict[str, str] = {}
    for name, _ in _patchable(encoder):
        if name == "text_projection" or name.startswith("text_model."):
            canonical = name
        else:
            canonical = "text_model." + name  # transformers 5's CLIPTextModel is flat
        spellings = {canonical}
        for old, new in _TE_ALIASES:
            if old in canonical:
                spellings.add(canonical.replace(old, new))
        for s in spellings:
            for prefix in kohya:
                table[prefix + _flat(s)] = name
            for prefix in dotted:
                table[prefix + s] = name
    return table


def _text_prefixes(names: list[str]) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Which file prefixes address which encoder (kohya underscore, diffusers dotted)."""
    if len(names) == 1:  # SD1, SD2, or the SDXL refiner's lone OpenCLIP-G (its "second" encoder)
        second = names[0] == "clip_g"
        return {names[0]: (("lora_te_", "lora_te1_", *(("lora_te2_",) if second else ())),
                           ("text_encoder.", *(("text_encoder_2.",) if second else ())))}
    out: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for index, name in enumerate(names):
        if index == 0:
            out[name] = (("lora_te_", "lora_te1_"), ("text_encoder.",))
        else:
            out[name] = (("lora_te2_",), ("text_encoder_2.",))
    return out


_TE_PREFIXES = ("lora_te_", "lora_te1_", "lora_te2_", "text_encoder.", "text_encoder_2.")
_UNET_PREFIXES = ("lora_unet_", "unet.", "diffusion_model.", "model.diffusion_model.")


def map_lora(lora: LoraFile, *, unet: torch.nn.Module | None = None,
             text_encoders: Mapping[str, torch.nn.Module] | None = None) -> LoraMapping:
    """Resolve a parsed file against the given modules (None: that part is not being patched)."""
    tables: dict[str, dict[str, str]] = {}
    modules: dict[str, torch.nn.Module] = {}
    if unet is not None:
        tables["unet"] = _unet_table(unet)
        modules["unet"] = unet
    if text_encoders:
        for name, (kohya, dotted) in _text_prefixes(list(text_encoders)).items():
            tables[name] = _text_table(text_encoders[name], kohya, dotted)
            modules[name] = text_encoders[name]
    lookup = {spelling: (component, target) for component, table in tables.items() for spelling, target in
              table.items()}
    loaded = {part for part, present in (("unet", unet is not None), ("text", bool(text_encoders))) if present}
    result = LoraMapping(unmatched=list(lora.unparsed))
    for kind, entries in (("weight", lora.weights), ("bias", lora.biases)):
        for file_name, delta in entries.items():
            hit = lookup.get(file_name)
            if hit is None:
                part = _part_of(file_name)
                if part is not None and part not in loaded:  # e.g. text encoder layers, model-only loader
                    result.skipped[part] = result.skipped.get(part, 0) + 1
                else:
                    result.unmatched.append(file_name)
                continue
            component, target = hit
            param = getattr(modules[component].get_submodule(target), kind, None)
            if not isinstance(param, torch.nn.Parameter):
                result.unmatched.append(file_name)
                continue
            if not _fits(delta, param):
                raise ModelLoadError(lora.path, f"LoRA layer {file_name!r} does not fit {component} weight "
                                                f"{target}.{kind} of shape {tuple(param.shape)}; is this LoRA "
                                                "for another model family (SD1 / SD2 / SDXL)?")
            result.deltas.setdefault(component, {})[f"{target}.{kind}"] = delta
    return result


def _part_of(name: str) -> str | None:
    if name.startswith(_UNET_PREFIXES):
        return "unet"
    if name.startswith(_TE_PREFIXES):
        return "text"
    return None


def _fits(delta: Delta, param: torch.Tensor) -> bool:
    if isinstance(delta, FullDiff):
        return delta.diff.numel() == param.numel()
    out_features = param.shape[0]
    in_numel = param.numel() // out_features
    down_numel = delta.down[0].numel() if delta.mid is None else delta.down.flatten(1).shape[1] * \
        int(torch.tensor(delta.mid.shape[2:]).prod())
    return delta.up.shape[0] == out_features and down_numel == in_numel


def describe_unmatched(lora: LoraFile, mapping: LoraMapping, limit: int = 5) -> str | None:
    """A one-line report of what did not apply, or None when everything did."""
    if not mapping.unmatched:
        return None
    where = lora.path.name if lora.path is not None else "LoRA"
    shown = ", ".join(mapping.unmatched[:limit])
    more = f" and {len(mapping.unmatched) - limit} more" if len(mapping.unmatched) > limit else ""
    return f"{where}: {len(mapping.unmatched)} entries match no layer of this model and were not applied: {shown}{more}"


__all__ = ["Delta", "FullDiff", "LoraFile", "LoraMapping", "LowRank", "WeightPatch", "describe_unmatched",
           "load_lora", "map_lora", "parse_lora"]
