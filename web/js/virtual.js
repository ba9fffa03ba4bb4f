/**
 * Editor-only nodes that never reach the API prompt: Reroute (a pass-through dot), Note and
 * MarkdownNote (text), and PrimitiveNode (one value written into every widget it feeds).
 */

import { LGraphNode, LiteGraph } from "../vendor/litegraph/litegraph.es.js";
import { app } from "./app.js";
import { parseInput } from "./schema.js";
import { addInputWidget } from "./widgets.js";

export const VIRTUAL_TYPES = new Set(["Reroute", "Note", "MarkdownNote", "PrimitiveNode"]);

class RerouteNode extends LGraphNode {
  static title = "Reroute";
  static collapsable = false;
  static title_mode = LiteGraph.NO_TITLE;

  constructor(title) {
    super(title ?? "Reroute");
    this.isVirtualNode = true;
    this.addInput("", "*");
    this.addOutput("", "*");
    this.size = [75, 26];
    this.resizable = false;
    this.properties = { showOutputText: false, horizontal: false };
  }

  computeSize() {
    return [75, 26];
  }

  /** The output takes the type of whatever feeds the input, so links keep their colour. */
  onConnectionsChange() {
    const link = this.graph?.getLink(this.inputs[0]?.link);
    const origin = link && this.graph.getNodeById(link.origin_id);
    const type = origin?.outputs?.[link.origin_slot]?.type ?? "*";
    this.outputs[0].type = type;
    for (const id of this.outputs[0].links || []) {
      const out = this.graph?.getLink(id);
      if (out) out.type = type;
    }
  }
}

class NoteNode extends LGraphNode {
  static title = "Note";
  static collapsable = true;

  constructor(title) {
    super(title ?? "Note");
    this.isVirtualNode = true;
    this.serialize_widgets = true;
    this.color = "#5a4a1f";
    this.bgcolor = "#3d3420";
    app.domLayer.addTextarea(this, "text", "", { placeholder: "Write a note…", onChange: () => app.changed("note") });
    this.size = [320, 140];
  }

  onRemoved() {
    for (const w of this.widgets || []) w.onRemove?.();
  }
}

class MarkdownNoteNode extends NoteNode {
  static title = "Markdown Note";
}

/** A widget value shared by every widget input it is linked to. */
class PrimitiveNode extends LGraphNode {
  static title = "Primitive";

  constructor(title) {
    super(title ?? "Primitive");
    this.isVirtualNode = true;
    this.serialize_widgets = true;
    this.addOutput("connect to widget input", "*");
    this.size = [220, 60];
  }

  onConnectOutput(slot, type, input, target) {
    if (!input?.widget) return false; // only widget inputs
    const current = this.outputs[0].type;
    return current === "*" || current === input.type;
  }

  onConnectionsChange(kind) {
    if (kind !== LiteGraph.OUTPUT) return;
    queueMicrotask(() => this.adoptTarget());
  }

  onAfterGraphConfigured() {
    this.adoptTarget(this.savedValues);
  }

  onConfigure(info) {
    this.savedValues = info.widgets_values;
  }

  onRemoved() {
    for (const w of this.widgets || []) w.onRemove?.();
  }

  /** The first widget input this feeds: [node, inputDef, its widget]. */
  target() {
    for (const id of this.outputs[0].links || []) {
      const link = this.graph?.getLink(id);
      const node = link && this.graph.getNodeById(link.target_id);
      const slot = node?.inputs?.[link.target_slot];
      const widget = slot?.widget && node.widgets?.find((w) => w.name === slot.widget.name);
      if (widget?.inputDef) return { node, input: widget.inputDef, widget };
    }
    return null;
  }

  adoptTarget(values) {
    const found = this.target();
    if (!found) {
      if (this.widgets?.length) {
        for (const w of this.widgets) w.onRemove?.();
        this.widgets.length = 0;
        this.outputs[0].type = "*";
        this.outputs[0].name = "connect to widget input";
      }
      return;
    }
    if (this.widgets?.length && this.outputs[0].type === found.input.type) return;
    const input = parseInput("value", [found.input.type === "COMBO" ? found.input.choices : found.input.type, found.input.options], false);
    this.widgets = [];
    const widget = addInputWidget(this, input, { domLayer: app.domLayer, onChange: () => app.changed("widget") });
    widget.value = values?.[0] ?? found.widget.value;
    if (widget.linkedControl && values?.[1]) widget.linkedControl.value = values[1];
    this.outputs[0].type = found.input.type;
    this.outputs[0].name = found.input.type === "COMBO" ? "COMBO" : found.input.type;
    this.title = this.title === "Primitive" ? found.input.name : this.title;
    this.setSize([Math.max(this.size[0], 220), this.computeSize()[1]]);
    app.canvas?.setDirty(true, true);
  }
}

export function registerVirtualNodes() {
  for (const [type, cls, category] of [
    ["Reroute", RerouteNode, "utils"], ["Note", NoteNode, "utils"], ["MarkdownNote", MarkdownNoteNode, "utils"],
    ["PrimitiveNode", PrimitiveNode, "utils"],
  ]) {
    LiteGraph.registerNodeType(type, cls);
    cls.category = category;
  }
}
