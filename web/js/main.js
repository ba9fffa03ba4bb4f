/**
 * Boot: theme litegraph, read /object_info, build the canvas, restore the open workflow (or the
 * default one), connect the websocket and wire the toolbar, panels and plugins.
 */

import { LGraph, LGraphCanvas, LiteGraph } from "../vendor/litegraph/litegraph.es.js";
import { api } from "./api.js";
import { app } from "./app.js";
import { DomLayer } from "./domwidgets.js";
import { installExecution } from "./execution.js";
import { callHook, loadExtensions } from "./extensions.js";
import { installFiles, refreshWorkflows } from "./files.js";
import { galleryActions, installGallery } from "./gallery.js";
import { registerServerNodes } from "./nodes.js";
import { addNodeAt, openPalette } from "./palette.js";
import { installQueue, queueActions, refreshQueue, runGraph } from "./queue.js";
import { parseObjectInfo } from "./schema.js";
import { installShortcuts, showHelp } from "./shortcuts.js";
import { knownColours, typesCompatible } from "./types.js";
import { h, toast } from "./ui.js";
import { history, installHistory } from "./undo.js";
import { registerVirtualNodes } from "./virtual.js";
import { current, loadDefaultWorkflow, restoreFromLocal, saveToLocal, zoomToFit } from "./workflow.js";

function themeLiteGraph() {
  Object.assign(LiteGraph, {
    NODE_DEFAULT_COLOR: "#2a2e36",
    NODE_DEFAULT_BGCOLOR: "#1e2127",
    NODE_DEFAULT_BOXCOLOR: "#6b7280",
    NODE_TITLE_COLOR: "#c9ced8",
    NODE_SELECTED_TITLE_COLOR: "#ffffff",
    NODE_TEXT_COLOR: "#aeb4be",
    NODE_TEXT_SIZE: 13,
    NODE_SUBTEXT_SIZE: 12,
    NODE_BOX_OUTLINE_COLOR: "#e8b04a",
    NODE_ERROR_COLOUR: "#ff4d4d",
    NODE_FONT: "system-ui, sans-serif",
    DEFAULT_FONT: "system-ui, sans-serif",
    WIDGET_BGCOLOR: "#15171c",
    WIDGET_OUTLINE_COLOR: "#363b45",
    WIDGET_TEXT_COLOR: "#dadde3",
    WIDGET_SECONDARY_TEXT_COLOR: "#8b919c",
    LINK_COLOR: "#9aa3b0",
    DEFAULT_SHADOW_COLOR: "rgba(0,0,0,0.45)",
    ROUND_RADIUS: 8,
    release_link_on_empty_shows_menu: true,
    middle_click_slot_add_default_node: true,
    snaps_for_comfy: true,
    alwaysSnapToGrid: false,
    use_uuids: false,
    saveViewportWithGraph: true,
  });
  // The server's rule, not litegraph's case-insensitive one.
  LiteGraph.isValidConnection = (a, b) => typesCompatible(a, b);
  const colours = knownColours();
  Object.assign(LGraphCanvas.link_type_colors, colours);
}

/** A subtle dot grid for the canvas background, drawn once into a data URL. */
function gridImage() {
  const c = document.createElement("canvas");
  c.width = c.height = 24;
  const g = c.getContext("2d");
  g.fillStyle = "#16181d";
  g.fillRect(0, 0, 24, 24);
  g.fillStyle = "#2a2e36";
  g.fillRect(0, 0, 2, 2);
  return c.toDataURL();
}

function sizeCanvas(canvas, el) {
  const dpr = Math.max(1, window.devicePixelRatio || 1);
  const { clientWidth: w, clientHeight: h } = el;
  if (!w || !h) return;
  el.width = Math.round(w * dpr);
  el.height = Math.round(h * dpr);
  el.getContext("2d").setTransform(dpr, 0, 0, dpr, 0, 0);
  canvas.draw(true, true);
}

