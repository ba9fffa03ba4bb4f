"""--multi-user: each user has their own settings, workflows, outputs and jobs, and sees no one else's."""

from __future__ import annotations

import argparse
import json

import pytest

from server import cli
from server.app import refuse_reason
from server.options import ServerOptions
from tests.server import workflows as wf
from tests.server.conftest import receive_json, served, until_done, wait_for

ALICE, BOB, ADMIN = "alice-token-1", "bob-token-22", "admin-token-333"
TOKENS = {"multi_user": True, "user_tokens": ((ALICE, "alice"), (BOB, "bob"))}


def as_user(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_user_token_is_required_and_picks_the_user(env):
    async with served(env, **TOKENS) as client:
        assert (await client.get("/api/settings")).status == 401
        assert (await client.get("/api/settings", headers=as_user("wrong-token-0"))).status == 401
        # Signed in by the token, the editor shows no user picker.
        users = await (await client.get("/api/users", headers=as_user(ALICE))).json()
        assert users == {"storage": "server", "migrated": True}
        assert (await client.post("/api/users", json={"username": "eve"}, headers=as_user(ALICE))).status == 403
        # A browser opening /?token=... keeps the token as a cookie for the editor's later requests.
        opened = await client.get("/?token=" + ALICE)
        assert opened.cookies["sumie_token"].value == ALICE and opened.cookies["sumie_token"]["httponly"]
        assert (await client.post("/api/settings/Comfy.Locale", json="fr")).status == 200  # the cookie
    assert json.loads((env.folders.user / "alice" / "comfy.settings.json").read_text()) == {"Comfy.Locale": "fr"}


async def test_settings_workflows_and_user_css_are_per_user(env):
    async with served(env, **TOKENS) as client:
        await client.post("/api/settings", json={"Comfy.Theme": "dark"}, headers=as_user(ALICE))
        assert await (await client.get("/api/settings", headers=as_user(BOB))).json() == {}
        assert (await client.post("/api/userdata/workflows%2Fmine.json", data=b'{"nodes": []}',
                                  headers=as_user(ALICE))).status == 200
        listing = await client.get("/api/userdata", params={"dir": "workflows"}, headers=as_user(BOB))
        assert await listing.json() == []
        assert (await client.get("/api/userdata/workflows%2Fmine.json", headers=as_user(BOB))).status == 404
        mine = await client.get("/api/userdata/workflows%2Fmine.json", headers=as_user(ALICE))
        assert await mine.read() == b'{"nodes": []}'
        await client.post("/api/userdata/user.css", data=b"a {}", headers=as_user(ALICE))
        assert await (await client.get("/user.css", headers=as_user(BOB))).text() == ""
    assert (env.folders.user / "alice" / "workflows" / "mine.json").is_file()


async def test_jobs_history_and_outputs_are_per_user(env):
    async with served(env, **TOKENS) as client:
        forged = {"prompt": wf.save(value=3, prefix="a"), "extra_data": {"sumie_user": "bob"}}
        done = await (await client.post("/api/run", json=forged, headers=as_user(ALICE))).json()
        assert done["status"] == "success", done
        pid = done["prompt_id"]
        (image,) = next(iter(done["outputs"].values()))["images"]
        assert (env.folders.output / "alice" / image["filename"]).is_file()  # alice's own output folder
        view = {"filename": image["filename"], "type": "output"}
        assert (await client.get("/api/view", params=view, headers=as_user(ALICE))).status == 200
        assert (await client.get("/api/view", params=view, headers=as_user(BOB))).status == 404
        # The owner comes from the token, never from the body: bob sees nothing of it.
        assert await (await client.get("/api/history", headers=as_user(BOB))).json() == {}
        assert list(await (await client.get("/api/history", headers=as_user(ALICE))).json()) == [pid]
        assert (await client.get(f"/api/history/{pid}", headers=as_user(BOB))).status == 404
        assert (await client.get(f"/api/jobs/{pid}", headers=as_user(BOB))).status == 404
        assert (await client.get(f"/api/jobs/{pid}", headers=as_user(ALICE))).status == 200
        bobs = await (await client.get("/api/jobs", headers=as_user(BOB))).json()
        assert bobs["jobs"] == [] and bobs["pagination"]["total"] == 0
        alices = await (await client.get("/api/jobs?status=completed", headers=as_user(ALICE))).json()
        assert [j["id"] for j in alices["jobs"]] == [pid]
        files = await (await client.get("/internal/files/output", headers=as_user(BOB))).json()
        assert files == []
        # Bob cannot delete it, nor reuse its prompt_id.
        await client.post("/api/history", json={"delete": [pid]}, headers=as_user(BOB))
        await client.post("/api/history", json={"clear": True}, headers=as_user(BOB))
        assert pid in await (await client.get("/api/history", headers=as_user(ALICE))).json()
        again = await client.post("/api/prompt", json={"prompt": wf.save(value=3, prefix="a"), "prompt_id": pid},
                                  headers=as_user(BOB))
        assert again.status == 409
        # The same workflow run by bob is bob's own run, in bob's folder (no cached result of alice's).
        bob_run = await (await client.post("/api/run", json={"prompt": wf.save(value=3, prefix="a")},
                                           headers=as_user(BOB))).json()
        bob_image = next(iter(bob_run["outputs"].values()))["images"][0]["filename"]
        assert (env.folders.output / "bob" / bob_image).is_file()
        assert (await client.get("/api/view", params={"filename": bob_image, "type": "output"},
                                 headers=as_user(BOB))).status == 200


async def test_queue_interrupt_and_events_are_per_user(env):
    async with served(env, **TOKENS) as client:
        alice_ws = await client.ws_connect("/ws?clientId=me&token=" + ALICE)
        assert (await receive_json(alice_ws))["data"]["sid"] == "alice:me"
        bob_ws = await client.ws_connect("/ws?clientId=alice:me&token=" + BOB)  # trying to listen in
        assert (await receive_json(bob_ws))["data"]["sid"] == "bob:alice:me"
        body = await (await client.post("/api/prompt", json={"prompt": wf.gated(), "client_id": "me"},
                                        headers=as_user(ALICE))).json()
        pid = body["prompt_id"]

        async def running():
            queue = await (await client.get("/api/queue", headers=as_user(ALICE))).json()
            return queue["queue_running"]

        await wait_for(running, what="alice's job to run")
        bob_queue = await (await client.get("/api/queue", headers=as_user(BOB))).json()
        assert bob_queue == {"queue_running": [], "queue_pending": []}
        await client.post("/api/interrupt", json={}, headers=as_user(BOB))  # not bob's job: nothing stops
        assert (await client.post(f"/api/jobs/{pid}/cancel", headers=as_user(BOB))).status == 404
        cancelled = await client.post("/api/jobs/cancel", json={"job_ids": [pid]}, headers=as_user(BOB))
        assert await cancelled.json() == {"cancelled": []}
        await client.post("/api/queue", json={"clear": True}, headers=as_user(BOB))
        env.gate.set()
        messages = await until_done(alice_ws, pid)
        assert [m for m in messages if m["type"] == "execution_success"]
        bob_seen = []
        while len(bob_seen) < 2:  # only the queue size, which every socket gets
            bob_seen.append(await receive_json(bob_ws))
        assert {m["type"] for m in bob_seen} == {"status"}
        logs = await (await client.get("/internal/logs/raw", headers=as_user(BOB))).json()
        assert logs["entries"] == []


async def test_without_tokens_users_are_created_and_chosen_by_header(env):
    async with served(env, multi_user=True) as client:
        made = await client.post("/api/users", json={"username": "carol"})
        carol = await made.json()
        assert made.status == 200 and carol.startswith("carol_")
        duplicate = await client.post("/users", json={"username": "carol"})
        assert duplicate.status == 400 and await duplicate.json() == {"error": "Duplicate username."}
        assert await (await client.get("/api/users")).json() == {"storage": "server", "users": {carol: "carol"}}
        await client.post("/api/settings/Comfy.Locale", json="de", headers={"comfy-user": carol})
        assert await (await client.get("/api/settings", headers={"comfy-user": carol})).json() == {"Comfy.Locale": "de"}
        assert await (await client.get("/api/settings")).json() == {}  # the default user
        unknown = await client.get("/api/settings", headers={"comfy-user": "mallory"})
        assert unknown.status == 403 and (await unknown.json())["error"]["type"] == "unknown_user"
        # Jobs are listed per user; the files stay in the shared output folder (an <img> request carries no
        # comfy-user header, so without tokens a file cannot be tied to a user).
        done = await (await client.post("/api/run", json={"prompt": wf.save(prefix="c")},
                                         headers={"comfy-user": carol})).json()
        (image,) = next(iter(done["outputs"].values()))["images"]
        assert (env.folders.output / image["filename"]).is_file()
        assert list(await (await client.get("/api/history", headers={"comfy-user": carol})).json()) == [
            done["prompt_id"]]
        assert await (await client.get("/api/history")).json() == {}
    assert json.loads((env.folders.user / "users.json").read_text()) == {carol: "carol"}


async def test_the_admin_token_acts_as_the_user_it_names(env):
    async with served(env, auth_token=ADMIN, **TOKENS) as client:
        await client.post("/api/settings", json={"x": 1}, headers=as_user(ALICE))
        seen = await client.get("/api/settings", headers={**as_user(ADMIN), "comfy-user": "alice"})
        assert await seen.json() == {"x": 1}
        assert (await client.get("/api/settings")).status == 401


def test_flags_and_listening_beyond_loopback():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    options = cli.options_from(parser.parse_args(["--multi-user", "--user-token", "alice=" + ALICE]))
    assert options.multi_user and options.user_tokens == ((ALICE, "alice"),)
    with pytest.raises(SystemExit, match="needs --multi-user"):
        cli.options_from(parser.parse_args(["--user-token", "alice=" + ALICE]))
    with pytest.raises(SystemExit, match="NAME=TOKEN"):
        cli.options_from(parser.parse_args(["--multi-user", "--user-token", "alice=short"]))
    with pytest.raises(SystemExit, match="twice"):
        cli.options_from(parser.parse_args(["--multi-user", "--user-token", "a=" + ALICE, "--user-token", "a=" + BOB]))
    assert refuse_reason("0.0.0.0", ServerOptions(multi_user=True, user_tokens=((ALICE, "alice"),))) is None
    assert refuse_reason("0.0.0.0", ServerOptions(multi_user=True)) is not None
