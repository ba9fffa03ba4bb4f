"""ComfyUI's own editor (the pip package comfyui-frontend-package) served by Sumie with --frontend comfyui.

It must start without an error from our routes, keep its settings on the server, run a classic SD1.5
graph on the demo checkpoint and show the saved image on the Save Image node.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.frontends import comfyui_frontend_root
from tests.e2e.conftest import VIEWPORT, Server

pytestmark = pytest.mark.skipif(
    comfyui_frontend_root() is None,
    reason="comfyui-frontend-package is not installed (pip install -e '.[comfyui-frontend]')")

DEMO = "sumie-demo-random-sd1.safetensors"


def _link(link_id: int, origin: int, origin_slot: int, target: int, target_slot: int, kind: str) -> list:
    return [link_id, origin, origin_slot, target, target_slot, kind]


def _node(node_id: int, kind: str, x: int, *, inputs=(), outputs=(), widgets=None) -> dict:
    node = {"id": node_id, "type": kind, "pos": [x, 200], "size": [300, 120], "flags": {}, "order": 0, "mode": 0,
            "properties": {}, "inputs": [{"name": n, "type": t, "link": link} for n, t, link in inputs],
            "outputs": [{"name": t, "type": t, "links": links, "slot_index": i}
                        for i, (t, links) in enumerate(outputs)]}
    if widgets is not None:
        node["widgets_values"] = widgets
    return node


# The classic SD1.5 text-to-image graph in the editor's format (version 0.4), small and quick.
CLASSIC_GRAPH = {
    "last_node_id": 9, "last_link_id": 9, "version": 0.4, "groups": [], "config": {}, "extra": {},
    "links": [_link(1, 4, 0, 3, 0, "MODEL"), _link(2, 5, 0, 3, 3, "LATENT"), _link(3, 4, 1, 6, 0, "CLIP"),
              _link(4, 6, 0, 3, 1, "CONDITIONING"), _link(5, 4, 1, 7, 0, "CLIP"), _link(6, 7, 0, 3, 2, "CONDITIONING"),
              _link(7, 3, 0, 8, 0, "LATENT"), _link(8, 4, 2, 8, 1, "VAE"), _link(9, 8, 0, 9, 0, "IMAGE")],
    "nodes": [
        _node(4, "CheckpointLoaderSimple", 0, outputs=[("MODEL", [1]), ("CLIP", [3, 5]), ("VAE", [8])],
              widgets=[DEMO]),
        _node(6, "CLIPTextEncode", 350, inputs=[("clip", "CLIP", 3)], outputs=[("CONDITIONING", [4])],
              widgets=["a watercolor painting of a fox"]),
        _node(7, "CLIPTextEncode", 350, inputs=[("clip", "CLIP", 5)], outputs=[("CONDITIONING", [6])],
              widgets=["blurry"]),
        _node(5, "EmptyLatentImage", 350, outputs=[("LATENT", [2])], widgets=[64, 64, 1]),
        _node(3, "KSampler", 700, inputs=[("model", "MODEL", 1), ("positive", "CONDITIONING", 4),
                                          ("negative", "CONDITIONING", 6), ("latent_image", "LATENT", 2)],
              outputs=[("LATENT", [7])], widgets=[42, "fixed", 2, 8.0, "euler", "normal", 1.0]),
        _node(8, "VAEDecode", 1050, inputs=[("samples", "LATENT", 7), ("vae", "VAE", 8)], outputs=[("IMAGE", [9])]),
        _node(9, "SaveImage", 1300, inputs=[("images", "IMAGE", 9)], widgets=["ComfyUI"]),
    ],
}


@pytest.fixture(scope="module")
def comfy_server() -> Iterator[Server]:
    root = Path(tempfile.mkdtemp(prefix="sumie-e2e-comfyui-"))
    srv = Server(root, extra_args=("--frontend", "comfyui"))
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)


class Page:
    """A tab on ComfyUI's editor that records errors from this server (the editor also calls
    api.comfy.org and huggingface.co; those requests are cut off, and their errors are not ours)."""

    def __init__(self, browser, server: Server) -> None:
        self.server = server
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.route(lambda url: not url.startswith(server.url), lambda route: route.abort())
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.frames: list[dict] = []  # JSON websocket messages from the server
        self.page.on("websocket", lambda ws: ws.on("framereceived", self._frame))
        self.page.on("response", lambda r: self.failed.append(f"{r.status} {r.request.method} {r.url}")
                     if r.status >= 400 and r.url.startswith(server.url) else None)

    def _frame(self, payload) -> None:
        if isinstance(payload, str):
            self.frames.append(json.loads(payload))

    def _console(self, message) -> None:
        if message.type != "error":
            return
        where = (message.location or {}).get("url", "")
        external = where.startswith("http") and not where.startswith(self.server.url)
        if not external and "ERR_FAILED" not in message.text:
            self.errors.append(f"console.error: {message.text} ({where})")

    def open(self, query: str = "") -> None:
        self.page.goto(self.server.url + "/" + query)
        self.page.wait_for_function("() => window.app?.graph && window.app.vueAppReady", timeout=90_000)
        self.page.wait_for_timeout(1500)  # the editor's start-up requests settle

    def js(self, script: str, arg: object = None) -> object:
        return self.page.evaluate(script, arg)


def test_comfyui_editor_starts_clean_and_keeps_its_settings(browser, comfy_server):
    tab = Page(browser, comfy_server)
    try:
        tab.open()
        assert tab.errors == [] and tab.failed == []
        # The editor stored its first-run settings on the server, so the next load is not a first run.
        deadline = time.monotonic() + 30
        while comfy_server.get("/api/settings").get("Comfy.TutorialCompleted") is not True:
            assert time.monotonic() < deadline, f"settings never saved: {comfy_server.get('/api/settings')}"
            time.sleep(0.2)
        assert comfy_server.get("/api/settings/Comfy.TutorialCompleted") is True
    finally:
        tab.context.close()


def test_classic_sd15_graph_runs_and_its_image_shows_on_save_image(browser, comfy_server):
    tab = Page(browser, comfy_server)
    try:
        tab.open()
        tab.js("g => window.app.loadGraphData(g)", CLASSIC_GRAPH)
        assert sorted(tab.js("() => window.app.graph.nodes.map(n => n.type)")) == sorted(
            n["type"] for n in CLASSIC_GRAPH["nodes"])
        tab.js("() => window.app.queuePrompt(0, 1)")
        tab.page.wait_for_function("""() => {
            const n = window.app.graph.nodes.find(n => n.type === 'SaveImage');
            return n?.imgs?.length && n.imgs[0].complete && n.imgs[0].naturalWidth === 64;
        }""", timeout=120_000)
        src = tab.js("() => window.app.graph.nodes.find(n => n.type === 'SaveImage').imgs[0].src")
        assert "/view?" in src and "type=output" in src
        history = comfy_server.get("/api/history")
        (entry,) = history.values()
        assert entry["status"]["completed"] is True
        saved = entry["outputs"]["9"]["images"][0]["filename"]
        assert (comfy_server.folders["output"] / saved).is_file()
        # The socket answered the editor's feature flags, and the node states it colours nodes by came as
        # progress_state messages, ending with every node of the graph finished.
        assert any(f["type"] == "feature_flags" and "max_upload_size" in f["data"] for f in tab.frames)
        states = [f["data"]["nodes"] for f in tab.frames if f["type"] == "progress_state"]
        assert states and {nid: n["state"] for nid, n in states[-1].items()} == {
            str(n["id"]): "finished" for n in CLASSIC_GRAPH["nodes"]}
        assert tab.errors == [] and tab.failed == []
    finally:
        tab.context.close()


ALICE, BOB = "alice-e2e-token", "bob-e2e-token"


@pytest.fixture(scope="module")
def multi_user_server() -> Iterator[Server]:
    root = Path(tempfile.mkdtemp(prefix="sumie-e2e-users-"))
    srv = Server(root, extra_args=("--frontend", "comfyui", "--multi-user", "--user-token", f"alice={ALICE}",
                                   "--user-token", f"bob={BOB}"), token=ALICE)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_signed_in_user_runs_in_their_own_space(browser, multi_user_server):
    """Opened once with ?token=, the editor works as that user: the image lands in the user's own output
    folder and shows on the node (the browser's image requests carry the sign-in cookie); another user
    sees neither the job nor its settings."""
    srv = multi_user_server
    tab = Page(browser, srv)
    try:
        tab.open("?token=" + ALICE)
        tab.js("g => window.app.loadGraphData(g)", CLASSIC_GRAPH)
        tab.js("() => window.app.queuePrompt(0, 1)")
        tab.page.wait_for_function("""() => {
            const n = window.app.graph.nodes.find(n => n.type === 'SaveImage');
            return n?.imgs?.length && n.imgs[0].complete && n.imgs[0].naturalWidth === 64;
        }""", timeout=120_000)
        (entry,) = srv.get("/api/history").values()
        saved = entry["outputs"]["9"]["images"][0]["filename"]
        assert (srv.folders["output"] / "alice" / saved).is_file()
        assert srv.get("/api/settings").get("Comfy.TutorialCompleted") is True
        assert srv.get("/api/history", token=BOB) == {} and srv.get("/api/settings", token=BOB) == {}
        assert tab.errors == [] and tab.failed == []
    finally:
        tab.context.close()
