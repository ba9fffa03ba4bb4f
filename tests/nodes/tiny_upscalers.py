"""Tiny random upscale models in the key layouts of the files users download.

- ESRGAN, original layout (`model.0`, `model.1.sub.N.RDBk.convj.0`, ...: the 4x_*.pth community models),
- Real-ESRGAN / BasicSR RRDBNet layout (`conv_first`, `body.N.rdbk.convj`, `conv_up1`, ...), as
  RealESRGAN_x4plus.pth stores it: under "params_ema" (both with 32 growth channels, as every released
  file has and spandrel assumes),
- Real-ESRGAN Compact / SRVGGNetCompact (`body.0` conv, `body.1` PReLU, ...: realesr-general-x4v3.pth).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file


def _conv(sd: dict[str, torch.Tensor], name: str, cin: int, cout: int, gen: torch.Generator, k: int = 3,
          std: float = 0.05) -> None:
    sd[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=gen) * std
    sd[f"{name}.bias"] = torch.randn(cout, generator=gen) * std


def rrdbnet_state(*, nf: int = 8, nb: int = 1, gc: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """A 4x RRDBNet in BasicSR's (Real-ESRGAN's) key names."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    _conv(sd, "conv_first", 3, nf, gen)
    for b in range(nb):
        for r in (1, 2, 3):
            for j in range(1, 6):
                _conv(sd, f"body.{b}.rdb{r}.conv{j}", nf + (j - 1) * gc, nf if j == 5 else gc, gen)
    _conv(sd, "conv_body", nf, nf, gen)
    _conv(sd, "conv_up1", nf, nf, gen)
    _conv(sd, "conv_up2", nf, nf, gen)
    _conv(sd, "conv_hr", nf, nf, gen)
    _conv(sd, "conv_last", nf, 3, gen)
    return sd


def esrgan_old_state(*, nf: int = 8, nb: int = 1, gc: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """The same 4x network in the original ESRGAN layout (a Sequential: `model.N`)."""
    new = rrdbnet_state(nf=nf, nb=nb, gc=gc, seed=seed)
    names = {"conv_first": "model.0", "conv_body": f"model.1.sub.{nb}", "conv_up1": "model.3", "conv_up2": "model.6",
             "conv_hr": "model.8", "conv_last": "model.10"}
    old: dict[str, torch.Tensor] = {}
    for key, value in new.items():
        stem, kind = key.rsplit(".", 1)
        if stem in names:
            old[f"{names[stem]}.{kind}"] = value
        else:  # body.B.rdbR.convJ -> model.1.sub.B.RDBR.convJ.0
            _, b, rdb, conv = stem.split(".")
            old[f"model.1.sub.{b}.RDB{rdb[3:]}.{conv}.0.{kind}"] = value
    return old


def compact_state(*, scale: int = 2, nf: int = 8, num_conv: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """SRVGGNetCompact: conv, PReLU, (conv, PReLU) * num_conv, conv to 3 * scale² channels, pixel shuffle."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    _conv(sd, "body.0", 3, nf, gen, std=0.3)
    sd["body.1.weight"] = torch.full((nf,), 0.25)
    for i in range(num_conv):
        _conv(sd, f"body.{2 + 2 * i}", nf, nf, gen, std=0.3)
        sd[f"body.{3 + 2 * i}.weight"] = torch.full((nf,), 0.25)
    _conv(sd, f"body.{2 + 2 * num_conv}", nf, 3 * scale * scale, gen, std=0.3)
    return sd


def write(path: Path, sd: dict[str, torch.Tensor], *, wrap: str | None = None) -> Path:
    """Save as .safetensors, or as a torch .pth (optionally under `wrap`, e.g. "params_ema")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save({wrap: sd} if wrap else sd, str(path))
    return path
