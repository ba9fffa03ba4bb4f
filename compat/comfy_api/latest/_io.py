"""`comfy_api.latest.io` types: the input and output declarations of ComfyUI's V3 node protocol.

A V3 node lists `io.Int.Input("steps", default=20, min=1)`, `io.Image.Output()` and so on in its
`io.Schema`. Each type is a class whose `io_type` is the socket name ("INT", "IMAGE", ...) with nested
`Input` / `Output` declaration classes that know their type. `plugins.comfy_v3` reads these declarations
(through `as_dict()`, the same options a V1 `INPUT_TYPES()` entry carries) into our typed schema.
Written from the protocol's public interface; the node classes live in `_io_node.py`.
"""

from __future__ import annotations

from enum import Enum, StrEnum
from typing import Any


def prune_dict(d: dict[str, Any]) -> dict[str, Any]:
    """The entries that are set (not None), as declarations serialise them."""
    return {k: v for k, v in d.items() if v is not None}


class FolderType(StrEnum):
    input = "input"
    output = "output"
    temp = "temp"


class UploadType(StrEnum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class NumberDisplay(StrEnum):
    number = "number"
    slider = "slider"


class RemoteOptions:
    """A combo whose options the editor fetches from a route."""

    def __init__(self, route: str, refresh_button: bool, control_after_refresh: str = "first",
                 timeout: int | None = None, max_retries: int | None = None, refresh: int | None = None) -> None:
        self.route, self.refresh_button, self.control_after_refresh = route, refresh_button, control_after_refresh
        self.timeout, self.max_retries, self.refresh = timeout, max_retries, refresh

    def as_dict(self) -> dict[str, Any]:
        return prune_dict({"route": self.route, "refresh_button": self.refresh_button,
                           "control_after_refresh": self.control_after_refresh, "timeout": self.timeout,
                           "max_retries": self.max_retries, "refresh": self.refresh})


# -- declarations --------------------------------------------------------------------------------------
class _IO:
    Parent: Any = None

    def validate(self) -> None:
        """Declarations check themselves when the schema is read (see plugins.comfy_v3)."""

    @property
    def io_type(self) -> str:
        return self.Parent.io_type

    @property
    def Type(self) -> Any:  # noqa: N802 - the protocol's name
        return self.Parent.Type


class Input(_IO):
    """One input of a node: a socket (and, for widget types, a value typed into the node)."""

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, extra_dict: dict[str, Any] | None = None, raw_link: bool | None = None,
                 **more: Any) -> None:
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = dict(extra_dict or {})
        self.raw_link = raw_link
        self.more = more  # options newer than this layer, kept for /object_info

    def as_dict(self) -> dict[str, Any]:
        return {**prune_dict({"display_name": self.display_name, "optional": self.optional or None,
                              "tooltip": self.tooltip, "lazy": self.lazy, "rawLink": self.raw_link}),
                **prune_dict(self.more), **prune_dict(self.extra_dict)}

    def get_io_type(self) -> str:
        return self.io_type

    def get_all(self) -> list[Input]:
        return [self]


class WidgetInput(Input):
    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, default: Any = None, socketless: bool | None = None,
                 widget_type: str | None = None, force_input: bool | None = None,
                 extra_dict: dict[str, Any] | None = None, raw_link: bool | None = None, **more: Any) -> None:
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link, **more)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), **prune_dict({"default": self.default, "socketless": self.socketless,
                                                   "widgetType": self.widget_type, "forceInput": self.force_input})}

    def get_io_type(self) -> str:
        return self.widget_type if self.widget_type is not None else super().get_io_type()


class Output(_IO):
    def __init__(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None,
                 is_output_list: bool = False) -> None:
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    def as_dict(self) -> dict[str, Any]:
        return prune_dict({"display_name": self.display_name, "tooltip": self.tooltip,
                           "is_output_list": self.is_output_list})

    def get_io_type(self) -> str:
        return self.io_type


class _ComfyType:
    Type: Any = Any
    io_type: str = ""


class ComfyTypeI(_ComfyType):
    """A type with only an Input declaration."""

    class Input(Input):
        pass


class ComfyTypeIO(ComfyTypeI):
    """A type with Input and Output declarations."""

    class Output(Output):
        pass


def comfytype(io_type: str, **_: Any) -> Any:
    """Class decorator: bind `io_type` to a type and give it its own Input/Output classes."""

    def decorate(cls: type) -> type:
        if not issubclass(cls, _ComfyType):
            body = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
            cls = type(cls.__name__, (cls, ComfyTypeIO), body)
        cls.io_type = io_type
        for part in ("Input", "Output"):
            decl = getattr(cls, part, None)
            if isinstance(decl, type):
                if part not in cls.__dict__ or getattr(decl, "Parent", None) not in (None, cls):
                    decl = type(part, (decl,), {"__module__": cls.__module__, "__qualname__": f"{cls.__name__}.{part}"})
                decl.Parent = cls
                setattr(cls, part, decl)
        return cls

    return decorate


