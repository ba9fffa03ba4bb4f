"""The HTTP and websocket server: ComfyUI's wire API on top of the engine, with a crash-proof job queue.

Imports no torch and no `nodes`: torch-dependent facts reach it through executor services.
"""
