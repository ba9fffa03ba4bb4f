"""What decides whether a recorded CUDA graph may replay (the replays themselves are in test_gpu.py)."""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import AttnProcessor

from nodes.models.cuda_graphs import fingerprint
from nodes.models.manager import ModelManager


def _unet(tiny_file) -> torch.nn.Module:
    return ModelManager(force_cpu=True).load_checkpoint(tiny_file("sd1"))[0].unet


def test_the_fingerprint_is_stable_while_nothing_changes(tiny_file):
    unet = _unet(tiny_file)
    assert fingerprint(unet) is not None and fingerprint(unet) == fingerprint(unet)


def test_weights_swapped_in_change_the_fingerprint(tiny_file):
    unet = _unet(tiny_file)
    before = fingerprint(unet)
    weight = unet.conv_out.weight
    weight.data = weight.data * 2  # a patched weight gets new storage
    assert fingerprint(unet) != before


def test_a_new_attention_processor_changes_the_fingerprint(tiny_file):
    unet = _unet(tiny_file)
    before = fingerprint(unet)
    unet.set_attn_processor(AttnProcessor())
    assert fingerprint(unet) != before


def test_hooks_and_replaced_forwards_keep_the_unet_eager(tiny_file):
    unet = _unet(tiny_file)
    handle = unet.conv_in.register_forward_hook(lambda module, args, out: out * 2)
    assert fingerprint(unet) is None
    handle.remove()
    assert fingerprint(unet) is not None
    unet.conv_out.forward = lambda x: x  # a plugin patching a module directly
    assert fingerprint(unet) is None
