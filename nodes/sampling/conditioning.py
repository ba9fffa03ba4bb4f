"""What the options of a CONDITIONING entry mean to the U-Net: SDXL's size, crop and aesthetic ids.

Conditioning nodes only annotate entries (`{"width": ..., "crop_w": ..., "aesthetic_score": ...}`);
the guider turns the annotations into the numbers the model takes, here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SDXL_DEFAULT_AESTHETIC = (6.0, 2.5)  # positive, negative: what the refiner assumes when none is given


def sdxl_time_ids(options: Mapping[str, Any], *, refiner: bool, width: int, height: int,
                  negative: bool = False) -> list[float]:
    """The size/crop (and aesthetic score) numbers an SDXL UNet takes for one conditioning.

    `width`/`height` are the image size being sampled (latent size × 8), used where the conditioning
    names none, as ComfyUI does; so a plain CLIPTextEncode on SDXL conditions on the output size.
    Base: [height, width, crop_h, crop_w, target_height, target_width]; refiner: [height, width,
    crop_h, crop_w, aesthetic_score].
    """
    w = int(options.get("width", width))
    h = int(options.get("height", height))
    crop_w = int(options.get("crop_w", 0))
    crop_h = int(options.get("crop_h", 0))
    if refiner:
        score = float(options.get("aesthetic_score", SDXL_DEFAULT_AESTHETIC[1 if negative else 0]))
        return [float(h), float(w), float(crop_h), float(crop_w), score]
    target_w = int(options.get("target_width", w))
    target_h = int(options.get("target_height", h))
    return [float(h), float(w), float(crop_h), float(crop_w), float(target_h), float(target_w)]
