"""The names the original (LDM `openaimodel`) U-Net files and diffusers give the same modules.

Both directions read these pairs: the original-layout writer (`random_checkpoint.unet_to_ldm`, diffusers
to LDM, also used by saving and merging) and the ControlNet loader (`controlnet_layouts.ldm_to_diffusers`,
LDM to diffusers), so a name fixed here is fixed for both.
"""

from __future__ import annotations

# (LDM, diffusers) names of the layers inside one resnet block.
RESNET_NAMES = (("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("emb_layers.1", "time_emb_proj"),
                ("out_layers.0", "norm2"), ("out_layers.3", "conv2"), ("skip_connection", "conv_shortcut"))

# LDM -> diffusers names of the modules outside the blocks that a U-Net and a ControlNet both have.
UNET_FIXED_NAMES = {"input_blocks.0.0": "conv_in", "time_embed.0": "time_embedding.linear_1",
                    "time_embed.2": "time_embedding.linear_2", "label_emb.0.0": "add_embedding.linear_1",
                    "label_emb.0.2": "add_embedding.linear_2"}

__all__ = ["RESNET_NAMES", "UNET_FIXED_NAMES"]