function createCanvas() {
  const el = /** @type {HTMLCanvasElement} */ (document.getElementById("graph-canvas"));
  const graph = new LGraph();
  const canvas = new LGraphCanvas(el, graph);
  canvas.background_image = gridImage();
  canvas.clear_background_color = "#16181d";
  canvas.render_canvas_border = false;
  canvas.render_connections_border = false;
  canvas.highquality_render = true;
  canvas.links_render_mode = LiteGraph.SPLINE_LINK;
  canvas.connections_width = 3;
  canvas.round_radius = 8;
  canvas.default_connection_color_byType = knownColours();
  canvas.default_connection_color_byTypeOff = knownColours();
  canvas.show_info = false;
  canvas.low_quality_zoom_threshold = 0.45;
  app.graph = graph;
  app.canvas = canvas;
  app.domLayer = new DomLayer(document.getElementById("dom-layer"), canvas);

  // Our palette instead of litegraph's search box, also when a link is dropped on empty canvas.
  canvas.showSearchBox = (event, opts = {}) => {
    const from = linkFrom(opts);
    const pos = canvas.convertEventToCanvasOffset(event);
    openPalette({ x: event.clientX, y: event.clientY, graphPos: pos, from });
  };
  canvas.showConnectionMenu = (opts = {}) => {
    const from = opts.nodeFrom ? slotInfo(opts.nodeFrom, opts.slotFrom, true) : opts.nodeTo ? slotInfo(opts.nodeTo, opts.slotTo, false) : null;
    const e = opts.e;
    const pos = canvas.convertEventToCanvasOffset(e);
    openPalette({ x: e.clientX, y: e.clientY, graphPos: pos, from });
  };

  // Muted nodes fade, bypassed ones turn purple.
  const drawNode = canvas.drawNode.bind(canvas);
  canvas.drawNode = (node, ctx) => {
    if (node.mode === 2) {
      const alpha = canvas.editor_alpha;
      canvas.editor_alpha = 0.35;
      ctx.globalAlpha = 0.35;
      drawNode(node, ctx);
      canvas.editor_alpha = alpha;
      ctx.globalAlpha = 1;
    } else if (node.mode === 4) {
      const { bgcolor, color } = node;
      node.bgcolor = "#3b2547";
      node.color = "#5b3a6e";
      drawNode(node, ctx);
      node.bgcolor = bgcolor;
      node.color = color;
    } else drawNode(node, ctx);
  };

  // Making subgraphs in the editor is not supported (workflows that contain them run): keep it out of the menus.
  const noSubgraph = (list) => list.filter((o) => !o || !/subgraph/i.test(String(o.content)));
  const nodeMenu = canvas.getNodeMenuOptions.bind(canvas);
  canvas.getNodeMenuOptions = (node) => noSubgraph(nodeMenu(node));
  const canvasMenu = canvas.getCanvasMenuOptions.bind(canvas);
  canvas.getCanvasMenuOptions = () => noSubgraph(canvasMenu());
  canvas.getExtraMenuOptions = () => [
    null,
    { content: "Search nodes…", callback: (v, o, e) => canvas.showSearchBox(e) },
    { content: "Add note", callback: (v, o, e) => addAt("Note", e) },
    { content: "Add reroute", callback: (v, o, e) => addAt("Reroute", e) },
    { content: "Zoom to fit", callback: zoomToFit },
  ];
  const addAt = (type, e) => addNodeAt(type, canvas.convertEventToCanvasOffset(e));

  graph.onNodeAdded = (node) => callHook("nodeCreated", node);
  const resize = () => sizeCanvas(canvas, el);
  new ResizeObserver(resize).observe(el);
  resize();
  el.addEventListener("pointerdown", () => el.focus());
  return canvas;
}

function slotInfo(node, slot, output) {
  const index = typeof slot === "number" ? slot : (output ? node.outputs : node.inputs).indexOf(slot);
  const s = (output ? node.outputs : node.inputs)[index];
  return s ? { node, slot: index, type: String(s.type || "*"), output } : undefined;
}

function linkFrom(opts) {
  if (opts.node_from) return slotInfo(opts.node_from, opts.slot_from, true);
  if (opts.node_to) return slotInfo(opts.node_to, opts.slot_from ?? opts.slot_to, false);
  return undefined;
}

// -- toolbar and panels --------------------------------------------------------------------------------
const PANELS = { queue: "Queue", gallery: "Images", workflows: "Saved workflows" };

function showPanel(name) {
  const side = document.getElementById("sidebar");
  const open = !side.hidden && side.dataset.panel === name;
  side.hidden = open;
  side.dataset.panel = name;
  for (const key of Object.keys(PANELS)) document.getElementById(`panel-${key}`).hidden = key !== name;
  document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", !open && b.dataset.panel === name));
  document.getElementById("side-title").textContent = PANELS[name];
  const actions = name === "queue" ? queueActions() : name === "gallery" ? galleryActions() : [h("button", { class: "tb", onclick: refreshWorkflows }, "Refresh")];
  document.getElementById("side-actions").replaceChildren(...actions);
  if (name === "queue") refreshQueue();
  if (name === "workflows") refreshWorkflows();
  localStorage.setItem("sumie.panel", open ? "" : name);
  requestAnimationFrame(() => sizeCanvas(app.canvas, app.canvas.canvas));
}

