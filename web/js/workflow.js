/**
 * The open workflow: loading editor JSON, API JSON and the default txt2img graph into the canvas,
 * exporting, and keeping the open workflow in localStorage so a reload finds it again.
 */

import { LiteGraph } from "../vendor/litegraph/litegraph.es.js";
import { api } from "./api.js";
import { app } from "./app.js";
import { clearAllErrors } from "./nodes.js";
import { VIRTUAL_TYPES } from "./virtual.js";

const STORE_KEY = "sumie.workflow";
const META_KEY = "sumie.workflowMeta";

/** Name and server path of the open workflow. */
export const current = { name: "Untitled", path: /** @type {string|null} */ (null), modified: false };

/** @returns {"ui"|"api"|null} */
export function detectFormat(data) {
  if (!data || typeof data !== "object" || Array.isArray(data)) return null;
  if (Array.isArray(data.nodes)) return "ui";
  if (data.prompt && typeof data.prompt === "object" && !Array.isArray(data.prompt)) return detectFormat(data.prompt) === "api" ? "api" : null;
  const values = Object.values(data);
  if (values.length && values.every((v) => v && typeof v === "object" && typeof v.class_type === "string")) return "api";
  return null;
}

/** The editor JSON of the open graph. */
export function serializeGraph() {
  return app.graph.serialize();
}

/**
 * The API prompt of an editor workflow (the open graph by default), converted by the server so the
 * editor, POST /prompt and `main.py convert` share one converter (subgraphs, reroutes, primitives,
 * muted and bypassed nodes). Nodes of a type this server does not know are left out and named in
 * `skipped`; a workflow that cannot be converted rejects with the server's ApiError.
 * @param {any} [workflow] editor JSON
 * @returns {Promise<{prompt: Record<string, any>, skipped: string[], warnings: string[]}>}
 */
export async function graphToPrompt(workflow = serializeGraph()) {
  const subgraphs = new Set((workflow.definitions?.subgraphs || []).map((s) => String(s.id)));
  const known = (n) => app.defs.has(n.type) || VIRTUAL_TYPES.has(n.type) || subgraphs.has(String(n.type));
  const nodes = workflow.nodes || [];
  const skipped = nodes.filter((n) => !known(n)).map((n) => n.type);
  const sent = skipped.length ? { ...workflow, nodes: nodes.filter(known) } : workflow;
  const { prompt, warnings } = await api.convertWorkflow(sent);
  return { prompt, skipped, warnings };
}

/**
 * Replace the open graph with an editor-format workflow.
 * @param {any} data @param {{name?: string, path?: string|null, fit?: boolean}} [opts]
 */
export function loadWorkflow(data, { name = "Untitled", path = null, fit = false } = {}) {
  const missing = [...new Set((data.nodes || []).map((n) => n.type).filter((t) => !LiteGraph.registered_node_types[t]))];
  clearAllErrors();
  app.graph.clear();
  app.graph.configure(structuredClone(data));
  for (const node of app.graph._nodes) node.onAfterGraphConfigured?.();
  const ds = data.extra?.ds;
  if (ds && !fit && Array.isArray(ds.offset)) {
    app.canvas.ds.offset[0] = ds.offset[0];
    app.canvas.ds.offset[1] = ds.offset[1];
    app.canvas.ds.scale = ds.scale || 1;
  } else {
    zoomToFit();
  }
  current.name = name;
  current.path = path;
  current.modified = false;
  app.canvas.setDirty(true, true);
  app.emit("workflow-loaded", { name, path, missing });
  if (missing.length) {
    app.emit("toast", { text: `This workflow uses node types this server does not have: ${missing.join(", ")}`, kind: "error", timeout: 9000 });
  }
  app.changed("load");
}

/**
 * Build a graph from an API-format prompt: nodes with their constants, links, and a left-to-right
 * layout by depth.
 * @param {Record<string, any>} prompt
 */
