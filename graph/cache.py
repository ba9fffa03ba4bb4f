"""Cache keys by input signature, and the cache policies behind one interface.

A node's key hashes its class, version, fingerprint, constants and its ancestors' keys, so the same
sub-graph shares results across prompts and node ids. Anything that cannot be rendered canonically
gets a fresh random key: it and everything downstream of it is never served from the cache.
"""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, Protocol

from .errors import MISSING
from .registry import NodeDef
from .sizing import estimate_size
from .workflow import Link, NodeInstance

Key = bytes
_SCALARS = (str, int, float, bool, type(None))


_DIGEST = 16


def uncacheable_key() -> Key:
    """A fresh random key, one byte longer than any digest so it can never be mistaken for one."""
    return os.urandom(_DIGEST + 1)


def is_uncacheable(key: Key) -> bool:
    return len(key) != _DIGEST


def _canonical(value: Any) -> Any:
    if type(value) in _SCALARS:
        if type(value) is float and not math.isfinite(value):
            return repr(value)
        return value
    return json.dumps(value, sort_keys=True, allow_nan=False, separators=(",", ":"))


def node_key(
    node: NodeInstance,
    node_def: NodeDef,
    keys: dict[str, Key],
    fingerprint: Callable[[NodeInstance, NodeDef], Any] | None = None,
) -> Key:
    """The signature of one node, given its ancestors' keys (so callers go in topological order)."""
    parts: list[Any] = [node.class_type, node_def.schema.version]
    if node_def.has_fingerprint and fingerprint is not None:
        try:
            fp = fingerprint(node, node_def)
        except Exception:
            return uncacheable_key()
        if isinstance(fp, float) and math.isnan(fp):
            return uncacheable_key()
        try:
            parts.append(_canonical(fp))
        except (TypeError, ValueError):
            return uncacheable_key()
    if node_def.keyed_by_node_id:
        parts.append(("#id", node.id))
    inputs = node.inputs
    append = parts.append
    for name in node_def.inputs:
        value = inputs.get(name, MISSING)
        if value is MISSING:
            continue
        if type(value) is Link:
            src_key = keys.get(value.node_id)
            if src_key is None or len(src_key) != _DIGEST:
                return uncacheable_key()
            append((name, src_key, value.output_index))
        elif type(value) in _SCALARS and type(value) is not float:
            append((name, value))
        else:
            try:
                parts.append((name, _canonical(value)))
            except (TypeError, ValueError):
                return uncacheable_key()
    return blake2b(repr(parts).encode("utf-8", "backslashreplace"), digest_size=_DIGEST).digest()


@dataclass(slots=True)
class CacheEntry:
    outputs: tuple[list[Any], ...]
    ui: dict[str, Any] | None
    size: int = -1

    def nbytes(self) -> int:
        if self.size < 0:
            self.size = estimate_size(self.outputs)
        return self.size


class CachePolicy(Protocol):
    """What the executor needs from a cache; see the three policies below."""

    def get(self, key: Key) -> CacheEntry | None: ...
    def put(self, key: Key, entry: CacheEntry) -> None: ...
    def end_run(self, used: Iterable[Key]) -> None: ...
    def clear(self) -> None: ...
    def __len__(self) -> int: ...


class NoCache:
    """Nothing is kept between prompts (within a prompt, intermediates live until consumed)."""

    def get(self, key: Key) -> CacheEntry | None:
        return None

    def put(self, key: Key, entry: CacheEntry) -> None:
        pass

    def end_run(self, used: Iterable[Key]) -> None:
        pass

    def clear(self) -> None:
        pass

    def __len__(self) -> int:
        return 0


class RecentRunsCache:
    """Keep every result used by the last `runs` prompts (ComfyUI's classic behaviour is runs=1)."""

    def __init__(self, runs: int = 1) -> None:
        if runs < 1:
            raise ValueError("runs must be at least 1")
        self.runs = runs
        self._entries: dict[Key, CacheEntry] = {}
        self._last_used: dict[Key, int] = {}
        self._run = 0

    def get(self, key: Key) -> CacheEntry | None:
        return self._entries.get(key)

    def put(self, key: Key, entry: CacheEntry) -> None:
        self._entries[key] = entry
        self._last_used[key] = self._run

    def end_run(self, used: Iterable[Key]) -> None:
        run = self._run
        last = self._last_used
        for key in used:
            if key in self._entries:
                last[key] = run
        oldest = run - self.runs + 1
        stale = [k for k, r in last.items() if r < oldest]
        for key in stale:
            del last[key]
            self._entries.pop(key, None)
        self._run = run + 1

    def clear(self) -> None:
        self._entries.clear()
        self._last_used.clear()

    def __len__(self) -> int:
        return len(self._entries)


class RamBudgetCache:
    """Least-recently-used eviction under a byte budget, sized by each entry's estimated footprint."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self.total = 0
        self._entries: OrderedDict[Key, CacheEntry] = OrderedDict()

    def get(self, key: Key) -> CacheEntry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: Key, entry: CacheEntry) -> None:
        size = entry.nbytes()
        if size > self.max_bytes:
            return  # larger than the whole budget: never worth keeping
        old = self._entries.pop(key, None)
        if old is not None:
            self.total -= old.nbytes()
        self._entries[key] = entry
        self.total += size
        while self.total > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.total -= evicted.nbytes()

    def end_run(self, used: Iterable[Key]) -> None:
        pass

    def clear(self) -> None:
        self._entries.clear()
        self.total = 0

    def __len__(self) -> int:
        return len(self._entries)


def make_cache(spec: str) -> CachePolicy:
    """Parse a `--cache` setting: `none`, `recent[:N]` or `ram:SIZE` (e.g. `ram:8GB`)."""
    kind, _, arg = spec.strip().lower().partition(":")
    if kind == "none":
        return NoCache()
    if kind == "recent":
        return RecentRunsCache(int(arg) if arg else 1)
    if kind == "ram":
        return RamBudgetCache(parse_bytes(arg))
    raise ValueError(f"unknown cache policy {spec!r}: use none, recent[:N] or ram:SIZE (e.g. ram:8GB)")


def parse_bytes(text: str) -> int:
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
    t = text.strip().lower()
    num = t.rstrip("abikgmt")
    unit = t[len(num):]
    if unit not in units or not num:
        raise ValueError(f"cannot read a size from {text!r}: write e.g. 512MB or 8GB")
    return int(float(num) * units[unit])
