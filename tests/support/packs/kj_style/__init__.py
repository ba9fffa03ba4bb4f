"""A pack in the patterns of a KJ-style pack: V3 nodes next to V1 ones, model_management device queries,
PromptServer messages, comfy.utils.ProgressBar and the interrupt check."""

import comfy.model_management as mm
import comfy.samplers
import comfy.utils
from comfy import model_management
from comfy_api.latest import ComfyExtension, io

from server import PromptServer


class CountSteps(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="KJ_CountSteps", category="kj_style", is_output_node=True,
                         inputs=[io.Int.Input("steps", default=3, min=1, max=10)],
                         outputs=[io.String.Output(display_name="device")], hidden=[io.Hidden.unique_id])

    @classmethod
    def execute(cls, steps):
        bar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            mm.throw_exception_if_processing_interrupted()
            bar.update(1)
        PromptServer.instance.send_sync("kj_style.done", {"node": cls.hidden.unique_id, "steps": steps})
        device = model_management.get_torch_device()
        return io.NodeOutput(f"{device.type}:{mm.intermediate_dtype()}")


class ImageInfo:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("INT", "INT", "INT")
    RETURN_NAMES = ("width", "height", "count")
    FUNCTION = "info"

    def info(self, image):
        return (image.shape[2], image.shape[1], image.shape[0])


def euler_written_by_the_pack(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """A k-diffusion-style sampler as packs ship them: model(x, sigma * s_in) and a callback dict per step."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **(extra_args or {}))
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


class OwnSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="KJ_OwnSampler", category="kj_style", outputs=[io.Sampler.Output()])

    @classmethod
    def execute(cls):
        return io.NodeOutput(comfy.samplers.KSAMPLER(euler_written_by_the_pack))


class Extension(ComfyExtension):
    async def get_node_list(self):
        return [CountSteps, OwnSampler]


async def comfy_entrypoint():
    return Extension()


NODE_CLASS_MAPPINGS = {"KJ_ImageInfo": ImageInfo}
