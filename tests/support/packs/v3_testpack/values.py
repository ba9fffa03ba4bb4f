"""V3 nodes about declarations: widgets, sockets, custom and multi types, dynamic inputs, hidden inputs."""

import importlib

from comfy_api.latest import io, ui
from comfy_api.v0_0_2 import io as io_v2

MY_DATA = io.Custom("MY_DATA")
folder_paths = importlib.import_module("folder_paths")  # packs do this too; it must reach the shim
CHECKPOINTS = folder_paths.get_filename_list("checkpoints")


class Numbers(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="V3Numbers", display_name="V3 Numbers", category="tests/v3", description="widgets of every kind",
            inputs=[
                io.Int.Input("count", default=3, min=1, max=10, step=1, display_mode=io.NumberDisplay.slider,
                             tooltip="how many"),
                io.Float.Input("scale", default=0.5, min=0.0, max=2.0, step=0.05, round=0.01),
                io.String.Input("label", default="x", multiline=True, placeholder="label"),
                io.Boolean.Input("loud", default=False, label_on="LOUD", label_off="quiet"),
                io.Combo.Input("shape", options=["circle", "square"], default="square"),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             optional=True),
            ],
            outputs=[io.String.Output(display_name="text"), MY_DATA.Output("data"), io.Float.Output()],
        )

    @classmethod
    def execute(cls, count, scale, label, loud, shape, seed=0) -> io.NodeOutput:
        text = (label.upper() if loud else label) * count
        return io.NodeOutput(f"{text}:{shape}", {"scale": scale, "seed": seed}, count * scale)


class Describe(io.ComfyNode):
    """Takes the pack's custom type and any of INT/FLOAT (MultiType), shows text in the editor."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="V3Describe", category="tests/v3", is_output_node=True,
            inputs=[MY_DATA.Input("data"),
                    io.MultiType.Input(io.Float.Input("amount", default=1.0, min=0.0, max=5.0),
                                       types=[io.Int])],
            outputs=[io.String.Output()],
        )

    @classmethod
    def execute(cls, data, amount) -> io.NodeOutput:
        text = f"{sorted(data.items())}*{amount}"
        return io.NodeOutput(text, ui=ui.PreviewText(text))


class Spec(io_v2.ComfyNode):
    """Declared through a versioned alias; socket types of the SD pipeline."""

    @classmethod
    def define_schema(cls) -> io_v2.Schema:
        return io_v2.Schema(
            node_id="V3Spec", category="tests/v3",
            inputs=[io_v2.Model.Input("model", optional=True), io_v2.Clip.Input("clip", optional=True),
                    io_v2.Vae.Input("vae", optional=True), io_v2.Conditioning.Input("positive", optional=True),
                    io_v2.Latent.Input("latent", optional=True), io_v2.Image.Input("image", optional=True),
                    io_v2.Mask.Input("mask", optional=True), io_v2.Sigmas.Input("sigmas", optional=True),
                    io_v2.Noise.Input("noise", optional=True), io_v2.Sampler.Input("sampler", optional=True),
                    io_v2.Guider.Input("guider", optional=True), io_v2.ControlNet.Input("control", optional=True),
                    io_v2.UpscaleModel.Input("upscaler", optional=True)],
            outputs=[io_v2.Int.Output(is_output_list=True)],
        )

    @classmethod
    def execute(cls, **given) -> io_v2.NodeOutput:
        return io_v2.NodeOutput([len(given), len(given) + 2])


class Strict(io.ComfyNode):
    """validate_inputs takes `value` by name, so the built-in range check is skipped for it."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="V3Strict", category="tests/v3",
                         inputs=[io.Int.Input("value", default=5, min=0, max=10)], outputs=[io.Int.Output()])

    @classmethod
    def validate_inputs(cls, value) -> bool | str:
        return True if value % 2 == 0 else f"value must be even, got {value}"

    @classmethod
    def execute(cls, value) -> io.NodeOutput:
        return io.NodeOutput(value)


class Whoami(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="V3Whoami", category="tests/v3", hidden=[io.Hidden.unique_id, io.Hidden.dynprompt,
                                                                           io.Hidden.api_key_comfy_org],
                         is_output_node=True, outputs=[io.String.Output()])

    @classmethod
    def execute(cls) -> io.NodeOutput:
        me = cls.hidden.dynprompt.get_node(cls.hidden.unique_id)["class_type"]
        return io.NodeOutput(f"{cls.hidden.unique_id}:{me}:{sorted(cls.hidden.prompt)}:{cls.hidden.extra_pnginfo}:"
                             f"{cls.hidden.api_key_comfy_org}")


class Growing(io.ComfyNode):
    """Autogrow: values0, values1, ... arrive as one dict."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        template = io.Autogrow.TemplatePrefix(io.Int.Input("n"), prefix="values", min=2, max=4)
        return io.Schema(node_id="V3Growing", category="tests/v3",
                         inputs=[io.Autogrow.Input("values", template=template)], outputs=[io.String.Output()])

    @classmethod
    def execute(cls, values) -> io.NodeOutput:
        return io.NodeOutput(f"{sorted(values.items())}")


class Mode(io.ComfyNode):
    """DynamicCombo: the chosen option's inputs arrive with the choice."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="V3Mode", category="tests/v3", inputs=[io.DynamicCombo.Input("mode", options=[
            io.DynamicCombo.Option("add", [io.Int.Input("a", default=1), io.Int.Input("b", default=2)]),
            io.DynamicCombo.Option("neg", [io.Int.Input("a", default=1)]),
        ])], outputs=[io.Int.Output()])

    @classmethod
    def execute(cls, mode) -> io.NodeOutput:
        return io.NodeOutput(mode["a"] + mode["b"] if mode["mode"] == "add" else -mode["a"])


class PassSame(io.ComfyNode):
    """MatchType: output type follows the template (INT or STRING here)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        template = io.MatchType.Template("t", allowed_types=[io.Int, io.String])
        return io.Schema(node_id="V3PassSame", category="tests/v3",
                         inputs=[io.MatchType.Input("value", template=template)],
                         outputs=[io.MatchType.Output(template=template)])

    @classmethod
    def execute(cls, value) -> io.NodeOutput:
        return io.NodeOutput(value)


class TextList(io.ComfyNode):
    """is_input_list: the whole list in one call."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="V3TextList", category="tests/v3", is_input_list=True,
                         inputs=[io.Int.Input("items", force_input=True)], outputs=[io.String.Output()])

    @classmethod
    def execute(cls, items) -> io.NodeOutput:
        return io.NodeOutput("+".join(map(str, items)))
