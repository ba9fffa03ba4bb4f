"""The visual editor in a real headless Chromium against the real server (demo checkpoint, CPU)."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

DEFAULT_TYPES = ["CheckpointLoaderSimple", "CLIPTextEncode", "CLIPTextEncode", "EmptyLatentImage", "KSampler",
                 "VAEDecode", "SaveImage"]


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as res:  # noqa: S310 (loopback test server)
        return res.read()


def test_editor_loads_with_the_default_workflow_and_no_console_errors(editor):
    assert sorted(editor.nodes()) == sorted(DEFAULT_TYPES)
    ckpt = editor.widget("CheckpointLoaderSimple", "ckpt_name")
    choices = editor.server.get("/object_info/CheckpointLoaderSimple")["CheckpointLoaderSimple"]["input"]["required"]
    assert ckpt == choices["ckpt_name"][0][0]
    # Every link of the default graph is in place.
    ks = editor.node_id("KSampler")
    assert editor.input_link(ks, "model") == ["CheckpointLoaderSimple", 0]
    assert editor.input_link(ks, "latent_image") == ["EmptyLatentImage", 0]
    assert editor.page.locator("#status-text").inner_text().startswith("Connected")
    assert editor.errors == []


def test_default_workflow_runs_and_its_image_appears(editor, output_dir):
    editor.make_small()
    editor.set_widget("EmptyLatentImage", "width", 128)  # still quick, and a nicer screenshot
    editor.set_widget("EmptyLatentImage", "height", 128)
    seed_before = editor.widget("KSampler", "seed")
    editor.page.click("#btn-run")
    editor.wait_for_output_image()
    # The image is also in the gallery, and the seed moved on (control after generate: randomize).
    editor.page.click('.tab[data-panel="gallery"]')
    editor.page.wait_for_selector("#panel-gallery figure img")
    assert editor.widget("KSampler", "seed") != seed_before
    # Clicking a gallery image opens it full size, with a download link to /view.
    editor.page.click("#panel-gallery figure")
    href = editor.page.get_attribute(".lightbox a.btn", "href")
    assert "/view?" in href and "type=output" in href
    editor.page.keyboard.press("Escape")
    # The queue panel lists the finished job with its image.
    editor.page.click('.tab[data-panel="queue"]')
    editor.page.wait_for_selector('#panel-queue .job[data-state="success"] .thumbs img')
    # The README's screenshot: the graph, its result and the queue.
    editor.page.set_viewport_size({"width": 1680, "height": 945})
    editor.page.mouse.move(700, 900)
    editor.page.wait_for_timeout(100)
    editor.page.keyboard.press(".")
    editor.page.wait_for_function("() => [...document.images].every(i => i.complete)")
    editor.page.wait_for_timeout(900)
    editor.page.screenshot(path=str(output_dir / "editor.png"))
    assert editor.errors == []


def test_node_added_from_the_search_box_and_connected_by_a_mouse_drag(editor):
    # Double-click empty canvas, search, pick with Enter.
    editor.page.mouse.dblclick(1150, 650)
    editor.page.wait_for_selector(".palette input")
    editor.page.keyboard.type("preview image")
    editor.page.wait_for_selector('.palette li.sel[data-type="PreviewImage"]')
    editor.page.keyboard.press("Enter")
    preview = editor.node_id("PreviewImage")
    assert preview is not None
    editor.page.wait_for_timeout(150)
    # Drag from VAE Decode's IMAGE output to the new node's images input.
    decode = editor.node_id("VAEDecode")
    editor.drag(editor.slot(decode, output=True, index=0), editor.slot(preview, output=False, index=0))
    assert editor.input_link(preview, "images") == ["VAEDecode", 0]
    assert editor.errors == []


def test_a_drag_between_incompatible_types_is_refused(editor):
    editor.page.mouse.dblclick(1150, 650)
    editor.page.wait_for_selector(".palette input")
    editor.page.keyboard.type("PreviewImage")
    editor.page.wait_for_selector('.palette li.sel[data-type="PreviewImage"]')
    editor.page.keyboard.press("Enter")
    preview = editor.node_id("PreviewImage")
    editor.page.wait_for_timeout(150)
    latent = editor.node_id("EmptyLatentImage")
    # LATENT → IMAGE: refused.
    editor.drag(editor.slot(latent, output=True, index=0), editor.slot(preview, output=False, index=0))
    assert editor.input_link(preview, "images") is None
    # MODEL → VAE (an occupied input of another type): refused, the VAE link stays.
    decode = editor.node_id("VAEDecode")
    ckpt = editor.node_id("CheckpointLoaderSimple")
    editor.drag(editor.slot(ckpt, output=True, index=0), editor.slot(decode, output=False, index=1))
    assert editor.input_link(decode, "vae") == ["CheckpointLoaderSimple", 2]
    # The rule matches the server's: IMAGE → IMAGE is accepted.
    editor.drag(editor.slot(decode, output=True, index=0), editor.slot(preview, output=False, index=0))
    assert editor.input_link(preview, "images") == ["VAEDecode", 0]


def test_a_validation_error_is_shown_on_its_node_and_input(editor):
    editor.make_small()
    editor.set_widget("CheckpointLoaderSimple", "ckpt_name", "no-such-model.safetensors")
    editor.page.click("#btn-run")
    editor.page.wait_for_selector(".toast.error")
    ckpt = editor.node_id("CheckpointLoaderSimple")
    errors = editor.js("id => sumie.graph.getNodeById(id).sumieErrors", ckpt)
    assert errors and errors[0]["input"] == "ckpt_name"
    assert "no-such-model.safetensors" in errors[0]["message"] or "not in" in errors[0]["message"].lower()
    assert editor.js("id => sumie.graph.getNodeById(id).has_errors", ckpt) is True
    assert "ckpt_name" in editor.page.locator(".toast.error").first.inner_text() or errors
    # Fixing the value clears the mark.
    editor.js("""id => { const n = sumie.graph.getNodeById(id); const w = n.widgets[0];
                 w.setValue(w.options.values[0], {e: null, node: n, canvas: sumie.canvas}); }""", ckpt)
    assert editor.js("id => sumie.graph.getNodeById(id).has_errors", ckpt) is False


def test_a_dropped_png_restores_its_workflow(editor):
    editor.make_small()
    editor.set_widget("KSampler", "control_after_generate", "fixed")
    marker = "a red fox in the snow, dropped png test"
    editor.js("t => { const n = sumie.graph._nodes.find(n => n.title === 'Positive prompt'); n.widgets[0].value = t; }",
              marker)
    editor.page.click("#btn-run")
    editor.wait_for_output_image()
    ref = editor.js("() => sumie.graph._nodes.find(n => n.type === 'SaveImage').imageRefs[0]")
    png = fetch(editor.server.url + "/view?" + urllib.parse.urlencode(ref))
    # Start from an empty graph, then drop the PNG.
    editor.js("() => sumie.graph.clear()")
    assert editor.nodes() == []
    editor.drop_file(ref["filename"], png, "image/png")
    editor.page.wait_for_function("() => sumie.graph._nodes.length === 7")
    assert sorted(editor.nodes()) == sorted(DEFAULT_TYPES)
    text = editor.js("() => sumie.graph._nodes.find(n => n.title === 'Positive prompt').widgets[0].value")
    assert text == marker
    assert editor.widget("KSampler", "steps") == 2
    assert editor.errors == []


def test_a_dropped_api_json_becomes_a_graph(editor):
    prompt = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 96, "batch_size": 1}},
        "2": {"class_type": "LatentUpscaleBy", "inputs": {"samples": ["1", 0], "upscale_method": "bilinear",
                                                          "scale_by": 2.0}},
    }
    editor.drop_file("api.json", json.dumps(prompt).encode(), "application/json")
    editor.page.wait_for_function("() => sumie.graph._nodes.length === 2")
    up = editor.node_id("LatentUpscaleBy")
    assert editor.input_link(up, "samples") == ["EmptyLatentImage", 0]
    assert editor.widget("EmptyLatentImage", "height") == 96
    # And back: the editor's own graph → API conversion gives the same prompt.
    api = editor.js("async () => (await (await import('/js/workflow.js')).graphToPrompt()).prompt")
    assert {k: v["inputs"] for k, v in api.items()} == {k: v["inputs"] for k, v in prompt.items()}


def test_undo_restores_a_deleted_node(editor):
    ks = editor.node_id("KSampler")
    editor.page.mouse.click(*editor.title(ks))
    editor.page.keyboard.press("Delete")
    editor.page.wait_for_function("() => !sumie.graph._nodes.some(n => n.type === 'KSampler')")
    editor.page.wait_for_timeout(150)
    editor.page.keyboard.press("Control+z")
    editor.page.wait_for_function("() => sumie.graph._nodes.some(n => n.type === 'KSampler')")
    ks = editor.node_id("KSampler")
    assert editor.input_link(ks, "model") == ["CheckpointLoaderSimple", 0]
    assert editor.input_link(editor.node_id("VAEDecode"), "samples") == ["KSampler", 0]
    # And redo deletes it again.
    editor.page.keyboard.press("Control+y")
    editor.page.wait_for_function("() => !sumie.graph._nodes.some(n => n.type === 'KSampler')")


def test_the_open_workflow_survives_a_reload(editor):
    editor.set_widget("EmptyLatentImage", "width", 320)
    editor.page.wait_for_timeout(300)
    editor.js("async () => (await import('/js/workflow.js')).saveToLocal()")
    editor.open()
    assert editor.widget("EmptyLatentImage", "width") == 320


# A reroute, a bypassed node, a primitive feeding a converted widget, a note and a muted node.
RULES_WORKFLOW = {
    "nodes": [
        {"id": 1, "type": "EmptyLatentImage", "mode": 0, "inputs": [],
         "outputs": [{"name": "LATENT", "type": "LATENT", "links": [1]}], "widgets_values": [64, 64, 1]},
        {"id": 2, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 1}],
         "outputs": [{"name": "", "type": "LATENT", "links": [2]}]},
        {"id": 3, "type": "LatentUpscaleBy", "mode": 4,
         "inputs": [{"name": "samples", "type": "LATENT", "link": 2}],
         "outputs": [{"name": "LATENT", "type": "LATENT", "links": [3]}], "widgets_values": ["bilinear", 2]},
        {"id": 4, "type": "LatentFromBatch", "mode": 0,
         "inputs": [{"name": "samples", "type": "LATENT", "link": 3},
                    {"name": "batch_index", "type": "INT", "link": 4, "widget": {"name": "batch_index"}}],
         "outputs": [{"name": "LATENT", "type": "LATENT", "links": []}], "widgets_values": [0, 1]},
        {"id": 5, "type": "PrimitiveNode", "mode": 0, "inputs": [],
         "outputs": [{"name": "INT", "type": "INT", "links": [4]}], "widgets_values": [7, "fixed"]},
        {"id": 6, "type": "Note", "mode": 0, "inputs": [], "outputs": [], "widgets_values": ["hello"]},
        {"id": 7, "type": "EmptyLatentImage", "mode": 2, "inputs": [], "outputs": [],
         "widgets_values": [64, 64, 1]},
    ],
    "links": [[1, 1, 0, 2, 0, "LATENT"], [2, 2, 0, 3, 0, "LATENT"], [3, 3, 0, 4, 0, "LATENT"],
              [4, 5, 0, 4, 1, "INT"]],
    "version": 0.4,
}


def test_graph_to_api_skips_virtual_muted_and_bypassed_nodes(editor):
    """The conversion on a hand-written editor workflow: reroute, primitive, note, mute and bypass."""
    workflow = RULES_WORKFLOW
    prompt = editor.js("""async w => {
        const { graphToPrompt } = await import('/js/workflow.js');
        return (await graphToPrompt(w)).prompt;
    }""", workflow)
    assert sorted(prompt) == ["1", "4"]
    assert prompt["4"]["inputs"] == {"samples": ["1", 0], "batch_index": 7, "length": 1}
    assert prompt["4"]["class_type"] == "LatentFromBatch"


# An EmptyLatentImage feeding a subgraph (one LatentUpscaleBy inside) feeding LatentFromBatch.
SUBGRAPH_WORKFLOW = {
    "nodes": [
        {"id": 1, "type": "EmptyLatentImage", "mode": 0, "inputs": [],
         "outputs": [{"name": "LATENT", "type": "LATENT", "links": [1]}], "widgets_values": [64, 64, 1]},
        {"id": 2, "type": "sg-upscale", "mode": 0, "inputs": [{"name": "x", "type": "LATENT", "link": 1}],
         "outputs": [{"name": "y", "type": "LATENT", "links": [2]}]},
        {"id": 3, "type": "LatentFromBatch", "mode": 0, "inputs": [{"name": "samples", "type": "LATENT", "link": 2}],
         "outputs": [{"name": "LATENT", "type": "LATENT", "links": []}], "widgets_values": [0, 1]},
    ],
    "links": [[1, 1, 0, 2, 0, "LATENT"], [2, 2, 0, 3, 0, "LATENT"]],
    "definitions": {"subgraphs": [{
        "id": "sg-upscale", "name": "upscale", "inputs": [{"name": "x", "type": "LATENT"}],
        "outputs": [{"name": "y", "type": "LATENT"}],
        "nodes": [{"id": 1, "type": "LatentUpscaleBy", "mode": 0,
                   "inputs": [{"name": "samples", "type": "LATENT", "link": 11}],
                   "outputs": [{"name": "LATENT", "type": "LATENT", "links": [12]}],
                   "widgets_values": ["bilinear", 1.5]}],
        "links": [{"id": 11, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "LATENT"},
                  {"id": 12, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0,
                   "type": "LATENT"}],
    }]},
    "version": 0.4,
}


def test_graph_to_api_expands_subgraphs(editor):
    """The editor's prompt of a workflow with a subgraph holds the subgraph's nodes, wired through."""
    prompt = editor.js("""async w => {
        const { graphToPrompt } = await import('/js/workflow.js');
        return (await graphToPrompt(w)).prompt;
    }""", SUBGRAPH_WORKFLOW)
    assert sorted(prompt) == ["1", "2:1", "3"]
    assert prompt["2:1"]["inputs"] == {"samples": ["1", 0], "upscale_method": "bilinear", "scale_by": 1.5}
    assert prompt["3"]["inputs"] == {"samples": ["2:1", 0], "batch_index": 0, "length": 1}


def test_plugin_web_extensions_are_loaded(editor):
    """The example pack's swatch.js (served from its WEB_DIRECTORY) paints its node after a run."""
    assert "/extensions/example_pack/swatch.js" in editor.server.get("/extensions")  # the pack ships with us
    assert editor.js("() => sumie.extensions.map(e => e.name)") == ["example_pack.swatch"]
    editor.js("""async () => {
        const { loadWorkflow } = await import('/js/workflow.js');
        loadWorkflow({ nodes: [], links: [], version: 0.4 });
        const { addNodeAt } = await import('/js/palette.js');
        const node = addNodeAt('ExampleColorSwatch', [100, 100]);
        node.widgets[0].value = '#aa5500';
    }""")
    editor.page.click("#btn-run")
    editor.page.wait_for_function("() => sumie.graph._nodes[0].color === '#aa5500'")
    assert editor.js("() => sumie.graph._nodes[0].outputText") == "#aa5500"
    assert editor.errors == []


def test_the_server_converts_our_saved_files_as_the_editor_does(editor):
    """Our editor's saved file -> the server's conversion gives the prompt the editor itself sends."""
    for workflow in (None, RULES_WORKFLOW):  # the default graph, then the rules above
        if workflow is not None:
            editor.js("async w => (await import('/js/workflow.js')).loadWorkflow(w)", workflow)
        saved = editor.js("async () => (await import('/js/workflow.js')).serializeGraph()")
        sent = editor.js("async () => (await (await import('/js/workflow.js')).graphToPrompt()).prompt")
        status, body = editor.page.evaluate("""async (wf) => {
            const r = await fetch('/api/convert', {method: 'POST', headers: {'content-type': 'application/json'},
                                                   body: JSON.stringify({workflow: wf})});
            return [r.status, await r.json()];
        }""", saved)
        assert status == 200, body
        assert {k: v["inputs"] for k, v in body["prompt"].items()} == {k: v["inputs"] for k, v in sent.items()}
