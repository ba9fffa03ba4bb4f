"""Loading never opens a network connection (sockets are blocked and every attempt recorded)."""

from __future__ import annotations

import socket

import pytest

from nodes.models import load_checkpoint, load_clip_tokenizer, load_text_encoder, load_unet, load_vae

from .tiny_models import write_diffusers_folder


@pytest.fixture
def attempts(monkeypatch):
    seen: list[object] = []

    def refuse(self, address, *args, **kwargs):
        seen.append(address)
        raise OSError(f"network disabled in tests: {address}")

    def refuse_lookup(host, *args, **kwargs):
        seen.append(host)
        raise socket.gaierror(f"network disabled in tests: {host}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse_lookup)
    return seen


def test_loaders_never_touch_the_network(attempts, tiny_file, tmp_path):
    checkpoint = tiny_file("sdxl")
    folder = write_diffusers_folder(tmp_path / "sdxl", "sdxl")
    assert load_clip_tokenizer("open_clip")("a photo").input_ids[0] == 49406
    assert load_checkpoint(checkpoint).info.kind == "sdxl"
    assert load_checkpoint(tiny_file("sd2")).info.kind == "sd2"
    assert load_unet(checkpoint).unet is not None
    assert load_vae(checkpoint).config.scaling_factor == 0.13025
    assert load_text_encoder(checkpoint, which=0).spec.name == "clip_l"
    assert load_checkpoint(folder).info.kind == "sdxl"
    assert attempts == []
