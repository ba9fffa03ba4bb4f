/**
 * Widgets for the schema's value types: numbers (sliders for small ranges), text (multiline as a real
 * textarea laid over the canvas), toggles, combos, and the seed's "control after generate".
 */

import { defaultValue } from "./schema.js";

export const CONTROL_VALUES = ["fixed", "increment", "decrement", "randomize"];
/** Random seeds stay exact in JSON numbers (JavaScript integers are exact up to 2**53). */
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/** Decimal places of a step (0.01 → 2). */
function decimals(step) {
  if (!Number.isFinite(step) || step <= 0) return 0;
  const text = String(step);
  if (text.includes("e-")) return Number(text.split("e-")[1]);
  return text.includes(".") ? text.split(".")[1].length : 0;
}

/** Round `value` onto the input's grid (min + k*step) and clamp it to the range. */
export function snapNumber(input, value) {
  const o = input.options;
  let v = Number(value);
  if (!Number.isFinite(v)) v = defaultValue(input);
  if (input.type === "INT") {
    const step = Number(o.step) > 0 ? Number(o.step) : 1;
    const base = Number.isFinite(o.min) && Math.abs(o.min) < MAX_SAFE ? o.min : 0;
    v = Math.round((v - base) / step) * step + base;
    v = Math.round(v);
  } else {
    const round = o.round === false ? 0 : Number(o.round) > 0 ? Number(o.round) : Number(o.step) > 0 ? Number(o.step) : 0;
    if (round > 0) v = Number((Math.round(v / round) * round).toFixed(decimals(round)));
  }
  if (typeof o.min === "number" && v < o.min) v = o.min;
  if (typeof o.max === "number" && v > o.max) v = o.max;
  return v;
}

/** Whether a number input is shown as a slider: asked for, or a short, bounded range. */
function wantsSlider(input) {
  const o = input.options;
  if (o.display === "number") return false;
  if (o.display === "slider") return true;
  if (typeof o.min !== "number" || typeof o.max !== "number") return false;
  const range = o.max - o.min;
  return input.type === "FLOAT" ? range > 0 && range <= 10 : false;
}

/**
 * Add the widget(s) for one widget input to a node; returns the main widget.
 * @param {import("../vendor/litegraph/litegraph.es.js").LGraphNode} node
 * @param {import("./schema.js").InputDef} input
 * @param {{domLayer: import("./domwidgets.js").DomLayer, onChange: () => void}} ctx
 */
export function addInputWidget(node, input, ctx) {
  const o = input.options;
  const value = defaultValue(input);
  const changed = () => ctx.onChange();
  let widget;
  switch (input.type) {
    case "INT":
    case "FLOAT": {
      const step = Number(o.step) > 0 ? Number(o.step) : input.type === "INT" ? 1 : 0.01;
      const precision = input.type === "INT" ? 0 : Math.min(6, Math.max(decimals(o.round || step), 0));
      const kind = wantsSlider(input) ? "slider" : "number";
      widget = node.addWidget(kind, input.name, value, function (v) {
        this.value = snapNumber(input, v);
        changed();
      }, { min: o.min, max: o.max, step: step * 10, step2: step, precision, round: o.round, slider_color: "#4a5668", marker_color: "#e8b04a" });
      break;
    }
    case "BOOLEAN":
      widget = node.addWidget("toggle", input.name, value, changed, { on: o.label_on || "true", off: o.label_off || "false" });
      break;
    case "COMBO":
      widget = node.addWidget("combo", input.name, value, changed, { values: input.choices || [] });
      break;
    case "STRING":
      if (o.multiline) {
        widget = ctx.domLayer.addTextarea(node, input.name, value, { placeholder: o.placeholder || input.name, onChange: changed });
      } else {
        widget = node.addWidget("text", input.name, value, changed, { placeholder: o.placeholder });
      }
      break;
    default:
      return null;
  }
  widget.tooltip = o.tooltip;
  widget.inputDef = input;
  if (input.control) {
    const control = node.addWidget("combo", "control_after_generate", "randomize", changed, { values: CONTROL_VALUES });
    control.isControl = true;
    control.label = "control after generate";
    widget.linkedControl = control;
    control.linkedTo = widget;
  }
  return widget;
}

/**
 * Apply a seed widget's control_after_generate (after a prompt was queued).
 * @param {any} widget the value widget (has linkedControl)
 */
export function applyControl(widget) {
  const mode = widget.linkedControl?.value;
  const o = widget.inputDef?.options || widget.options || {};
  const min = Math.max(typeof o.min === "number" ? o.min : 0, -MAX_SAFE);
  const max = Math.min(typeof o.max === "number" ? o.max : MAX_SAFE, MAX_SAFE);
  const step = Number(o.step) > 0 ? Number(o.step) : 1;
  let v = Number(widget.value);
  switch (mode) {
    case "increment": v = Math.min(max, v + step); break;
    case "decrement": v = Math.max(min, v - step); break;
    case "randomize": {
      const span = Math.min(max - min, 2 ** 50);
      v = min + Math.floor(Math.random() * (span / step + 1)) * step;
      break;
    }
    default: return false;
  }
  widget.value = v;
  return true;
}
