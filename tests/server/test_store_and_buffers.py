"""The job store and the websocket send buffer on their own."""

from __future__ import annotations

from server.jobs import DONE, ERROR, PENDING, RUNNING, SUCCESS, JobStore
from server.ws import SendBuffer


def _add(store: JobStore, pid: str, **kw):
    return store.add(prompt_id=pid, prompt={"1": {"class_type": "X", "inputs": {}}}, extra_data={}, client_id=None,
                     outputs_to_execute=["1"], digest="d", **kw)


def test_store_orders_by_number_then_arrival_and_survives_reopening(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    _add(store, "a")
    _add(store, "b")
    _add(store, "front", front=True)
    _add(store, "num", number=1.5)
    assert [j.prompt_id for j in store.pending()] == ["front", "a", "num", "b"]
    job, created = _add(store, "a")
    assert not created and job.number == 1
    store.close()
    store = JobStore(path)
    assert [j.prompt_id for j in store.pending()] == ["front", "a", "num", "b"]
    _, created = _add(store, "later")
    assert created and store.get("later").number == 5  # the counter continues after a restart
    claimed = store.claim_next()
    assert claimed.prompt_id == "front" and claimed.attempts == 1 and store.state_of("front") == RUNNING
    store.finish("front", status=SUCCESS, outputs={"1": {"text": ["x"]}}, messages=[["execution_success", {}]])
    assert store.get("front").history_entry()["status"] == {"status_str": SUCCESS, "completed": True,
                                                             "messages": [["execution_success", {}]]}
    store.close()


def test_recover_requeues_once_then_fails_as_worker_lost(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    _add(store, "a")
    store.claim_next()
    (item,) = store.recover(max_attempts=2)
    assert (item.prompt_id, item.action, item.attempts) == ("a", "requeued", 1)
    assert store.state_of("a") == PENDING
    assert store.claim_next().attempts == 2
    (item,) = store.recover(max_attempts=2)
    assert item.action == "worker_lost"
    job = store.get("a")
    assert job.state == DONE and job.status == ERROR and job.api_status == "failed"
    assert job.error_message()["exception_type"] == "worker_lost"
    assert store.recover(max_attempts=2) == []


def test_history_is_trimmed_to_its_limit(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    for i in range(5):
        _add(store, f"j{i}")
        store.claim_next()
        store.finish(f"j{i}", status=SUCCESS, outputs={}, messages=[], max_history=3)
    assert [j.prompt_id for j in store.history()] == ["j2", "j3", "j4"]
    assert [j.prompt_id for j in store.history(max_items=2)] == ["j3", "j4"]


def test_outputs_that_are_not_plain_json_are_stored_safely(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    _add(store, "a")
    store.claim_next()
    store.finish("a", status=SUCCESS, outputs={"1": {"v": [float("nan"), object.__name__, (1, 2)]}}, messages=[])
    assert store.get("a").outputs == {"1": {"v": ["nan", "object", [1, 2]]}}


def test_send_buffer_drops_previews_first_then_refuses_text():
    buf = SendBuffer(3)
    assert buf.offer("t1", droppable=False)
    assert buf.offer(b"p1", droppable=True)
    assert buf.offer("t2", droppable=False)
    assert buf.offer(b"p2", droppable=True)  # full: the new preview is dropped
    assert buf.offer("t3", droppable=False)  # full: the queued preview makes room
    assert [buf.pop() for _ in range(len(buf))] == ["t1", "t2", "t3"]
    assert buf.dropped_previews == 2
    for i in range(3):
        buf.offer(f"x{i}", droppable=False)
    assert buf.offer("too much", droppable=False) is False


def test_rows_written_before_ingest_bounds_are_still_served(tmp_path):
    """A database from before values were bounded at ingest: deep and non-finite rows read back safely."""
    import json
    import sqlite3

    store = JobStore(tmp_path / "jobs.sqlite3")
    _add(store, "deep")
    _add(store, "inf")
    store.close()
    db = sqlite3.connect(tmp_path / "jobs.sqlite3")
    db.execute("UPDATE jobs SET extra_data = ? WHERE prompt_id = 'deep'", ('{"x": ' + "[" * 5000 + "]" * 5000 + "}",))
    db.execute("UPDATE jobs SET number = ?, prompt = ? WHERE prompt_id = 'inf'", (float("inf"), '{"v": Infinity}'))
    db.commit()
    db.close()
    store = JobStore(tmp_path / "jobs.sqlite3")
    jobs = {j.prompt_id: j for j in store.pending()}
    assert jobs["deep"].extra_data == {}
    assert jobs["inf"].number == 0.0 and jobs["inf"].prompt == {"v": "Infinity"}
    json.dumps([j.queue_item() for j in jobs.values()], allow_nan=False)