export function loadApiPrompt(prompt, { name = "Untitled" } = {}) {
  clearAllErrors();
  app.graph.clear();
  const created = new Map();
  const missing = [];
  for (const [id, spec] of Object.entries(prompt)) {
    const node = LiteGraph.createNode(spec.class_type);
    if (!node) {
      missing.push(spec.class_type);
      continue;
    }
    const numeric = Number(id);
    node.id = Number.isInteger(numeric) && numeric > 0 ? numeric : undefined;
    if (spec._meta?.title) node.title = spec._meta.title;
    app.graph.add(node);
    created.set(id, node);
  }
  // Constants first (so widgets have values), then links.
  for (const [id, spec] of Object.entries(prompt)) {
    const node = created.get(id);
    if (!node) continue;
    for (const [name, value] of Object.entries(spec.inputs || {})) {
      if (Array.isArray(value) && value.length === 2 && typeof value[1] === "number") continue;
      const widget = node.widgets?.find((w) => w.name === name);
      const v = value && typeof value === "object" && "__value__" in value ? value.__value__ : value;
      if (widget) {
        if (widget.type === "combo" && Array.isArray(widget.options.values) && !widget.options.values.includes(v)) {
          widget.options.values.push(v);
        }
        widget.value = v;
      }
    }
  }
  for (const [id, spec] of Object.entries(prompt)) {
    const node = created.get(id);
    if (!node) continue;
    for (const [name, value] of Object.entries(spec.inputs || {})) {
      if (!(Array.isArray(value) && value.length === 2 && typeof value[1] === "number")) continue;
      const origin = created.get(String(value[0]));
      const slot = node.inputs.findIndex((i) => (i.widget?.name ?? i.name) === name);
      if (origin && slot >= 0) origin.connect(value[1], node, slot);
    }
    for (const w of node.widgets || []) if (w.linkedControl) w.linkedControl.value = "fixed";
  }
  layoutByDepth([...created.values()]);
  for (const node of created.values()) node.onAfterGraphConfigured?.();
  current.name = name;
  current.path = null;
  zoomToFit();
  app.emit("workflow-loaded", { name, path: null, missing });
  if (missing.length) app.emit("toast", { text: `Unknown node types skipped: ${[...new Set(missing)].join(", ")}`, kind: "error" });
  app.changed("load");
}

/** Columns by longest path from a source, rows in creation order. */
function layoutByDepth(nodes) {
  const depth = new Map();
  const visit = (node, stack = new Set()) => {
    if (depth.has(node.id)) return depth.get(node.id);
    if (stack.has(node.id)) return 0;
    stack.add(node.id);
    let d = 0;
    for (const input of node.inputs || []) {
      if (input.link == null) continue;
      const link = app.graph.getLink(input.link);
      const origin = link && app.graph.getNodeById(link.origin_id);
      if (origin) d = Math.max(d, visit(origin, stack) + 1);
    }
    depth.set(node.id, d);
    return d;
  };
  nodes.forEach((n) => visit(n));
  const columns = new Map();
  for (const node of nodes) {
    const d = depth.get(node.id) || 0;
    if (!columns.has(d)) columns.set(d, []);
    columns.get(d).push(node);
  }
  let x = 40;
  for (const d of [...columns.keys()].sort((a, b) => a - b)) {
    let y = 40;
    let width = 0;
    for (const node of columns.get(d)) {
      node.pos = [x, y];
      y += node.size[1] + LiteGraph.NODE_TITLE_HEIGHT + 30;
      width = Math.max(width, node.size[0]);
    }
    x += width + 60;
  }
}

/** Fit every node (and group) in view. */
export function zoomToFit() {
  const items = [...(app.graph?._nodes || []), ...(app.graph?._groups || [])];
  if (!items.length) {
    app.canvas.ds.offset[0] = 0;
    app.canvas.ds.offset[1] = 0;
    app.canvas.ds.scale = 1;
    app.canvas.setDirty(true, true);
    return;
  }
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const item of items) {
    const isGroup = !item.inputs;
    const title = isGroup ? 0 : LiteGraph.NODE_TITLE_HEIGHT;
    const b = [item.pos[0], item.pos[1] - title, item.size[0], item.size[1] + title];
    x0 = Math.min(x0, b[0]);
    y0 = Math.min(y0, b[1]);
    x1 = Math.max(x1, b[0] + b[2]);
    y1 = Math.max(y1, b[1] + b[3]);
  }
  const el = app.canvas.canvas;
  const width = el.clientWidth || el.width;
  const height = el.clientHeight || el.height;
  const pad = 40;
  const scale = Math.max(0.25, Math.min(1.25, Math.min((width - pad * 2) / (x1 - x0), (height - pad * 2) / (y1 - y0))));
  const ds = app.canvas.ds;
  ds.scale = scale;
  ds.offset[0] = (width / scale - (x1 - x0)) / 2 - x0;
  ds.offset[1] = (height / scale - (y1 - y0)) / 2 - y0;
  app.canvas.setDirty(true, true);
}

