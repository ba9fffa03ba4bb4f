/**
 * The editor's graph → API prompt conversion, as a pure function of the editor JSON and the node
 * definitions (so it can be tested and reused without a canvas).
 *
 * - widget values go to their inputs by schema order (a seed's control value is skipped);
 * - links become `[origin_id, origin_slot]`, followed through Reroute nodes and bypassed nodes
 *   (mode 4: re-linked to the bypassed node's first input of the same type);
 * - a link from a PrimitiveNode becomes that primitive's value;
 * - virtual nodes (Reroute, Note, MarkdownNote, PrimitiveNode), muted nodes (mode 2) and nodes of
 *   unknown type with no class are left out.
 */

import { widgetSlots } from "./schema.js";
import { VIRTUAL_TYPES } from "./virtual.js";

const MUTED = 2;
const BYPASS = 4;

/**
 * @param {any} workflow editor JSON (version 0.4 links as arrays, or v1 links as objects)
 * @param {Map<string, import("./schema.js").NodeDef>} defs
 * @returns {{prompt: Record<string, any>, skipped: string[]}}
 */
export function workflowToPrompt(workflow, defs) {
  const nodes = new Map();
  for (const n of workflow.nodes || []) nodes.set(String(n.id), n);
  const links = new Map();
  for (const l of workflow.links || []) {
    const link = Array.isArray(l)
      ? { id: l[0], origin: String(l[1]), originSlot: l[2], target: String(l[3]), targetSlot: l[4], type: l[5] }
      : { id: l.id, origin: String(l.origin_id), originSlot: l.origin_slot, target: String(l.target_id), targetSlot: l.target_slot, type: l.type };
    links.set(String(link.id), link);
  }

  /**
   * Where a link really comes from: `{ref: [id, slot]}`, `{value}` (a primitive) or null (nothing).
   * @returns {{ref?: [string, number], value?: any} | null}
   */
  function resolve(linkId, seen = new Set()) {
    const link = links.get(String(linkId));
    if (!link || seen.has(link.id)) return null;
    seen.add(link.id);
    const origin = nodes.get(link.origin);
    if (!origin) return null;
    if (origin.type === "Reroute") {
      const upstream = origin.inputs?.[0]?.link;
      return upstream == null ? null : resolve(upstream, seen);
    }
    if (origin.type === "PrimitiveNode") {
      const values = origin.widgets_values;
      if (origin.mode === MUTED || !Array.isArray(values) || !values.length) return null;
      return { value: values[0] };
    }
    if (origin.mode === MUTED) return null;
    if (origin.mode === BYPASS) {
      const type = origin.outputs?.[link.originSlot]?.type ?? link.type;
      const through = (origin.inputs || []).find((i) => i.link != null && sameType(i.type, type));
      return through ? resolve(through.link, seen) : null;
    }
    if (VIRTUAL_TYPES.has(origin.type)) return null;
    return { ref: [String(origin.id), link.originSlot] };
  }

  const prompt = {};
  const skipped = [];
  for (const node of nodes.values()) {
    if (VIRTUAL_TYPES.has(node.type) || node.mode === MUTED || node.mode === BYPASS) continue;
    const def = defs.get(node.type);
    if (!def) {
      skipped.push(node.type);
      continue;
    }
    const values = widgetValuesByName(node, def);
    const inputs = {};
    for (const input of def.inputs) {
      const slot = (node.inputs || []).find((i) => (i.widget?.name ?? i.name) === input.name);
      if (slot && slot.link != null) {
        const source = resolve(slot.link);
        if (source?.ref) {
          inputs[input.name] = source.ref;
          continue;
        }
        if (source && "value" in source) {
          inputs[input.name] = encodeConstant(source.value);
          continue;
        }
        if (!input.widget) continue;
      }
      if (input.widget && values.has(input.name)) inputs[input.name] = encodeConstant(values.get(input.name));
    }
    prompt[String(node.id)] = { inputs, class_type: node.type, _meta: { title: node.title || def.displayName } };
  }
  return { prompt, skipped };
}

/** A list-valued constant would read as a link: wrap it as the API format says. */
function encodeConstant(value) {
  return Array.isArray(value) ? { __value__: value } : value;
}

function sameType(a, b) {
  return a === b || a === "*" || b === "*";
}

/**
 * @param {any} node @param {import("./schema.js").NodeDef} def
 * @returns {Map<string, any>} widget input name → saved value
 */
export function widgetValuesByName(node, def) {
  const out = new Map();
  const saved = node.widgets_values;
  if (saved && !Array.isArray(saved) && typeof saved === "object") {
    for (const input of def.inputs) if (input.widget && input.name in saved) out.set(input.name, saved[input.name]);
    return out;
  }
  const order = widgetSlots(def);
  (saved || []).forEach((value, i) => {
    const slot = order[i];
    if (slot && !slot.control) out.set(slot.input, value);
  });
  return out;
}
