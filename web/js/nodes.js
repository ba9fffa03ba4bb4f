/**
 * Node classes built from `/object_info`: one litegraph node type per server node, with typed sockets,
 * widgets (each also an input socket a link may replace), output images, progress, and error marks.
 */

import { LGraphNode, LiteGraph } from "../vendor/litegraph/litegraph.es.js";
import { api } from "./api.js";
import { app } from "./app.js";
import { typeColour } from "./types.js";
import { addInputWidget } from "./widgets.js";

const MIN_WIDTH = 270;
const IMAGE_MIN = 200;

/** Registered server node classes (so the palette and menus can list them). */
export const serverTypes = new Set();

/**
 * Register (or re-register) a litegraph type for every node definition.
 * @param {Map<string, import("./schema.js").NodeDef>} defs
 */
export function registerServerNodes(defs) {
  for (const def of defs.values()) {
    const NodeClass = makeNodeClass(def);
    LiteGraph.registerNodeType(def.name, NodeClass);
    NodeClass.category = def.category; // registerNodeType derives it from the name; ours is the schema's
    serverTypes.add(def.name);
  }
}

/** @param {import("./schema.js").NodeDef} def */
function makeNodeClass(def) {
  class ServerNode extends LGraphNode {
    static title = def.displayName;
    static comfyClass = def.name;
    static nodeDef = def;
    static description = def.description;

    constructor(title) {
      super(title ?? def.displayName);
      this.comfyClass = def.name;
      this.nodeDef = def;
      this.serialize_widgets = true;
      this.properties = { "Node name for S&R": def.name };
      buildNode(this, def);
    }
  }
  Object.defineProperty(ServerNode, "name", { value: `Node_${def.name.replace(/\W/g, "_")}` });
  Object.assign(ServerNode.prototype, nodeBehaviour);
  return ServerNode;
}

/** Sockets and widgets of a fresh node, in schema order. */
function buildNode(node, def) {
  const ctx = { domLayer: app.domLayer, onChange: () => app.changed("widget") };
  for (const input of def.inputs) {
    const extra = { localized_name: input.name };
    if (input.optional) extra.shape = LiteGraph.CIRCLE_SHAPE;
    if (input.widget) {
      const widget = addInputWidget(node, input, ctx);
      if (widget) {
        node.addInput(input.name, input.type, { ...extra, widget: { name: input.name } });
        if (input.options.image_upload) addUploadWidget(node, widget);
        continue;
      }
    }
    node.addInput(input.name, input.type, extra);
  }
  for (const out of def.outputs) {
    node.addOutput(out.name, out.type, {
      localized_name: out.name,
      ...(out.isList ? { shape: LiteGraph.GRID_SHAPE } : {}),
      ...(out.tooltip ? { tooltip: out.tooltip } : {}),
    });
  }
  const size = node.computeSize();
  size[0] = Math.max(MIN_WIDTH, size[0]);
  if (node.widgets?.some((w) => w.type === "customtext")) size[1] = Math.max(size[1], 160);
  node.setSize(size);
  node.strokeStyles.running = runningStroke;
}

/**
 * Re-read /object_info (new models, uploaded images, plugin nodes): new types appear in the palette and
 * the choice lists of open nodes are brought up to date.
 */
export async function refreshDefinitions() {
  const { parseObjectInfo } = await import("./schema.js");
  const info = await api.objectInfo();
  const defs = parseObjectInfo(info);
  app.objectInfo = info;
  app.defs = defs;
  registerServerNodes(defs);
  for (const node of app.graph._nodes) {
    const def = defs.get(node.type);
    if (!def) continue;
    for (const w of node.widgets || []) {
      if (w.type !== "combo" || w.isControl) continue;
      const input = def.inputs.find((i) => i.name === w.name);
      if (input?.choices) w.options.values = input.choices;
    }
  }
  app.canvas.setDirty(true, true);
  app.emit("toast", { text: `Node definitions refreshed (${defs.size} types)`, kind: "ok" });
}

/** A LoadImage-style combo: an "upload" button, drag-and-drop, and a preview of the chosen image. */
function addUploadWidget(node, comboWidget) {
  node.imageCombo = comboWidget;
  const button = node.addWidget("button", "choose file to upload", "image", () => pickAndUpload(node), {});
  button.serialize = false;
  button.label = "choose file to upload";
  const original = comboWidget.callback;
  comboWidget.callback = function (...args) {
    original?.apply(this, args);
    showInputImage(node);
  };
  queueMicrotask(() => showInputImage(node));
}

