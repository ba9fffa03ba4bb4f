/** Small DOM helpers: element builder, toasts, dialogs, drop-down menus. */

/**
 * Build an element: h("button", {class: "tb", onclick: fn}, "text", child...).
 * @param {string} tag @param {Record<string, any>} [attrs] @param {...any} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** @param {string} text @param {{kind?: "info"|"ok"|"error", timeout?: number}} [opts] */
export function toast(text, { kind = "info", timeout = 4000 } = {}) {
  const box = document.getElementById("toasts");
  if (!box) return;
  const el = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
  box.append(el);
  while (box.children.length > 5) box.firstElementChild?.remove();
  setTimeout(() => el.remove(), timeout);
  el.addEventListener("click", () => el.remove());
}

/**
 * A modal dialog; resolves with what `build` hands to `close`, or null when dismissed.
 * @param {(close: (value: any) => void) => HTMLElement} build
 */
export function modal(build) {
  return new Promise((resolve) => {
    let done = false;
    const back = h("div", { class: "modal-back" });
    const close = (value) => {
      if (done) return;
      done = true;
      back.remove();
      window.removeEventListener("keydown", onKey, true);
      resolve(value);
    };
    const onKey = (e) => {
      if (e.key === "Escape") {
        e.stopPropagation();
        close(null);
      }
    };
    back.addEventListener("pointerdown", (e) => {
      if (e.target === back) close(null);
    });
    window.addEventListener("keydown", onKey, true);
    back.append(build(close));
    document.body.append(back);
  });
}

/** Ask for a line of text. @returns {Promise<string|null>} */
export function promptText(title, value = "", okLabel = "OK") {
  return modal((close) => {
    const input = h("input", { type: "text", value });
    const ok = () => close(input.value.trim() || null);
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") ok();
    });
    setTimeout(() => {
      input.focus();
      input.select();
    });
    return h("div", { class: "modal", style: "width: 420px" },
      h("h3", {}, title), input,
      h("div", { class: "row" },
        h("button", { class: "btn", onclick: () => close(null) }, "Cancel"),
        h("button", { class: "btn primary", onclick: ok }, okLabel)));
  });
}

/** Ask yes/no. @returns {Promise<boolean>} */
export async function confirmBox(title, text, okLabel = "OK") {
  const answer = await modal((close) => h("div", { class: "modal", style: "width: 420px" },
    h("h3", {}, title), h("div", {}, text),
    h("div", { class: "row" },
      h("button", { class: "btn", onclick: () => close(false) }, "Cancel"),
      h("button", { class: "btn primary", onclick: () => close(true) }, okLabel))));
  return !!answer;
}

let openMenu = null;

/**
 * A drop-down menu under `anchor`. Items: {label, kbd?, action} or "-" for a separator.
 * @param {HTMLElement} anchor @param {({label: string, kbd?: string, action: () => void}|"-")[]} items
 */
export function dropdown(anchor, items) {
  closeDropdown();
  const menu = h("div", { class: "dropdown", role: "menu" });
  for (const item of items) {
    if (item === "-") {
      menu.append(h("hr"));
      continue;
    }
    menu.append(h("button", {
      role: "menuitem",
      onclick: () => {
        closeDropdown();
        item.action();
      },
    }, h("span", {}, item.label), item.kbd ? h("kbd", {}, item.kbd) : null));
  }
  const r = anchor.getBoundingClientRect();
  menu.style.left = `${r.left}px`;
  menu.style.top = `${r.bottom + 4}px`;
  document.body.append(menu);
  openMenu = menu;
  setTimeout(() => window.addEventListener("pointerdown", outside, true));
}

function outside(e) {
  if (openMenu && !openMenu.contains(e.target)) closeDropdown();
}

export function closeDropdown() {
  openMenu?.remove();
  openMenu = null;
  window.removeEventListener("pointerdown", outside, true);
}
