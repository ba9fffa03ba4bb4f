"""A pack in the patterns of an Impact-style pack: core nodes through nodes.NODE_CLASS_MAPPINGS and their
ComfyUI method names, its own sampling with comfy.sample, preview callbacks, optional ComfyUI internals
imported defensively."""

import comfy
import comfy.sample
import comfy.samplers
import folder_paths
import latent_preview
from comfy_execution.graph import ExecutionBlocker  # noqa: F401 - imported by flow-control packs
from comfy_extras import nodes_differential_diffusion
from comfy_extras.nodes_custom_sampler import Noise_RandomNoise

import nodes

try:  # packs guard optional parts of ComfyUI like this; here the import fails and the pack still loads
    from comfy.k_diffusion import sampling as k_diffusion_sampling
except ImportError:
    k_diffusion_sampling = None


class DetailSampler:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "clip": ("CLIP",), "vae": ("VAE",), "latent": ("LATENT",),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
                             "sampler_name": (comfy.samplers.KSampler.SAMPLERS,),
                             "scheduler": (comfy.samplers.KSampler.SCHEDULERS,)}}

    RETURN_TYPES = ("LATENT", "LATENT", "IMAGE", "STRING")
    FUNCTION = "doit"

    def doit(self, model, clip, vae, latent, seed, sampler_name, scheduler):
        encode = nodes.NODE_CLASS_MAPPINGS["CLIPTextEncode"]()
        positive = getattr(encode, encode.FUNCTION)(clip, "a cat")[0]
        negative = nodes.CLIPTextEncode().encode(clip, "")[0]
        via_node = nodes.KSampler().sample(model, seed, 2, 2.0, sampler_name, scheduler, positive, negative, latent)[0]
        samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
        noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
        if not bool((Noise_RandomNoise(seed).generate_noise(latent) == noise).all()):
            raise AssertionError("Noise_RandomNoise and prepare_noise disagree")
        model = nodes_differential_diffusion.DifferentialDiffusion().apply(model)[0]
        callback = latent_preview.prepare_callback(model, 2)
        own = comfy.sample.sample(model, noise, 2, 2.0, sampler_name, scheduler, positive, negative, samples,
                                  callback=callback, seed=seed)
        image = nodes.VAEDecode().decode(vae, via_node)[0]
        temp = folder_paths.get_temp_directory()
        info = f"{k_diffusion_sampling is None}:{nodes.KSampler.FUNCTION}:{nodes.VAEDecode.FUNCTION}:{bool(temp)}"
        return (via_node, {"samples": own}, image, info)


NODE_CLASS_MAPPINGS = {"IS_DetailSampler": DetailSampler}
