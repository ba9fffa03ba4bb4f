"""Prompt, queue, history, interrupt and job routes: submitting work and following it to the end."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from graph.documents import ConversionFailed, prompt_request_from
from graph.errors import Issue, RequestError
from graph.ui_workflow import Conversion, convert_ui_workflow, is_ui_workflow

from .jobs import DONE, ERROR, INTERRUPTED, PENDING, RUNNING, SUCCESS, Job
from .security import error_response, read_json, require_object
from .state import ServerState, state_of
from .users import stamp_owner
from .wire import wire_number

_PROMPT_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
API_STATUSES = {"pending": (PENDING, None), "in_progress": (RUNNING, None), "completed": (DONE, SUCCESS),
                "failed": (DONE, ERROR), "cancelled": (DONE, INTERRUPTED)}


def _issue(type_: str, message: str, details: str = "") -> RequestError:
    return RequestError(Issue(type=type_, message=message, details=details))


def _int_param(request: web.Request, name: str, default: int | None, *, low: int = 0,
               high: int = 10**9) -> int | None:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise _issue("invalid_parameter", f"{name} must be an integer, got {text[:40]!r}") from None
    if not low <= value <= high:
        raise _issue("invalid_parameter", f"{name} must be between {low} and {high}, got {value}")
    return value


def _digest(prompt: Any, targets: Any) -> str:
    text = json.dumps({"prompt": prompt, "targets": targets}, sort_keys=True, ensure_ascii=False)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


# -- submitting ----------------------------------------------------------------------------------
@dataclass(kw_only=True)
class Submitted:
    job: Job
    node_errors: dict[str, Any] = field(default_factory=dict)  # outputs that failed validation and will not run


def conversion_error(conversion: Conversion) -> web.Response:
    """A 400 in the validation-error shape, for an editor-format workflow that cannot be converted."""
    node_errors = {nid: {"errors": [i.to_json() for i in issues], "dependent_outputs": [],
                         "class_type": (issues[0].extra or {}).get("class_type", "")}
                   for nid, issues in conversion.errors.items() if nid}
    issue = ConversionFailed(conversion).issue
    body = {"error": {"type": issue.type, "message": issue.message, "details": issue.details, "extra_info": {}},
            "node_errors": node_errors}
    return web.json_response(body, status=400)


async def submit(state: ServerState, data: Any) -> web.Response | Submitted:
    """Check and queue one POST /prompt body (API or editor format): the submission, or the refusal."""
    try:  # conversion can be large work: off the event loop
        req = await asyncio.to_thread(prompt_request_from, data, state.registry, bare_prompt=False)
    except ConversionFailed as exc:
        return conversion_error(exc.conversion)
    prompt_id = req.prompt_id
    if prompt_id is not None and not (isinstance(prompt_id, str) and _PROMPT_ID.fullmatch(prompt_id)):
        raise _issue("invalid_prompt_id", "prompt_id must be 1-128 characters of letters, digits and _ . : -",
                     details=f"got {str(prompt_id)[:60]!r}")
    raw_prompt = req.workflow.raw
    digest = _digest(raw_prompt, req.partial_execution_targets)
    if prompt_id is not None:
        existing = state.store.get(prompt_id)
        if existing is not None:
            return _same_job(existing, digest)
    if state.store.count(PENDING) >= state.options.max_queue:
        retry = state.worker.retry_after()
        return error_response(429, "queue_full", f"The queue is full ({state.options.max_queue} pending jobs)",
                              details=f"retry in about {retry} s", headers={"Retry-After": str(retry)})
    targets = req.partial_execution_targets
    validation = await asyncio.to_thread(state.executor.validate, req.workflow, targets)  # never on the loop
    if not validation.ok:
        return web.json_response(validation.to_json(), status=400)
    extra_data = dict(req.extra_data)
    if req.client_id is not None:
        extra_data["client_id"] = req.client_id
    number = float(req.number) if req.number is not None else None
    job, created = state.store.add(prompt_id=prompt_id or str(uuid.uuid4()), prompt=raw_prompt,
                                   extra_data=extra_data, client_id=req.client_id,
                                   outputs_to_execute=validation.outputs, digest=digest, front=req.front,
                                   number=number)
    if not created:  # the same id raced in from a concurrent retry
        return _same_job(job, digest)
    state.worker.notify()
    state.hub.broadcast_status()
    return Submitted(job=job, node_errors=validation.to_json()["node_errors"])


def _same_job(job: Job, digest: str) -> web.Response | Submitted:
    """A retry of a known prompt_id: that job again (never queued twice), or 409 if the prompt differs."""
    if job.digest != digest:
        return error_response(409, "prompt_id_conflict", f"prompt_id {job.prompt_id!r} is already used by a "
                              "different prompt", details="use a new prompt_id for a different workflow")
    return Submitted(job=job)


async def post_prompt(request: web.Request) -> web.Response:
    state = state_of(request)
    data = stamp_owner(request, await read_json(request, state.options.max_json_bytes), state.store)
    sub = data if isinstance(data, web.Response) else await submit(state, data)
    if isinstance(sub, web.Response):
        return sub
    return web.json_response({"prompt_id": sub.job.prompt_id, "number": wire_number(sub.job.number),
                              "node_errors": sub.node_errors})


async def post_convert(request: web.Request) -> web.Response:
    """An editor-format workflow (the body, or its `workflow` field) as an API prompt."""
    state = state_of(request)
    data = await read_json(request, state.options.max_json_bytes)
    workflow = data.get("workflow") if isinstance(data, dict) and "workflow" in data else data
    if not is_ui_workflow(workflow):
        raise _issue("invalid_workflow", "Expected an editor-format workflow (an object with 'nodes' and 'links')")
    conversion = await asyncio.to_thread(convert_ui_workflow, workflow, state.registry)
    if not conversion.ok:
        return conversion_error(conversion)
    return web.json_response({"prompt": conversion.prompt, "warnings": conversion.warnings})


async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response({"exec_info": {"queue_remaining": state_of(request).store.queue_remaining()}})


async def post_run(request: web.Request) -> web.Response:
    """Submit and wait: the outputs when the job is done, or 202 with its id if `timeout` passes first."""
    state = state_of(request)
    text = request.query.get("timeout")
    try:
        timeout = state.options.run_timeout if text is None else float(text)
    except ValueError:
        timeout = -1.0
    if not 0 <= timeout <= 86_400:  # also rejects nan
        raise _issue("invalid_parameter", "timeout must be a number of seconds from 0 to 86400",
                     details=f"got {str(text)[:40]!r}")
    data = stamp_owner(request, await read_json(request, state.options.max_json_bytes), state.store)
    sub = data if isinstance(data, web.Response) else await submit(state, data)
    if isinstance(sub, web.Response):
        return sub
    job = sub.job
    done = await state.worker.wait_done(job.prompt_id, timeout)
    if done is None or done.state != DONE:
        current = state.store.get(job.prompt_id)
        status = current.api_status if current else "unknown"
        return web.json_response({"prompt_id": job.prompt_id, "status": status}, status=202,
                                 headers={"Location": f"/api/jobs/{job.prompt_id}"})
    body: dict[str, Any] = {"prompt_id": done.prompt_id, "status": done.status, "outputs": done.outputs}
    error_data = done.error_message()
    if error_data is not None:
        body["error"] = error_data
    return web.json_response(body)


# -- queue ---------------------------------------------------------------------------------------
async def get_queue(request: web.Request) -> web.Response:
    state = state_of(request)
    body: dict[str, Any] = {"queue_running": [j.queue_item() for j in state.store.running()],
                            "queue_pending": [j.queue_item() for j in state.store.pending()]}
    workers = state.worker.describe()
    if workers is not None:  # several workers (server/cluster): which runs what, and what each holds
        body["workers"] = workers
    return web.json_response(body)


async def post_queue(request: web.Request) -> web.Response:
    state = state_of(request)
    data = require_object(await read_json(request, state.options.max_json_bytes))
    if data.get("clear") is True:
        state.store.clear_pending()
    if "delete" in data:
        state.store.delete_pending(_id_list(data["delete"]))
    state.hub.broadcast_status()
    return web.Response(status=200)


def _id_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _issue("invalid_request", "'delete' must be a list of prompt ids (strings)")
    return value


# -- history -------------------------------------------------------------------------------------
async def get_history(request: web.Request) -> web.Response:
    max_items = _int_param(request, "max_items", None, low=0)
    offset = _int_param(request, "offset", None, low=-1)
    if offset == -1:
        offset = None
    jobs = state_of(request).store.history(max_items=max_items, offset=offset)
    return web.json_response({j.prompt_id: j.history_entry() for j in jobs})


async def get_history_item(request: web.Request) -> web.Response:
    """Finished: its entry. Pending or running: `{}` (ComfyUI clients poll for the key) with a status
    header. Unknown: 404, so a typo or a deleted entry is not mistaken for 'still running'."""
    prompt_id = request.match_info["prompt_id"]
    job = state_of(request).store.get(prompt_id)
    if job is None:
        return error_response(404, "unknown_prompt_id", f"No job with prompt_id {prompt_id[:128]!r}",
                              details="it was never queued here, or its history entry was deleted")
    if job.state != DONE:
        return web.json_response({}, headers={"X-Job-Status": job.api_status})
    return web.json_response({job.prompt_id: job.history_entry()}, headers={"X-Job-Status": job.api_status})


async def post_history(request: web.Request) -> web.Response:
    state = state_of(request)
    data = require_object(await read_json(request, state.options.max_json_bytes))
    if data.get("clear") is True:
        state.store.clear_history()
    if "delete" in data:
        state.store.delete_history(_id_list(data["delete"]))
    return web.Response(status=200)


async def post_interrupt(request: web.Request) -> web.Response:
    state = state_of(request)
    data = require_object(await read_json(request, state.options.max_json_bytes, allow_empty=True))
    prompt_id = data.get("prompt_id")
    if prompt_id is not None and not isinstance(prompt_id, str):
        raise _issue("invalid_request", "prompt_id must be a string")
    state.worker.interrupt(prompt_id)
    return web.Response(status=200)


# -- unified job view ----------------------------------------------------------------------------
def job_summary(job: Job) -> dict[str, Any]:
    preview = None
    count = 0
    for nid, ui in job.outputs.items():
        for key, items in ui.items() if isinstance(ui, dict) else ():
            if isinstance(items, list):
                count += len(items)
                if preview is None and key in ("images", "gifs", "video", "audio") and items \
                        and isinstance(items[0], dict):
                    preview = {**items[0], "nodeId": nid, "mediaType": key}
    summary: dict[str, Any] = {
        "id": job.prompt_id, "status": job.api_status, "priority": wire_number(job.number),
        "create_time": int(job.created * 1000),
        "execution_start_time": int(job.started * 1000) if job.started else None,
        "execution_end_time": int(job.finished * 1000) if job.finished else None,
        "outputs_count": count, "preview_output": preview, "attempts": job.attempts,
        "client_id": job.client_id,
    }
    error = job.error_message()
    if error is not None:
        summary["execution_error"] = error
    return summary


async def get_jobs(request: web.Request) -> web.Response:
    wanted = [s for s in request.query.get("status", "").split(",") if s]
    unknown = [s for s in wanted if s not in API_STATUSES]
    if unknown:
        raise _issue("invalid_parameter", f"unknown status {unknown[0][:40]!r}",
                     details=f"use {', '.join(API_STATUSES)}")
    order = request.query.get("sort_order", "desc")
    if order not in ("asc", "desc"):
        raise _issue("invalid_parameter", "sort_order must be asc or desc")
    limit = _int_param(request, "limit", 100, low=1, high=1000) or 100
    offset = _int_param(request, "offset", 0) or 0
    states = sorted({API_STATUSES[s][0] for s in wanted if API_STATUSES[s][1] is None})
    statuses = sorted({API_STATUSES[s][1] for s in wanted if API_STATUSES[s][1] is not None})
    jobs, total = state_of(request).store.list_jobs(states=states, statuses=statuses, newest_first=order == "desc",
                                                    limit=limit, offset=offset)
    return web.json_response({"jobs": [job_summary(j) for j in jobs],
                              "pagination": {"offset": offset, "limit": limit, "total": total,
                                             "has_more": offset + len(jobs) < total}})


async def get_job(request: web.Request) -> web.Response:
    prompt_id = request.match_info["prompt_id"]
    job = state_of(request).store.get(prompt_id)
    if job is None:
        return error_response(404, "unknown_prompt_id", f"No job with prompt_id {prompt_id[:128]!r}")
    body = job_summary(job)
    body["outputs"] = job.outputs
    body["workflow"] = {"prompt": job.prompt, "extra_data": job.extra_data}
    body["outputs_to_execute"] = job.outputs_to_execute
    if job.state == DONE:
        body["execution_status"] = job.history_entry()["status"]
    return web.json_response(body)
