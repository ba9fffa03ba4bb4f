"""JSON text as it goes over the wire (websocket messages, HTTP bodies) and into the job store.

Strict JSON only: NaN and Infinity become strings, and objects JSON cannot hold are rendered with
repr() rather than failing a whole message.
"""

from __future__ import annotations

import json
import math
from typing import Any


def dumps(value: Any) -> str:
    """JSON text for storage and the wire: never NaN/Infinity, odd objects rendered as strings."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return json.dumps(_json_safe(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return repr(value)


def wire_number(number: float) -> int | float:
    return int(number) if float(number).is_integer() else number
