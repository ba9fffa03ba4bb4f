"""The routes and wiring ComfyUI's editor needs beyond the core API, kept apart from the core table.

`ROUTE_SPECS` feeds server/routes.py's table (so /openapi.json lists them too) and `setup` is called
once by create_app. Like every API route they are served with and without the /api prefix (the editor
asks for /internal/..., /templates/... and /user.css without it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from . import api_frontend as fe
from . import api_settings as settings_api
from . import api_users as users_api
from . import logs
from .api_system import features
from .options import ServerOptions
from .state import STATE
from .users import DEFAULT_USER, USERS, Users, scoped_sid
from .ws import Client, Hub

log = logging.getLogger("sumie.frontend")
# Served as a plugin web folder beside a ComfyUI editor: fixes older editors for node types Sumie lacks.
COMPAT_PACK = "sumie-comfyui-compat"
COMPAT_DIR = Path(__file__).resolve().parent / "comfyui_compat"


def _spec(method: str, path: str, handler: Any, summary: str, tag: str = "frontend", *,
          responses: tuple[int, ...] = (200,)) -> dict[str, Any]:
    return {"method": method, "path": path, "handler": handler, "summary": summary, "tag": tag,
            "responses": responses}


# Before the core table: /userdata/user.css must win over /userdata/{file}.
ROUTE_SPECS: tuple[dict[str, Any], ...] = (
    _spec("GET", "/userdata/user.css", fe.get_user_css, "The user's stylesheet (empty when there is none).",
          "userdata"),
    _spec("GET", "/userdata/comfy.templates.json", fe.get_node_templates,
          "The user's saved node templates ([] when none).", "userdata"),
    _spec("GET", "/user.css", fe.get_user_css, "The user's stylesheet (empty when there is none)."),
    _spec("GET", "/settings", settings_api.get_settings, "Every setting of the user ({} when none).", "settings"),
    _spec("POST", "/settings", settings_api.post_settings, "Store several settings (a JSON object).", "settings",
          responses=(200, 400)),
    _spec("GET", "/settings/{id}", settings_api.get_setting, "One setting (null when unset).", "settings"),
    _spec("POST", "/settings/{id}", settings_api.post_setting, "Store one setting (any JSON value).", "settings",
          responses=(200, 400)),
    _spec("POST", "/jobs/cancel", users_api.post_cancel_jobs, "Cancel jobs ({job_ids}): pending ones leave the "
          "queue, a running one is interrupted.", "queue", responses=(200, 400)),
    _spec("POST", "/jobs/{prompt_id}/cancel", users_api.post_cancel_job, "Cancel one job (pending: removed; "
          "running: interrupted).", "queue", responses=(200, 404)),
    _spec("GET", "/users", settings_api.get_users, "How users are stored; with --multi-user, the users.", "settings"),
    _spec("POST", "/users", settings_api.post_users, "Create a user (--multi-user): its id.", "settings",
          responses=(200, 400, 403)),
    _spec("GET", "/i18n", fe.get_i18n, "The plugin packs' translations by language."),
    _spec("GET", "/global_subgraphs", fe.get_global_subgraphs, "Subgraph blueprints the plugin packs ship."),
    _spec("GET", "/global_subgraphs/{id}", fe.get_global_subgraph, "One subgraph blueprint with its data.",
          responses=(200, 404)),
    _spec("GET", "/experiment/models", fe.get_experiment_models, "Model folder kinds and their folders."),
    _spec("GET", "/experiment/models/{folder}", fe.get_experiment_model_folder,
          "Model files of one kind, with modification times.", responses=(200, 404)),
    _spec("GET", "/view_metadata/{folder}", fe.get_view_metadata,
          "The metadata of a .safetensors model file (?filename=), {} when it has none.", responses=(200, 400, 404)),
    _spec("GET", "/workflow_templates", fe.get_workflow_templates,
          "Example workflows of the plugin packs ({pack: [names]})."),
    _spec("GET", "/workflow_templates/{pack}/{path:.+}", fe.get_workflow_template_file,
          "A file of a pack's example workflows.", responses=(200, 404)),
    _spec("GET", "/templates/{path:.+}", fe.get_template, "The template gallery of comfyui-workflow-templates "
          "(an empty index when it is not installed).", responses=(200, 404)),
    _spec("GET", "/internal/logs", logs.get_logs, "Recent server log lines as one text.", "system"),
    _spec("GET", "/internal/logs/raw", logs.get_raw_logs, "Recent server log lines with their times.", "system"),
    _spec("PATCH", "/internal/logs/subscribe", logs.patch_logs_subscribe,
          "Send new log lines to a websocket client ({clientId, enabled}).", "system",
          responses=(200, 400)),
    _spec("GET", "/internal/folder_paths", logs.get_folder_paths, "Model folders by kind.", "system"),
    _spec("GET", "/internal/files/{directory_type}", logs.get_files,
          "File names in output, input or temp, newest first.", "system", responses=(200, 400)),
)


def setup(app: web.Application, *, settings: Any, options: ServerOptions, hub: Hub) -> None:
    """Users, the log buffer, and the websocket's answer to a client's feature flags."""
    users = Users(Path(settings.folders.user), options)
    app[USERS] = users

    async def prepare_default_user(app: web.Application) -> None:
        users.folder(DEFAULT_USER)

    app.on_startup.append(prepare_default_user)
    if options.web_root is not None:  # another editor than ours is served
        state = app[STATE]
        state.web_dirs = {**state.web_dirs, COMPAT_PACK: COMPAT_DIR}
    logs.attach(app, hub)
    if options.multi_user:
        hub.scope_sid = scoped_sid
    hub.on_text = lambda client, text: answer_client(hub, options, client, text)


def answer_client(hub: Hub, options: ServerOptions, client: Client, text: str) -> None:
    """ComfyUI's editor opens the socket with `{"type": "feature_flags", "data": {...}}` and waits for the
    server's flags (the same as GET /features) before it uses optional protocol features."""
    try:
        message = json.loads(text)
    except ValueError:
        log.debug("websocket %s sent text that is not JSON; ignored", client.sid)
        return
    if isinstance(message, dict) and message.get("type") == "feature_flags":
        data = message.get("data")
        client.feature_flags = data if isinstance(data, dict) else {}
        hub.send("feature_flags", features(options), client.sid)
