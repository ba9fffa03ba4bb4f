"""Job leases in the job store: a worker holds a running job only while it renews its lease.

A job claimed for a worker gets a lease token (unique per claim) and an expiry time. The server renews
it while the worker reports (events or heartbeats); a worker that dies is released at once, one that
falls silent (a lost machine) loses the job when the lease expires. Either way the job goes back to
the queue with its attempt counted, or fails as `worker_lost` once it used every attempt. Only the
holder of the current token can record the result (`JobStore.finish(..., lease=token)`), so a run that
was given up on and then reports late is ignored: each job completes exactly once.

`add_lease_columns` is the schema migration: databases written before leases existed get the columns
when they are opened.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .wire import dumps


@dataclass(frozen=True, kw_only=True)
class Recovered:
    """A running job given up on (crash, lost worker): re-queued, or failed as worker_lost."""

    prompt_id: str
    action: str  # "requeued" | "worker_lost"
    attempts: int


LEASE_COLUMNS = (("lease_token", "TEXT"), ("lease_expires", "REAL"), ("lease_worker", "TEXT"))


def add_lease_columns(db: sqlite3.Connection) -> None:
    """Add the lease columns to a jobs table that lacks them (old databases), in one transaction."""
    have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    missing = [(name, kind) for name, kind in LEASE_COLUMNS if name not in have]
    if not missing:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for name, kind in missing:
            db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class LeaseMixin:
    """The lease operations of JobStore (server/jobs.py), which provides the connection and lock."""

    _db: sqlite3.Connection
    _lock: threading.Lock
    _done_counter: int
    _get: Callable[[str], Any]  # JobStore._get: the Job of a prompt_id, or None

    def claim_leased(self, prompt_id: str, *, worker: str, lease_s: float,
                     now: float | None = None) -> tuple[Any, str] | None:
        """Move this pending job to running for `worker`; (the job, its lease token), or None if it is
        no longer pending (deleted, or claimed meanwhile)."""
        now = time.time() if now is None else now
        token = uuid.uuid4().hex
        with self._lock:
            changed = self._db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started = ?, lease_token = ?, "
                "lease_expires = ?, lease_worker = ? WHERE prompt_id = ? AND state = 'pending'",
                (now, token, now + lease_s, worker, prompt_id)).rowcount
            if not changed:
                return None
            job = self._get(prompt_id)
        assert job is not None
        return job, token

    def renew(self, prompt_id: str, token: str, *, lease_s: float, now: float | None = None) -> bool:
        """Extend the lease; False when it is no longer held (it expired and the job was re-queued)."""
        now = time.time() if now is None else now
        with self._lock:
            return self._db.execute(
                "UPDATE jobs SET lease_expires = ? WHERE prompt_id = ? AND state = 'running' AND lease_token = ?",
                (now + lease_s, prompt_id, token)).rowcount == 1

    def lease_worker(self, prompt_id: str) -> str | None:
        """The worker holding the running job's lease (None: not running, or run without a lease)."""
        with self._lock:
            row = self._db.execute("SELECT lease_worker FROM jobs WHERE prompt_id = ? AND state = 'running'",
                                   (prompt_id,)).fetchone()
        return row[0] if row else None

    def release(self, prompt_id: str, token: str, *, max_attempts: int, reason: str) -> list[Recovered]:
        """The worker holding this lease is gone: re-queue the job now (or fail it as worker_lost)."""
        return self._expire("prompt_id = ? AND lease_token = ?", (prompt_id, token), max_attempts, reason)

    def expire_leases(self, *, max_attempts: int, now: float | None = None) -> list[Recovered]:
        """Re-queue (or fail as worker_lost) every running job whose lease ran out."""
        now = time.time() if now is None else now
        return self._expire("lease_expires IS NOT NULL AND lease_expires < ?", (now,), max_attempts,
                            "its worker stopped answering")

    def _expire(self, where: str, args: tuple[Any, ...], max_attempts: int, reason: str) -> list[Recovered]:
        out: list[Recovered] = []
        with self._lock:
            rows = self._db.execute(f"SELECT prompt_id, attempts FROM jobs WHERE state = 'running' AND {where}",
                                    args).fetchall()
            for prompt_id, attempts in rows:
                if attempts < max_attempts:
                    self._db.execute(
                        "UPDATE jobs SET state = ?, started = NULL, lease_token = NULL, lease_expires = NULL, "
                        "lease_worker = NULL WHERE prompt_id = ?", ('pending', prompt_id))
                    out.append(Recovered(prompt_id=prompt_id, action="requeued", attempts=attempts))
                    continue
                self._done_counter += 1
                now = time.time()
                error = {"prompt_id": prompt_id, "node_id": None, "node_type": None, "executed": [],
                         "exception_message": f"the worker running this job was lost ({reason}), {attempts} "
                                              "time(s); it is not retried again",
                         "exception_type": "worker_lost", "traceback": [], "current_inputs": {},
                         "current_outputs": {}, "timestamp": int(now * 1000)}
                self._db.execute(
                    "UPDATE jobs SET state = ?, status = ?, outputs = '{}', messages = ?, finished = ?, done_seq = ?, "
                    "lease_token = NULL, lease_expires = NULL WHERE prompt_id = ?",
                    ('done', 'error', dumps([["execution_error", error]]), now, self._done_counter, prompt_id))
                out.append(Recovered(prompt_id=prompt_id, action="worker_lost", attempts=attempts))
        return out
