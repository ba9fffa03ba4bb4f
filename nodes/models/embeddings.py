"""Textual inversion embeddings: finding them in models/embeddings, reading them, and feeding their vectors.

Files read: A1111 `.pt` (`string_to_param: {"*": [n, D]}`), `.safetensors` with `emb_params`, SDXL
files with `clip_l` [n, 768] + `clip_g` [n, 1280], diffusers `learned_embeds.bin` (`{token: [D]}`).
Pickles are opened with `torch.load(weights_only=True)` only. The vectors enter the text encoder
through a temporary extension of its token-embedding table (ids past the vocabulary pick the extra
rows) for the duration of one encode; the shared encoder is never changed.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nodes.base.errors import ModelLoadError

from .weights_file import PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES, read_state_dict

EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin", ".pth", ".ckpt", ".sft")
EMBEDDING_PREFIX = "embedding:"
# `embedding:name`: a name runs to the next space, comma or bracket; trailing sentence punctuation
# (`embedding:foo.` at the end of a sentence) is not part of it.
EMBEDDING_REFERENCE = re.compile(r"embedding:([^\s,()\[\]]+)")
_TRAILING = ".;:!?"

log = logging.getLogger("sumie.embeddings")


@dataclass(frozen=True, kw_only=True, eq=False)
class Embedding:
    """One embedding file's vectors: per text encoder ("clip_l", "clip_g") or one set ("*") for any."""

    name: str
    path: Path
    vectors: dict[str, torch.Tensor]

    def for_encoder(self, encoder: str, width: int) -> torch.Tensor | None:
        """[n, width] float32 vectors for that encoder, or None when the file has none of that width."""
        chosen = self.vectors.get(encoder)
        if chosen is None:
            chosen = self.vectors.get("*")
        if chosen is None or chosen.shape[-1] != width:
            return None
        return chosen.reshape(-1, width).float()


def _load_pickle(path: Path) -> Any:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        first = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line), None)
        if first:
            raise ModelLoadError(path, f"refused: the pickle references code ({first}); only weights-only "
                                       "embedding files are loaded") from None
        raise ModelLoadError(path, f"cannot read embedding ({type(exc).__name__}); expected a torch-saved "
                                   "embedding") from None
    except Exception as exc:  # noqa: BLE001 (torch's legacy reader fails on foreign bytes in many ways)
        raise ModelLoadError(path, f"cannot read embedding ({type(exc).__name__}: {str(exc)[:200]}); expected a "
                                   "torch-saved embedding") from None


def _vectors(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict):
        raise ModelLoadError(path, f"holds a {type(obj).__name__}; expected an embedding (a dict of tensors)")
    if isinstance(obj.get("string_to_param"), dict):  # A1111 .pt
        params = [v for v in obj["string_to_param"].values() if isinstance(v, torch.Tensor)]
        if params:
            return {"*": params[0]}
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if "clip_l" in tensors or "clip_g" in tensors:
        return {k: tensors[k] for k in ("clip_l", "clip_g") if k in tensors}
    if "emb_params" in tensors:
        return {"*": tensors["emb_params"]}
    floats = [v for v in tensors.values() if v.is_floating_point() and v.ndim in (1, 2)]
    if len(floats) == 1:  # diffusers: {"<token>": [D]}
        return {"*": floats[0]}
    shown = ", ".join(list(obj)[:5])
    raise ModelLoadError(path, f"no embedding vectors found (keys: {shown}); expected string_to_param, "
                               "emb_params, clip_l/clip_g or a single token vector")


def load_embedding(path: str | Path, name: str | None = None) -> Embedding:
    """Read an embedding file; bad files raise the same ModelLoadError as checkpoints."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        obj: Any = read_state_dict(path)
    elif suffix in PICKLE_SUFFIXES:
        if not path.is_file():
            raise ModelLoadError(path, "no such file")
        obj = _load_pickle(path)
    else:
        raise ModelLoadError(path, f"unsupported file type {suffix or '(none)'!r}; expected .safetensors or .pt")
    vectors = _vectors(obj, path)
    for key, value in vectors.items():
        if value.numel() == 0 or value.ndim > 2 or not value.is_floating_point():
            raise ModelLoadError(path, f"embedding vectors {key!r} have shape {tuple(value.shape)}; "
                                       "expected [n, width]")
    return Embedding(name=name or path.stem, path=path, vectors=vectors)


# ------------------------------------------------------------------------------------ the folder


def list_embeddings(folders: Any) -> list[str]:
    """Embedding names for the server's /embeddings: relative paths without the extension, sorted."""
    from nodes.base.folders import list_files

    names = {n.rsplit(".", 1)[0] for n in list_files(folders, "embeddings")
             if n.lower().endswith(EMBEDDING_SUFFIXES)}
    return sorted(names)


