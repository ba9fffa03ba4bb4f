"""`main.py run FILE`: run a saved workflow headlessly, with a progress bar, exit codes and Ctrl-C."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from graph import Executor, Folders, InterruptToken, NodeRegistry, RunRequest
from graph.documents import prompt_request_from
from graph.errors import RequestError

from .common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, fail, read_bytes
from .progress import ProgressReporter


def output_paths(outputs: dict[str, dict[str, Any]], folders: Folders) -> list[Path]:
    """Files named in output nodes' `ui` (images, gifs, audio, files) resolved under their folder."""
    roots = {"output": folders.output, "temp": folders.temp, "input": folders.input}
    paths: list[Path] = []
    for ui in outputs.values():
        for key in ("images", "gifs", "audio", "video", "latents", "files"):
            for item in ui.get(key, ()):
                if isinstance(item, dict) and "filename" in item:
                    root = roots.get(item.get("type", "output"), folders.output)
                    paths.append(root / item.get("subfolder", "") / item["filename"])
    return paths


def command_run(args: argparse.Namespace, *, registry: NodeRegistry, executor: Executor, folders: Folders) -> int:
    """Validate and run `args.workflow` (with its --set overrides); the process exit code."""
    try:
        request = prompt_request_from(read_bytes(args.workflow), registry, overrides=args.overrides)
    except RequestError as exc:
        return fail(exc, args.workflow)
    for warning in request.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    validation = executor.validate(request.workflow, request.partial_execution_targets)
    for node_id, issue in validation.warnings:
        print(f"warning: {issue.describe(node_id)}", file=sys.stderr)
    if not validation.ok or validation.node_errors:
        for line in validation.messages():
            print(f"error: {line}", file=sys.stderr)
        if not validation.ok:
            if args.json:
                print(json.dumps({"type": "validation_failed", **validation.to_json()}))
            return EXIT_ERROR
    token = InterruptToken(timeout=args.timeout)
    run_request = RunRequest(validation=validation, run_id=request.prompt_id or str(uuid.uuid4()),
                             extra_data=request.extra_data, interrupt=token,
                             listeners=[ProgressReporter(as_json=args.json)])
    result: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            result["outcome"] = executor.run(run_request)
        finally:
            done.set()

    # The run happens in a worker thread so Ctrl-C lands here and becomes the run's interrupt token
    # (an Event, not Thread.join: a KeyboardInterrupt inside join can leave the thread looking dead).
    threading.Thread(target=work, name="sumie-run", daemon=True).start()
    try:
        while not done.wait(0.2):
            pass
    except KeyboardInterrupt:
        token.set("interrupted")
        print("\ninterrupting...", file=sys.stderr)
        done.wait()
    outcome = result.get("outcome")
    if outcome is None:
        print("error: the run ended unexpectedly (see the log above)", file=sys.stderr)
        return EXIT_ERROR
    if not args.json:
        for path in output_paths(outcome.outputs, folders):
            print(path)
    if outcome.status == "success":
        return EXIT_OK
    if outcome.status == "interrupted":
        print(f"interrupted ({outcome.reason}) at node {outcome.interrupted_at}", file=sys.stderr)
        return EXIT_INTERRUPTED
    failure = outcome.failure
    if failure is not None:
        print(f"error: {failure.describe()}", file=sys.stderr)
        if args.verbose:
            print("".join(failure.traceback), file=sys.stderr)
    return EXIT_ERROR
