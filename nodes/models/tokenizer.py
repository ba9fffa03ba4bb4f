"""CLIP tokenizers built only from the BPE vocabulary shipped in ``configs/``.

Loading a tokenizer from the hub offline can silently yield a broken two-token vocabulary, so the
project ships OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (MIT) and builds the vocabulary the way
OpenAI's tokenizer does: 256 byte characters, the same with ``</w>``, one token per merge for the
first 48,894 merges, then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407).
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path
from typing import Literal

from transformers import CLIPTokenizer

from nodes.base.errors import ModelLoadError

BPE_PATH = Path(__file__).parent / "configs" / "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # 48,894: the merges OpenAI's tokenizer keeps
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
BOS_ID = 49406
EOS_ID = 49407
VOCAB_SIZE = 49408
MAX_LENGTH = 77

PadStyle = Literal["sd1", "open_clip"]
"""``sd1``: pad with ``<|endoftext|>`` (49407), as SD1 and SDXL's CLIP-L do;
``open_clip``: pad with id 0 (``!``), as SD2's and SDXL's OpenCLIP-G tokenizers do."""


def _byte_characters() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE, in vocabulary order.

    Printable Latin-1 bytes stand for themselves and come first (in byte order); the other bytes
    follow, mapped in increasing byte order onto code points from 256 upwards.
    """
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    others = [byte for byte in range(256) if byte not in set(printable)]
    return [chr(byte) for byte in printable] + [chr(256 + i) for i in range(len(others))]


@lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    try:
        with gzip.open(BPE_PATH, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")
    except (OSError, EOFError) as exc:
        raise ModelLoadError(BPE_PATH, f"cannot read the shipped CLIP BPE vocabulary: {exc}") from exc
    # Line 0 is a version header; OpenAI keeps the next 48,894 merges.
    merges = [tuple(line.split()) for line in lines[1 : 1 + NUM_MERGES]]
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ModelLoadError(BPE_PATH, f"expected {NUM_MERGES} BPE merges of two symbols each")
    tokens = _byte_characters()
    tokens += [t + "</w>" for t in tokens]
    tokens += ["".join(pair) for pair in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE or vocab[EOS_TOKEN] != EOS_ID:
        raise ModelLoadError(BPE_PATH, f"expected a {VOCAB_SIZE}-token vocabulary ending in {EOS_TOKEN}")
    return vocab, merges  # type: ignore[return-value]


def load_clip_tokenizer(pad: PadStyle = "sd1", *, max_length: int = MAX_LENGTH) -> CLIPTokenizer:
    """A CLIP tokenizer built from the shipped files only (never the hub).

    ``pad`` picks the padding token: SD1/CLIP-L pads with ``<|endoftext|>``; SD2 and SDXL's
    OpenCLIP-G pad with id 0.
    """
    if pad not in ("sd1", "open_clip"):
        raise ValueError(f"pad must be 'sd1' or 'open_clip', not {pad!r}")
    vocab, merges = _vocab_and_merges()
    pad_token = EOS_TOKEN if pad == "sd1" else _byte_characters()[0]  # id 0 is "!"
    tokenizer = CLIPTokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        unk_token=EOS_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=pad_token,
        model_max_length=max_length,
    )
    return tokenizer
