"""Socket and widget type names, and the one rule for which output may feed which input."""

from __future__ import annotations

# Widget types: a value can be typed into the node (or linked from a node of the same type).
INT = "INT"
FLOAT = "FLOAT"
STRING = "STRING"
BOOLEAN = "BOOLEAN"
COMBO = "COMBO"
WIDGET_TYPES = frozenset({INT, FLOAT, STRING, BOOLEAN, COMBO})

# Socket types of the Stable Diffusion pipeline (plugins may define any other name).
MODEL = "MODEL"
CLIP = "CLIP"
VAE = "VAE"
CONDITIONING = "CONDITIONING"
LATENT = "LATENT"
IMAGE = "IMAGE"
MASK = "MASK"
CONTROL_NET = "CONTROL_NET"
UPSCALE_MODEL = "UPSCALE_MODEL"
SAMPLER = "SAMPLER"
SIGMAS = "SIGMAS"
NOISE = "NOISE"
GUIDER = "GUIDER"

ANY = "*"


def _parts(type_name: str) -> frozenset[str]:
    return frozenset(p.strip() for p in type_name.split(",")) if "," in type_name else frozenset((type_name,))


def types_compatible(output_type: str, input_type: str) -> bool:
    """Whether a link from an output of `output_type` may feed an input of `input_type`.

    Follows the convention plugins rely on: `*` matches anything and a comma-separated
    list ("INT,FLOAT") is a union on either side.
    """
    if output_type == input_type or output_type == ANY or input_type == ANY:
        return True
    if "," not in output_type and "," not in input_type:
        return False
    return not _parts(output_type).isdisjoint(_parts(input_type))
