"""The persistent job store: queue and history in one SQLite database (WAL) under the user folder.

A job is accepted only once its row is committed, so a crash never loses accepted work. A job left
'running' by a crash is re-queued on the next start with its attempt counted, and failed as
`worker_lost` once it has used all its attempts (it may be what crashes the server).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .leases import LeaseMixin, Recovered, add_lease_columns
from .wire import dumps, wire_number

log = logging.getLogger("sumie.jobs")

PENDING, RUNNING, DONE = "pending", "running", "done"
SUCCESS, ERROR, INTERRUPTED = "success", "error", "interrupted"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id TEXT NOT NULL UNIQUE,
    number REAL NOT NULL,
    state TEXT NOT NULL,
    status TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    client_id TEXT,
    digest TEXT NOT NULL,
    prompt TEXT NOT NULL,
    extra_data TEXT NOT NULL,
    outputs_to_execute TEXT NOT NULL,
    outputs TEXT,
    messages TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    done_seq INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_pending ON jobs(state, number, seq);
CREATE INDEX IF NOT EXISTS jobs_done ON jobs(done_seq);
"""

_COLUMNS = ("prompt_id, number, state, status, attempts, client_id, digest, prompt, extra_data, "
            "outputs_to_execute, outputs, messages, created, started, finished")


@dataclass(kw_only=True)
class Job:
    prompt_id: str
    number: float
    state: str
    status: str | None
    attempts: int
    client_id: str | None
    digest: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]
    outputs: dict[str, Any] = field(default_factory=dict)
    messages: list[Any] = field(default_factory=list)
    created: float = 0.0
    started: float | None = None
    finished: float | None = None

    def queue_item(self) -> list[Any]:
        """ComfyUI's queue/history item: [number, prompt_id, prompt, extra_data, outputs_to_execute]."""
        return [wire_number(self.number), self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]

    def history_entry(self) -> dict[str, Any]:
        return {
            "prompt": self.queue_item(),
            "outputs": self.outputs,
            "status": {"status_str": self.status, "completed": self.status == SUCCESS, "messages": self.messages},
            "meta": {nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
                     for nid in self.outputs},
        }

    @property
    def api_status(self) -> str:
        """The unified /api/jobs status."""
        if self.state == PENDING:
            return "pending"
        if self.state == RUNNING:
            return "in_progress"
        return {SUCCESS: "completed", INTERRUPTED: "cancelled"}.get(self.status or "", "failed")

    def error_message(self) -> dict[str, Any] | None:
        for name, data in self.messages:
            if name == "execution_error":
                return data
        return None