function pickAndUpload(node) {
  const picker = document.createElement("input");
  picker.type = "file";
  picker.accept = "image/png,image/jpeg,image/webp,image/gif,image/bmp,image/tiff";
  picker.style.display = "none";
  picker.addEventListener("change", () => {
    if (picker.files?.[0]) uploadIntoNode(node, picker.files[0]);
    picker.remove();
  });
  document.body.appendChild(picker);
  picker.click();
}

/**
 * Upload an image and select it in the node's image combo.
 * @param {any} node a node with an image upload combo @param {File} file
 */
export async function uploadIntoNode(node, file) {
  const combo = node.imageCombo;
  if (!combo) return;
  try {
    const res = await api.uploadImage(file);
    const name = res.subfolder ? `${res.subfolder}/${res.name}` : res.name;
    const values = combo.options.values;
    if (Array.isArray(values) && !values.includes(name)) values.push(name);
    combo.value = name;
    showInputImage(node);
    app.changed("upload");
    app.emit("toast", { text: `Uploaded ${name}`, kind: "ok" });
  } catch (err) {
    app.emit("toast", { text: `Upload failed: ${err.message}`, kind: "error" });
  }
}

/** Show the currently selected input image on a LoadImage-style node. */
export function showInputImage(node) {
  const name = node.imageCombo?.value;
  if (!name) {
    node.imgs = null;
    return;
  }
  const slash = name.lastIndexOf("/");
  const ref = { filename: name.slice(slash + 1), subfolder: slash >= 0 ? name.slice(0, slash) : "", type: "input" };
  setNodeImages(node, [ref]);
}

/**
 * Show images on a node (outputs of Save/Preview nodes, or LoadImage's input).
 * @param {any} node @param {{filename: string, subfolder?: string, type?: string}[]} refs
 */
export function setNodeImages(node, refs) {
  node.imageRefs = refs;
  node.imageIndex = 0;
  node.previewUrl = null;
  node.imgs = refs.map((ref) => {
    const img = new Image();
    img.onload = () => {
      fitImageArea(node);
      app.canvas?.setDirty(true, true);
    };
    img.src = api.viewUrl(ref, `&rand=${Math.random().toString(36).slice(2, 8)}`);
    return img;
  });
}

function fitImageArea(node) {
  const top = contentBottom(node);
  const want = top + IMAGE_MIN;
  if (node.size[1] < want || node.size[0] < IMAGE_MIN + 20) {
    node.setSize([Math.max(node.size[0], IMAGE_MIN + 20), Math.max(node.size[1], want)]);
  }
}

/** Bottom of the slots and widgets, in node coordinates. */
function contentBottom(node) {
  let y = Math.max(node.inputs.filter((i) => !i.widget).length, node.outputs.length) * LiteGraph.NODE_SLOT_HEIGHT + 6;
  for (const w of node.widgets || []) {
    if (w.hidden && !w.converted) continue;
    y = Math.max(y, (w.y || 0) + (w.computedHeight || LiteGraph.NODE_WIDGET_HEIGHT + 4));
  }
  return y + 4;
}

function runningStroke() {
  if (app.exec.runningNode != null && String(this.id) === String(app.exec.runningNode)) {
    return { color: "#4ade80", lineWidth: 2, padding: 4 };
  }
}

/** Methods every server node shares. */
const nodeBehaviour = {
  onConfigure(info) {
    reconcileWidgetSlots(this);
    const converted = this.properties?.convertedWidgets || [];
    for (const w of this.widgets || []) if (converted.includes(w.name)) setConverted(this, w, true);
    if (this.imageCombo) showInputImage(this);
    if (info?.size) this.setSize([Math.max(info.size[0], 60), info.size[1]]);
  },

  onRemoved() {
    for (const w of this.widgets || []) w.onRemove?.();
  },

  onDrawForeground(ctx) {
    drawConvertedSockets(this, ctx);
    drawImages(this, ctx);
    drawProgress(this, ctx);
    drawErrors(this, ctx);
  },

  onWidgetChanged() {
    if (this.sumieErrors) clearNodeErrors(this);
  },

  onConnectionsChange() {
    if (this.sumieErrors) clearNodeErrors(this);
  },

  getExtraMenuOptions(canvas, options) {
    const extra = [];
    const convertible = (this.widgets || []).filter((w) => w.inputDef && !w.isControl);
    const toInput = convertible.filter((w) => !w.converted);
    const toWidget = convertible.filter((w) => w.converted);
    if (toInput.length) {
      extra.push({
        content: "Convert widget to input", has_submenu: true,
        submenu: { options: toInput.map((w) => ({ content: w.name, callback: () => setConverted(this, w, true) })) },
      });
    }
    if (toWidget.length) {
      extra.push({
        content: "Convert input to widget", has_submenu: true,
        submenu: { options: toWidget.map((w) => ({ content: w.name, callback: () => setConverted(this, w, false) })) },
      });
    }
    if (this.imgs?.length) {
      const ref = this.imageRefs?.[this.imageIndex || 0];
      extra.push({ content: "Open image", callback: () => app.emit("open-image", { refs: this.imageRefs, index: this.imageIndex || 0 }) });
      if (ref) extra.push({ content: "Save image", callback: () => downloadRef(ref) });
    }
    extra.push({ content: this.mode === 4 ? "Remove bypass" : "Bypass", callback: () => toggleMode(this, 4) });
    extra.push({ content: this.mode === 2 ? "Unmute" : "Mute", callback: () => toggleMode(this, 2) });
    return extra;
  },
};

