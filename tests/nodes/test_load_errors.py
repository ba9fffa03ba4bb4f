"""Broken, hostile or foreign files fail with a ModelLoadError that names the file."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nodes.base.errors import ModelLoadError
from nodes.models import load_checkpoint, load_vae, read_state_dict

from .tiny_models import cast, ldm_state_dict


def _fails(path: Path, match: str, loader=load_checkpoint) -> ModelLoadError:
    with pytest.raises(ModelLoadError, match=match) as info:
        loader(path)
    assert str(path) in str(info.value) and info.value.path == path
    return info.value


def test_truncated_safetensors(tiny_file, tmp_path):
    data = tiny_file("sd1").read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) * 3 // 5])
    _fails(path, "truncated")


def test_garbage_header(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(struct.pack("<Q", 20) + b"this is not json !!!" + bytes(64))
    _fails(path, "not valid JSON")


def test_header_bomb(tmp_path):
    path = tmp_path / "bomb.safetensors"
    path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    _fails(path, "header claims")


def test_too_short_and_empty(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"abc")
    _fails(path, "at least 8 bytes")
    empty = tmp_path / "empty.safetensors"
    save_file({}, str(empty))
    _fails(empty, "contains no tensors")


def test_random_bytes_ckpt(tmp_path):
    path = tmp_path / "noise.ckpt"
    path.write_bytes(os.urandom(4096))
    _fails(path, "cannot read checkpoint")


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(4, 4)}, str(path))
    _fails(path, "expected a Stable Diffusion checkpoint")


def test_unsupported_suffix_and_missing_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes(64))
    _fails(path, "unsupported file type")
    _fails(tmp_path / "absent.safetensors", "no such file")


class _Payload:
    """Unpickling this would create a directory: proof that code ran."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def test_pickled_object_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Payload(str(marker))}, path)
    _fails(path, "refused")
    assert not marker.exists()


def test_non_dict_pickle_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    _fails(path, "expected a dict of tensors", loader=read_state_dict)


def _write(tmp_path: Path, sd: dict[str, torch.Tensor], name: str = "bad.safetensors") -> Path:
    path = tmp_path / name
    save_file(cast(sd, torch.float32), str(path))
    return path


def test_mismatched_shape(tmp_path):
    sd = ldm_state_dict("sd1")
    key = "model.diffusion_model.output_blocks.0.0.in_layers.2.weight"
    sd[key] = torch.zeros(64, 100, 3, 3)
    err = _fails(_write(tmp_path, sd), "has shape")
    assert "expected (64, 128, 3, 3)" in str(err)


def test_missing_and_extra_weights(tmp_path):
    sd = ldm_state_dict("sd1")
    del sd["model.diffusion_model.output_blocks.1.0.out_layers.3.bias"]
    _fails(_write(tmp_path, sd, "missing.safetensors"), "expected every weight to be used|missing")
    sd = ldm_state_dict("sd1")
    sd["model.diffusion_model.input_blocks.1.1.extra.weight"] = torch.zeros(3)
    _fails(_write(tmp_path, sd, "extra.safetensors"), "expected every weight to be used|unexpected")
    sd = ldm_state_dict("sd1")
    del sd["cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc2.bias"]
    _fails(_write(tmp_path, sd, "clip.safetensors"), "text encoder clip_l weights do not fit")


def test_checkpoint_without_vae_or_text_encoder(tmp_path):
    sd = {k: v for k, v in ldm_state_dict("sd1").items() if not k.startswith("first_stage_model.")}
    _fails(_write(tmp_path, sd, "novae.safetensors"), "expected the checkpoint to include its VAE")
    _fails(_write(tmp_path, {"x": torch.zeros(1)}, "x.safetensors"), "no VAE weights", loader=load_vae)


def test_sdxl_with_one_text_encoder(tmp_path):
    sd = {k: v for k, v in ldm_state_dict("sdxl").items() if not k.startswith("conditioner.embedders.1.")}
    _fails(_write(tmp_path, sd, "half.safetensors"), "only one of its two text encoders")


@pytest.mark.parametrize(("name", "data", "match"), [
    ("deep.safetensors", struct.pack("<Q", 100_000) + b"[" * 100_000, "nests too deeply"),
    ("deepobj.safetensors", struct.pack("<Q", 250_000) + b'{"a":' * 50_000, "nests too deeply"),
    ("notes.ckpt", b"hello, this is a text file\n" * 10, "it is a text file starting 'hello"),
    ("script.pt", b"#!/bin/sh\necho hi\n", "cannot read checkpoint"),
    ("empty.ckpt", b"", "cannot read checkpoint"),
])
def test_every_broken_file_names_itself_and_what_is_wrong(tmp_path, name, data, match):
    path = tmp_path / name
    path.write_bytes(data)
    error = _fails(path, match, loader=read_state_dict)
    assert "expected" in str(error)
    _fails(path, match)  # the same through the checkpoint loader


def test_a_text_file_named_like_an_embedding_names_itself(tmp_path):
    from nodes.models.embeddings import load_embedding

    path = tmp_path / "style.pt"
    path.write_bytes(b"not an embedding at all\n" * 4)
    _fails(path, "cannot read embedding", loader=load_embedding)
