/**
 * The server client: HTTP routes and the websocket, nothing else talks to the server.
 *
 * Websocket text frames are re-dispatched as DOM events named after their `type`
 * (`status`, `executing`, `progress`, `executed`, ...) with the frame's `data` as `detail`.
 * Binary preview frames are dispatched as `b_preview` with a Blob as `detail`.
 */

const CLIENT_KEY = "sumie.clientId";

/** @returns {string} a client id kept for this browser tab (survives reloads). */
function tabClientId() {
  let id = sessionStorage.getItem(CLIENT_KEY);
  if (!id) {
    id = crypto.randomUUID ? crypto.randomUUID().replaceAll("-", "") : String(Math.random()).slice(2);
    sessionStorage.setItem(CLIENT_KEY, id);
  }
  return id;
}

/** An HTTP error carrying the server's JSON body (`{error, node_errors}`) when there is one. */
export class ApiError extends Error {
  /** @param {number} status @param {any} body */
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

class Api extends EventTarget {
  constructor() {
    super();
    this.clientId = tabClientId();
    this.base = "";
    /** @type {WebSocket|null} */
    this.socket = null;
    this.connected = false;
    this._retry = 0;
  }

  /** @param {string} path */
  url(path) {
    return this.base + "/api" + path;
  }

  /**
   * fetch() against the API; JSON bodies are encoded, JSON answers decoded, errors thrown as ApiError.
   * @param {string} path @param {RequestInit & {json?: any}} [options]
   */
  async fetch(path, options = {}) {
    const init = { ...options };
    if ("json" in options) {
      init.method ||= "POST";
      init.body = JSON.stringify(options.json);
      init.headers = { "Content-Type": "application/json", ...(options.headers || {}) };
      delete init.json;
    }
    const res = await fetch(this.url(path), init);
    const type = res.headers.get("Content-Type") || "";
    const body = type.includes("json") ? await res.json().catch(() => null) : null;
    if (!res.ok) throw new ApiError(res.status, body);
    return body;
  }

  objectInfo() { return this.fetch("/object_info"); }
  queue() { return this.fetch("/queue"); }
  history(max = 64) { return this.fetch(`/history?max_items=${max}`); }
  extensions() { return this.fetch("/extensions"); }
  interrupt(promptId) { return this.fetch("/interrupt", { json: promptId ? { prompt_id: promptId } : {} }); }
  deleteQueued(ids) { return this.fetch("/queue", { json: { delete: ids } }); }
  clearQueue() { return this.fetch("/queue", { json: { clear: true } }); }
  deleteHistory(ids) { return this.fetch("/history", { json: { delete: ids } }); }
  clearHistory() { return this.fetch("/history", { json: { clear: true } }); }

  /**
   * POST /convert: the server's conversion of an editor workflow to an API prompt (the only converter).
   * @param {object} workflow the editor JSON
   * @returns {Promise<{prompt: Record<string, any>, warnings: string[]}>}
   */
  convertWorkflow(workflow) { return this.fetch("/convert", { json: { workflow } }); }

  /**
   * POST /prompt.
   * @param {object} prompt API-format prompt @param {object} workflow the editor JSON, stored in the PNG
   * @returns {Promise<{prompt_id: string, number: number, node_errors: object}>}
   */
  queuePrompt(prompt, workflow, { front = false } = {}) {
    return this.fetch("/prompt", {
      json: {
        prompt, client_id: this.clientId, front,
        extra_data: { extra_pnginfo: { workflow }, preview_method: "auto" },
      },
    });
  }

  /** @param {{filename: string, subfolder?: string, type?: string}} ref */
  viewUrl(ref, extra = "") {
    const q = new URLSearchParams({ filename: ref.filename, subfolder: ref.subfolder || "", type: ref.type || "output" });
    return this.url(`/view?${q}${extra}`);
  }

  /** Upload an image file into input/ (multipart, as /upload/image expects). */
  async uploadImage(file, { overwrite = false, subfolder = "" } = {}) {
    const form = new FormData();
    form.append("image", file, file.name);
    form.append("type", "input");
    form.append("subfolder", subfolder);
    if (overwrite) form.append("overwrite", "true");
    return this.fetch("/upload/image", { method: "POST", body: form });
  }

  // -- user data (saved workflows) -----------------------------------------------------------------
  listUserData(dir) { return this.fetch(`/userdata?dir=${encodeURIComponent(dir)}&recurse=true&full_info=true`); }
  async getUserData(file) {
    const res = await fetch(this.url(`/userdata/${encodeURIComponent(file)}`));
    if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
    return res.text();
  }
  storeUserData(file, text, { overwrite = true } = {}) {
    return this.fetch(`/userdata/${encodeURIComponent(file)}?overwrite=${overwrite}`, {
      method: "POST", body: text, headers: { "Content-Type": "application/json" },
    });
  }
  async deleteUserData(file) {
    const res = await fetch(this.url(`/userdata/${encodeURIComponent(file)}`), { method: "DELETE" });
    if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
  }

  // -- websocket ------------------------------------------------------------------------------------
  connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}${this.base}/ws?clientId=${encodeURIComponent(this.clientId)}`);
    ws.binaryType = "arraybuffer";
    this.socket = ws;
    ws.addEventListener("open", () => {
      this.connected = true;
      const again = this._retry > 0;
      this._retry = 0;
      this.dispatchEvent(new CustomEvent(again ? "reconnected" : "connected"));
    });
    ws.addEventListener("message", (event) => this._onMessage(event));
    ws.addEventListener("close", () => {
      if (this.socket !== ws) return;
      if (this.connected) this.dispatchEvent(new CustomEvent("disconnected"));
      this.connected = false;
      const delay = Math.min(10000, 500 * 2 ** this._retry++);
      setTimeout(() => this.connect(), delay);
    });
  }

  _onMessage(event) {
    if (event.data instanceof ArrayBuffer) {
      const view = new DataView(event.data);
      if (view.byteLength < 8) return;
      const kind = view.getUint32(0);
      if (kind === 1) {
        const format = view.getUint32(4) === 2 ? "image/png" : "image/jpeg";
        const blob = new Blob([event.data.slice(8)], { type: format });
        this.dispatchEvent(new CustomEvent("b_preview", { detail: blob }));
      }
      return;
    }
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    if (!msg || typeof msg.type !== "string") return;
    this.dispatchEvent(new CustomEvent(msg.type, { detail: msg.data ?? {} }));
  }
}

/** The one client the editor uses. */
export const api = new Api();
