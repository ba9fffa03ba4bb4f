"""`comfy_execution` for ComfyUI packs: only `ExecutionBlocker` (graph, graph_utils).

Sumie's engine cannot block the nodes downstream of a value, so a node that outputs an `ExecutionBlocker`
fails with a message saying so (plugins.comfy_v1 / comfy_v3); packs that merely import it load.
"""
