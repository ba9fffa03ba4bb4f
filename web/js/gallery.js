/** The images panel (every output image of this session, newest first) and the full-size viewer. */

import { api } from "./api.js";
import { app } from "./app.js";
import { h } from "./ui.js";

const MAX = 200;
/** @type {{filename: string, subfolder?: string, type?: string}[]} */
const images = [];

function render() {
  const panel = document.getElementById("panel-gallery");
  if (!panel) return;
  if (!images.length) {
    panel.replaceChildren(h("div", { class: "empty" }, "Images from Save Image and Preview Image nodes appear here."));
    return;
  }
  panel.replaceChildren(h("div", { class: "gallery" }, images.map((ref, i) => h("figure", {
    title: ref.filename, onclick: () => openLightbox(images, i),
  }, h("img", { src: api.viewUrl(ref), alt: ref.filename, loading: "lazy" })))));
}

/**
 * The full-size viewer with previous/next and download.
 * @param {{filename: string, subfolder?: string, type?: string}[]} refs @param {number} index
 */
export function openLightbox(refs, index = 0) {
  if (!refs?.length) return;
  let i = Math.max(0, Math.min(index, refs.length - 1));
  const img = h("img", { alt: "" });
  const label = h("span");
  const downloadLink = h("a", { class: "btn", download: "" }, "Download");
  const back = h("div", { class: "lightbox", role: "dialog", "aria-label": "Image viewer" });
  const show = () => {
    const ref = refs[i];
    img.src = api.viewUrl(ref);
    img.alt = ref.filename;
    label.textContent = `${ref.filename}${refs.length > 1 ? `  ·  ${i + 1} / ${refs.length}` : ""}`;
    downloadLink.href = api.viewUrl(ref);
    downloadLink.setAttribute("download", ref.filename);
  };
  const close = () => {
    back.remove();
    window.removeEventListener("keydown", onKey, true);
  };
  const step = (d) => {
    i = (i + d + refs.length) % refs.length;
    show();
  };
  const onKey = (e) => {
    if (e.key === "Escape") close();
    else if (e.key === "ArrowLeft") step(-1);
    else if (e.key === "ArrowRight") step(1);
    else return;
    e.preventDefault();
    e.stopPropagation();
  };
  back.addEventListener("pointerdown", (e) => {
    if (e.target === back) close();
  });
  back.append(img, h("div", { class: "bar" }, label, downloadLink, h("button", { class: "btn", onclick: close }, "Close")));
  if (refs.length > 1) {
    back.append(h("button", { class: "tb nav prev", onclick: () => step(-1), title: "Previous" }, "‹"),
      h("button", { class: "tb nav next", onclick: () => step(1), title: "Next" }, "›"));
  }
  window.addEventListener("keydown", onKey, true);
  document.body.append(back);
  show();
}

export function installGallery() {
  app.on("images", (e) => {
    for (const ref of e.detail.images) {
      if (!images.some((x) => x.filename === ref.filename && x.subfolder === ref.subfolder && x.type === ref.type)) images.unshift(ref);
    }
    images.length = Math.min(images.length, MAX);
    render();
  });
  app.on("open-image", (e) => openLightbox(e.detail.refs, e.detail.index));
  render();
}

export function galleryActions() {
  return [h("button", { class: "tb", onclick: () => { images.length = 0; render(); } }, "Clear")];
}
