"""A pack in the patterns of an essentials-style utility pack: sampler lists in INPUT_TYPES, resizing with
comfy.utils, devices from comfy.model_management, conditioning helpers and core nodes called from `nodes`."""

import comfy.model_management
import comfy.samplers
import comfy.utils
import folder_paths
import node_helpers
from comfy_extras.nodes_custom_sampler import BasicGuider, BasicScheduler, Noise_RandomNoise, SamplerCustomAdvanced
from comfy_extras.nodes_latent import LatentBatch

from nodes import MAX_RESOLUTION, CLIPTextEncode, common_ksampler


class SamplerSelectHelper:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sampler_name": (comfy.samplers.KSampler.SAMPLERS,),
                             "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": "karras"})}}

    RETURN_TYPES = ("SAMPLER", "STRING")
    FUNCTION = "execute"
    CATEGORY = "essentials_style"

    def execute(self, sampler_name, scheduler):
        return (comfy.samplers.sampler_object(sampler_name), f"{sampler_name}/{scheduler}")


class ImageResize:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "width": ("INT", {"default": 8, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                             "height": ("INT", {"default": 8, "min": 1, "max": MAX_RESOLUTION, "step": 1})}}

    RETURN_TYPES = ("IMAGE", "STRING")
    FUNCTION = "execute"

    def execute(self, image, width, height):
        out = comfy.utils.common_upscale(image.movedim(-1, 1), width, height, "bilinear", "disabled").movedim(1, -1)
        out = out.to(comfy.model_management.intermediate_device())
        files = folder_paths.get_filename_list("checkpoints")
        return (out, f"{comfy.model_management.get_torch_device().type}:{len(files)}")


class ConditioningStrength:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",),
                             "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "execute"

    def execute(self, conditioning, strength):
        return (node_helpers.conditioning_set_values(conditioning, {"strength": strength}),)


class QuickSample:
    """Encodes its own prompts and samples through nodes.common_ksampler, as KSampler-variation nodes do."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "clip": ("CLIP",), "latent": ("LATENT",),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
                             "text": ("STRING", {"default": "a cat"})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "execute"

    def execute(self, model, clip, latent, seed, text):
        positive = CLIPTextEncode().encode(clip, text)[0]
        negative = CLIPTextEncode().encode(clip, "")[0]
        return common_ksampler(model, seed, 2, 2.0, "euler", "normal", positive, negative, latent)


class SeedSweep:
    """Samples two seeds with the custom-sampling nodes from comfy_extras, as parameter-sweep nodes do."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "conditioning": ("CONDITIONING",), "latent": ("LATENT",),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 1000})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "execute"

    def execute(self, model, conditioning, latent, seed):
        guider = BasicGuider().get_guider(model, conditioning)[0]
        sigmas = BasicScheduler.execute(model, "normal", 2, 1.0)[0]  # the V3-style call works too
        sampler = comfy.samplers.sampler_object("euler")
        out = [SamplerCustomAdvanced().sample(Noise_RandomNoise(n), guider, sampler, sigmas, latent)[0]
               for n in (seed, seed + 1)]
        return LatentBatch().batch(out[0], out[1])


NODE_CLASS_MAPPINGS = {"ES_SeedSweep": SeedSweep, "ES_SamplerSelectHelper": SamplerSelectHelper,
                       "ES_ImageResize": ImageResize, "ES_ConditioningStrength": ConditioningStrength,
                       "ES_QuickSample": QuickSample}
