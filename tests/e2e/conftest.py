"""End-to-end harness: the real server in a subprocess and Debian's Chromium driven by Playwright.

Every test in this folder is marked `e2e` and is skipped only when /usr/bin/chromium is absent
(`scripts/e2e-setup.sh` installs it). Playwright's own browsers are never downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("SUMIE_CHROMIUM", "/usr/bin/chromium"))
OUTPUT = Path(__file__).resolve().parent / "output"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1500, "height": 860}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: end-to-end test in a real headless Chromium (needs /usr/bin/chromium)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    ours = []
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            ours.append(item)
            item.add_marker(pytest.mark.e2e)
            if not CHROMIUM.exists():
                item.add_marker(pytest.mark.skip(reason=f"{CHROMIUM} is absent (run scripts/e2e-setup.sh)"))
    # Playwright's sync API keeps an event loop running in the main thread while it is open; run the
    # browser tests last so no other test (asyncio.run in the server tests) ever shares a session with it.
    if ours:
        ids = {id(i) for i in ours}
        items[:] = [i for i in items if id(i) not in ids] + ours


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, token: str | None = None) -> object:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as res:  # noqa: S310
        return json.loads(res.read())


class Server:
    """`main.py serve` on a free port with its own folders."""

    def __init__(self, root: Path, extra_args: tuple[str, ...] = (), token: str | None = None) -> None:
        self.root = root
        self.token = token  # sent by get() and the start-up check
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "server.log"
        folders = {name: root / name for name in ("models", "user", "output", "input", "temp")}
        self.folders = folders
        cmd = [sys.executable, str(ROOT / "main.py"), "serve", "--port", str(self.port)]
        for name, path in folders.items():
            cmd += [f"--{name}-dir", str(path)]
        cmd += list(extra_args)
        env = {**os.environ, "SUMIE_CPU": "1", "PYTHONUNBUFFERED": "1"}
        self._log_file = open(self.log, "ab")  # noqa: SIM115 (the subprocess owns it until it exits)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._log_file, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                info = _get_json(self.url + "/object_info", self.token)
                if isinstance(info, dict) and "CheckpointLoaderSimple" in info:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not start in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def get(self, path: str, token: str | None = None) -> object:
        return _get_json(self.url + path, token or self.token)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    root = Path(tempfile.mkdtemp(prefix="sumie-e2e-"))
    srv = Server(root)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # chromium is there but the driver is not: a setup error, not a reason to skip
        pytest.fail("Playwright's Python package is missing: pip install playwright (see scripts/e2e-setup.sh)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


class Editor:
    """One browser tab on the editor, with helpers that speak in nodes and slots."""

    def __init__(self, page, server: Server) -> None:
        self.page = page
        self.server = server
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def open(self) -> None:
        self.page.goto(self.server.url + "/")
        self.page.wait_for_selector("body[data-ready=true]", timeout=20000)
        self.page.wait_for_timeout(200)

    def js(self, script: str, arg: object = None) -> object:
        return self.page.evaluate(script, arg)

    def node_id(self, node_type: str) -> int:
        """The id of the first node of this type, waiting for it to appear (adding a node is async)."""
        self.page.wait_for_function("t => sumie.graph._nodes.some(n => n.type === t)", arg=node_type,
                                    timeout=10_000)
        return self.js("t => sumie.graph._nodes.find(n => n.type === t)?.id ?? null", node_type)

    def nodes(self) -> list[str]:
        return self.js("() => sumie.graph._nodes.map(n => n.type)")

    def set_widget(self, node_type: str, name: str, value: object) -> None:
        self.js("""([t, name, value]) => {
            const n = sumie.graph._nodes.find(n => n.type === t);
            n.widgets.find(w => w.name === name).value = value;
            sumie.changed('test');
        }""", [node_type, name, value])

    def widget(self, node_type: str, name: str) -> object:
        return self.js("([t, name]) => sumie.graph._nodes.find(n => n.type === t)"
                       ".widgets.find(w => w.name === name).value", [node_type, name])

    def to_screen(self, graph_pos: list[float]) -> tuple[float, float]:
        x, y = self.js("""p => {
            const c = sumie.canvas, r = c.canvas.getBoundingClientRect(), s = c.ds.scale;
            return [(p[0] + c.ds.offset[0]) * s + r.left, (p[1] + c.ds.offset[1]) * s + r.top];
        }""", graph_pos)
        return x, y

    def slot(self, node_id: int, *, output: bool, index: int) -> tuple[float, float]:
        pos = self.js("""([id, output, i]) => {
            const n = sumie.graph.getNodeById(id);
            return output ? n.getOutputPos(i) : n.getInputPos(i);
        }""", [node_id, output, index])
        return self.to_screen(pos)

    def title(self, node_id: int) -> tuple[float, float]:
        pos = self.js("id => { const n = sumie.graph.getNodeById(id); return [n.pos[0] + 60, n.pos[1] - 15]; }",
                      node_id)
        return self.to_screen(pos)

    def drag(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        mouse = self.page.mouse
        mouse.move(*start)
        mouse.down()
        for i in range(1, 11):
            mouse.move(start[0] + (end[0] - start[0]) * i / 10, start[1] + (end[1] - start[1]) * i / 10)
        mouse.up()
        self.page.wait_for_timeout(100)

    def input_link(self, node_id: int, name: str) -> object:
        """The link feeding an input, as [origin type, origin slot], or None."""
        return self.js("""([id, name]) => {
            const n = sumie.graph.getNodeById(id);
            const input = n.inputs.find(i => i.name === name);
            if (input?.link == null) return null;
            const link = sumie.graph.getLink(input.link);
            return [sumie.graph.getNodeById(link.origin_id).type, link.origin_slot];
        }""", [node_id, name])

    def make_small(self) -> None:
        """Keep test runs fast: a 64×64 latent, two steps, a fixed seed."""
        self.set_widget("EmptyLatentImage", "width", 64)
        self.set_widget("EmptyLatentImage", "height", 64)
        self.set_widget("KSampler", "steps", 2)

    def wait_for_output_image(self, timeout: float = 90000) -> None:
        self.page.wait_for_function("""() => sumie.graph._nodes.some(n => n.type === 'SaveImage'
            && n.imgs?.length && n.imgs[0].complete && n.imgs[0].naturalWidth > 0)""", timeout=timeout)

    def drop_file(self, name: str, data: bytes, mime: str, at: tuple[float, float] | None = None) -> None:
        """A real drop event carrying a File, as when a user drags one in from the desktop."""
        x, y = at or (700, 400)
        self.page.evaluate("""([name, bytes, mime, x, y]) => {
            const file = new File([new Uint8Array(bytes)], name, { type: mime });
            const dt = new DataTransfer();
            dt.items.add(file);
            const target = document.elementFromPoint(x, y);
            for (const type of ['dragenter', 'dragover', 'drop']) {
                target.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: dt,
                                                           clientX: x, clientY: y }));
            }
        }""", [name, list(data), mime, x, y])


@pytest.fixture
def editor(browser, server) -> Iterator[Editor]:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    ed = Editor(page, server)
    ed.open()
    try:
        yield ed
    finally:
        context.close()


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT.mkdir(exist_ok=True)
    return OUTPUT
