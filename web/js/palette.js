/**
 * The searchable node palette (double-click the canvas, or drop a link on empty canvas).
 * Ranks by display name, class name and category; with a link being dropped it lists only nodes
 * that can take it, and connects the new node.
 */

import { LiteGraph } from "../vendor/litegraph/litegraph.es.js";
import { app } from "./app.js";
import { typesCompatible } from "./types.js";
import { h } from "./ui.js";

const LIMIT = 60;
let current = null;

/** All node types the palette offers (server nodes and editor-only ones). */
function entries() {
  const list = [];
  for (const [type, cls] of Object.entries(LiteGraph.registered_node_types)) {
    if (cls.skip_list) continue;
    const def = app.defs.get(type);
    if (def?.deprecated) continue;
    list.push({
      type,
      title: cls.title || type,
      category: cls.category || "",
      description: def?.description || (type === "Reroute" ? "A dot to route links through" : type.includes("Note") ? "A text note" : type === "PrimitiveNode" ? "One value for several widget inputs" : ""),
      inputs: def ? def.inputs.map((i) => i.type) : type === "Reroute" ? ["*"] : [],
      outputs: def ? def.outputs.map((o) => o.type) : type === "Reroute" || type === "PrimitiveNode" ? ["*"] : [],
    });
  }
  return list;
}

/** Score a candidate for a query; 0 = no match. */
function score(entry, query) {
  if (!query) return 1;
  const q = query.toLowerCase();
  const title = entry.title.toLowerCase();
  const type = entry.type.toLowerCase();
  const cat = entry.category.toLowerCase();
  if (title === q || type === q) return 100;
  if (title.startsWith(q) || type.startsWith(q)) return 80;
  if (title.split(/[\s_/-]+/).some((w) => w.startsWith(q))) return 60;
  if (title.includes(q) || type.includes(q)) return 50;
  if (cat.includes(q)) return 25;
  // every word of the query somewhere
  const words = q.split(/\s+/).filter(Boolean);
  if (words.length > 1 && words.every((w) => title.includes(w) || type.includes(w) || cat.includes(w))) return 40;
  // letters in order (kss → KSampler)
  let i = 0;
  for (const ch of type) if (ch === q[i]) i++;
  if (i === q.length) return 10;
  return 0;
}

function highlight(text, query) {
  const at = query ? text.toLowerCase().indexOf(query.toLowerCase()) : -1;
  if (at < 0) return [text];
  return [text.slice(0, at), h("b", {}, text.slice(at, at + query.length)), text.slice(at + query.length)];
}

/**
 * Open the palette at a screen point.
 * @param {{x: number, y: number, graphPos: [number, number], from?: {node: any, slot: number, type: string, output: boolean}}} opts
 */
export function openPalette(opts) {
  closePalette();
  const all = entries();
  const filterType = opts.from?.type;
  const candidates = opts.from
    ? all.filter((e) => (opts.from.output ? e.inputs : e.outputs).some((t) => (opts.from.output ? typesCompatible(filterType, t) : typesCompatible(t, filterType))))
    : all;
  const input = h("input", { type: "search", placeholder: "Search nodes…", "aria-label": "Search nodes", spellcheck: false });
  const list = h("ul", { role: "listbox" });
  const desc = h("div", { class: "desc" });
  const box = h("div", { class: "palette", role: "dialog" }, input,
    opts.from ? h("div", { class: "filter" }, `${opts.from.output ? "Taking" : "Giving"} ${filterType}`) : null, list, desc);
  let shown = [];
  let sel = 0;

  const render = () => {
    const q = input.value.trim();
    shown = candidates.map((e) => ({ e, s: score(e, q) })).filter((x) => x.s > 0)
      .sort((a, b) => b.s - a.s || a.e.title.localeCompare(b.e.title)).slice(0, LIMIT).map((x) => x.e);
    sel = Math.min(sel, Math.max(0, shown.length - 1));
    list.replaceChildren(...shown.map((e, i) => h("li", {
      class: i === sel ? "sel" : "", role: "option", dataset: { type: e.type },
      onpointerdown: (ev) => {
        ev.preventDefault();
        choose(e);
      },
      onpointermove: () => {
        if (sel !== i) {
          sel = i;
          paintSel();
        }
      },
    }, h("span", { class: "title" }, ...highlight(e.title, q)), h("span", { class: "cat" }, e.category || e.type))));
    if (!shown.length) list.append(h("li", { class: "cat" }, "No matching nodes"));
    paintSel();
  };
  const paintSel = () => {
    [...list.children].forEach((li, i) => li.classList.toggle("sel", i === sel));
    list.children[sel]?.scrollIntoView({ block: "nearest" });
    const e = shown[sel];
    desc.textContent = e ? (e.description || `${e.type}${e.category ? ` · ${e.category}` : ""}`) : "";
  };
  const choose = (entry) => {
    closePalette();
    addNodeAt(entry.type, opts.graphPos, opts.from);
  };
  input.addEventListener("input", () => {
    sel = 0;
    render();
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown") {
      sel = Math.min(shown.length - 1, sel + 1);
      paintSel();
      e.preventDefault();
    } else if (e.key === "ArrowUp") {
      sel = Math.max(0, sel - 1);
      paintSel();
      e.preventDefault();
    } else if (e.key === "Enter") {
      if (shown[sel]) choose(shown[sel]);
      e.preventDefault();
    } else if (e.key === "Escape") {
      closePalette();
      e.preventDefault();
    }
    e.stopPropagation();
  });
  document.body.append(box);
  const left = Math.min(Math.max(8, opts.x - 40), window.innerWidth - 450);
  const top = Math.min(Math.max(8, opts.y - 20), window.innerHeight - 460);
  box.style.left = `${left}px`;
  box.style.top = `${top}px`;
  current = { box, outside: (e) => { if (!box.contains(e.target)) closePalette(); } };
  setTimeout(() => window.addEventListener("pointerdown", current?.outside, true));
  render();
  input.focus();
}

export function closePalette() {
  if (!current) return;
  window.removeEventListener("pointerdown", current.outside, true);
  current.box.remove();
  current = null;
  app.canvas?.canvas.focus();
}

/**
 * Create a node at a graph position and, if a link was being dropped, connect it.
 * @returns {any} the node
 */
export function addNodeAt(type, graphPos, from) {
  const node = LiteGraph.createNode(type);
  if (!node) return null;
  node.pos = [graphPos[0], graphPos[1]];
  app.graph.add(node);
  if (from?.node) {
    if (from.output) {
      const slot = node.inputs.findIndex((i) => typesCompatible(from.type, i.type) && (!i.widget || from.type !== "*"));
      if (slot >= 0) from.node.connect(from.slot, node, slot);
    } else {
      const slot = node.outputs.findIndex((o) => typesCompatible(o.type, from.type));
      if (slot >= 0) node.connect(slot, from.node, from.slot);
    }
  }
  app.canvas.selectNode(node);
  app.changed("add");
  return node;
}
