"""A pack in the patterns of rgthree-style nodes: its own HTTP routes, model file lists, combo lists read
from core node classes, and core nodes called directly."""

import comfy.samplers
import folder_paths
from aiohttp import web

from nodes import MAX_RESOLUTION, EmptyLatentImage, ImageScale
from server import PromptServer


@PromptServer.instance.routes.get("/rgthree_style/loras")
async def list_loras(request):
    return web.json_response(folder_paths.get_filename_list("loras"))


class SizedLatent:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 64, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
                             "height": ("INT", {"default": 64, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
                             "method": (ImageScale.upscale_methods,),
                             "scheduler": (comfy.samplers.KSampler.SCHEDULERS,)}}

    RETURN_TYPES = ("LATENT", "STRING")
    FUNCTION = "main"

    def main(self, width, height, method, scheduler):
        return (EmptyLatentImage().generate(width, height, 1)[0], f"{method}/{scheduler}")


NODE_CLASS_MAPPINGS = {"RG_SizedLatent": SizedLatent}