/** Old workflows list only converted widget inputs: give every widget its socket (appended, so link slots stay). */
function reconcileWidgetSlots(node) {
  for (const w of node.widgets || []) {
    if (!w.inputDef) continue;
    const slot = node.inputs.find((i) => i.widget?.name === w.name || (i.name === w.name && !i.widget));
    if (slot) {
      slot.widget = { name: w.name };
      continue;
    }
    node.addInput(w.name, w.inputDef.type, { localized_name: w.name, widget: { name: w.name } });
  }
  // Sockets the schema has but the saved node lacks (a newer node version): add them.
  for (const input of node.nodeDef?.inputs || []) {
    if (input.widget) continue;
    if (!node.inputs.some((i) => i.name === input.name)) node.addInput(input.name, input.type, { localized_name: input.name });
  }
}

/** Show a widget as a plain input socket (or back). */
export function setConverted(node, widget, converted) {
  widget.converted = converted;
  widget.hidden = converted;
  if (converted) {
    widget.computeSize = () => [0, LiteGraph.NODE_SLOT_HEIGHT - 4];
    widget.element && (widget.element.hidden = true);
    if (widget.linkedControl) {
      widget.linkedControl.hidden = true;
      widget.linkedControl.computeSize = () => [0, -4];
    }
  } else {
    delete widget.computeSize;
    if (widget.linkedControl) {
      widget.linkedControl.hidden = false;
      delete widget.linkedControl.computeSize;
    }
    const slot = node.getSlotFromWidget(widget);
    if (slot?.link != null) node.disconnectInput(node.inputs.indexOf(slot));
  }
  const names = (node.widgets || []).filter((w) => w.converted).map((w) => w.name);
  if (names.length) node.properties.convertedWidgets = names;
  else delete node.properties.convertedWidgets;
  const size = node.computeSize();
  node.setSize([Math.max(node.size[0], size[0]), size[1] + (node.imgs?.length ? IMAGE_MIN : 0)]);
  app.changed("convert");
}

export function toggleMode(node, mode) {
  node.mode = node.mode === mode ? 0 : mode;
  app.changed("mode");
}

function downloadRef(ref) {
  const a = document.createElement("a");
  a.href = api.viewUrl(ref);
  a.download = ref.filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
}

function drawConvertedSockets(node, ctx) {
  if (node.flags.collapsed) return;
  for (const w of node.widgets || []) {
    if (!w.converted) continue;
    const y = (w.y || 0) + LiteGraph.NODE_SLOT_HEIGHT * 0.5;
    const slot = node.getSlotFromWidget(w);
    ctx.fillStyle = typeColour(w.inputDef.type);
    if (slot?.link == null) {
      ctx.beginPath();
      ctx.arc(LiteGraph.NODE_SLOT_HEIGHT * 0.5, y, 4, 0, Math.PI * 2);
      ctx.fill();
    }
    ctx.fillStyle = "#c8ccd4";
    ctx.font = "12px sans-serif";
    ctx.textAlign = "left";
    ctx.fillText(w.name, LiteGraph.NODE_SLOT_HEIGHT + 2, y + 4);
  }
}

function drawOutputText(node, ctx) {
  const top = contentBottom(node);
  const width = node.size[0] - 20;
  ctx.font = "12px ui-monospace, monospace";
  const lines = wrap(ctx, node.outputText, width - 12);
  const h = Math.min(lines.length, 8) * 15 + 10;
  if (node.size[1] < top + h + 6) node.size[1] = top + h + 6;
  ctx.fillStyle = "#121418";
  ctx.beginPath();
  ctx.roundRect(10, top, width, h, 5);
  ctx.fill();
  ctx.fillStyle = "#cfd3da";
  ctx.textAlign = "left";
  lines.slice(0, 8).forEach((line, i) => ctx.fillText(line, 16, top + 17 + i * 15));
}

