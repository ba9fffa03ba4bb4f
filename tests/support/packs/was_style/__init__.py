"""A pack in the patterns of a WAS-style suite: modules looked up with importlib, weights read with
comfy.utils.load_torch_file, device names from comfy.model_management."""

import importlib

comfy_utils = importlib.import_module("comfy.utils")
folder_paths = importlib.import_module("folder_paths")
model_management = importlib.import_module("comfy.model_management")
nodes = importlib.import_module("nodes")


class CheckpointKeys:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),)}}

    RETURN_TYPES = ("INT", "STRING")
    FUNCTION = "count"

    def count(self, ckpt_name):
        sd = comfy_utils.load_torch_file(folder_paths.get_full_path("checkpoints", ckpt_name), safe_load=True)
        name = model_management.get_torch_device_name(model_management.get_torch_device())
        return (len(sd), f"{name}:{nodes.MAX_RESOLUTION}")


NODE_CLASS_MAPPINGS = {"WAS_CheckpointKeys": CheckpointKeys}
