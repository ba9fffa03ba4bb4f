/**
 * Following execution over the websocket: the running node and its progress bar, the overall
 * progress, live previews, output images on their nodes, and runtime errors on the failing node.
 */

import { api } from "./api.js";
import { app } from "./app.js";
import { setNodeErrors, setNodeImages } from "./nodes.js";

/** Prompts this tab queued: prompt_id → {nodes: Set of node ids expected to run, done: Set}. */
export const tracked = new Map();
const overallBar = () => document.querySelector("#progress-overall .bar");
let previewUrl = null;

/** Remember which nodes a prompt will run, for the overall progress. */
export function trackPrompt(promptId, prompt) {
  tracked.set(promptId, { nodes: new Set(Object.keys(prompt)), done: new Set(), current: 0 });
}

function node(id) {
  return id == null ? null : app.nodeById(id);
}

function setOverall(fraction) {
  const bar = overallBar();
  if (bar) bar.style.width = `${Math.round(Math.max(0, Math.min(1, fraction)) * 100)}%`;
}

function updateOverall(promptId) {
  const t = tracked.get(promptId);
  if (!t || !t.nodes.size) return;
  const fraction = (t.done.size + (t.current || 0)) / t.nodes.size;
  setOverall(fraction);
  app.emit("job-progress", { promptId, fraction });
}

function clearRunning() {
  const prev = node(app.exec.runningNode);
  if (prev) {
    prev.sumieProgress = null;
    prev.previewImage = null;
  }
  app.exec.runningNode = null;
  app.canvas?.setDirty(true, true);
}

function hideFloatPreview() {
  const box = document.getElementById("preview-float");
  if (box) box.hidden = true;
}

export function installExecution() {
  api.addEventListener("execution_start", (e) => {
    app.exec.promptId = e.detail.prompt_id;
    setOverall(0.01);
    app.emit("job-started", e.detail);
  });

  api.addEventListener("execution_cached", (e) => {
    const t = tracked.get(e.detail.prompt_id);
    if (t) for (const id of e.detail.nodes || []) t.done.add(String(id));
    updateOverall(e.detail.prompt_id);
  });

  api.addEventListener("executing", (e) => {
    const { prompt_id: promptId } = e.detail;
    const id = e.detail.display_node ?? e.detail.node;
    const t = tracked.get(promptId);
    if (t && app.exec.runningNode != null) t.done.add(String(app.exec.runningNode));
    clearRunning();
    if (id == null) {
      // the prompt finished
      if (t) setOverall(1);
      setTimeout(() => setOverall(0), 700);
      hideFloatPreview();
      app.exec.promptId = null;
      app.emit("job-finished", { promptId });
      return;
    }
    app.exec.runningNode = String(id);
    app.exec.promptId = promptId;
    if (t) t.current = 0;
    const n = node(id);
    if (n) n.sumieProgress = 0;
    updateOverall(promptId);
    app.canvas?.setDirty(true, true);
  });

  api.addEventListener("progress", (e) => {
    const { value, max, prompt_id: promptId } = e.detail;
    const id = e.detail.node ?? app.exec.runningNode;
    const fraction = max ? value / max : 0;
    const n = node(id);
    if (n) n.sumieProgress = fraction;
    const t = tracked.get(promptId);
    if (t) t.current = fraction;
    updateOverall(promptId);
    app.canvas?.setDirty(true, false);
  });

  api.addEventListener("b_preview", (e) => {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(e.detail);
    const n = node(app.exec.runningNode);
    const img = new Image();
    img.onload = () => {
      if (n) n.previewImage = img;
      app.canvas?.setDirty(true, false);
    };
    img.src = previewUrl;
    const box = document.getElementById("preview-float");
    if (box) {
      box.hidden = false;
      box.querySelector("img").src = previewUrl;
    }
  });

  api.addEventListener("executed", (e) => {
    const id = e.detail.display_node ?? e.detail.node;
    const images = e.detail.output?.images;
    const n = node(id);
    if (n && Array.isArray(images) && images.length) setNodeImages(n, images);
    const text = e.detail.output?.text;
    if (n && Array.isArray(text)) {
      n.outputText = text.map(String).join("\n");
      app.canvas?.setDirty(true, false);
    }
    try {
      n?.onExecuted?.(e.detail.output || {});
    } catch (err) {
      console.warn("onExecuted failed", err);
    }
    if (Array.isArray(images) && images.length) app.emit("images", { images, promptId: e.detail.prompt_id, nodeId: id });
  });

  api.addEventListener("execution_success", (e) => app.emit("job-finished", { promptId: e.detail.prompt_id }));

  api.addEventListener("execution_error", (e) => {
    const d = e.detail;
    clearRunning();
    setOverall(0);
    hideFloatPreview();
    const n = node(d.node_id);
    const message = `${d.exception_type ? `${d.exception_type}: ` : ""}${d.exception_message || "failed"}`;
    if (n) {
      setNodeErrors(n, [{ message }]);
      app.canvas.selectNode?.(n);
    }
    app.emit("toast", { text: `${d.node_type || "Node"} ${d.node_id ?? ""} failed: ${message}`, kind: "error", timeout: 9000 });
    app.emit("job-finished", { promptId: d.prompt_id, error: message });
  });

  api.addEventListener("execution_interrupted", (e) => {
    clearRunning();
    setOverall(0);
    hideFloatPreview();
    app.emit("toast", { text: "Stopped", kind: "info" });
    app.emit("job-finished", { promptId: e.detail.prompt_id, interrupted: true });
  });
}
