"""`comfy_extras` for ComfyUI packs: the modules of ComfyUI's extra nodes that Sumie has as built-in nodes.

Each `comfy_extras.nodes_*` module here answers the class names packs import (`from
comfy_extras.nodes_custom_sampler import BasicScheduler`) with the `nodes` facade of the engine's own node
(ComfyUI's method names, e.g. `BasicScheduler().get_sigmas(model, "normal", 20, 1.0)`), plus the few helper
functions and classes packs use (`Noise_RandomNoise`, `nodes_mask.composite`). A name Sumie has no node
for raises an AttributeError naming it; a module not listed here is "not provided".
"""
