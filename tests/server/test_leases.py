"""Job leases in the store: claim for a worker, renew, expiry and release re-queue, only the holder
records the result (exactly once), and old databases get the lease columns when opened."""

from __future__ import annotations

import sqlite3

from server.jobs import DONE, ERROR, PENDING, RUNNING, SUCCESS, JobStore


def _add(store: JobStore, pid: str) -> None:
    store.add(prompt_id=pid, prompt={"1": {"class_type": "Const", "inputs": {}}}, extra_data={}, client_id="c",
              outputs_to_execute=["1"], digest="d")


def test_a_claimed_job_is_held_by_its_worker_until_it_finishes(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    _add(store, "a")
    job, token = store.claim_leased("a", worker="w0", lease_s=10, now=100.0)
    assert (job.state, job.attempts) == (RUNNING, 1)
    assert store.lease_worker("a") == "w0"
    assert store.claim_leased("a", worker="w1", lease_s=10) is None  # no second holder
    assert store.renew("a", token, lease_s=10, now=105.0)
    assert store.expire_leases(max_attempts=2, now=112.0) == []  # renewed until 115
    assert store.finish("a", status=SUCCESS, outputs={"1": {"text": ["x"]}}, messages=[], lease=token)
    assert store.get("a").state == DONE and store.lease_worker("a") is None


def test_an_expired_lease_requeues_the_job_and_the_late_result_is_ignored(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    _add(store, "a")
    _, old = store.claim_leased("a", worker="w0", lease_s=10, now=100.0)
    [recovered] = store.expire_leases(max_attempts=3, now=111.0)
    assert (recovered.prompt_id, recovered.action) == ("a", "requeued")
    assert store.get("a").state == PENDING
    assert not store.renew("a", old, lease_s=10)
    _, new = store.claim_leased("a", worker="w1", lease_s=10)
    # The first worker comes back and reports: refused, the job stays with w1.
    assert not store.finish("a", status=SUCCESS, outputs={"1": {"text": ["late"]}}, messages=[], lease=old)
    assert store.get("a").state == RUNNING and store.lease_worker("a") == "w1"
    assert store.finish("a", status=SUCCESS, outputs={"1": {"text": ["ok"]}}, messages=[], lease=new)
    done = store.get("a")
    assert (done.state, done.attempts, done.outputs) == (DONE, 2, {"1": {"text": ["ok"]}})
    assert [j.prompt_id for j in store.history()] == ["a"]  # recorded once
    assert not store.finish("a", status=ERROR, outputs={}, messages=[], lease=new)  # and only once


def test_release_requeues_at_once_then_fails_as_worker_lost_when_attempts_are_spent(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    _add(store, "a")
    _, t1 = store.claim_leased("a", worker="w0", lease_s=60)
    assert store.release("a", "not-the-token", max_attempts=2, reason="x") == []
    [first] = store.release("a", t1, max_attempts=2, reason="actor died")
    assert first.action == "requeued" and store.get("a").state == PENDING
    _, t2 = store.claim_leased("a", worker="w1", lease_s=60)
    [second] = store.release("a", t2, max_attempts=2, reason="actor died")
    assert second.action == "worker_lost"
    job = store.get("a")
    assert (job.state, job.status) == (DONE, ERROR)
    error = job.error_message()
    assert error["exception_type"] == "worker_lost" and "actor died" in error["exception_message"]


def test_jobs_run_without_a_lease_never_expire(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    _add(store, "a")
    store.claim_next()  # the in-process worker holds jobs without leases
    assert store.expire_leases(max_attempts=2, now=1e12) == []
    assert store.get("a").state == RUNNING


def test_a_database_from_before_leases_is_migrated_on_open(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, prompt_id TEXT NOT NULL UNIQUE,
            number REAL NOT NULL, state TEXT NOT NULL, status TEXT, attempts INTEGER NOT NULL DEFAULT 0,
            client_id TEXT, digest TEXT NOT NULL, prompt TEXT NOT NULL, extra_data TEXT NOT NULL,
            outputs_to_execute TEXT NOT NULL, outputs TEXT, messages TEXT, created REAL NOT NULL, started REAL,
            finished REAL, done_seq INTEGER);
        INSERT INTO jobs (prompt_id, number, state, digest, prompt, extra_data, outputs_to_execute, created)
            VALUES ('old', 1, 'pending', 'd', '{}', '{}', '[]', 1.0);
    """)
    db.commit()
    db.close()
    store = JobStore(path)
    columns = {row[1] for row in store._db.execute("PRAGMA table_info(jobs)")}
    assert {"lease_token", "lease_expires", "lease_worker"} <= columns
    job, token = store.claim_leased("old", worker="w0", lease_s=5)
    assert job.prompt_id == "old" and store.finish("old", status=SUCCESS, outputs={}, messages=[], lease=token)
    store.close()
    JobStore(path).close()  # opening a migrated database again changes nothing


def test_the_dispatchers_view_of_the_queue_is_the_pending_jobs_in_queue_order(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    for pid in ("a", "b", "c"):
        _add(store, pid)
    store.add(prompt_id="urgent", prompt={"1": {"class_type": "Const", "inputs": {}}}, extra_data={}, client_id="c",
              outputs_to_execute=["1"], digest="d", front=True)
    store.claim_leased("b", worker="w0", lease_s=10)
    brief = store.pending_brief()
    assert [pid for pid, _ in brief] == [j.prompt_id for j in store.pending()] == ["urgent", "a", "c"]
    assert [created for _, created in brief] == [j.created for j in store.pending()]
