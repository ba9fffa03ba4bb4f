/**
 * Opening and saving workflows: the Workflow menu, dropping files (editor JSON, API JSON, PNG with an
 * embedded workflow, images onto LoadImage nodes), and workflows saved on the server (/userdata).
 */

import { api } from "./api.js";
import { app } from "./app.js";
import { refreshDefinitions, uploadIntoNode } from "./nodes.js";
import { workflowFromPng } from "./png.js";
import { confirmBox, dropdown, h, promptText } from "./ui.js";
import {
  current, detectFormat, download, graphToPrompt, loadApiPrompt, loadDefaultWorkflow, loadWorkflow, saveToLocal,
  serializeGraph,
} from "./workflow.js";

const FOLDER = "workflows";

function baseName(name) {
  return name.replace(/\.(json|png|webp)$/i, "");
}

/**
 * Open a file: a workflow (.json, editor or API format) or an image carrying one.
 * @param {File} file
 */
export async function openFile(file) {
  const name = baseName(file.name);
  try {
    if (file.type === "image/png" || /\.png$/i.test(file.name)) {
      const found = await workflowFromPng(await file.arrayBuffer());
      if (found.workflow && detectFormat(found.workflow) === "ui") return loadWorkflow(found.workflow, { name });
      if (found.prompt && detectFormat(found.prompt) === "api") return loadApiPrompt(found.prompt, { name });
      app.emit("toast", { text: `${file.name} holds no workflow`, kind: "error" });
      return;
    }
    const data = JSON.parse(await file.text());
    const format = detectFormat(data);
    if (format === "ui") loadWorkflow(data, { name });
    else if (format === "api") loadApiPrompt(data.prompt && !data.class_type ? data.prompt : data, { name });
    else app.emit("toast", { text: `${file.name} is not a workflow (editor or API format)`, kind: "error" });
  } catch (err) {
    app.emit("toast", { text: `Could not open ${file.name}: ${err.message}`, kind: "error" });
  }
}

function pickFile() {
  const picker = h("input", { type: "file", accept: ".json,application/json,image/png", style: "display:none" });
  picker.addEventListener("change", () => {
    if (picker.files?.[0]) openFile(picker.files[0]);
    picker.remove();
  });
  document.body.append(picker);
  picker.click();
}

