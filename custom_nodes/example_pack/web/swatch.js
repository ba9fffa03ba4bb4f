// The example pack's editor extension: paints ExampleColorSwatch nodes in the colour they show.
// Served at /extensions/example_pack/swatch.js and imported by the editor as an ES module.

function paint(node, color) {
  if (typeof color === "string" && /^#[0-9a-f]{6}$/i.test(color)) {
    node.color = color;
    node.bgcolor = color + "33";
    node.setDirtyCanvas?.(true, true);
  }
}

export default function setup(app) {
  app.registerExtension?.({
    name: "example_pack.swatch",
    nodeCreated(node) {
      if (node?.type !== "ExampleColorSwatch") return;
      const shown = node.onExecuted;
      node.onExecuted = function (output) {
        shown?.call(this, output);
        paint(this, output?.color?.[0]);
      };
    },
  });
}
