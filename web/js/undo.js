/**
 * Undo / redo by snapshots: after each gesture (pointer up, key up, widget edit, load) the graph is
 * serialised; when it differs from the last snapshot, the old one goes on the undo stack.
 * The view (pan/zoom) is not part of a snapshot.
 */

import { app } from "./app.js";
import { current, loadWorkflow, saveToLocal } from "./workflow.js";

const LIMIT = 80;

function snapshot() {
  const data = app.graph.serialize();
  if (data.extra) delete data.extra.ds;
  return JSON.stringify(data);
}

class History {
  constructor() {
    this.undoStack = [];
    this.redoStack = [];
    this.last = null;
    this.restoring = false;
    this.timer = 0;
  }

  /** Start from the graph as it is now (after a load), forgetting the stacks. */
  reset() {
    this.undoStack = [];
    this.redoStack = [];
    this.last = snapshot();
  }

  /** Compare soon (several events of one gesture collapse into one check). */
  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.check(), 60);
  }

  /** Record a change if the graph differs from the last snapshot. */
  check() {
    clearTimeout(this.timer);
    if (this.restoring || !app.graph) return false;
    const now = snapshot();
    if (this.last === null) {
      this.last = now;
      return false;
    }
    if (now === this.last) return false;
    this.undoStack.push(this.last);
    if (this.undoStack.length > LIMIT) this.undoStack.shift();
    this.redoStack = [];
    this.last = now;
    current.modified = true;
    saveToLocal();
    app.emit("workflow-meta");
    return true;
  }

  undo() {
    this.check();
    const prev = this.undoStack.pop();
    if (!prev) return false;
    this.redoStack.push(this.last);
    this.restore(prev);
    return true;
  }

  redo() {
    this.check();
    const next = this.redoStack.pop();
    if (!next) return false;
    this.undoStack.push(this.last);
    this.restore(next);
    return true;
  }

  restore(text) {
    this.restoring = true;
    try {
      const ds = app.canvas.ds;
      const view = { offset: [ds.offset[0], ds.offset[1]], scale: ds.scale };
      const data = JSON.parse(text);
      data.extra = { ...(data.extra || {}), ds: view };
      loadWorkflow(data, { name: current.name, path: current.path });
      current.modified = true;
      this.last = snapshot(); // as re-read, so the next check compares like with like
    } finally {
      this.restoring = false;
    }
    saveToLocal();
    app.emit("workflow-meta");
  }
}

export const history = new History();

/** Watch the canvas and the app bus for anything that may have changed the graph. */
export function installHistory(canvasEl) {
  const schedule = () => history.schedule();
  canvasEl.addEventListener("pointerup", schedule);
  window.addEventListener("keyup", schedule);
  document.addEventListener("input", schedule, true);
  app.on("graph-changed", (e) => {
    if (history.restoring) return;
    if (e.detail?.reason === "load") {
      history.reset();
      saveToLocal();
      return;
    }
    schedule();
  });
}