def Custom(io_type: str) -> type[ComfyTypeIO]:  # noqa: N802 - the protocol's name
    """A socket type of the pack's own (e.g. "MY_DATA"): Input and Output link only to the same name."""
    return comfytype(io_type)(type("Custom", (ComfyTypeIO,), {"__module__": __name__}))


def _socket(name: str, io_type: str) -> Any:
    return comfytype(io_type)(type(name, (ComfyTypeIO,), {"__module__": __name__, "__qualname__": name}))


# -- widget types ---------------------------------------------------------------------------------------
@comfytype(io_type="BOOLEAN")
class Boolean(ComfyTypeIO):
    Type = bool

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: bool | None = None,
                     label_on: str | None = None, label_off: str | None = None, socketless: bool | None = None,
                     force_input: bool | None = None, extra_dict: dict | None = None, raw_link: bool | None = None,
                     **more: Any) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link, **more)
            self.label_on, self.label_off = label_on, label_off

        def as_dict(self) -> dict[str, Any]:
            return {**super().as_dict(), **prune_dict({"label_on": self.label_on, "label_off": self.label_off})}


@comfytype(io_type="INT")
class Int(ComfyTypeIO):
    Type = int

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: int | None = None,
                     min: int | None = None, max: int | None = None, step: int | None = None,
                     control_after_generate: bool | None = None, display_mode: NumberDisplay | None = None,
                     socketless: bool | None = None, force_input: bool | None = None, extra_dict: dict | None = None,
                     raw_link: bool | None = None, **more: Any) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link, **more)
            self.min, self.max, self.step = min, max, step
            self.control_after_generate, self.display_mode = control_after_generate, display_mode

        def as_dict(self) -> dict[str, Any]:
            display = self.display_mode.value if isinstance(self.display_mode, Enum) else self.display_mode
            return {**super().as_dict(), **prune_dict({"min": self.min, "max": self.max, "step": self.step,
                                                       "control_after_generate": self.control_after_generate,
                                                       "display": display})}


@comfytype(io_type="FLOAT")
class Float(ComfyTypeIO):
    Type = float

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: float | None = None,
                     min: float | None = None, max: float | None = None, step: float | None = None,
                     round: float | None = None, display_mode: NumberDisplay | None = None,
                     socketless: bool | None = None, force_input: bool | None = None, extra_dict: dict | None = None,
                     raw_link: bool | None = None, **more: Any) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link, **more)
            self.min, self.max, self.step, self.round, self.display_mode = min, max, step, round, display_mode

        def as_dict(self) -> dict[str, Any]:
            display = self.display_mode.value if isinstance(self.display_mode, Enum) else self.display_mode
            return {**super().as_dict(), **prune_dict({"min": self.min, "max": self.max, "step": self.step,
                                                       "round": self.round, "display": display})}


@comfytype(io_type="STRING")
class String(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, multiline: bool = False,
                     placeholder: str | None = None, default: str | None = None, dynamic_prompts: bool | None = None,
                     socketless: bool | None = None, force_input: bool | None = None, extra_dict: dict | None = None,
                     raw_link: bool | None = None, **more: Any) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link, **more)
            self.multiline, self.placeholder, self.dynamic_prompts = multiline, placeholder, dynamic_prompts

        def as_dict(self) -> dict[str, Any]:
            return {**super().as_dict(), **prune_dict({"multiline": self.multiline or None,
                                                       "placeholder": self.placeholder,
                                                       "dynamicPrompts": self.dynamic_prompts})}


@comfytype(io_type="COMBO")
class Combo(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, options: Any = None, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: Any = None,
                     control_after_generate: bool | None = None, upload: UploadType | None = None,
                     image_folder: FolderType | None = None, remote: RemoteOptions | None = None,
                     socketless: bool | None = None, extra_dict: dict | None = None, raw_link: bool | None = None,
                     **more: Any) -> None:
            if isinstance(options, type) and issubclass(options, Enum):
                options = [member.value for member in options]
            if isinstance(default, Enum):
                default = default.value
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, None,
                             extra_dict, raw_link, **more)
            self.options = list(options) if options is not None else []
            self.multiselect = False
            self.control_after_generate, self.upload = control_after_generate, upload
            self.image_folder, self.remote = image_folder, remote

        def as_dict(self) -> dict[str, Any]:
            extra = {self.upload.value: True} if isinstance(self.upload, UploadType) else {}
            return {**super().as_dict(), **prune_dict({
                "multiselect": self.multiselect or None, "options": self.options,
                "control_after_generate": self.control_after_generate, **extra,
                "image_folder": self.image_folder.value if isinstance(self.image_folder, Enum) else None,
                "remote": self.remote.as_dict() if self.remote is not None else None})}

    class Output(Output):
        def __init__(self, id: str | None = None, display_name: str | None = None, options: list | None = None,
                     tooltip: str | None = None, is_output_list: bool = False) -> None:
            super().__init__(id, display_name, tooltip, is_output_list)
            self.options = list(options or [])


