"""The listener of `main.py run`: a progress bar per node and per sampling step on stderr (only on a
terminal), or, with --json, every event as one JSON line on stdout."""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import asdict
from typing import Any

from graph.events import Event, NodeFailed, NodeFinished, NodeStarted, Progress, RunFinished, RunInterrupted


class ProgressReporter:
    """Listens to run events: a progress bar per node (tqdm) or JSON lines on stdout."""

    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        self.bar: Any = None
        self.lock = threading.Lock()
        self.quiet = not sys.stderr.isatty()

    def __call__(self, event: Event) -> None:
        with self.lock:
            if self.as_json:
                self._json(event)
            else:
                self._bar(event)

    def _json(self, event: Event) -> None:
        data = asdict(event)
        data.pop("preview", None)
        name = "".join("_" + c.lower() if c.isupper() else c for c in type(event).__name__).lstrip("_")
        sys.stdout.write(json.dumps({"type": name, **data}, default=repr, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def _bar(self, event: Event) -> None:
        from tqdm import tqdm

        if isinstance(event, NodeStarted):
            self._close()
            if not self.quiet:
                self.bar = tqdm(total=None, desc=f"{event.node_id} {event.class_type}", leave=False, file=sys.stderr,
                                unit="step", dynamic_ncols=True)
        elif isinstance(event, Progress) and self.bar is not None:
            if self.bar.total != event.max:
                self.bar.reset(total=event.max)
            self.bar.n = event.value
            self.bar.refresh()
        elif isinstance(event, NodeFinished):
            self._close()
            if event.ui and "text" in event.ui:
                for text in event.ui["text"]:
                    print(f"[{event.node_id} {event.class_type}] {text}", file=sys.stderr)
        elif isinstance(event, (NodeFailed, RunInterrupted, RunFinished)):
            self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
