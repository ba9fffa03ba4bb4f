"""Offline loading of Stable Diffusion model files (SD1, SD2, SDXL) into diffusers modules."""

from .checkpoint import (
    LoadedCheckpoint,
    LoadedTextEncoder,
    checkpoint_from_state_dict,
    load_checkpoint,
    load_diffusers_folder,
    load_text_encoder,
    load_unet,
    load_vae,
)
from .detect import CheckpointInfo, TextEncoderSpec, detect_checkpoint
from .tokenizer import load_clip_tokenizer
from .weights_file import read_state_dict

__all__ = [
    "CheckpointInfo",
    "LoadedCheckpoint",
    "LoadedTextEncoder",
    "TextEncoderSpec",
    "checkpoint_from_state_dict",
    "detect_checkpoint",
    "load_checkpoint",
    "load_clip_tokenizer",
    "load_diffusers_folder",
    "load_text_encoder",
    "load_unet",
    "load_vae",
    "read_state_dict",
]