@comfytype(io_type="COMBO")
class MultiCombo(ComfyTypeI):
    Type = list

    class Input(Combo.Input):
        def __init__(self, id: str, options: list, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: list | None = None,
                     placeholder: str | None = None, chip: bool | None = None,
                     control_after_generate: bool | None = None, socketless: bool | None = None,
                     extra_dict: dict | None = None, raw_link: bool | None = None, **more: Any) -> None:
            super().__init__(id, options, display_name, optional, tooltip, lazy, default, control_after_generate,
                             socketless=socketless, extra_dict=extra_dict, raw_link=raw_link, **more)
            self.multiselect = True
            self.placeholder, self.chip = placeholder, chip

        def as_dict(self) -> dict[str, Any]:
            return {**super().as_dict(), **prune_dict({"multi_select": True, "placeholder": self.placeholder,
                                                       "chip": self.chip})}


@comfytype(io_type="WEBCAM")
class Webcam(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        pass


# -- socket types (values flow only through links) ------------------------------------------------------
Image = _socket("Image", "IMAGE")
Mask = _socket("Mask", "MASK")
Latent = _socket("Latent", "LATENT")
Conditioning = _socket("Conditioning", "CONDITIONING")
Sampler = _socket("Sampler", "SAMPLER")
Sigmas = _socket("Sigmas", "SIGMAS")
Noise = _socket("Noise", "NOISE")
Guider = _socket("Guider", "GUIDER")
Clip = _socket("Clip", "CLIP")
ControlNet = _socket("ControlNet", "CONTROL_NET")
Vae = _socket("Vae", "VAE")
Model = _socket("Model", "MODEL")
ClipVision = _socket("ClipVision", "CLIP_VISION")
ClipVisionOutput = _socket("ClipVisionOutput", "CLIP_VISION_OUTPUT")
StyleModel = _socket("StyleModel", "STYLE_MODEL")
Gligen = _socket("Gligen", "GLIGEN")
UpscaleModel = _socket("UpscaleModel", "UPSCALE_MODEL")
LatentUpscaleModel = _socket("LatentUpscaleModel", "LATENT_UPSCALE_MODEL")
Audio = _socket("Audio", "AUDIO")
Video = _socket("Video", "VIDEO")
SVG = _socket("SVG", "SVG")
LoraModel = _socket("LoraModel", "LORA_MODEL")
LossMap = _socket("LossMap", "LOSS_MAP")
Voxel = _socket("Voxel", "VOXEL")
Mesh = _socket("Mesh", "MESH")
Hooks = _socket("Hooks", "HOOKS")
HookKeyframes = _socket("HookKeyframes", "HOOK_KEYFRAMES")
TimestepsRange = _socket("TimestepsRange", "TIMESTEPS_RANGE")
LatentOperation = _socket("LatentOperation", "LATENT_OPERATION")
FlowControl = _socket("FlowControl", "FLOW_CONTROL")
Accumulation = _socket("Accumulation", "ACCUMULATION")
Load3DCamera = _socket("Load3DCamera", "LOAD3D_CAMERA")
Load3D = _socket("Load3D", "LOAD_3D")
Load3DAnimation = _socket("Load3DAnimation", "LOAD_3D_ANIMATION")
Photomaker = _socket("Photomaker", "PHOTOMAKER")
Point = _socket("Point", "POINT")
FaceAnalysis = _socket("FaceAnalysis", "FACE_ANALYSIS")
BBOX = _socket("BBOX", "BBOX")
SEGS = _socket("SEGS", "SEGS")
AnyType = _socket("AnyType", "*")
MODEL_PATCH = _socket("MODEL_PATCH", "MODEL_PATCH")
AudioEncoder = _socket("AudioEncoder", "AUDIO_ENCODER")
AudioEncoderOutput = _socket("AudioEncoderOutput", "AUDIO_ENCODER_OUTPUT")
Tracks = _socket("Tracks", "TRACKS")
WanCameraEmbedding = _socket("WanCameraEmbedding", "WAN_CAMERA_EMBEDDING")


__all__ = ["Accumulation", "AnyType", "Audio", "AudioEncoder", "AudioEncoderOutput", "BBOX", "Boolean", "Clip",
           "ClipVision", "ClipVisionOutput", "Combo", "ComfyTypeI", "ComfyTypeIO", "Conditioning", "ControlNet",
           "Custom", "FaceAnalysis", "Float", "FlowControl", "FolderType", "Gligen", "Guider", "HookKeyframes",
           "Hooks", "Image", "Input", "Int", "Latent", "LatentOperation", "LatentUpscaleModel", "Load3D",
           "Load3DAnimation", "Load3DCamera", "LoraModel", "LossMap", "MODEL_PATCH", "Mask", "Mesh", "Model",
           "MultiCombo", "Noise", "NumberDisplay", "Output", "Photomaker", "Point", "RemoteOptions", "SEGS", "SVG",
           "Sampler", "Sigmas", "String", "StyleModel", "TimestepsRange", "Tracks", "UploadType", "UpscaleModel",
           "Vae", "Video", "Voxel", "WanCameraEmbedding", "Webcam", "WidgetInput", "comfytype", "prune_dict"]
