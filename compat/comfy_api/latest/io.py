"""`comfy_api.latest.io`: every declaration of the V3 node protocol in one namespace (see _io*.py)."""

from ._io import *  # noqa: F403 - the protocol's namespace
from ._io import __all__ as _types
from ._io_dynamic import Autogrow, DynamicCombo, DynamicInput, MatchType, MultiType
from ._io_node import ComfyNode, Hidden, HiddenHolder, NodeOutput, Schema, _UIOutput, overrides

__all__ = [*_types, "Autogrow", "ComfyNode", "DynamicCombo", "DynamicInput", "Hidden", "HiddenHolder", "MatchType",
           "MultiType", "NodeOutput", "Schema", "_UIOutput", "overrides"]