function installToolbar() {
  const batch = /** @type {HTMLInputElement} */ (document.getElementById("batch-count"));
  batch.value = localStorage.getItem("sumie.batch") || "1";
  batch.addEventListener("change", () => {
    batch.value = String(Math.max(1, Math.min(100, Math.round(Number(batch.value) || 1))));
    localStorage.setItem("sumie.batch", batch.value);
  });
  const run = (front = false) => runGraph(front ? 1 : Math.max(1, Number(batch.value) || 1));
  document.getElementById("btn-run").addEventListener("click", () => run());
  app.on("run", (e) => run(!!e.detail?.front));
  const stop = () => api.interrupt().catch((err) => toast(err.message, { kind: "error" }));
  document.getElementById("btn-stop").addEventListener("click", stop);
  app.on("interrupt", stop);
  document.getElementById("btn-add").addEventListener("click", (e) => {
    const rect = app.canvas.canvas.getBoundingClientRect();
    const x = rect.left + rect.width / 2;
    const y = rect.top + rect.height / 3;
    const pos = app.canvas.convertEventToCanvasOffset({ clientX: x, clientY: y });
    openPalette({ x: e.clientX, y: e.clientY + 20, graphPos: pos });
  });
  document.getElementById("btn-help").addEventListener("click", showHelp);
  document.getElementById("btn-fit").addEventListener("click", zoomToFit);
  const zoom = (f) => {
    const c = app.canvas.canvas;
    app.canvas.ds.changeScale(app.canvas.ds.scale * f, [c.clientWidth / 2, c.clientHeight / 2]);
    app.canvas.setDirty(true, true);
  };
  document.getElementById("btn-zoom-in").addEventListener("click", () => zoom(1.2));
  document.getElementById("btn-zoom-out").addEventListener("click", () => zoom(1 / 1.2));
  document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => showPanel(b.dataset.panel)));
  document.getElementById("btn-side-close").addEventListener("click", () => showPanel(document.getElementById("sidebar").dataset.panel));
  app.on("toggle-panel", (e) => showPanel(e.detail));
  app.on("toast", (e) => toast(e.detail.text, e.detail));

  const title = () => {
    document.getElementById("wf-name").textContent = current.name;
    document.getElementById("wf-dirty").hidden = !current.modified;
    document.title = `${current.modified ? "• " : ""}${current.name} · Sumie`;
  };
  app.on("workflow-loaded", title);
  app.on("workflow-meta", title);
  title();
}

function setStatus(text, state) {
  document.getElementById("status-text").textContent = text;
  const dot = document.getElementById("conn-dot");
  dot.className = `dot ${state}`;
}

async function boot() {
  themeLiteGraph();
  const canvas = createCanvas();
  installToolbar();
  let objectInfo;
  try {
    objectInfo = await api.objectInfo();
  } catch (err) {
    setStatus(`Cannot reach the server: ${err.message}`, "off");
    toast(`Cannot load node definitions: ${err.message}`, { kind: "error", timeout: 15000 });
    return;
  }
  app.objectInfo = objectInfo;
  app.defs = parseObjectInfo(objectInfo);
  registerVirtualNodes();
  registerServerNodes(app.defs);

  installHistory(canvas.canvas);
  installExecution();
  installQueue();
  installGallery();
  installFiles();
  installShortcuts();

  if (!restoreFromLocal()) loadDefaultWorkflow();
  history.reset();
  window.addEventListener("beforeunload", saveToLocal);
  setInterval(saveToLocal, 15000);

  api.addEventListener("connected", () => setStatus(`Connected · ${app.defs.size} node types`, "on"));
  api.addEventListener("reconnected", () => {
    setStatus(`Reconnected · ${app.defs.size} node types`, "on");
    refreshQueue();
  });
  api.addEventListener("disconnected", () => setStatus("Disconnected: retrying…", "off"));
  api.connect();
  refreshQueue();
  const panel = localStorage.getItem("sumie.panel");
  if (panel && PANELS[panel]) showPanel(panel);
  await loadExtensions();
  app.ready = true;
  document.body.dataset.ready = "true";
}

boot().catch((err) => {
  console.error(err);
  toast(`The editor failed to start: ${err.message}`, { kind: "error", timeout: 20000 });
});