// -- persistence -------------------------------------------------------------------------------------
export function saveToLocal() {
  try {
    localStorage.setItem(STORE_KEY, JSON.stringify(serializeGraph()));
    localStorage.setItem(META_KEY, JSON.stringify({ name: current.name, path: current.path, modified: current.modified }));
  } catch (err) {
    console.warn("could not keep the workflow in localStorage", err);
  }
}

/** @returns {boolean} whether a kept workflow was restored */
export function restoreFromLocal() {
  const text = localStorage.getItem(STORE_KEY);
  if (!text) return false;
  try {
    const data = JSON.parse(text);
    const meta = JSON.parse(localStorage.getItem(META_KEY) || "{}");
    loadWorkflow(data, { name: meta.name || "Untitled", path: meta.path || null });
    current.modified = !!meta.modified;
    app.emit("workflow-meta");
    return true;
  } catch (err) {
    console.warn("kept workflow unreadable; starting fresh", err);
    return false;
  }
}

// -- the default txt2img graph ------------------------------------------------------------------------
/** @param {string} type @param {[number, number]} pos @param {Record<string, any>} values */
function place(type, pos, values = {}, title) {
  const node = LiteGraph.createNode(type);
  if (!node) return null;
  node.pos = pos;
  if (title) node.title = title;
  for (const [name, value] of Object.entries(values)) {
    const widget = node.widgets?.find((w) => w.name === name);
    if (widget) widget.value = value;
  }
  app.graph.add(node);
  return node;
}

/** CheckpointLoaderSimple → CLIPTextEncode ×2 → EmptyLatentImage → KSampler → VAEDecode → SaveImage. */
export function loadDefaultWorkflow() {
  clearAllErrors();
  app.graph.clear();
  const ckptChoices = app.defs.get("CheckpointLoaderSimple")?.inputs.find((i) => i.name === "ckpt_name")?.choices || [];
  const ckpt = place("CheckpointLoaderSimple", [20, 280], ckptChoices.length ? { ckpt_name: ckptChoices[0] } : {}, "Load Checkpoint");
  const pos = place("CLIPTextEncode", [340, 60], { text: "a watercolor painting of a lighthouse on a cliff at sunset, soft light" }, "Positive prompt");
  const neg = place("CLIPTextEncode", [340, 330], { text: "blurry, low quality, watermark" }, "Negative prompt");
  const latent = place("EmptyLatentImage", [340, 600], { width: 512, height: 512, batch_size: 1 });
  const sampler = place("KSampler", [680, 170], { seed: Math.floor(Math.random() * 2 ** 40), steps: 20, cfg: 8, denoise: 1 });
  const decode = place("VAEDecode", [1000, 170]);
  const save = place("SaveImage", [1320, 170], { filename_prefix: "Sumie" });
  if (pos) pos.size[1] = Math.max(pos.size[1], 200);
  if (neg) neg.size[1] = Math.max(neg.size[1], 200);
  if (save) save.setSize([Math.max(save.size[0], 320), 380]);
  const link = (a, aSlot, b, bName) => {
    if (!a || !b) return;
    const slot = b.inputs.findIndex((i) => (i.widget?.name ?? i.name) === bName);
    if (slot >= 0) a.connect(aSlot, b, slot);
  };
  link(ckpt, 0, sampler, "model");
  link(ckpt, 1, pos, "clip");
  link(ckpt, 1, neg, "clip");
  link(pos, 0, sampler, "positive");
  link(neg, 0, sampler, "negative");
  link(latent, 0, sampler, "latent_image");
  link(sampler, 0, decode, "samples");
  link(ckpt, 2, decode, "vae");
  link(decode, 0, save, "images");
  current.name = "Default txt2img";
  current.path = null;
  current.modified = false;
  zoomToFit();
  app.emit("workflow-loaded", { name: current.name, path: null, missing: [] });
  app.changed("load");
}

/** Save text as a file download. */
export function download(filename, text, type = "application/json") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
