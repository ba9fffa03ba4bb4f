"""Textual inversion embeddings: file layouts, lookup by name, and their effect on the encoding.

The reference for "the vectors enter at their tokens" is the encoder run on `inputs` we build by
hand: the token table rows for the text and the embedding's vectors at its positions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from graph import Folders
from nodes.base.errors import ModelLoadError
from nodes.base.handles import ClipHandle
from nodes.models.embeddings import EmbeddingLookup, list_embeddings, load_embedding
from nodes.models.tokenizer import load_clip_tokenizer
from nodes.sd.text_encode import encode_clip, tokenize_prompt

from .tiny_models import tiny_models


@pytest.fixture
def folders(tmp_path) -> Folders:
    f = Folders.under(tmp_path)
    (f.models / "embeddings" / "sub").mkdir(parents=True)
    return f


def sd1_clip() -> ClipHandle:
    from nodes.models.detect import transformers_clip_spec

    models = tiny_models("sd1")
    encoder = models.text_encoders[0]
    sd = {"text_model." + k: v for k, v in encoder.state_dict().items()}
    spec = transformers_clip_spec(sd, prefix="")
    return ClipHandle(encoders=(encoder,), specs=(spec,), kind="sd1")


def sdxl_clip() -> ClipHandle:
    from nodes.models.detect import open_clip_spec, transformers_clip_spec

    from .tiny_models import open_clip_to_ldm

    models = tiny_models("sdxl")
    l_sd = {"text_model." + k: v for k, v in models.text_encoders[0].state_dict().items()}
    spec_l = transformers_clip_spec(l_sd, prefix="")
    spec_g = open_clip_spec(open_clip_to_ldm(models.text_encoders[1]), prefix="", name="clip_g", with_projection=True)
    from dataclasses import replace

    specs = (replace(spec_l, default_layer=-2), replace(spec_g, default_layer=-2))
    return ClipHandle(encoders=tuple(models.text_encoders), specs=specs, kind="sdxl")


def vectors(n: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


def test_the_file_layouts(folders, tmp_path):
    emb = folders.models / "embeddings"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors(2, 32)}, "name": "a1111",
                "step": 100}, emb / "a1111.pt")
    save_file({"emb_params": vectors(3, 32)}, str(emb / "sub" / "st.safetensors"))
    save_file({"clip_l": vectors(2, 32), "clip_g": vectors(2, 64)}, str(emb / "xl.safetensors"))
    torch.save({"<cat-toy>": vectors(1, 32)[0]}, emb / "learned_embeds.bin")
    (emb / "notes.txt").write_text("not an embedding")
    assert list_embeddings(folders) == ["a1111", "learned_embeds", "sub/st", "xl"]
    assert load_embedding(emb / "a1111.pt").for_encoder("clip_l", 32).shape == (2, 32)
    assert load_embedding(emb / "sub" / "st.safetensors").for_encoder("clip_h", 32).shape == (3, 32)
    xl = load_embedding(emb / "xl.safetensors")
    assert xl.for_encoder("clip_g", 64).shape == (2, 64) and xl.for_encoder("clip_g", 32) is None
    assert load_embedding(emb / "learned_embeds.bin").for_encoder("clip_l", 32).shape == (1, 32)


def test_bad_embedding_files(tmp_path):
    cut = tmp_path / "cut.safetensors"
    save_file({"emb_params": vectors(3, 32)}, str(cut))
    cut.write_bytes(cut.read_bytes()[:-40])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 16)
    other = tmp_path / "other.safetensors"
    save_file({"a": torch.zeros(2, 2), "b": torch.zeros(3)}, str(other))

    class Payload:
        def __reduce__(self):
            return (print, ("never",))

    evil = tmp_path / "evil.pt"
    torch.save({"string_to_param": {"*": vectors(1, 32)}, "x": Payload()}, evil)
    for path, match in ((cut, "truncated"), (junk, "cannot read embedding"), (other, "no embedding vectors"),
                        (evil, "refused")):
        with pytest.raises(ModelLoadError, match=match) as info:
            load_embedding(path)
        assert info.value.path == path


def _manual(encoder, token_ids: list[int], inject: dict[int, torch.Tensor]) -> torch.Tensor:
    """Run the encoder with the embedding vectors written into its token table rows at chosen positions."""
    table = encoder.embeddings.token_embedding
    saved = table.weight.data
    extra_ids = list(inject)
    try:
        bigger = torch.cat([saved, torch.stack([inject[p] for p in extra_ids])])
        table.weight.data = bigger
        ids = list(token_ids)
        for k, position in enumerate(extra_ids):
            ids[position] = saved.shape[0] + k
        with torch.no_grad():
            return encoder(input_ids=torch.tensor([ids]), output_hidden_states=True).last_hidden_state
    finally:
        table.weight.data = saved


def test_embedding_vectors_enter_at_their_tokens_only(folders):
    vec = vectors(2, 32, seed=3)
    save_file({"emb_params": vec}, str(folders.models / "embeddings" / "style.safetensors"))
    clip = sd1_clip()
    encoder = clip.encoders[0]
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    with_emb, _ = encode_clip(clip, {"clip_l": "a cat, embedding:style.safetensors, red"}, folders=folders)
    same, _ = encode_clip(clip, {"clip_l": "a cat, embedding:style, red"}, folders=folders)
    assert torch.equal(with_emb, same)  # with or without the extension
    tok = load_clip_tokenizer()
    chunks = tokenize_prompt(tok, "a cat, embedding:style, red", pad_id=49407, embed=lambda n: vec)
    ids = chunks.ids[0]
    positions = [i for i, t in enumerate(ids) if t < 0]
    assert len(positions) == 2
    words = tok(["a cat, ", ", red"], add_special_tokens=False)["input_ids"]
    assert ids[1:1 + len(words[0])] == words[0] and ids[3 + len(words[0]):3 + len(words[0]) + len(words[1])] == \
        words[1]
    expected = _manual(encoder, [t if t >= 0 else 0 for t in ids], {p: vec[k] for k, p in enumerate(positions)})
    assert torch.allclose(with_emb, expected, atol=1e-5)
    # The encoder is unchanged afterwards, and a prompt without the embedding encodes as before.
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert type(encoder.embeddings.token_embedding) is torch.nn.Embedding


def test_weighted_embedding_and_unknown_name(folders, caplog):
    save_file({"emb_params": vectors(1, 32, seed=5)}, str(folders.models / "embeddings" / "foo.safetensors"))
    clip = sd1_clip()
    plain, _ = encode_clip(clip, {"clip_l": "embedding:foo"}, folders=folders)
    weighted, _ = encode_clip(clip, {"clip_l": "(embedding:foo:1.3)"}, folders=folders)
    assert not torch.equal(plain, weighted) and torch.equal(plain[:, 0], weighted[:, 0])
    with caplog.at_level(logging.WARNING):
        unknown, _ = encode_clip(clip, {"clip_l": "embedding:nope here"}, folders=folders)
    assert "'nope' not found" in caplog.text
    words, _ = encode_clip(clip, {"clip_l": "embedding:nope here"}, folders=None)
    assert torch.equal(unknown, words)  # kept as text


def test_sdxl_embedding_feeds_each_encoder_its_own_vectors(folders):
    save_file({"clip_l": vectors(1, 32, 1), "clip_g": vectors(1, 64, 2)},
              str(folders.models / "embeddings" / "xl.safetensors"))
    clip = sdxl_clip()
    with_emb, pooled = encode_clip(clip, {"clip_l": "a embedding:xl dog", "clip_g": "a embedding:xl dog"},
                                   folders=folders)
    base, _ = encode_clip(clip, {"clip_l": "a dog", "clip_g": "a dog"}, folders=folders)
    assert with_emb.shape == (1, 77, 96) and pooled is not None
    assert torch.equal(with_emb[:, :2], base[:, :2])  # before the embedding: unchanged (causal attention)
    assert not torch.allclose(with_emb[:, 2, :32], base[:, 2, :32])
    assert not torch.allclose(with_emb[:, 2, 32:], base[:, 2, 32:])


def test_lookup_warns_once_for_a_width_mismatch(folders, caplog):
    save_file({"emb_params": vectors(1, 768)}, str(folders.models / "embeddings" / "sd15.safetensors"))
    lookup = EmbeddingLookup(folders=folders)
    with caplog.at_level(logging.WARNING):
        assert lookup.vectors("sd15", "clip_l", 32).shape == (0, 32)
        assert lookup.vectors("sd15", "clip_l", 32).shape == (0, 32)
    assert caplog.text.count("no vectors of width 32") == 1


def test_refused_names_are_unknown(folders):
    lookup = EmbeddingLookup(folders=folders)
    assert lookup.vectors("../../etc/passwd", "clip_l", 32) is None
    assert isinstance(Path(folders.models), Path)
