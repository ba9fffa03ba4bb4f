"""Command-line flags of `main.py serve` that belong to the server; main.py adds them to its parser."""

from __future__ import annotations

import argparse
import os

from .frontends import FRONTENDS, FrontendError, resolve_web_root
from .options import PREVIEW_METHODS, ServerOptions
from .users import parse_user_tokens


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
    group.add_argument("--no-prefetch", dest="prefetch", action="store_false",
                       default=os.environ.get("SUMIE_NO_PREFETCH") != "1",
                       help="do not load the next queued job's models while the current job runs (by default "
                            "they are, when they fit in free RAM); env SUMIE_NO_PREFETCH=1")
    add_frontend_arguments(parser)


def add_frontend_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("editor and users")
    group.add_argument("--frontend", choices=FRONTENDS, default=os.environ.get("SUMIE_FRONTEND", "sumie"),
                       help="the editor served at /: sumie (ours, the default) or comfyui (ComfyUI's own editor "
                            "from the pip package comfyui-frontend-package); env SUMIE_FRONTEND")
    group.add_argument("--front-end-root", default=os.environ.get("SUMIE_FRONT_END_ROOT"), metavar="DIR",
                       help="serve another frontend's built files (the folder with index.html) at /; "
                            "env SUMIE_FRONT_END_ROOT")
    group.add_argument("--multi-user", action="store_true", default=os.environ.get("SUMIE_MULTI_USER") == "1",
                       help="separate settings, workflows, outputs and jobs per user; env SUMIE_MULTI_USER=1")
    group.add_argument("--user-token", dest="user_tokens", action="append", default=[], metavar="NAME=TOKEN",
                       help="with --multi-user: this token signs in as user NAME (repeatable); env "
                            "SUMIE_USER_TOKENS=name=token,name2=token2")


def options_from(args: argparse.Namespace) -> ServerOptions:
    if args.max_queue < 1:
        raise SystemExit("--max-queue must be at least 1")
    if args.max_attempts < 1:
        raise SystemExit("--max-attempts must be at least 1")
    try:
        web_root = resolve_web_root(frontend=args.frontend, front_end_root=args.front_end_root)
        user_tokens = parse_user_tokens([*args.user_tokens, *_env_list("SUMIE_USER_TOKENS")])
    except (FrontendError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    if user_tokens and not args.multi_user:
        raise SystemExit("error: --user-token needs --multi-user")
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
        prefetch=args.prefetch,
        web_root=web_root,
        multi_user=args.multi_user,
        user_tokens=user_tokens,
    )


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]