def find_embedding(folders: Any, name: str) -> Path | None:
    """The file for `name` (with or without its extension) inside models/embeddings, or None."""
    from nodes.base.folders import resolve

    if folders is None:
        return None
    candidates = [name] if name.lower().endswith(EMBEDDING_SUFFIXES) else []
    candidates += [name + suffix for suffix in EMBEDDING_SUFFIXES]
    for candidate in candidates:
        try:
            return resolve(folders, "embeddings", candidate)
        except ModelLoadError:
            continue
    return None


def split_reference(name: str) -> tuple[str, str]:
    """(embedding name, trailing punctuation that belongs to the text after it)."""
    stripped = name.rstrip(_TRAILING)
    return stripped, name[len(stripped):]


@dataclass(kw_only=True)
class EmbeddingLookup:
    """Resolves `embedding:name` references of one encode: loads each file once, warns once per problem."""

    folders: Any
    logger: logging.Logger = field(default_factory=lambda: log)
    _loaded: dict[str, Embedding | None] = field(default_factory=dict)
    _warned: set[tuple[str, str]] = field(default_factory=set)

    def _warn(self, key: tuple[str, str], message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.logger.warning(message, *args)

    def get(self, name: str) -> Embedding | None:
        if name not in self._loaded:
            path = find_embedding(self.folders, name)
            if path is None:
                self._loaded[name] = None
            else:
                try:
                    self._loaded[name] = load_embedding(path, name)
                except ModelLoadError as exc:
                    self._warn((name, "bad"), "embedding %r cannot be used: %s", name, exc)
                    self._loaded[name] = None
                    return None
        embedding = self._loaded[name]
        if embedding is None:
            self._warn((name, "missing"), "embedding %r not found in models/embeddings; the text 'embedding:%s' "
                       "is encoded as words", name, name)
        return embedding

    def vectors(self, name: str, encoder: str, width: int) -> torch.Tensor | None:
        """Vectors for one encoder; None: unknown name (keep as text); empty: known but not for this encoder."""
        embedding = self.get(name)
        if embedding is None:
            return None
        vectors = embedding.for_encoder(encoder, width)
        if vectors is None:
            shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in embedding.vectors.items())
            self._warn((name, encoder), "embedding %r has no vectors of width %d for %s (it holds %s); it is "
                       "left out of that encoder's prompt", name, width, encoder, shapes)
            return torch.zeros(0, width)
        return vectors


# ------------------------------------------------------------------------------------ injection


class _ExtendedEmbedding(torch.nn.Module):
    """The base token embedding, plus extra rows addressed by ids >= the vocabulary size."""

    def __init__(self, base: torch.nn.Embedding, extra: torch.Tensor) -> None:
        super().__init__()
        self.base = base
        self.vocab = base.num_embeddings
        self.register_buffer("extra", extra.to(base.weight.device, base.weight.dtype), persistent=False)

    @property
    def weight(self) -> torch.Tensor:  # some code reads the table's dtype/device through .weight
        return self.base.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        is_extra = ids >= self.vocab
        out = self.base(torch.where(is_extra, torch.zeros_like(ids), ids))
        if bool(is_extra.any()):
            out = out.clone()
            out[is_extra] = self.extra[ids[is_extra] - self.vocab]
        return out


def _embeddings_module(encoder: torch.nn.Module) -> torch.nn.Module:
    text_model = getattr(encoder, "text_model", encoder)
    return text_model.embeddings


def vocab_size(encoder: torch.nn.Module) -> int:
    return int(_embeddings_module(encoder).token_embedding.num_embeddings)


@contextmanager
def extended_vocabulary(encoder: torch.nn.Module, extra: torch.Tensor | None) -> Iterator[int]:
    """Within the block, token ids vocab + k embed as `extra[k]`; yields the vocabulary size."""
    module = _embeddings_module(encoder)
    base = module.token_embedding
    vocab = int(base.num_embeddings)
    if extra is None or len(extra) == 0:
        yield vocab
        return
    module.token_embedding = _ExtendedEmbedding(base, extra)
    try:
        yield vocab
    finally:
        module.token_embedding = base


__all__ = ["EMBEDDING_PREFIX", "EMBEDDING_REFERENCE", "Embedding", "EmbeddingLookup", "extended_vocabulary",
           "find_embedding", "list_embeddings", "load_embedding", "split_reference", "vocab_size"]
