"""`comfy_extras.nodes_custom_sampler`: the custom-sampling nodes, and the NOISE classes packs build."""

from __future__ import annotations

from typing import Any

from nodes.sampling.ksampler import NoiseSpec

from ._facades import node_attribute

NODES = {name: name for name in (
    "SamplerCustom", "SamplerCustomAdvanced", "BasicScheduler", "KarrasScheduler", "ExponentialScheduler",
    "PolyexponentialScheduler", "VPScheduler", "SDTurboScheduler", "KSamplerSelect", "SplitSigmas", "CFGGuider",
    "BasicGuider", "RandomNoise", "DisableNoise")}


class Noise_RandomNoise(NoiseSpec):  # noqa: N801 - ComfyUI's name
    """NOISE for a seed: `Noise_RandomNoise(seed).generate_noise(latent)` is KSampler's initial noise."""

    def __init__(self, seed: int) -> None:
        object.__setattr__(self, "seed", int(seed))
        object.__setattr__(self, "enabled", True)


class Noise_EmptyNoise(NoiseSpec):  # noqa: N801 - ComfyUI's name
    """NOISE of zeros (DisableNoise)."""

    def __init__(self) -> None:
        object.__setattr__(self, "seed", 0)
        object.__setattr__(self, "enabled", False)


def __getattr__(name: str) -> Any:
    return node_attribute(__name__, NODES, name)


__all__ = ["Noise_EmptyNoise", "Noise_RandomNoise"]
