"""The queue, history and job routes of a --multi-user server: each user sees and changes only their own.

They replace the single-user handlers of server/api_queue.py for the same paths (see `handler_for`),
with the same shapes; a job of another user is answered exactly as an unknown one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from graph.errors import Issue, RequestError

from . import api_queue as queue
from .jobs import PENDING, Job
from .security import error_response, read_json, require_object
from .state import STATE, state_of
from .users import USERS, owner_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
EVERYTHING = 10**9


def _user(request: web.Request) -> str:
    return request.app[USERS].user_of(request)


def _own(request: web.Request, jobs: list[Job]) -> list[Job]:
    user = _user(request)
    return [job for job in jobs if owner_of(job) == user]


def _ids(data: dict[str, Any]) -> list[str]:
    value = data["delete"]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestError(Issue(type="invalid_request", message="'delete' must be a list of prompt ids (strings)"))
    return value


def _own_ids(request: web.Request, ids: list[str]) -> list[str]:
    store = state_of(request).store
    return [pid for pid in ids if (job := store.get(pid)) is not None and owner_of(job) == _user(request)]


async def get_queue(request: web.Request) -> web.Response:
    store = state_of(request).store
    return web.json_response({"queue_running": [j.queue_item() for j in _own(request, store.running())],
                              "queue_pending": [j.queue_item() for j in _own(request, store.pending())]})


async def post_queue(request: web.Request) -> web.Response:
    state = state_of(request)
    data = require_object(await read_json(request, state.options.max_json_bytes))
    if data.get("clear") is True:
        state.store.delete_pending([j.prompt_id for j in _own(request, state.store.pending())])
    if "delete" in data:
        state.store.delete_pending(_own_ids(request, _ids(data)))
    state.hub.broadcast_status()
    return web.Response(status=200)


async def get_history(request: web.Request) -> web.Response:
    """The user's finished jobs, paged as ComfyUI pages history (without an offset: the latest ones)."""
    max_items = queue._int_param(request, "max_items", None, low=0)
    offset = queue._int_param(request, "offset", None, low=-1)
    jobs = _own(request, state_of(request).store.history())
    if offset is None or offset == -1:
        jobs = jobs[-max_items:] if max_items else ([] if max_items == 0 else jobs)
    else:
        jobs = jobs[offset:] if max_items is None else jobs[offset:offset + max_items]
    return web.json_response({j.prompt_id: j.history_entry() for j in jobs})


async def post_history(request: web.Request) -> web.Response:
    state = state_of(request)
    data = require_object(await read_json(request, state.options.max_json_bytes))
    if data.get("clear") is True:
        state.store.delete_history([j.prompt_id for j in _own(request, state.store.history())])
    if "delete" in data:
        state.store.delete_history(_own_ids(request, _ids(data)))
    return web.Response(status=200)


def _one_job(handler: Handler) -> Handler:
    """A route about one job: another user's job is answered as an unknown one (404)."""
    async def scoped(request: web.Request) -> web.StreamResponse:
        prompt_id = request.match_info["prompt_id"]
        job = state_of(request).store.get(prompt_id)
        if job is not None and owner_of(job) != _user(request):
            return error_response(404, "unknown_prompt_id", f"No job with prompt_id {prompt_id[:128]!r}")
        return await handler(request)
    return scoped


async def post_interrupt(request: web.Request) -> web.Response:
    """Stops the running job only when it is the user's own."""
    state = state_of(request)
    data = require_object(await read_json(request, state.options.max_json_bytes, allow_empty=True))
    prompt_id = data.get("prompt_id")
    if prompt_id is not None and not isinstance(prompt_id, str):
        raise RequestError(Issue(type="invalid_request", message="prompt_id must be a string"))
    current = state.worker.current
    if current is not None and owner_of(current.job) == _user(request):
        state.worker.interrupt(prompt_id or current.job.prompt_id)
    return web.Response(status=200)


async def get_jobs(request: web.Request) -> web.Response:
    wanted = [s for s in request.query.get("status", "").split(",") if s]
    unknown = [s for s in wanted if s not in queue.API_STATUSES]
    if unknown:
        raise RequestError(Issue(type="invalid_parameter", message=f"unknown status {unknown[0][:40]!r}",
                                 details=f"use {', '.join(queue.API_STATUSES)}"))
    order = request.query.get("sort_order", "desc")
    if order not in ("asc", "desc"):
        raise RequestError(Issue(type="invalid_parameter", message="sort_order must be asc or desc"))
    limit = queue._int_param(request, "limit", 100, low=1, high=1000) or 100
    offset = queue._int_param(request, "offset", 0) or 0
    states = sorted({queue.API_STATUSES[s][0] for s in wanted if queue.API_STATUSES[s][1] is None})
    statuses = sorted({queue.API_STATUSES[s][1] for s in wanted if queue.API_STATUSES[s][1] is not None})
    every, _ = state_of(request).store.list_jobs(states=states, statuses=statuses, newest_first=order == "desc",
                                                 limit=EVERYTHING, offset=0)
    own = _own(request, every)
    page = own[offset:offset + limit]
    return web.json_response({"jobs": [queue.job_summary(j) for j in page],
                              "pagination": {"offset": offset, "limit": limit, "total": len(own),
                                             "has_more": offset + len(page) < len(own)}})


SCOPED: dict[tuple[str, str], Handler] = {
    ("GET", "/queue"): get_queue,
    ("POST", "/queue"): post_queue,
    ("GET", "/history"): get_history,
    ("GET", "/history/{prompt_id}"): _one_job(queue.get_history_item),
    ("POST", "/history"): post_history,
    ("POST", "/interrupt"): post_interrupt,
    ("GET", "/jobs"): get_jobs,
    ("GET", "/jobs/{prompt_id}"): _one_job(queue.get_job),
}


def handler_for(app: web.Application, method: str, path: str, handler: Handler) -> Handler:
    """The user-scoped handler of a route on a --multi-user server; the route's own otherwise."""
    if app[STATE].options.multi_user:
        return SCOPED.get((method, path), handler)
    return handler


# -- cancelling (ComfyUI's editor cancels a job from its queue panel) -------------------------------
def _cancel(request: web.Request, prompt_id: str) -> bool | None:
    """Stop a job: a pending one leaves the queue, a running one is interrupted. None when the job is not
    the requester's to see; False when it had already finished."""
    state = state_of(request)
    job = state.store.get(prompt_id)
    if job is None or (request.app[USERS].multi_user and owner_of(job) != _user(request)):
        return None
    if job.state == PENDING and state.store.delete_pending([prompt_id]):  # 0: claimed meanwhile, so interrupt
        state.hub.broadcast_status()
        return True
    return state.worker.interrupt(prompt_id)


async def post_cancel_job(request: web.Request) -> web.Response:
    prompt_id = request.match_info["prompt_id"]
    cancelled = _cancel(request, prompt_id)
    if cancelled is None:
        return error_response(404, "unknown_prompt_id", f"No job with prompt_id {prompt_id[:128]!r}")
    return web.json_response({"prompt_id": prompt_id, "cancelled": cancelled})


async def post_cancel_jobs(request: web.Request) -> web.Response:
    data = require_object(await read_json(request, state_of(request).options.max_json_bytes))
    ids = data.get("job_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise RequestError(Issue(type="invalid_request", message="'job_ids' must be a list of prompt ids (strings)"))
    return web.json_response({"cancelled": [pid for pid in ids if _cancel(request, pid)]})
