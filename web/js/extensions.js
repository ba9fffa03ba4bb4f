/**
 * Plugin web extensions: every URL from GET /extensions is imported as an ES module. A module may
 * export a default function (called with the editor's `app`) and/or call
 * `sumie.registerExtension({name, setup(app), nodeCreated(node, app)})` (also reachable as
 * `window.sumie.registerExtension`). One failing extension is reported and the others still load.
 */

import { api } from "./api.js";
import { app } from "./app.js";

/** @type {{name: string, setup?: Function, nodeCreated?: Function}[]} */
export const extensions = [];

app.extensions = extensions;
app.registerExtension = (ext) => {
  if (!ext || typeof ext !== "object") throw new TypeError("registerExtension needs an object");
  extensions.push(ext);
};

/** Call a hook on every extension, never letting one break the editor. */
export function callHook(name, ...args) {
  for (const ext of extensions) {
    try {
      ext[name]?.(...args, app);
    } catch (err) {
      console.warn(`extension ${ext.name || "?"}: ${name} failed`, err);
    }
  }
}

export async function loadExtensions() {
  let urls = [];
  try {
    urls = await api.extensions();
  } catch (err) {
    console.warn("could not list extensions", err);
    return;
  }
  await Promise.all((urls || []).map(async (url) => {
    try {
      const mod = await import(/* @vite-ignore */ api.base + url);
      if (typeof mod.default === "function") await mod.default(app);
    } catch (err) {
      console.warn(`extension ${url} failed to load`, err);
      app.emit("toast", { text: `Extension ${url} failed to load: ${err.message}`, kind: "error" });
    }
  }));
  callHook("setup");
}
