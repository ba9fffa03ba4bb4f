"""Server options: everything the command line can tune about the server, as one frozen value."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Previews are a cheap latent -> RGB projection; "auto" and "latent2rgb" both select it. (A client
# asking for "taesd" in extra_data also gets it: a preview is never an output, so this is no silent
# change of a result.)
PREVIEW_METHODS = ("none", "auto", "latent2rgb")


@dataclass(frozen=True, kw_only=True)
class ServerOptions:
    auth_token: str | None = None  # required on every HTTP and websocket request when set
    allow_remote: bool = False  # listen beyond loopback without a token (explicit opt-in)
    allowed_origins: tuple[str, ...] = ()  # extra browser origins allowed besides the server's own
    max_queue: int = 1000  # pending jobs; more answers 429
    job_timeout: float | None = None  # seconds; a job running longer ends as interrupted ("timeout")
    run_timeout: float = 600.0  # default wait of POST /api/run
    max_upload_mb: float = 50.0
    max_json_mb: float = 50.0  # request bodies other than uploads
    max_upload_pixels: int = 64 * 1024 * 1024  # declared width x height of an uploaded image
    preview_method: str = "none"  # binary previews for every prompt unless "none" (see comfy-compat 4)
    max_attempts: int = 2  # runs of one job before a crash mid-run fails it as worker_lost
    max_history: int = 10_000
    ws_buffer: int = 1024  # queued messages per websocket before previews are dropped / the socket closed
    ws_buffer_mb: float = 16.0  # the same bound in bytes: a socket that never reads holds no more than this
    shutdown_grace: float = 10.0  # seconds to wait for the running job to honour a shutdown interrupt
    web_root: Path | None = None  # another frontend served at / (--front-end-root, --frontend); None: ours
    multi_user: bool = False  # per-user settings, workflows, outputs and jobs (--multi-user)
    user_tokens: tuple[tuple[str, str], ...] = ()  # (token, user name): a token that signs in as that user
    prefetch: bool = True  # load the next queued job's models while the current job runs (--no-prefetch)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def ws_buffer_bytes(self) -> int:
        return int(self.ws_buffer_mb * 1024 * 1024)

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_mb * 1024 * 1024)
