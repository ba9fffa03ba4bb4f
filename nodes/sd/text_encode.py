"""Prompt encoding: CLIPTextEncode, CLIPSetLastLayer and the SDXL text encoders.

What users' images depend on, done the way ComfyUI does it:
- tokens in chunks of 77 (start + 75 + end/padding); a weighted run of fewer than 8 tokens that
  does not fit moves whole to the next chunk, longer runs are split; chunk outputs are concatenated
  along the sequence axis and the pooled output is the first chunk's;
- a token's weight w scales its hidden state away from the empty prompt's at the same position:
  z_empty + (z - z_empty) * w (only where w != 1);
- the hidden state is the family default (SD1: last, SD2 and SDXL: penultimate) until
  CLIPSetLastLayer picks one; SD1/SD2 apply the final layer norm to it, SDXL does not; a layer
  deeper than the model falls back to the normed last layer;
- SDXL concatenates CLIP-L and OpenCLIP-G hidden states on the channel axis and pools from OpenCLIP-G.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch

from graph import FloatInput, InputSpec, IntInput, Node, NodeSchema, OutputSpec, StringInput
from graph.limits import MAX_RESOLUTION
from nodes.models.embeddings import EMBEDDING_REFERENCE, EmbeddingLookup, extended_vocabulary, split_reference
from nodes.models.embeddings import find_embedding as _find_embedding
from nodes.models.patching import patched
from nodes.models.tokenizer import BOS_ID, EOS_ID, MAX_LENGTH

from .prompt_weights import parse_prompt_weights

log = logging.getLogger("sumie.text_encode")

MAX_WORD_TOKENS = 8  # shorter weighted runs are not split across chunks
EMBEDDING_PREFIX = "embedding:"


@dataclass(frozen=True, kw_only=True)
class TokenChunks:
    """A prompt as rows of MAX_LENGTH token ids with one weight per token.

    A negative id -(k + 1) stands for row k of `extra` (a textual inversion vector), fed to the
    encoder through a temporarily extended token table.
    """

    ids: list[list[int]]
    weights: list[list[float]]
    pad_id: int
    extra: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_weights(self) -> bool:
        return any(w != 1.0 for row in self.weights for w in row)

    def padded_to(self, count: int) -> TokenChunks:
        """The same chunks followed by empty-prompt chunks up to `count` (SDXL's two texts must match)."""
        extra = count - len(self.ids)
        if extra <= 0:
            return self
        return replace(self, ids=self.ids + [empty_ids(self.pad_id)] * extra,
                       weights=self.weights + [[1.0] * MAX_LENGTH] * extra)


def empty_ids(pad_id: int) -> list[int]:
    """The empty prompt: start, end, then padding."""
    return [BOS_ID, EOS_ID] + [pad_id] * (MAX_LENGTH - 2)


EmbedFn = Callable[[str], "torch.Tensor | None"]


def _runs(pieces: list[tuple[str, float]], embed: EmbedFn | None) -> list[tuple[str | torch.Tensor, float]]:
    """Split weighted text around `embedding:name` references: text stays text, known names become vectors."""
    runs: list[tuple[str | torch.Tensor, float]] = []
    for piece, weight in pieces:
        pos = 0
        for match in EMBEDDING_REFERENCE.finditer(piece):
            name, trailing = split_reference(match.group(1))
            vectors = embed(name) if embed is not None and name else None
            if vectors is None:  # unknown: keep the words
                continue
            runs.append((piece[pos:match.start()], weight))
            if len(vectors):
                runs.append((vectors, weight))
            runs.append((trailing, weight))
            pos = match.end()
        runs.append((piece[pos:], weight))
    return [(r, w) for r, w in runs if not isinstance(r, str) or r]


def tokenize_prompt(tokenizer: Any, text: str, *, pad_id: int, logger: logging.Logger | None = None,
                    embed: EmbedFn | None = None) -> TokenChunks:
    """Weighted prompt text -> chunks of 77 ids (start + up to 75 tokens + end, padded).

    `embed(name)` gives an embedding's vectors for this encoder (None: unknown, kept as words).
    """
    segments = parse_prompt_weights(text)
    if embed is None and any(EMBEDDING_PREFIX in piece for piece, _ in segments):
        (logger or log).warning("%s references are not supported yet by this caller (no embeddings lookup was "
                                "given); they are encoded as plain text", EMBEDDING_PREFIX)
    runs = _runs([(piece.replace("\n", " "), weight) for piece, weight in segments], embed)
    texts = [r for r, _ in runs if isinstance(r, str)]
    encoded_texts = iter(tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else [])
    extra_rows: list[torch.Tensor] = []
    encoded: list[list[int]] = []
    for run, _ in runs:
        if isinstance(run, str):
            encoded.append(list(next(encoded_texts)))
        else:
            first = sum(len(v) for v in extra_rows)
            extra_rows.append(run)
            encoded.append([-(first + k + 1) for k in range(len(run))])
    body = MAX_LENGTH - 2
    ids: list[list[int]] = []
    weights: list[list[float]] = []
    row: list[int] = []
    row_w: list[float] = []

    def close_row() -> None:
        nonlocal row, row_w
        fill = body - len(row)
        ids.append([BOS_ID, *row, EOS_ID] + [pad_id] * fill)
        weights.append([1.0, *row_w, 1.0] + [1.0] * fill)
        row, row_w = [], []

    for tokens, (_, weight) in zip(encoded, runs, strict=True):
        while tokens:
            room = body - len(row)
            if len(tokens) <= room:
                row += tokens
                row_w += [weight] * len(tokens)
                break
            if len(tokens) >= MAX_WORD_TOKENS:  # a long run is split across chunks
                row += tokens[:room]
                row_w += [weight] * room
                tokens = tokens[room:]
            close_row()
    if row or not ids:
        close_row()
    extra = torch.cat(extra_rows) if extra_rows else None
    return TokenChunks(ids=ids, weights=weights, pad_id=pad_id, extra=extra)


def _text_model(encoder: Any) -> Any:
    return getattr(encoder, "text_model", encoder)


def _resolve_layer(layer: int, num_layers: int) -> int | None:
    """Index into hidden_states for a negative layer, or None for "the normed last layer"."""
    return None if abs(layer) > num_layers else layer


ROWS_PER_PASS = 8  # 77-token rows per forward pass: a very long prompt stays interruptible between passes


@torch.no_grad()
def encode_chunks(
    encoder: Any, chunks: TokenChunks, *, layer: int, layer_norm: bool, device: torch.device | None = None,
    check: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One encoder's conditioning [1, 77*k, D] and pooled output [1, P] (None without a projection).

    `check` (the node's interrupt check) is called before each pass of ROWS_PER_PASS rows.
    """
    weighted = chunks.has_weights
    rows = chunks.ids + ([empty_ids(chunks.pad_id)] if weighted else [])
    if device is None:
        device = next(encoder.parameters()).device
    parts: list[torch.Tensor] = []
    pooled: torch.Tensor | None = None
    with extended_vocabulary(encoder, chunks.extra) as vocab:
        for start in range(0, len(rows), ROWS_PER_PASS):
            if check is not None:
                check()
            ids = torch.tensor(rows[start:start + ROWS_PER_PASS], dtype=torch.long, device=device)
            ids = torch.where(ids < 0, vocab - 1 - ids, ids)  # -(k + 1) -> vocab + k
            out = encoder(input_ids=ids, output_hidden_states=True)
            parts.append(_select_layer(encoder, out, layer, layer_norm).float())
            if start == 0:
                pooled = getattr(out, "text_embeds", None)
    hidden = torch.cat(parts)
    sections = hidden[: len(chunks)]
    if weighted:
        empty = hidden[-1:]
        w = torch.tensor(chunks.weights, dtype=torch.float32, device=hidden.device).unsqueeze(-1)
        sections = torch.where(w != 1.0, empty + (sections - empty) * w, sections)
    cond = sections.reshape(1, -1, sections.shape[-1]).cpu()
    return cond, (pooled[:1].float().cpu() if pooled is not None else None)


def _select_layer(encoder: Any, out: Any, layer: int, layer_norm: bool) -> torch.Tensor:
    num_layers = len(out.hidden_states) - 1
    index = _resolve_layer(layer, num_layers)
    if index is None:
        return out.last_hidden_state
    hidden = out.hidden_states[index]
    return _text_model(encoder).final_layer_norm(hidden) if layer_norm else hidden


def _pad_id(tokenizer: Any) -> int:
    return int(tokenizer.pad_token_id)


def _tokenizer(clip: Any, spec: Any) -> Any:
    manager = clip.manager
    if manager is not None:
        return manager.tokenizer(spec.pad)
    from nodes.models.tokenizer import load_clip_tokenizer

    return load_clip_tokenizer(spec.pad)


def encode_clip(clip: Any, texts: Mapping[str, str], *, logger: logging.Logger | None = None, folders: Any = None,
                check: Callable[[], None] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encode with every encoder of a CLIP handle; `texts` maps encoder names (clip_l, clip_g, clip_h) to text.

    Returns the conditioning [1, 77*k, sum of widths] and the pooled output of the last encoder that
    has a projection (OpenCLIP-G for SDXL), or None. `embedding:name` is looked up in
    `folders.models/embeddings`. `check` is the interrupt check, called between passes.
    """
    specs = clip.specs
    lookup = EmbeddingLookup(folders=folders, logger=logger or log)
    tokenized = []
    for spec in specs:
        tok = _tokenizer(clip, spec)
        width = int(spec.config["hidden_size"])

        def embed(name: str, spec: Any = spec, width: int = width) -> torch.Tensor | None:
            return lookup.vectors(name, spec.name, width)

        if check is not None:
            check()
        tokenized.append(tokenize_prompt(tok, texts[spec.name], pad_id=_pad_id(tok), logger=logger, embed=embed))
    count = max(len(t) for t in tokenized)
    tokenized = [t.padded_to(count) for t in tokenized]
    layer_norm = not clip.kind.startswith("sdxl")
    manager = clip.manager
    placement = manager.use(*clip.encoders) if manager is not None else nullcontext(None)
    conds: list[torch.Tensor] = []
    pooled: torch.Tensor | None = None
    with placement as device:
        for encoder, spec, chunks in zip(clip.encoders, specs, tokenized, strict=True):
            layer = spec.default_layer if clip.layer is None else clip.layer
            run_on = manager.device_for(encoder) if manager is not None else device
            with patched(encoder, clip.patches, spec.name):
                cond, pool = encode_chunks(encoder, chunks, layer=layer, layer_norm=layer_norm, device=run_on,
                                           check=check)
            conds.append(cond)
            if pool is not None:
                pooled = pool
    return torch.cat(conds, dim=-1), pooled


def embedding_stamps(folders: Any, *texts: Any) -> Any:
    """Cache-key part: size and mtime of every embedding a prompt names, so a replaced file re-encodes."""
    from nodes.models.manager import file_stamp

    stamps = []
    for text in texts:
        if not isinstance(text, str) or EMBEDDING_PREFIX not in text:
            continue
        for match in EMBEDDING_REFERENCE.finditer(text):
            name = split_reference(match.group(1))[0]
            path = _find_embedding(folders, name) if name else None
            stamps.append([name, *map(str, file_stamp(path))] if path is not None else [name, "missing"])
    return stamps or None


def _conditioning(cond: torch.Tensor, pooled: torch.Tensor | None, **extra: Any) -> list[list[Any]]:
    return [[cond, {"pooled_output": pooled, **extra}]]


def _schema(node_id: str, display: str, inputs: list[InputSpec], outputs: list[OutputSpec],
            description: str = "") -> NodeSchema:
    return NodeSchema(node_type=node_id, display_name=display, category="conditioning", inputs=inputs,
                      outputs=outputs, description=description, python_module="nodes.sd.text_encode")


def _prompt(name: str, tooltip: str | None = None) -> StringInput:
    return StringInput(name=name, multiline=True, dynamic_prompts=True, tooltip=tooltip)


def _size(name: str, default: int) -> IntInput:
    return IntInput(name=name, default=default, min=0, max=MAX_RESOLUTION)


_CONDITIONING_OUT = [OutputSpec(type="CONDITIONING", name="CONDITIONING")]


class CLIPTextEncode(Node):
    SCHEMA = _schema("CLIPTextEncode", "CLIP Text Encode (Prompt)",
                     [_prompt("text", "The text to be encoded; (word:1.2) weights words."),
                      InputSpec(name="clip", type="CLIP", tooltip="The CLIP model used for encoding the text.")],
                     _CONDITIONING_OUT, "Encodes a text prompt into conditioning that guides the diffusion model.")

    def fingerprint(self, *, folders: Any = None, **constants: Any) -> Any:
        return embedding_stamps(folders, constants.get("text"))

    def execute(self, ctx, *, text: str, clip: Any) -> tuple[list[list[Any]]]:
        cond, pooled = encode_clip(clip, {spec.name: text for spec in clip.specs}, logger=ctx.logger,
                                   folders=ctx.folders, check=ctx.check_interrupt)
        return (_conditioning(cond, pooled),)


class CLIPSetLastLayer(Node):
    SCHEMA = NodeSchema(node_type="CLIPSetLastLayer", display_name="CLIP Set Last Layer", category="conditioning",
                        inputs=[InputSpec(name="clip", type="CLIP"),
                                IntInput(name="stop_at_clip_layer", default=-1, min=-24, max=-1, step=1)],
                        outputs=[OutputSpec(type="CLIP", name="CLIP")], python_module="nodes.sd.text_encode",
                        description="Condition on an earlier layer of the text encoder (-2 is 'clip skip 2').")

    def execute(self, ctx, *, clip: Any, stop_at_clip_layer: int) -> tuple[Any]:
        return (clip.with_layer(stop_at_clip_layer),)


class CLIPTextEncodeSDXL(Node):
    SCHEMA = _schema("CLIPTextEncodeSDXL", "CLIPTextEncodeSDXL",
                     [_size("width", 1024), _size("height", 1024), _size("crop_w", 0), _size("crop_h", 0),
                      _size("target_width", 1024), _size("target_height", 1024),
                      _prompt("text_g", "Text for OpenCLIP-G."), InputSpec(name="clip", type="CLIP"),
                      _prompt("text_l", "Text for CLIP-L.")],
                     _CONDITIONING_OUT, "SDXL prompt with its size and crop conditioning.")

    def fingerprint(self, *, folders: Any = None, **constants: Any) -> Any:
        return embedding_stamps(folders, constants.get("text_g"), constants.get("text_l"))

    def execute(self, ctx, *, width: int, height: int, crop_w: int, crop_h: int, target_width: int,
                target_height: int, text_g: str, clip: Any, text_l: str) -> tuple[list[list[Any]]]:
        texts = {spec.name: text_l if spec.name == "clip_l" else text_g for spec in clip.specs}
        cond, pooled = encode_clip(clip, texts, logger=ctx.logger, folders=ctx.folders, check=ctx.check_interrupt)
        return (_conditioning(cond, pooled, width=width, height=height, crop_w=crop_w, crop_h=crop_h,
                              target_width=target_width, target_height=target_height),)


class CLIPTextEncodeSDXLRefiner(Node):
    SCHEMA = _schema("CLIPTextEncodeSDXLRefiner", "CLIPTextEncodeSDXLRefiner",
                     [FloatInput(name="ascore", default=6.0, min=0.0, max=1000.0, step=0.01),
                      _size("width", 1024), _size("height", 1024), _prompt("text"),
                      InputSpec(name="clip", type="CLIP")],
                     _CONDITIONING_OUT, "SDXL refiner prompt with its aesthetic score and size conditioning.")

    def fingerprint(self, *, folders: Any = None, **constants: Any) -> Any:
        return embedding_stamps(folders, constants.get("text"))

    def execute(self, ctx, *, ascore: float, width: int, height: int, text: str, clip: Any
                ) -> tuple[list[list[Any]]]:
        cond, pooled = encode_clip(clip, {spec.name: text for spec in clip.specs}, logger=ctx.logger,
                                   folders=ctx.folders, check=ctx.check_interrupt)
        return (_conditioning(cond, pooled, aesthetic_score=ascore, width=width, height=height),)


NODES = [CLIPTextEncode, CLIPSetLastLayer, CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner]
