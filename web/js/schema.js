/**
 * Reading `/object_info`: one node definition → the inputs, widgets and outputs the editor builds.
 * Pure functions (no DOM, no litegraph), shared by node construction and the graph → API conversion,
 * so both agree on which inputs are widgets and in which order their values are saved.
 */

import { WIDGET_TYPES } from "./types.js";

/**
 * @typedef {object} InputDef
 * @property {string} name
 * @property {string} type       socket type ("INT", "MODEL", ..., "COMBO" for choice lists)
 * @property {object} options    the schema's option object (default, min, max, ...)
 * @property {string[]=} choices for COMBO
 * @property {boolean} optional
 * @property {boolean} widget    edited on the node (a link of the same type may replace it)
 * @property {boolean} control   followed by a control_after_generate value
 *
 * @typedef {object} NodeDef
 * @property {string} name
 * @property {string} displayName
 * @property {string} category
 * @property {string} description
 * @property {InputDef[]} inputs
 * @property {{name: string, type: string, isList: boolean, tooltip?: string}[]} outputs
 * @property {boolean} outputNode
 * @property {boolean} deprecated
 * @property {boolean} experimental
 */

/** @param {string} name @param {any} spec @param {boolean} optional @returns {InputDef} */
export function parseInput(name, spec, optional) {
  const [rawType, rawOptions] = Array.isArray(spec) ? spec : [spec, {}];
  const options = rawOptions && typeof rawOptions === "object" ? rawOptions : {};
  let type = rawType;
  let choices;
  if (Array.isArray(rawType)) {
    type = "COMBO";
    choices = rawType.map(String);
  } else if (rawType === "COMBO") {
    choices = (options.options || []).map(String);
  }
  type = String(type);
  const widget = WIDGET_TYPES.has(type) && !options.forceInput;
  const control = widget && type === "INT" && !!options.control_after_generate;
  return { name, type, options, choices, optional, widget, control };
}

/** @param {string} name @param {any} info one entry of /object_info @returns {NodeDef} */
export function parseNodeDef(name, info) {
  const inputs = [];
  const order = info.input_order || {};
  for (const group of ["required", "optional"]) {
    const specs = info.input?.[group] || {};
    const names = order[group] || Object.keys(specs);
    const seen = new Set();
    for (const key of [...names, ...Object.keys(specs)]) {
      if (seen.has(key) || !(key in specs)) continue;
      seen.add(key);
      inputs.push(parseInput(key, specs[key], group === "optional"));
    }
  }
  const types = info.output || [];
  const outputs = types.map((type, i) => ({
    type: Array.isArray(type) ? "COMBO" : String(type),
    name: info.output_name?.[i] || (Array.isArray(type) ? "COMBO" : String(type)),
    isList: !!info.output_is_list?.[i],
    tooltip: info.output_tooltips?.[i] || undefined,
  }));
  return {
    name,
    displayName: info.display_name || name,
    category: info.category || "",
    description: info.description || "",
    inputs,
    outputs,
    outputNode: !!info.output_node,
    deprecated: !!info.deprecated,
    experimental: !!info.experimental,
  };
}

/** @param {Record<string, any>} objectInfo @returns {Map<string, NodeDef>} */
export function parseObjectInfo(objectInfo) {
  const defs = new Map();
  for (const [name, info] of Object.entries(objectInfo || {})) {
    try {
      defs.set(name, parseNodeDef(name, info));
    } catch (err) {
      console.warn(`skipping node ${name}: ${err}`);
    }
  }
  return defs;
}

/** The default value of a widget input. @param {InputDef} input */
export function defaultValue(input) {
  const o = input.options;
  switch (input.type) {
    case "INT":
    case "FLOAT": {
      let v = o.default ?? 0;
      if (typeof o.min === "number" && v < o.min) v = o.min;
      if (typeof o.max === "number" && v > o.max) v = o.max;
      return v;
    }
    case "STRING": return o.default ?? "";
    case "BOOLEAN": return o.default ?? false;
    case "COMBO": return o.default ?? input.choices?.[0] ?? "";
    default: return o.default ?? null;
  }
}