function safeName(name) {
  return name.replace(/[\\/:*?"<>|]+/g, "_").trim();
}

/** Save to the server under workflows/; asks for a name the first time (or always with `as`). */
export async function saveWorkflow(as = false) {
  let name = current.path ? baseName(current.path.split("/").pop()) : null;
  if (!name || as) {
    name = await promptText("Save workflow as", name || (current.name !== "Untitled" ? current.name : "my workflow"), "Save");
    if (!name) return;
    name = safeName(name);
  }
  const path = `${FOLDER}/${name}.json`;
  try {
    await api.storeUserData(path, JSON.stringify(serializeGraph(), null, 2));
    current.name = name;
    current.path = path;
    current.modified = false;
    saveToLocal();
    app.emit("workflow-meta");
    app.emit("toast", { text: `Saved ${name}`, kind: "ok" });
    refreshWorkflows();
  } catch (err) {
    app.emit("toast", { text: `Could not save: ${err.message}`, kind: "error" });
  }
}

function exportEditor() {
  download(`${safeName(current.name) || "workflow"}.json`, JSON.stringify(serializeGraph(), null, 2));
}

async function exportApi() {
  try {
    const { prompt } = await graphToPrompt();
    download(`${safeName(current.name) || "workflow"}_api.json`, JSON.stringify(prompt, null, 2));
  } catch (err) {
    app.emit("toast", { text: `Could not convert the workflow: ${err.message}`, kind: "error" });
  }
}

async function newWorkflow() {
  if (current.modified && !(await confirmBox("New workflow", "Discard the changes to the open workflow?", "Discard"))) return;
  loadWorkflow({ nodes: [], links: [], groups: [], version: 0.4, extra: {} }, { name: "Untitled" });
}

async function openSaved(path) {
  try {
    const data = JSON.parse(await api.getUserData(path));
    const name = baseName(path.split("/").pop());
    if (detectFormat(data) === "api") loadApiPrompt(data, { name });
    else loadWorkflow(data, { name, path });
  } catch (err) {
    app.emit("toast", { text: `Could not open ${path}: ${err.message}`, kind: "error" });
  }
}

/** The saved-workflows panel. */
export async function refreshWorkflows() {
  const panel = document.getElementById("panel-workflows");
  if (!panel) return;
  let files = [];
  try {
    files = await api.listUserData(FOLDER);
  } catch (err) {
    if (err.status !== 404) {
      panel.replaceChildren(h("div", { class: "empty" }, `Could not list workflows: ${err.message}`));
      return;
    }
  }
  files = (files || []).filter((f) => /\.json$/i.test(f.path)).sort((a, b) => b.modified - a.modified);
  if (!files.length) {
    panel.replaceChildren(h("div", { class: "empty" }, "No saved workflows. Use Workflow ▸ Save (Ctrl+S)."));
    return;
  }
  panel.replaceChildren(...files.map((f) => {
    const path = `${FOLDER}/${f.path}`;
    return h("div", { class: "wf-item", title: path, onclick: () => openSaved(path), dataset: { path } },
      h("span", { class: "name" }, baseName(f.path)),
      h("span", { class: "when" }, new Date(f.modified).toLocaleString([], { dateStyle: "short", timeStyle: "short" })),
      h("button", {
        class: "tb", title: "Delete",
        onclick: async (e) => {
          e.stopPropagation();
          if (!(await confirmBox("Delete workflow", `Delete ${baseName(f.path)} from the server?`, "Delete"))) return;
          await api.deleteUserData(path).catch((err) => app.emit("toast", { text: err.message, kind: "error" }));
          if (current.path === path) current.path = null;
          refreshWorkflows();
        },
      }, "✕"));
  }));
}

export function workflowMenuItems() {
  return [
    { label: "New", kbd: "", action: newWorkflow },
    { label: "Open…", kbd: "Ctrl+O", action: pickFile },
    { label: "Save", kbd: "Ctrl+S", action: () => saveWorkflow(false) },
    { label: "Save as…", kbd: "Ctrl+Shift+S", action: () => saveWorkflow(true) },
    "-",
    { label: "Export", kbd: "", action: exportEditor },
    { label: "Export (API)", kbd: "", action: exportApi },
    "-",
    { label: "Load default workflow", kbd: "", action: loadDefaultWorkflow },
    { label: "Refresh node definitions", kbd: "R", action: refreshDefinitions },
  ];
}

export function installFiles() {
  const button = document.querySelector('[data-menu="workflow"]');
  button?.addEventListener("click", () => dropdown(button, workflowMenuItems()));

  // Drag and drop onto the editor.
  const wrap = document.getElementById("canvas-wrap");
  const hint = document.getElementById("drop-hint");
  let depth = 0;
  const hasFiles = (e) => [...(e.dataTransfer?.types || [])].includes("Files");
  wrap.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    depth++;
    hint.hidden = false;
  });
  wrap.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) hint.hidden = true;
  });
  wrap.addEventListener("dragover", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
  });
  wrap.addEventListener("drop", async (e) => {
    depth = 0;
    hint.hidden = true;
    const file = e.dataTransfer?.files?.[0];
    if (!file) return;
    e.preventDefault();
    // An image dropped on a node with an image upload goes into that node.
    const pos = app.canvas.convertEventToCanvasOffset(e);
    const node = app.graph.getNodeOnPos(pos[0], pos[1]);
    if (node?.imageCombo && file.type.startsWith("image/")) {
      await uploadIntoNode(node, file);
      return;
    }
    await openFile(file);
  });
  app.on("save", () => saveWorkflow(false));
  app.on("save-as", () => saveWorkflow(true));
  app.on("open", pickFile);
}
