"""Command-line flags of `main.py serve` that belong to the server; main.py adds them to its parser."""

from __future__ import annotations

import argparse
import os

from .options import PREVIEW_METHODS, ServerOptions


def _env_float(name: str, default: float | None) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("server")
    group.add_argument("--auth-token", default=os.environ.get("SUMIE_AUTH_TOKEN"), metavar="TOKEN",
                       help="require this token on every request (Authorization: Bearer TOKEN; ?token= only on "
                            "the websocket); env SUMIE_AUTH_TOKEN")
    group.add_argument("--allow-remote", action="store_true", default=os.environ.get("SUMIE_ALLOW_REMOTE") == "1",
                       help="allow --listen beyond loopback without --auth-token (anyone who can reach the port "
                            "can run jobs and read outputs); env SUMIE_ALLOW_REMOTE=1")
    group.add_argument("--allow-origin", dest="allowed_origins", action="append", default=[], metavar="ORIGIN",
                       help="a browser origin (e.g. https://example.org) allowed to call the API (repeatable)")
    group.add_argument("--max-queue", type=int, default=int(os.environ.get("SUMIE_MAX_QUEUE", "1000")),
                       help="pending jobs before POST /prompt answers 429 (default 1000)")
    group.add_argument("--job-timeout", type=float, default=_env_float("SUMIE_JOB_TIMEOUT", None), metavar="SECONDS",
                       help="end a job that runs longer than this, like an interrupt (default: no limit)")
    group.add_argument("--max-upload-mb", type=float, default=_env_float("SUMIE_MAX_UPLOAD_MB", 50.0),
                       help="largest accepted upload in MiB (default 50)")
    group.add_argument("--max-body-mb", type=float, default=_env_float("SUMIE_MAX_BODY_MB", 50.0),
                       help="largest accepted JSON request body in MiB (default 50)")
    group.add_argument("--preview-method", choices=PREVIEW_METHODS, default=os.environ.get("SUMIE_PREVIEW", "none"),
                       help="send sampling previews to every prompt (default none: only prompts that ask, as the "
                            "editor does)")
    group.add_argument("--max-attempts", type=int, default=2,
                       help="runs of one job before a server crash during it fails it as worker_lost (default 2)")


def options_from(args: argparse.Namespace) -> ServerOptions:
    if args.max_queue < 1:
        raise SystemExit("--max-queue must be at least 1")
    if args.max_attempts < 1:
        raise SystemExit("--max-attempts must be at least 1")
    return ServerOptions(
        auth_token=args.auth_token or None,
        allow_remote=args.allow_remote,
        allowed_origins=tuple(args.allowed_origins),
        max_queue=args.max_queue,
        job_timeout=args.job_timeout,
        max_upload_mb=args.max_upload_mb,
        max_json_mb=args.max_body_mb,
        preview_method=args.preview_method,
        max_attempts=args.max_attempts,
    )
