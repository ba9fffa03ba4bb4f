/**
 * Running the graph (with a batch count) and the queue panel: running, pending and finished jobs,
 * with cancel, re-run and opening a finished job's workflow.
 */

import { api, ApiError } from "./api.js";
import { app } from "./app.js";
import { trackPrompt } from "./execution.js";
import { clearAllErrors, setNodeErrors } from "./nodes.js";
import { h } from "./ui.js";
import { applyControl } from "./widgets.js";
import { graphToPrompt, loadApiPrompt, loadWorkflow, serializeGraph } from "./workflow.js";

let running = null; // {promptId, fraction}
let refreshTimer = 0;

/**
 * Queue the open graph `count` times; seeds move on after each (control_after_generate).
 * @returns {Promise<string[]>} the prompt ids queued
 */
export async function runGraph(count = 1) {
  const ids = [];
  clearAllErrors();
  for (let i = 0; i < count; i++) {
    const workflow = serializeGraph();
    let prompt, skipped;
    try {
      ({ prompt, skipped } = await graphToPrompt(workflow));
      if (!Object.keys(prompt).length) {
        app.emit("toast", { text: "Nothing to run: add an output node such as Save Image.", kind: "error" });
        break;
      }
      const res = await api.queuePrompt(prompt, workflow);
      trackPrompt(res.prompt_id, prompt);
      ids.push(res.prompt_id);
      if (res.node_errors && Object.keys(res.node_errors).length) showNodeErrors(res.node_errors);
    } catch (err) {
      if (err instanceof ApiError && err.body) {
        showValidationError(err.body);
      } else {
        app.emit("toast", { text: `Could not queue: ${err.message}`, kind: "error" });
      }
      break;
    }
    if (skipped.length) app.emit("toast", { text: `Left out nodes of unknown type: ${[...new Set(skipped)].join(", ")}`, kind: "error" });
    applyAllControls();
  }
  scheduleRefresh();
  return ids;
}

/** After a queue: every seed widget (and primitive) applies its control_after_generate. */
function applyAllControls() {
  let changed = false;
  for (const node of app.graph._nodes) {
    for (const w of node.widgets || []) {
      if (!w.linkedControl) continue;
      const slot = node.getSlotFromWidget?.(w);
      if (slot?.link != null) continue; // fed by a link: its source decides
      changed = applyControl(w) || changed;
    }
  }
  if (changed) app.changed("control");
}

/** A 400 from /prompt: mark each node and input, and say what is wrong. */
export function showValidationError(body) {
  const nodeErrors = body.node_errors || {};
  showNodeErrors(nodeErrors);
  const count = Object.keys(nodeErrors).length;
  const first = Object.values(nodeErrors)[0]?.errors?.[0];
  let text = body.error?.message || "The workflow is not valid";
  if (body.error?.details) text += `: ${body.error.details}`;
  if (count && first) text = `${text}\n${first.message}${first.details ? ` (${first.details})` : ""}`;
  app.emit("toast", { text, kind: "error", timeout: 9000 });
}

function showNodeErrors(nodeErrors) {
  let firstNode = null;
  for (const [id, entry] of Object.entries(nodeErrors)) {
    const node = app.nodeById(id);
    if (!node) continue;
    const errors = (entry.errors || []).map((e) => ({
      input: e.extra_info?.input_name,
      message: e.details ? `${e.message}: ${e.details}` : e.message,
    }));
    setNodeErrors(node, errors);
    firstNode ||= node;
  }
  if (firstNode) app.canvas.centerOnNode?.(firstNode);
}

// -- queue panel --------------------------------------------------------------------------------------
export function scheduleRefresh(delay = 150) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshQueue, delay);
}

function titleOf(prompt) {
  const nodes = Object.values(prompt || {});
  const outputs = nodes.filter((n) => app.defs.get(n.class_type)?.outputNode).map((n) => n._meta?.title || n.class_type);
  const names = [...new Set(outputs)].slice(0, 2).join(", ");
  return { title: names || "Workflow", count: nodes.length };
}

function workflowOf(extra) {
  return extra?.extra_pnginfo?.workflow;
}

async function rerun(item) {
  const [, , prompt, extra] = item;
  try {
    const res = await api.queuePrompt(prompt, workflowOf(extra) || {});
    trackPrompt(res.prompt_id, prompt);
    app.emit("toast", { text: "Queued again", kind: "ok" });
  } catch (err) {
    if (err instanceof ApiError && err.body) showValidationError(err.body);
    else app.emit("toast", { text: err.message, kind: "error" });
  }
  scheduleRefresh();
}

function openJobWorkflow(item) {
  const workflow = workflowOf(item[3]);
  if (workflow?.nodes) loadWorkflow(workflow, { name: `Job ${item[0]}` });
  else loadApiPrompt(item[2], { name: `Job ${item[0]}` });
}

function thumbs(outputs) {
  const images = [];
  for (const out of Object.values(outputs || {})) for (const img of out?.images || []) images.push(img);
  if (!images.length) return null;
  return h("div", { class: "thumbs" }, images.slice(0, 8).map((ref, i) => h("img", {
    src: api.viewUrl(ref), loading: "lazy", alt: ref.filename, title: ref.filename,
    onclick: () => app.emit("open-image", { refs: images, index: i }),
  })));
}

