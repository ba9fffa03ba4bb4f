/**
 * Keyboard shortcuts (one table drives both the handler and the help panel).
 * litegraph itself handles copy (Ctrl+C), paste (Ctrl+V), delete, select all (Ctrl+A) and Space-drag.
 */

import { LGraphGroup } from "../vendor/litegraph/litegraph.es.js";
import { app } from "./app.js";
import { refreshDefinitions, toggleMode } from "./nodes.js";
import { h, modal } from "./ui.js";
import { history } from "./undo.js";
import { zoomToFit } from "./workflow.js";

/** @type {{keys: string, label: string, group: string, match?: (e: KeyboardEvent) => boolean, run?: () => void}[]} */
export const SHORTCUTS = [];

const ctrl = (e) => e.ctrlKey || e.metaKey;

function selectedNodes() {
  return Object.values(app.canvas.selected_nodes || {});
}

function groupSelected() {
  const nodes = selectedNodes();
  if (!nodes.length) return;
  const group = new LGraphGroup("Group");
  app.graph.add(group);
  group.resizeTo(nodes, 14);
  app.changed("group");
}

function define(group, keys, label, match, run) {
  SHORTCUTS.push({ group, keys, label, match, run });
}

define("Run", "Ctrl+Enter", "Queue the workflow (with the batch count)", (e) => ctrl(e) && !e.shiftKey && !e.altKey && e.key === "Enter", () => app.emit("run"));
define("Run", "Ctrl+Shift+Enter", "Queue the workflow once, in front", (e) => ctrl(e) && e.shiftKey && e.key === "Enter", () => app.emit("run", { front: true }));
define("Run", "Ctrl+Alt+Enter", "Stop the running job", (e) => ctrl(e) && e.altKey && e.key === "Enter", () => app.emit("interrupt"));
define("Edit", "Ctrl+Z", "Undo", (e) => ctrl(e) && !e.shiftKey && e.key.toLowerCase() === "z", () => history.undo());
define("Edit", "Ctrl+Y / Ctrl+Shift+Z", "Redo", (e) => ctrl(e) && (e.key.toLowerCase() === "y" || (e.shiftKey && e.key.toLowerCase() === "z")), () => history.redo());
define("Edit", "Ctrl+C / Ctrl+V", "Copy / paste the selected nodes (Ctrl+Shift+V keeps input links)");
define("Edit", "Delete", "Delete the selection");
define("Edit", "Ctrl+A", "Select every node");
define("Edit", "Ctrl+G", "Put the selected nodes in a group", (e) => ctrl(e) && e.key.toLowerCase() === "g", groupSelected);
define("Edit", "Ctrl+M", "Mute / unmute the selected nodes", (e) => ctrl(e) && e.key.toLowerCase() === "m", () => selectedNodes().forEach((n) => toggleMode(n, 2)));
define("Edit", "Ctrl+B", "Bypass / un-bypass the selected nodes", (e) => ctrl(e) && e.key.toLowerCase() === "b", () => selectedNodes().forEach((n) => toggleMode(n, 4)));
define("Edit", "Alt+C", "Collapse / expand the selected nodes", (e) => e.altKey && e.key.toLowerCase() === "c", () => { selectedNodes().forEach((n) => n.collapse()); app.changed("collapse"); });
define("Canvas", "Double-click", "Search for a node to add");
define("Canvas", "Right-click", "Canvas / node menu (Add Node by category, groups, reroutes…)");
define("Canvas", "Drag a link to empty space", "Release: pick a node that takes it (Shift: search)");
define("Canvas", "Alt+click a link", "Add a reroute dot on the link");
define("Canvas", "Space + drag", "Pan");
define("Canvas", ".", "Zoom to fit", (e) => !ctrl(e) && e.key === ".", zoomToFit);
define("File", "Ctrl+S", "Save to the server", (e) => ctrl(e) && !e.shiftKey && e.key.toLowerCase() === "s", () => app.emit("save"));
define("File", "Ctrl+Shift+S", "Save as…", (e) => ctrl(e) && e.shiftKey && e.key.toLowerCase() === "s", () => app.emit("save-as"));
define("File", "Ctrl+O", "Open a workflow file", (e) => ctrl(e) && e.key.toLowerCase() === "o", () => app.emit("open"));
define("File", "Drop a file", "Open a .json workflow or a PNG made by Sumie; drop an image on Load Image to upload it");
define("File", "R", "Refresh node definitions (new models, uploads, plugins)", (e) => !ctrl(e) && !e.altKey && e.key.toLowerCase() === "r", () => refreshDefinitions());
define("Panels", "Q", "Queue panel", (e) => !ctrl(e) && !e.altKey && e.key.toLowerCase() === "q", () => app.emit("toggle-panel", "queue"));
define("Panels", "I", "Images panel", (e) => !ctrl(e) && !e.altKey && e.key.toLowerCase() === "i", () => app.emit("toggle-panel", "gallery"));
define("Panels", "W", "Saved workflows", (e) => !ctrl(e) && !e.altKey && e.key.toLowerCase() === "w", () => app.emit("toggle-panel", "workflows"));
define("Panels", "?", "This help", (e) => e.key === "?", () => showHelp());

function typing(e) {
  const t = e.target;
  return t instanceof HTMLElement && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));
}

export function showHelp() {
  const groups = [...new Set(SHORTCUTS.map((s) => s.group))];
  return modal((close) => h("div", { class: "modal help", style: "width: 720px" },
    h("h3", {}, "Keyboard shortcuts"),
    h("div", { class: "cols" }, groups.map((g) => h("div", {},
      h("h4", {}, g),
      h("table", {}, SHORTCUTS.filter((s) => s.group === g).map((s) => h("tr", {},
        h("td", {}, s.keys.split(" / ").map((k) => h("kbd", {}, k))), h("td", {}, s.label))))))),
    h("div", { class: "row" }, h("button", { class: "btn primary", onclick: () => close(null) }, "Close"))));
}

export function installShortcuts() {
  window.addEventListener("keydown", (e) => {
    if (typing(e) || document.querySelector(".modal-back, .lightbox, .palette")) return;
    for (const s of SHORTCUTS) {
      if (s.match && s.run && s.match(e)) {
        e.preventDefault();
        e.stopPropagation();
        s.run();
        return;
      }
    }
  }, true);
}
