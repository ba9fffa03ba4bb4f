"""What `nodes` facades of built-in nodes need to look like ComfyUI's classes to packs.

Packs call core nodes by ComfyUI's method names (`nodes.KSampler().sample(...)`,
`VAEDecode().decode(vae, samples)`, `CLIPTextEncode().encode(clip, text)`), read `FUNCTION`, and read
class lists such as `ImageScale.upscale_methods`. `FUNCTIONS` names ComfyUI's method per node;
`common_ksampler` is nodes.py's shared KSampler function, over the engine's sampling.
"""

from __future__ import annotations

from typing import Any

FUNCTIONS = {
    "KSampler": "sample", "KSamplerAdvanced": "sample", "CLIPTextEncode": "encode", "CLIPSetLastLayer":
    "set_last_layer", "VAEDecode": "decode", "VAEDecodeTiled": "decode", "VAEEncode": "encode", "VAEEncodeTiled":
    "encode", "VAEEncodeForInpaint": "encode", "InpaintModelConditioning": "encode", "SetLatentNoiseMask":
    "set_mask", "CheckpointLoaderSimple": "load_checkpoint", "CheckpointLoader": "load_checkpoint",
    "DiffusersLoader": "load_checkpoint", "unCLIPCheckpointLoader": "load_checkpoint", "VAELoader": "load_vae",
    "LoraLoader": "load_lora", "LoraLoaderModelOnly": "load_lora_model_only", "CLIPLoader": "load_clip",
    "DualCLIPLoader": "load_clip", "UNETLoader": "load_unet", "ControlNetLoader": "load_controlnet",
    "ControlNetApply": "apply_controlnet", "ControlNetApplyAdvanced": "apply_controlnet",
    "UpscaleModelLoader": "load_model", "ImageUpscaleWithModel": "upscale", "ConditioningCombine": "combine",
    "ConditioningAverage": "addWeighted", "ConditioningConcat": "concat", "ConditioningSetArea": "append",
    "ConditioningSetAreaPercentage": "append", "ConditioningSetAreaStrength": "append",
    "ConditioningSetMask": "append", "ConditioningZeroOut": "zero_out", "ConditioningSetTimestepRange": "set_range",
    "EmptyLatentImage": "generate", "EmptyImage": "generate", "LatentUpscale": "upscale", "LatentUpscaleBy":
    "upscale", "LatentComposite": "composite", "LatentBlend": "blend", "LatentFromBatch": "frombatch",
    "RepeatLatentBatch": "repeat", "LatentRotate": "rotate", "LatentFlip": "flip", "LatentCrop": "crop",
    "SaveImage": "save_images", "PreviewImage": "save_images", "LoadImage": "load_image", "LoadImageMask":
    "load_image", "ImageScale": "upscale", "ImageScaleBy": "upscale", "ImageInvert": "invert", "ImageBatch":
    "batch", "ImagePadForOutpaint": "expand_image", "SaveLatent": "save", "LoadLatent": "load",
    "ImageToMask": "image_to_mask", "MaskToImage": "mask_to_image", "SolidMask": "solid", "InvertMask": "invert",
    "CropMask": "crop", "MaskComposite": "combine", "FeatherMask": "feather", "GrowMask": "expand_mask",
    "ImageCompositeMasked": "composite", "ImageBlur": "blur", "ImageSharpen": "sharpen", "ImageBlend":
    "blend_images", "ImageCrop": "crop", "LatentBatch": "batch", "CLIPTextEncodeSDXL": "encode",
    "CLIPTextEncodeSDXLRefiner": "encode", "SamplerCustom": "sample", "SamplerCustomAdvanced": "sample",
    "BasicScheduler": "get_sigmas", "KarrasScheduler": "get_sigmas", "ExponentialScheduler": "get_sigmas",
    "KSamplerSelect": "get_sampler", "RandomNoise": "get_noise", "DisableNoise": "get_noise", "CFGGuider":
    "get_guider", "BasicGuider": "get_guider", "SplitSigmas": "get_sigmas", "FlipSigmas": "get_sigmas",
    "PolyexponentialScheduler": "get_sigmas", "VPScheduler": "get_sigmas", "SDTurboScheduler": "get_sigmas",
    "AlignYourStepsScheduler": "get_sigmas", "GITSScheduler": "get_sigmas", "LatentAdd": "op", "LatentSubtract": "op",
    "LatentMultiply": "op", "LatentInterpolate": "op", "LatentCompositeMasked": "composite", "ThresholdMask":
    "image_to_mask", "DifferentialDiffusion": "apply", "ImageFromBatch": "frombatch", "RepeatImageBatch": "repeat",
    "ImageStitch": "stitch", "GetImageSize": "get_size", "ImageQuantize": "quantize", "ImageScaleToTotalPixels":
    "upscale", "SplitImageWithAlpha": "split_image_with_alpha", "JoinImageWithAlpha": "join_image_with_alpha",
    "RebatchLatents": "rebatch", "RebatchImages": "rebatch", "SaveAnimatedWEBP": "save_images",
    "SaveAnimatedPNG": "save_images",
}

# Where ComfyUI's method takes its arguments in another order than the node's inputs (positional calls).
POSITIONAL = {
    "VAEDecode": ("vae", "samples"), "VAEEncode": ("vae", "pixels"), "CLIPTextEncode": ("clip", "text"),
    "VAEDecodeTiled": ("vae", "samples", "tile_size", "overlap", "temporal_size", "temporal_overlap"),
    "VAEEncodeTiled": ("vae", "pixels", "tile_size", "overlap", "temporal_size", "temporal_overlap"),
    "VAEEncodeForInpaint": ("vae", "pixels", "mask", "grow_mask_by"),
    "InpaintModelConditioning": ("positive", "negative", "pixels", "vae", "mask", "noise_mask"),
}

# Class attributes packs read from core node classes, by the input whose choices they list.
CHOICE_ATTRIBUTES = {"upscale_method": "upscale_methods", "crop": "crop_methods", "rotation": "rotations",
                     "flip_method": "flip_methods"}


def choice_attributes(schema: Any) -> dict[str, list[Any]]:
    """`upscale_methods`, `crop_methods`, ... as the node's combo inputs list them."""
    found: dict[str, list[Any]] = {}
    for spec in schema.inputs:
        attr = CHOICE_ATTRIBUTES.get(spec.name)
        if attr is not None and callable(getattr(spec, "current_choices", None)):
            found[attr] = spec.current_choices()
    return found


def common_ksampler(model: Any, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, positive: Any,
                    negative: Any, latent: dict[str, Any], denoise: float = 1.0, disable_noise: bool = False,
                    start_step: int | None = None, last_step: int | None = None,
                    force_full_denoise: bool = False) -> tuple[dict[str, Any]]:
    """KSampler / KSamplerAdvanced as one function: (LATENT,), sampled with the engine's sampling."""
    from nodes.sampling.ksampler import SamplingRequest, sample

    from . import _runtime

    ctx = _runtime.context()
    req = SamplingRequest(seed=int(seed), steps=int(steps), cfg=float(cfg), sampler_name=sampler_name,
                          scheduler=scheduler, denoise=float(denoise), add_noise=not disable_noise,
                          start_step=start_step, last_step=last_step, force_full_denoise=force_full_denoise)
    progress = None if ctx is None else (lambda step, total, preview: ctx.progress(step, total, preview))
    return (sample(model, positive, negative, latent, req, progress=progress),)


__all__ = ["CHOICE_ATTRIBUTES", "FUNCTIONS", "POSITIONAL", "choice_attributes", "common_ksampler"]
