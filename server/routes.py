"""The route table: every HTTP route in one place, each API route also served under /api/...

The OpenAPI description (/openapi.json) is generated from this same table, so it cannot drift.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from . import api_files as files
from . import api_plugins as plugins
from . import api_queue as queue
from . import api_system as system
from . import api_users, frontend_routes, openapi

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, kw_only=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    api: bool = True  # also served as /api + path
    body: str | None = None  # name of the request body's schema in the OpenAPI document
    responses: tuple[int, ...] = (200,)
    query: tuple[str, ...] = ()  # query parameters, declared in the OpenAPI document (all optional strings)


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi.document(ROUTES))


ROUTES: tuple[Route, ...] = (
    *(Route(**spec) for spec in frontend_routes.ROUTE_SPECS),  # ComfyUI's editor's extra routes
    Route(method="POST", path="/prompt", handler=queue.post_prompt, tag="queue", body="PromptRequest",
          responses=(200, 400, 409, 413, 429),
          summary="Queue a workflow (API format, or editor format: converted on the server). A client-supplied "
                  "prompt_id makes the call idempotent."),
    Route(method="GET", path="/prompt", handler=queue.get_prompt, tag="queue", summary="Jobs pending or running."),
    Route(method="POST", path="/convert", handler=queue.post_convert, tag="queue", body="EditorWorkflow",
          responses=(200, 400), summary="Convert an editor-format workflow to an API prompt."),
    Route(method="POST", path="/run", handler=queue.post_run, tag="queue", body="PromptRequest",
          responses=(200, 202, 400, 409, 429),
          query=("timeout",),
          summary="Queue a workflow and wait for its outputs (?timeout=seconds; 202 with the id if it passes)."),
    Route(method="GET", path="/queue", handler=queue.get_queue, tag="queue", summary="Running and pending jobs."),
    Route(method="POST", path="/queue", handler=queue.post_queue, tag="queue", body="DeleteOrClear",
          summary="Delete pending jobs by id, or clear the pending queue."),
    Route(method="GET", path="/history", handler=queue.get_history, tag="queue", query=("max_items", "offset"),
          responses=(200, 400), summary="Finished jobs (?max_items=&offset=)."),
    Route(method="GET", path="/history/{prompt_id}", handler=queue.get_history_item, tag="queue",
          responses=(200, 404),
          summary="One finished job; {} while pending or running (header X-Job-Status); 404 if unknown."),
    Route(method="POST", path="/history", handler=queue.post_history, tag="queue", body="DeleteOrClear",
          summary="Delete history entries by id, or clear history."),
    Route(method="POST", path="/interrupt", handler=queue.post_interrupt, tag="queue", body="Interrupt",
          summary="Stop the running job (only if it is prompt_id, when given)."),
    Route(method="GET", path="/jobs", handler=queue.get_jobs, tag="queue", responses=(200, 400),
          query=("status", "limit", "offset", "sort_order"),
          summary="Every job, newest first (?status=pending,in_progress,completed,failed,cancelled&limit=&offset="
                  "&sort_order=)."),
    Route(method="GET", path="/jobs/{prompt_id}", handler=queue.get_job, tag="queue", responses=(200, 404),
          summary="One job in any state, with its workflow and outputs."),
    Route(method="GET", path="/object_info", handler=system.get_object_info, tag="nodes",
          summary="Schemas of every node type."),
    Route(method="GET", path="/object_info/{node_class}", handler=system.get_object_info, tag="nodes",
          summary="The schema of one node type ({} if unknown)."),
    Route(method="GET", path="/view", handler=files.get_view, tag="files", responses=(200, 400, 403, 404),
          query=("filename", "subfolder", "type", "channel", "preview"),
          summary="A file from output/, input/ or temp/ (?filename=&subfolder=&type=&channel=&preview=)."),
    Route(method="POST", path="/upload/image", handler=files.post_upload_image, tag="files", body="Upload",
          responses=(200, 400, 413, 415),
          summary="Upload an image (multipart: image, subfolder, type, overwrite); it is decoded and re-encoded."),
    Route(method="POST", path="/upload/mask", handler=files.post_upload_mask, tag="files", body="Upload",
          responses=(200, 400, 404, 413, 415),
          summary="Upload a mask into the alpha of original_ref (multipart, like /upload/image)."),
    Route(method="GET", path="/system_stats", handler=system.get_system_stats, tag="system",
          summary="Operating system, Python and device facts."),
    Route(method="GET", path="/embeddings", handler=system.get_embeddings, tag="system",
          summary="Names of the textual-inversion embeddings."),
    Route(method="GET", path="/models", handler=system.get_models, tag="system", summary="Model folder kinds."),
    Route(method="GET", path="/models/{folder}", handler=system.get_model_folder, tag="system", responses=(200, 404),
          summary="Model files in one folder."),
    Route(method="POST", path="/free", handler=system.post_free, tag="system", body="Free",
          summary="Drop cached results and ask the model manager to unload models (after the running job)."),
    Route(method="GET", path="/features", handler=system.get_features, tag="system",
          summary="What this server supports."),
    Route(method="GET", path="/userdata", handler=files.list_userdata, tag="userdata", responses=(200, 404),
          query=("dir", "recurse", "full_info", "split"),
          summary="Files in a user folder (?dir=workflows&recurse=&full_info=&split=)."),
    Route(method="GET", path="/userdata/{file}", handler=files.get_userdata, tag="userdata", responses=(200, 404),
          summary="A saved user file (the name may hold %2F-encoded folders)."),
    Route(method="POST", path="/userdata/{file}", handler=files.post_userdata, tag="userdata",
          responses=(200, 409, 413), query=("overwrite", "full_info"),
          summary="Save a user file (?overwrite=false refuses to replace)."),
    Route(method="DELETE", path="/userdata/{file}", handler=files.delete_userdata, tag="userdata",
          responses=(204, 404), summary="Delete a user file."),
    Route(method="POST", path="/userdata/{file}/move/{dest}", handler=files.move_userdata, tag="userdata",
          responses=(200, 404, 409), query=("overwrite", "full_info"), summary="Rename a user file."),
    Route(method="GET", path="/extensions", handler=plugins.get_extensions, tag="files",
          summary="URLs of the plugins' web (JavaScript) files."),
    Route(method="GET", path="/extensions/{pack}/{path:.+}", handler=plugins.get_extension_file, tag="files",
          api=False, responses=(200, 404), summary="A file of a plugin's web folder."),
    Route(method="GET", path="/plugins", handler=plugins.get_plugins, tag="nodes",
          summary="Plugin packs: loaded and failed ones, their nodes, name conflicts and errors."),
    Route(method="GET", path="/openapi.json", handler=get_openapi, tag="meta",
          summary="This description."),
    Route(method="GET", path="/schemas/{name}.json", handler=system.get_schema, tag="meta", responses=(200, 404),
          summary="JSON Schema of a workflow format (api_workflow, ui_workflow)."),
    Route(method="GET", path="/", handler=files.get_index, tag="editor", api=False, summary="The editor."),
    Route(method="GET", path="/{path:.+}", handler=files.get_web_file, tag="editor", api=False,
          responses=(200, 404), summary="The editor's files."),
)


# Handlers that see newly changed plugin packs first when the server runs with --reload-plugins.
RELOAD_BEFORE = frozenset({("POST", "/prompt"), ("POST", "/run"), ("GET", "/object_info"),
                           ("GET", "/object_info/{node_class}")})
EDITOR_FILES = "/{path:.+}"


def add_routes(app: web.Application, ws_handler: Handler) -> None:
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/api/ws", ws_handler)

    def handler_of(route: Route) -> Handler:
        handler = api_users.handler_for(app, route.method, route.path, route.handler)  # --multi-user
        if (route.method, route.path) in RELOAD_BEFORE:
            return plugins.reloading(handler, app)
        return handler

    for route in ROUTES:
        if route.api:
            app.router.add_route(route.method, "/api" + route.path, handler_of(route))
    for route in ROUTES:  # after the /api copies, so the editor's catch-all never shadows them
        if route.path == EDITOR_FILES:
            plugins.add_pack_routes(app)  # after ours (a pack cannot replace them), before the catch-all
        app.router.add_route(route.method, route.path, handler_of(route))
    plugins.attach(app)
