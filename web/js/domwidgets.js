/**
 * HTML elements that live on nodes (multiline text boxes), laid over the canvas and kept in step with
 * pan, zoom, collapse and removal. Each frame the canvas draws, every element whose node drew it is
 * placed; the rest are hidden.
 */

const MARGIN = 10;

export class DomLayer {
  /** @param {HTMLElement} host positioned over the canvas @param {any} canvas LGraphCanvas */
  constructor(host, canvas) {
    this.host = host;
    this.canvas = canvas;
    /** @type {Set<any>} */
    this.widgets = new Set();
    this.frame = 0;
    const original = canvas.drawFrontCanvas.bind(canvas);
    canvas.drawFrontCanvas = () => {
      this.frame++;
      original();
      this.sweep();
    };
  }

  /** Hide elements not drawn this frame; drop those whose node left the graph. */
  sweep() {
    for (const w of this.widgets) {
      if (!w.node.graph || w.node.graph !== this.canvas.graph) {
        if (!w.node.graph) this.remove(w);
        else w.element.hidden = true;
        continue;
      }
      if (w.drawnFrame !== this.frame) w.element.hidden = true;
    }
  }

  remove(w) {
    w.element.remove();
    this.widgets.delete(w);
  }

  /**
   * A multiline text widget: a real <textarea> over the node, sized by the node.
   * @returns {any} the widget (value reads and writes the textarea)
   */
  addTextarea(node, name, value, { placeholder = "", onChange = () => {} } = {}) {
    const el = document.createElement("textarea");
    el.className = "dom-textarea";
    el.spellcheck = false;
    el.placeholder = placeholder;
    el.value = value ?? "";
    el.hidden = true;
    el.dataset.widget = name;
    el.addEventListener("input", () => onChange());
    el.addEventListener("pointerdown", () => this.canvas.selectNode?.(node));
    this.host.appendChild(el);
    const layer = this;
    const widget = {
      type: "customtext",
      name,
      options: {},
      y: 0,
      element: el,
      node,
      drawnFrame: -1,
      get value() { return el.value; },
      set value(v) { el.value = v == null ? "" : String(v); },
      computeLayoutSize() { return { minHeight: 56, maxHeight: 100000, minWidth: 180 }; },
      draw(ctx, drawNode, width, y) {
        const h = (this.computedHeight ?? 60) - 4;
        const disabled = this.computedDisabled;
        const { scale, offset } = layer.canvas.ds;
        if (disabled || scale < 0.45) {
          // Zoomed far out (or fed by a link): draw a stand-in on the canvas instead.
          ctx.fillStyle = "#1b1d22";
          ctx.strokeStyle = "#343841";
          ctx.beginPath();
          ctx.roundRect(MARGIN, y, width - 2 * MARGIN, h, 4);
          ctx.fill();
          ctx.stroke();
          ctx.fillStyle = "#8a8f98";
          ctx.font = "12px sans-serif";
          ctx.fillText(disabled ? `${name} (linked)` : (el.value.split("\n")[0] || placeholder).slice(0, 40), MARGIN + 6, y + 16);
          return;
        }
        this.drawnFrame = layer.frame;
        el.hidden = false;
        const x = (drawNode.pos[0] + MARGIN + offset[0]) * scale;
        const top = (drawNode.pos[1] + y + offset[1]) * scale;
        el.style.transform = `translate(${x}px, ${top}px) scale(${scale})`;
        el.style.width = `${width - 2 * MARGIN}px`;
        el.style.height = `${h}px`;
        const order = layer.canvas.graph?._nodes?.indexOf(drawNode) ?? 0;
        el.style.zIndex = String(1 + Math.max(0, order));
      },
      onRemove() { layer.remove(this); },
    };
    node.addCustomWidget(widget);
    this.widgets.add(widget);
    return widget;
  }
}
