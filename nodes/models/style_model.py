"""The SD1 T2I style adapter (STYLE_MODEL): CLIP vision hidden states -> extra prompt tokens.

TencentARC's `t2iadapter_style_sd14v1.pth` holds `style_embedding` [1, tokens, width], `ln_pre`,
`transformer_layes.N.*` (CLIP residual attention blocks with QuickGELU), `ln_post` and `proj`
[width, context]. The learned style tokens are appended to the image's last hidden states, run through
the blocks, and the style tokens' outputs, projected to the text width, become prompt tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from nodes.base.errors import ModelLoadError

STYLE_HEADS = 8  # the published adapter's attention heads (not readable from the shapes)


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", _QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [tokens, batch, width]
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class StyleAdapter(nn.Module):
    """The style adapter's network; sizes come from the file."""

    def __init__(self, width: int, context_dim: int, layers: int, tokens: int, heads: int = STYLE_HEADS) -> None:
        super().__init__()
        self.transformer_layes = nn.Sequential(*[_Block(width, heads) for _ in range(layers)])
        self.num_token = tokens
        self.style_embedding = nn.Parameter(torch.zeros(1, tokens, width))
        self.ln_post = nn.LayerNorm(width)
        self.ln_pre = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, context_dim))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, image tokens, width] CLIP vision last hidden states -> [B, style tokens, context]."""
        style = self.style_embedding.to(hidden).expand(hidden.shape[0], -1, -1)
        x = self.ln_pre(torch.cat([hidden, style], dim=1))
        x = self.transformer_layes(x.permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, -self.num_token:, :]) @ self.proj


def build_style_model(sd: Mapping[str, torch.Tensor], path: Path) -> StyleAdapter:
    """A StyleAdapter from a style-model file (refuses other files with what was expected)."""
    if "style_embedding" not in sd or "proj" not in sd:
        raise ModelLoadError(path, "not a T2I style adapter; expected style_embedding, transformer_layes.* and proj")
    _, tokens, width = sd["style_embedding"].shape
    layers = len({k.split(".")[1] for k in sd if k.startswith("transformer_layes.")})
    heads = STYLE_HEADS if width % STYLE_HEADS == 0 else 1
    model = StyleAdapter(int(width), int(sd["proj"].shape[1]), layers, int(tokens), heads)
    try:
        model.load_state_dict(dict(sd), strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(path, f"style adapter weights do not fit its layout: {exc}") from None
    return model.float().eval().requires_grad_(False)


__all__ = ["StyleAdapter", "build_style_model"]
