"""An example plugin pack for Sumie: copy this folder to start your own (docs/plugins.md).

The entry point is two module attributes: `SUMIE_API = 1` (the plugin API version this pack is
written for) and `NODES`, a list of node classes, exactly like a built-in node module.
`WEB_DIRECTORY` names a folder of JavaScript the editor loads (served at /extensions/example_pack/).
`comfy_entrypoint` adds the nodes of v3_nodes.py, written in ComfyUI's V3 protocol (a pack may speak both).
"""

from .image_nodes import ExampleTintImage
from .text_nodes import ExampleColorSwatch, ExampleLazySwitch, ExampleRepeatText, ExampleShowText
from .v3_nodes import comfy_entrypoint  # noqa: F401 - the V3 entry point the loader looks for

SUMIE_API = 1
NODES = [ExampleRepeatText, ExampleShowText, ExampleLazySwitch, ExampleTintImage, ExampleColorSwatch]
WEB_DIRECTORY = "web"
