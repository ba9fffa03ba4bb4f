"""Plugin packs (custom_nodes/): discovery, loading, reloading, requirement checks, and ComfyUI's V1
node protocol. main.py wires this package to the registry and hands its report to the server; the
engine (graph/) never imports it.

    packs.py             finding packs on disk, the per-pack report, scanning a failed pack's source
    manager.py           PluginManager: threaded imports, registration, reloading, GET /plugins' report
    requirements.py      `main.py plugins check`: what a pack's requirements.txt would change
    comfy_v1.py          ComfyUI's V1 node classes adapted to graph.Node
    comfy_v1_runtime.py  the running V1 node's context, coroutines, DYNPROMPT
"""