function drawImages(node, ctx) {
  if (node.flags.collapsed) return;
  if (node.outputText != null && !node.imgs?.length && !node.previewImage) {
    drawOutputText(node, ctx);
    return;
  }
  const preview = node.previewImage;
  const img = preview || node.imgs?.[node.imageIndex || 0];
  if (!img || !img.complete || !img.naturalWidth) return;
  const top = contentBottom(node);
  const w = node.size[0] - 16;
  const h = node.size[1] - top - 8;
  if (w < 20 || h < 20) return;
  const scale = Math.min(w / img.naturalWidth, h / img.naturalHeight);
  const dw = img.naturalWidth * scale;
  const dh = img.naturalHeight * scale;
  const x = 8 + (w - dw) / 2;
  const y = top + (h - dh) / 2;
  ctx.save();
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(img, x, y, dw, dh);
  ctx.restore();
  if (!preview && node.imgs.length > 1) {
    ctx.fillStyle = "rgba(0,0,0,.6)";
    ctx.fillRect(x + 4, y + 4, 44, 18);
    ctx.fillStyle = "#fff";
    ctx.font = "11px sans-serif";
    ctx.fillText(`${(node.imageIndex || 0) + 1} / ${node.imgs.length}`, x + 9, y + 17);
  }
}

function drawProgress(node, ctx) {
  if (node.sumieProgress == null || String(app.exec.runningNode) !== String(node.id)) return;
  const w = node.size[0];
  const th = LiteGraph.NODE_TITLE_HEIGHT;
  ctx.fillStyle = "rgba(74, 222, 128, 0.18)";
  ctx.fillRect(0, -th, w, th);
  ctx.fillStyle = "#4ade80";
  ctx.fillRect(0, -3, w * node.sumieProgress, 3);
}

function wrap(ctx, text, width) {
  const lines = [];
  for (const para of String(text).split("\n")) {
    let line = "";
    for (const word of para.split(" ")) {
      const next = line ? `${line} ${word}` : word;
      if (ctx.measureText(next).width > width && line) {
        lines.push(line);
        line = word;
      } else line = next;
    }
    lines.push(line);
  }
  return lines.slice(0, 8);
}

function drawErrors(node, ctx) {
  const errors = node.sumieErrors;
  if (!errors?.length) return;
  // Mark the offending inputs (socket label or widget row).
  for (const err of errors) {
    if (!err.input || node.flags.collapsed) continue;
    const w = node.widgets?.find((x) => x.name === err.input);
    ctx.strokeStyle = "#ff5a5a";
    ctx.lineWidth = 2;
    if (w && !w.hidden) {
      ctx.strokeRect(12, w.y, node.size[0] - 24, LiteGraph.NODE_WIDGET_HEIGHT);
    } else {
      const index = node.inputs.findIndex((i) => i.name === err.input);
      if (index >= 0) {
        const pos = node.getInputPos(index);
        ctx.beginPath();
        ctx.arc(pos[0] - node.pos[0], pos[1] - node.pos[1], 7, 0, Math.PI * 2);
        ctx.stroke();
      }
    }
  }
  ctx.font = "12px sans-serif";
  const width = Math.max(node.size[0], 240) - 16;
  const lines = [];
  for (const err of errors) lines.push(...wrap(ctx, (err.input ? `${err.input}: ` : "") + err.message, width));
  const h = lines.length * 16 + 10;
  const y = (node.flags.collapsed ? 0 : node.size[1]) + 8;
  ctx.fillStyle = "rgba(120, 20, 24, 0.92)";
  ctx.beginPath();
  ctx.roundRect(0, y, width + 16, h, 6);
  ctx.fill();
  ctx.fillStyle = "#ffe4e4";
  ctx.textAlign = "left";
  lines.forEach((line, i) => ctx.fillText(line, 8, y + 18 + i * 16));
}

/** @param {any} node @param {{input?: string, message: string}[]} errors */
export function setNodeErrors(node, errors) {
  node.sumieErrors = errors;
  node.has_errors = true;
  app.canvas?.setDirty(true, true);
}

export function clearNodeErrors(node) {
  node.sumieErrors = null;
  node.has_errors = false;
  app.canvas?.setDirty(true, true);
}

export function clearAllErrors() {
  for (const node of app.graph?._nodes || []) if (node.sumieErrors || node.has_errors) clearNodeErrors(node);
}