class JobStore(LeaseMixin):
    """Thread-safe (one connection behind a lock): the event loop and the run thread both use it.

    Leases (server/leases.py) are how workers in other processes hold running jobs."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit survives the process being killed (kill -9), not a power cut; accepting a job
        # switches to FULL for its commit (see add), so accepted work survives a power cut as well.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        add_lease_columns(self._db)
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0), COALESCE(MAX(done_seq), 0) FROM jobs").fetchone()
        self._counter = int(row[0])
        self._done_counter = int(row[1])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing --------------------------------------------------------------------------------
    def add(self, *, prompt_id: str, prompt: dict[str, Any], extra_data: dict[str, Any], client_id: str | None,
            outputs_to_execute: Sequence[str], digest: str, front: bool = False,
            number: float | None = None) -> tuple[Job, bool]:
        """Queue a job; with a prompt_id already known return (that job, False) and queue nothing."""
        with self._lock:
            existing = self._get(prompt_id)
            if existing is not None:
                return existing, False
            self._counter += 1
            if number is None:
                number = float(-self._counter if front else self._counter)
            now = time.time()
            self._db.execute("PRAGMA synchronous=FULL")
            try:
                self._db.execute(
                    "INSERT INTO jobs (prompt_id, number, state, attempts, client_id, digest, prompt, extra_data, "
                    "outputs_to_execute, created) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?)",
                    (prompt_id, number, PENDING, client_id, digest, dumps(prompt), dumps(extra_data),
                     dumps(list(outputs_to_execute)), now))
            finally:
                self._db.execute("PRAGMA synchronous=NORMAL")
            job = Job(prompt_id=prompt_id, number=number, state=PENDING, status=None, attempts=0, client_id=client_id,
                      digest=digest, prompt=prompt, extra_data=extra_data, outputs_to_execute=list(outputs_to_execute),
                      created=now)
            return job, True

    def claim_next(self) -> Job | None:
        """Move the first pending job (by number, then arrival) to running, counting the attempt."""
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE state = ? ORDER BY number, seq LIMIT 1",
                                   (PENDING,)).fetchone()
            if row is None:
                return None
            job = _job(row)
            job.state = RUNNING
            job.attempts += 1
            job.started = time.time()
            self._db.execute("UPDATE jobs SET state = ?, attempts = ?, started = ? WHERE prompt_id = ?",
                             (RUNNING, job.attempts, job.started, job.prompt_id))
            return job

    def finish(self, prompt_id: str, *, status: str, outputs: dict[str, Any], messages: list[Any],
               max_history: int | None = None, lease: str | None = None) -> bool:
        """Record the result; with `lease`, only while that lease still holds the job (False otherwise)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                changed = self._db.execute(
                    "UPDATE jobs SET state = ?, status = ?, outputs = ?, messages = ?, finished = ?, done_seq = ?, "
                    "lease_token = NULL, lease_expires = NULL WHERE prompt_id = ? AND (? IS NULL OR "
                    "(state = 'running' AND lease_token = ?))",
                    (DONE, status, dumps(outputs), dumps(messages), time.time(), self._done_counter + 1, prompt_id,
                     lease, lease)).rowcount
                if not changed and lease is not None:
                    self._db.execute("ROLLBACK")
                    return False
                self._done_counter += 1
                if max_history is not None:
                    self._db.execute(
                        "DELETE FROM jobs WHERE state = ? AND done_seq <= ("
                        "SELECT done_seq FROM jobs WHERE state = ? ORDER BY done_seq DESC LIMIT 1 OFFSET ?)",
                        (DONE, DONE, max_history))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return True

    def requeue(self, prompt_id: str, *, uncount_attempt: bool) -> None:
        """Put a running job back in front of the queue (a clean shutdown interrupted it)."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state = ?, started = NULL, attempts = MAX(0, attempts - ?) WHERE prompt_id = ? "
                "AND state = ?", (PENDING, 1 if uncount_attempt else 0, prompt_id, RUNNING))

    def recover(self, *, max_attempts: int) -> list[Recovered]:
        """After a crash: re-queue jobs left running, or fail them once they have used every attempt."""
        recovered: list[Recovered] = []
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE state = ? ORDER BY seq", (RUNNING,)).fetchall()
            for row in rows:
                job = _job(row)
                if job.attempts < max_attempts:
                    self._db.execute("UPDATE jobs SET state = ?, started = NULL WHERE prompt_id = ?",
                                     (PENDING, job.prompt_id))
                    recovered.append(Recovered(prompt_id=job.prompt_id, action="requeued", attempts=job.attempts))
                    continue
                self._done_counter += 1
                now = time.time()
                error = {"prompt_id": job.prompt_id, "node_id": None, "node_type": None, "executed": [],
                         "exception_message": f"the server stopped while running this job, {job.attempts} time(s); "
                                              "it is not retried again (it may be what crashes the server)",
                         "exception_type": "worker_lost", "traceback": [], "current_inputs": {},
                         "current_outputs": {}, "timestamp": int(now * 1000)}
                self._db.execute(
                    "UPDATE jobs SET state = ?, status = ?, outputs = ?, messages = ?, finished = ?, done_seq = ? "
                    "WHERE prompt_id = ?",
                    (DONE, ERROR, "{}", dumps([["execution_error", error]]), now, self._done_counter, job.prompt_id))
                recovered.append(Recovered(prompt_id=job.prompt_id, action="worker_lost", attempts=job.attempts))
        return recovered

    def delete_pending(self, prompt_ids: Iterable[str]) -> int:
        return self._delete(PENDING, prompt_ids)

    def clear_pending(self) -> int:
        return self._delete(PENDING, None)

    def delete_history(self, prompt_ids: Iterable[str]) -> int:
        return self._delete(DONE, prompt_ids)

    def clear_history(self) -> int:
        return self._delete(DONE, None)

    def _delete(self, state: str, prompt_ids: Iterable[str] | None) -> int:
        with self._lock:
            if prompt_ids is None:
                return self._db.execute("DELETE FROM jobs WHERE state = ?", (state,)).rowcount
            ids = [p for p in prompt_ids if isinstance(p, str)]
            count = 0
            for pid in ids:
                count += self._db.execute("DELETE FROM jobs WHERE state = ? AND prompt_id = ?", (state, pid)).rowcount
            return count

    # -- reading --------------------------------------------------------------------------------
    def get(self, prompt_id: str) -> Job | None:
        with self._lock:
            return self._get(prompt_id)

    def _get(self, prompt_id: str) -> Job | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE prompt_id = ?", (prompt_id,)).fetchone()
        return _job(row) if row else None

    def state_of(self, prompt_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT state FROM jobs WHERE prompt_id = ?", (prompt_id,)).fetchone()
        return row[0] if row else None

    def pending(self, limit: int | None = None) -> list[Job]:
        """Pending jobs in the order they run; the first `limit` of them when given."""
        if limit is not None:
            return self._select("WHERE state = ? ORDER BY number, seq LIMIT ?", (PENDING, limit))
        return self._select("WHERE state = ? ORDER BY number, seq", (PENDING,))

    def pending_brief(self) -> list[tuple[str, float]]:
        """(prompt_id, created) of the pending jobs in queue order: a dispatcher's view of the queue that
        parses no stored prompt (it runs on every job's end, with the whole queue pending)."""
        with self._lock:
            rows = self._db.execute("SELECT prompt_id, created FROM jobs WHERE state = ? ORDER BY number, seq",
                                    (PENDING,)).fetchall()
        return [(prompt_id, float(created)) for prompt_id, created in rows]

    def running(self) -> list[Job]:
        return self._select("WHERE state = ? ORDER BY seq", (RUNNING,))

    def count(self, state: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (state,)).fetchone()[0]

    def queue_remaining(self) -> int:
        """Jobs pending or running: the `queue_remaining` of status messages and GET /prompt."""
        return self.count(PENDING) + self.count(RUNNING)

    def history(self, *, max_items: int | None = None, offset: int | None = None) -> list[Job]:
        """Finished jobs oldest first; without an offset, the latest `max_items` (ComfyUI's paging)."""
        if max_items is None and not offset:
            return self._select("WHERE state = ? ORDER BY done_seq", (DONE,))
        if offset is None:
            jobs = self._select("WHERE state = ? ORDER BY done_seq DESC LIMIT ?", (DONE, max_items))
            return jobs[::-1]
        limit = -1 if max_items is None else max_items
        return self._select("WHERE state = ? ORDER BY done_seq LIMIT ? OFFSET ?", (DONE, limit, offset))

    def list_jobs(self, *, states: Sequence[str] | None, statuses: Sequence[str] | None, newest_first: bool,
                  limit: int, offset: int) -> tuple[list[Job], int]:
        """One page of every job (pending, running and done) for /api/jobs, and the total matching."""
        where: list[str] = []
        args: list[Any] = []
        clauses: list[str] = []
        if states:
            clauses.append(f"state IN ({', '.join('?' * len(states))})")
            args.extend(states)
        if statuses:
            clauses.append(f"(state = 'done' AND status IN ({', '.join('?' * len(statuses))}))")
            args.extend(statuses)
        if clauses:
            where.append("(" + " OR ".join(clauses) + ")")
        sql_where = f"WHERE {' AND '.join(where)}" if where else ""
        order = "DESC" if newest_first else "ASC"
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM jobs {sql_where}", args).fetchone()[0]
        jobs = self._select(f"{sql_where} ORDER BY created {order}, seq {order} LIMIT ? OFFSET ?",
                            (*args, limit, offset))
        return jobs, total

    def _select(self, tail: str, args: Sequence[Any]) -> list[Job]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs {tail}", args).fetchall()
        return [_job(r) for r in rows]


def _job(row: Sequence[Any]) -> Job:
    (prompt_id, number, state, status, attempts, client_id, digest, prompt, extra_data, outputs_to_execute,
     outputs, messages, created, started, finished) = row
    return Job(prompt_id=prompt_id, number=number if math.isfinite(number) else 0.0, state=state, status=status,
               attempts=attempts, client_id=client_id, digest=digest, prompt=_stored(prompt, {}),
               extra_data=_stored(extra_data, {}), outputs_to_execute=_stored(outputs_to_execute, []),
               outputs=_stored(outputs, {}), messages=_stored(messages, []), created=created, started=started,
               finished=finished)


def _stored(text: str | None, empty: Any) -> Any:
    """A stored JSON column. Rows written before values were bounded at ingest may hold what cannot be
    served (nesting too deep to parse, Infinity): such a row reads as empty rather than failing every
    listing that includes it."""
    if not text:
        return empty
    try:
        return json.loads(text, parse_constant=str)
    except (RecursionError, ValueError):
        log.warning("a stored job value cannot be read back (%d characters); it is shown as empty", len(text))
        return empty
