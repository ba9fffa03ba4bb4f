/**
 * The editor's shared state: the graph, the canvas, the node definitions and a small event bus.
 * Modules import `app` rather than reaching into each other.
 */

export const app = {
  /** @type {any} LGraph */
  graph: null,
  /** @type {any} LGraphCanvas */
  canvas: null,
  /** @type {Map<string, import("./schema.js").NodeDef>} */
  defs: new Map(),
  /** @type {Record<string, any>} raw /object_info */
  objectInfo: {},
  /** @type {import("./domwidgets.js").DomLayer|null} */
  domLayer: null,
  /** Execution state, keyed by prompt id where it matters. */
  exec: {
    promptId: /** @type {string|null} */ (null),
    runningNode: /** @type {string|null} */ (null),
  },
  bus: new EventTarget(),

  /** Tell listeners (undo history, autosave) that the graph changed. */
  changed(reason = "edit") {
    this.bus.dispatchEvent(new CustomEvent("graph-changed", { detail: { reason } }));
    this.canvas?.setDirty(true, true);
  },

  /** @param {string} type @param {(e: CustomEvent) => void} fn */
  on(type, fn) {
    this.bus.addEventListener(type, /** @type {any} */ (fn));
  },

  /** @param {string} type @param {any} [detail] */
  emit(type, detail) {
    this.bus.dispatchEvent(new CustomEvent(type, { detail }));
  },

  /** @param {string|number} id */
  nodeById(id) {
    return this.graph?.getNodeById(Number.isNaN(Number(id)) ? id : Number(id)) ?? this.graph?.getNodeById(id) ?? null;
  },
};

// Plugins and the test suite reach the editor through window.sumie.
globalThis.sumie = app;