function jobCard(item, state, extras = {}) {
  const [number, promptId, prompt] = item;
  const actions = [];
  if (state === "running") {
    actions.push(h("button", { class: "tb", title: "Stop", onclick: () => api.interrupt(promptId).then(() => scheduleRefresh()) }, "Stop"));
  } else if (state === "pending") {
    actions.push(h("button", { class: "tb", title: "Remove from the queue", onclick: () => api.deleteQueued([promptId]).then(() => scheduleRefresh()) }, "Cancel"));
  } else {
    actions.push(h("button", { class: "tb", title: "Queue the same job again", onclick: () => rerun(item) }, "Re-run"));
    actions.push(h("button", { class: "tb", title: "Open its workflow", onclick: () => openJobWorkflow(item) }, "Open"));
    actions.push(h("button", { class: "tb", title: "Remove from history", onclick: () => api.deleteHistory([promptId]).then(() => scheduleRefresh()) }, "✕"));
  }
  const stateLabel = { running: "running", pending: "pending", success: "done", error: "failed", interrupted: "stopped" }[state] || state;
  const { title, count } = titleOf(prompt);
  return h("div", { class: "job", dataset: { promptId, state } },
    h("div", { class: "job-head" },
      h("span", { class: "job-num" }, `#${Math.round(number)}`),
      h("span", { class: "job-title", title: promptId }, title),
      h("span", { class: `state ${state}` }, stateLabel)),
    h("div", { class: "job-sub" }, h("span", { class: "job-meta" }, `${count} nodes`), h("span", { class: "job-actions" }, actions)),
    state === "running" ? h("div", { class: "job-bar" }, h("div", { style: `width: ${Math.round((running?.promptId === promptId ? running.fraction : 0) * 100)}%` })) : null,
    extras.message ? h("div", { class: "job-msg" }, extras.message) : null,
    extras.outputs ? thumbs(extras.outputs) : null);
}

export async function refreshQueue() {
  let queue;
  let history;
  try {
    [queue, history] = await Promise.all([api.queue(), api.history(50)]);
  } catch {
    return;
  }
  const count = (queue.queue_running?.length || 0) + (queue.queue_pending?.length || 0);
  const badge = document.getElementById("queue-badge");
  if (badge) {
    badge.textContent = count ? `${count} queued` : "idle";
    badge.classList.toggle("busy", count > 0);
  }
  const panel = document.getElementById("panel-queue");
  if (!panel) return;
  const children = [];
  const runningItems = queue.queue_running || [];
  const pending = [...(queue.queue_pending || [])].sort((a, b) => a[0] - b[0]);
  if (runningItems.length || pending.length) {
    children.push(h("div", { class: "group-label" }, "Now"));
    for (const item of runningItems) children.push(jobCard(item, "running"));
    for (const item of pending) children.push(jobCard(item, "pending"));
  }
  const done = Object.entries(history || {}).map(([, entry]) => entry).filter((e) => e?.prompt)
    .sort((a, b) => b.prompt[0] - a.prompt[0]);
  if (done.length) {
    children.push(h("div", { class: "group-label" }, "Finished"));
    for (const entry of done) {
      const status = entry.status || {};
      let state = status.status_str === "error" ? "error" : status.completed === false ? "interrupted" : "success";
      let message = null;
      for (const [kind, data] of status.messages || []) {
        if (kind === "execution_error") message = `${data.node_type} ${data.node_id}: ${data.exception_message}`;
        if (kind === "execution_interrupted") state = "interrupted";
      }
      children.push(jobCard(entry.prompt, state, { outputs: entry.outputs, message }));
    }
  }
  if (!children.length) children.push(h("div", { class: "empty" }, "No jobs yet. Press Run (Ctrl+Enter) to queue the workflow."));
  panel.replaceChildren(...children);
}

export function queueActions() {
  return [
    h("button", { class: "tb", title: "Remove every pending job", onclick: () => api.clearQueue().then(() => scheduleRefresh()) }, "Clear queue"),
    h("button", { class: "tb", title: "Forget finished jobs", onclick: () => api.clearHistory().then(() => scheduleRefresh()) }, "Clear history"),
  ];
}

export function installQueue() {
  api.addEventListener("status", (e) => {
    const remaining = e.detail?.status?.exec_info?.queue_remaining ?? 0;
    const badge = document.getElementById("queue-badge");
    if (badge) {
      badge.textContent = remaining ? `${remaining} queued` : "idle";
      badge.classList.toggle("busy", remaining > 0);
    }
    scheduleRefresh(100);
  });
  app.on("job-progress", (e) => {
    running = e.detail;
    const bar = document.querySelector(`.job[data-prompt-id="${CSS.escape(e.detail.promptId)}"] .job-bar div`);
    if (bar) bar.style.width = `${Math.round(e.detail.fraction * 100)}%`;
  });
  app.on("job-started", () => scheduleRefresh(50));
  app.on("job-finished", () => scheduleRefresh(200));
}
