"""`comfy_api.latest.ui`: ui outputs of V3 nodes (see _ui.py)."""

from ._ui import *  # noqa: F403 - the protocol's namespace
from ._ui import __all__  # noqa: F401
